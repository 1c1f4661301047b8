// test_interop_kafkajs.js — kjobs and KafkaJS + avsc (npm) agree on the wire format.
//
// Run: NODE_PATH=<repo>/.deps/node/node_modules node test_interop_kafkajs.js <kjobs-binary>
// - avsc's canonical schema equals `kjobs schema` (an independent Parsing Canonical Form).
// - KafkaJS produces jobs encoded by avsc (plain binary and single-object, the header's
//   CRC-64-AVRO computed here in JavaScript from the spec); `kjobs peek` decodes them all.
// - `kjobs enqueue` jobs are consumed by KafkaJS and decoded by avsc.
// Synchronisation: the broker's first stdout line, KafkaJS promises, process exits. No sleeps.
'use strict';
const { spawn, spawnSync } = require('child_process');
const assert = require('assert');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const avro = require('avsc');
const { Kafka, logLevel } = require('kafkajs');

const KJOBS = process.argv[2] || path.join(__dirname, '..', '..', 'build', 'kjobs');
const SCHEMA_DIR = path.join(__dirname, '..', '..', 'schemas');
const jobType = avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'job.avsc'))));

const CRC64_EMPTY = 0xc15d213aa4d7a795n;
const CRC64_TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (CRC64_EMPTY & -(fp & 1n));
  return fp;
});
function crc64Avro(buf) {
  let fp = CRC64_EMPTY;
  for (const b of buf) fp = (fp >> 8n) ^ CRC64_TABLE[Number((fp ^ BigInt(b)) & 0xffn)];
  return fp;
}
function singleObjectHeader(pcf) {
  const h = Buffer.alloc(10);
  h[0] = 0xc3; h[1] = 0x01;
  h.writeBigUInt64LE(crc64Avro(Buffer.from(pcf)), 2);
  return h;
}

// With KJOBS_TEST_KAFKA set, a freshly reset real cluster (tests/integration/real_kafka.py).
function startBroker(partitions) {
  if (process.env.KJOBS_TEST_KAFKA) {
    const p = spawnSync('/usr/bin/python3', [path.join(__dirname, 'real_kafka.py'), KJOBS, String(partitions)],
      { encoding: 'utf8', timeout: 180000 });
    if (p.status !== 0) return Promise.reject(new Error(`real Kafka reset failed: ${p.stderr}`));
    return Promise.resolve({ proc: null, bootstrap: p.stdout.trim() });
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(KJOBS, ['broker', '--partitions', String(partitions)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr += d; });
    const rl = readline.createInterface({ input: proc.stdout });
    rl.once('line', (line) => resolve({ proc, bootstrap: line.trim() }));
    proc.once('exit', (code) => reject(new Error(`kjobs broker exited ${code}: ${stderr}`)));
  });
}
function stopBroker(b) {
  if (!b.proc) return Promise.resolve(0);
  return new Promise((resolve) => { b.proc.once('exit', (code) => resolve(code)); b.proc.kill('SIGTERM'); });
}
function kjobs(args, input) {
  const p = spawnSync(KJOBS, args, { input, encoding: 'utf8', timeout: 120000 });
  assert.strictEqual(p.status, 0, `kjobs ${args.join(' ')} exited ${p.status}: ${p.stderr}`);
  return p.stdout;
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('avsc canonical form equals kjobs schema', async () => {
  const pcf = JSON.stringify(jobType.schema());
  assert.strictEqual(kjobs(['schema']).trim(), pcf);
  const [valueHex, wireHex] = kjobs(['schema', '--fingerprint']).trim().split(' ');
  assert.strictEqual(BigInt('0x' + valueHex), crc64Avro(Buffer.from(pcf)));
  assert.strictEqual(wireHex, singleObjectHeader(pcf).subarray(2).toString('hex'));
});

test('KafkaJS + avsc produce, kjobs peek decodes both encodings', async () => {
  const broker = await startBroker(3);
  try {
    const kafka = new Kafka({ clientId: 'interop-js', brokers: broker.bootstrap.split(','), logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    const header = singleObjectHeader(JSON.stringify(jobType.schema()));
    const messages = [];
    for (let i = 0; i < 20; i++) {
      const job = { id: `js-${i}`, type: 'js.job', payload: Buffer.from(`payload-${i}`), created_at: 1767323045000 + i, meta: { i: String(i) } };
      const body = jobType.toBuffer(job);
      messages.push({ key: `key-${i % 4}`, value: i % 2 ? Buffer.concat([header, body]) : body, headers: { origin: 'kafkajs' } });
    }
    await producer.send({ topic: 'jobs', acks: -1, messages });
    await producer.disconnect();
    const lines = kjobs(['peek', '-b', broker.bootstrap, '--from-beginning', '--count', '20', '--timeout', '60'])
      .trim().split('\n').map((l) => JSON.parse(l));
    assert.strictEqual(lines.length, 20);
    const byId = new Map(lines.map((l) => [l.id, l]));
    for (let i = 0; i < 20; i++) {
      const l = byId.get(`js-${i}`);
      assert.ok(l, `js-${i} missing`);
      assert.strictEqual(l.type, 'js.job');
      assert.strictEqual(l.payload, `payload-${i}`);
      assert.strictEqual(l.created_at, 1767323045000 + i);
      assert.deepStrictEqual(l.meta, { i: String(i) });
      assert.strictEqual(l.encoding, i % 2 ? 'single-object' : 'binary');
      assert.strictEqual(l.key, `key-${i % 4}`);
      assert.deepStrictEqual(l.headers, [['origin', 'kafkajs']]);
    }
  } finally {
    assert.strictEqual(await stopBroker(broker), 0);
  }
});

test('kjobs enqueue, KafkaJS consumes, avsc decodes', async () => {
  const broker = await startBroker(2);
  try {
    const ids = kjobs(['enqueue', '-b', broker.bootstrap, '--type', 'from.kjobs', '--payload', 'héllo', '--meta', 'a=b', '--count', '10'])
      .trim().split('\n');
    assert.strictEqual(ids.length, 10);
    kjobs(['enqueue', '-b', broker.bootstrap, '--encoding', 'single-object', '--type', 'from.kjobs.so', '--count', '5']);
    const kafka = new Kafka({ clientId: 'interop-js-consumer', brokers: broker.bootstrap.split(','), logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    const offsets = await admin.fetchTopicOffsets('jobs');
    await admin.disconnect();
    assert.strictEqual(offsets.reduce((n, o) => n + Number(o.high), 0), 15);
    // Read every partition from offset 0 with a plain fetch loop through the consumer API.
    const consumer = kafka.consumer({ groupId: 'interop-js', maxWaitTimeInMs: 50 });
    await consumer.connect();
    await consumer.subscribe({ topic: 'jobs', fromBeginning: true });
    const got = [];
    await new Promise((resolve, reject) => {
      consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message);
          if (got.length === 15) resolve();
        },
      }).catch(reject);
    });
    await consumer.disconnect();
    const seen = new Set();
    for (const m of got) {
      let value = m.value;
      if (value[0] === 0xc3 && value[1] === 0x01) {
        assert.ok(value.subarray(0, 10).equals(singleObjectHeader(JSON.stringify(jobType.schema()))));
        value = value.subarray(10);
      }
      const job = jobType.fromBuffer(value);
      seen.add(job.id);
      if (job.type === 'from.kjobs') {
        assert.strictEqual(job.payload.toString('utf8'), 'héllo');
        assert.deepStrictEqual(job.meta, { a: 'b' });
      } else {
        assert.strictEqual(job.type, 'from.kjobs.so');
        assert.strictEqual(job.payload.length, 0);
      }
    }
    for (const id of ids) assert.ok(seen.has(id), `id ${id} not consumed`);
    assert.strictEqual(seen.size, 15);
  } finally {
    assert.strictEqual(await stopBroker(broker), 0);
  }
});

(async () => {
  let passed = 0, failed = 0;
  for (const t of tests) {
    const start = Date.now();
    try {
      await t.fn();
      passed++;
      console.log(`ok   ${t.name} (${((Date.now() - start) / 1000).toFixed(1)}s)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}\n${e.stack}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || !passed ? 1 : 0);
})();
