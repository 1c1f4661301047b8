// kafkajs_sr_producer.js — enqueue kjobs jobs through a Confluent Schema Registry from Node.js:
// KafkaJS + @kafkajs/confluent-schema-registry (avsc inside).
//
// Usage (from a directory holding schemas/job.avsc):
//   node kafkajs_sr_producer.js BOOTSTRAP REGISTRY_URL KEY...
// Registers schemas/job.avsc under the subject "jobs-value", sends one email.send job per KEY to
// the topic "jobs" in Schema Registry framing (00, schema id, Avro body); exits non-zero unless
// every job was acknowledged. Basic auth from SCHEMA_REGISTRY_USER / SCHEMA_REGISTRY_PASSWORD.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { Kafka, Partitioners, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const [bootstrap, registryUrl, ...keys] = process.argv.slice(2);
const auth = process.env.SCHEMA_REGISTRY_USER
  ? { username: process.env.SCHEMA_REGISTRY_USER, password: process.env.SCHEMA_REGISTRY_PASSWORD }
  : undefined;

async function main() {
  const registry = new SchemaRegistry({ host: registryUrl, auth });
  const { id } = await registry.register(
    { type: SchemaType.AVRO, schema: fs.readFileSync('schemas/job.avsc', 'utf8') },
    { subject: 'jobs-value' });
  const kafka = new Kafka({ brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  // DefaultPartitioner is Java's murmur2 (KafkaJS >= 2.0; LegacyPartitioner is not)
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const messages = await Promise.all(keys.map(async (key) => ({
    key,
    value: await registry.encode(id, {
      id: crypto.randomUUID(), type: 'email.send', payload: Buffer.from(`welcome ${key}`),
      created_at: Date.now(), meta: { producer: 'kafkajs-sr' },
    }),
  })));
  // acks -1 (all); KafkaJS's idempotent mode is experimental, so a retry may duplicate a job
  await producer.send({ topic: 'jobs', acks: -1, messages });  // rejects unless all acked
  await producer.disconnect();
}

main().catch((e) => { console.error(e); process.exit(1); });
