// kafkajs_producer.js — enqueue kjobs jobs from Node.js with KafkaJS + avsc.
//
// Usage (from a directory holding schemas/job.avsc): node kafkajs_producer.js BOOTSTRAP KEY...
// Sends one email.send job per KEY to the topic "jobs", plain Avro binary (avsc's toBuffer);
// exits non-zero unless every job was acknowledged.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const avro = require('avsc');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const jobType = avro.Type.forSchema(JSON.parse(fs.readFileSync('schemas/job.avsc', 'utf8')));
const [bootstrap, ...keys] = process.argv.slice(2);

async function main() {
  const kafka = new Kafka({ brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  // DefaultPartitioner is Java's murmur2 (KafkaJS >= 2.0; LegacyPartitioner is not)
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const messages = keys.map((key) => ({
    key,
    value: jobType.toBuffer({
      id: crypto.randomUUID(), type: 'email.send', payload: Buffer.from(`welcome ${key}`),
      created_at: Date.now(), meta: { producer: 'kafkajs' },
    }),
  }));
  // acks -1 (all); KafkaJS's idempotent mode is experimental, so a retry may duplicate a job
  await producer.send({ topic: 'jobs', acks: -1, messages });  // rejects unless all acked
  await producer.disconnect();
}

main().catch((e) => { console.error(e); process.exit(1); });
