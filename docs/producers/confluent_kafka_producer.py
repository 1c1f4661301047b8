"""confluent_kafka_producer.py — enqueue kjobs jobs from Python: confluent-kafka + Apache Avro.

Usage (from a directory holding schemas/job.avsc):
    python3 confluent_kafka_producer.py BOOTSTRAP KEY...
Sends one email.send job per KEY to the topic "jobs", plain Avro binary, and exits 1 unless
every job was acknowledged.
"""
import datetime
import io
import sys
import uuid

import avro.io
import avro.schema
from confluent_kafka import Producer

SCHEMA = avro.schema.parse(open("schemas/job.avsc").read())


def encode(job):
    buf = io.BytesIO()
    avro.io.DatumWriter(SCHEMA).write(job, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


bootstrap, keys = sys.argv[1], sys.argv[2:]
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,        # acks=all, no duplicates on retries
    "partitioner": "murmur2_random",   # put keys where Java's partitioner (and kjobs) does
})
failed = []


def on_delivery(err, msg):
    if err is not None:
        failed.append(err)


for key in keys:
    job = {"id": str(uuid.uuid4()), "type": "email.send",
           "payload": f"welcome {key}".encode(),
           "created_at": datetime.datetime.now(datetime.timezone.utc),
           "meta": {"producer": "confluent-kafka"}}
    producer.produce("jobs", key=key.encode(), value=encode(job), on_delivery=on_delivery)
    producer.poll(0)
unsent = producer.flush(30)
if failed or unsent:
    sys.exit(f"not enqueued: {unsent} unsent, errors: {failed}")
