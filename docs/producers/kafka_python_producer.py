"""kafka_python_producer.py — enqueue kjobs jobs from Python with kafka-python + Apache Avro.

Usage (from a directory holding schemas/job.avsc):
    python3 kafka_python_producer.py BOOTSTRAP KEY...
Sends one email.send job per KEY to the topic "jobs", plain Avro binary, and raises unless
every job was acknowledged. kafka-python's default partitioner is Java's murmur2 already.
"""
import datetime
import io
import sys
import uuid

import avro.io
import avro.schema
from kafka import KafkaProducer

SCHEMA = avro.schema.parse(open("schemas/job.avsc").read())


def encode(job):
    buf = io.BytesIO()
    avro.io.DatumWriter(SCHEMA).write(job, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


bootstrap, keys = sys.argv[1], sys.argv[2:]
# acks=all, and retries (kafka-python's default is 0: a send during a leader change would
# fail); one request in flight keeps a key's order across a retry. kafka-python 2.0.2 has no
# idempotent producer: a retried send may duplicate a job (kjobs runs jobs at least once anyway)
producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", retries=10,
                         retry_backoff_ms=250, max_in_flight_requests_per_connection=1)
futures = []
for key in keys:
    job = {"id": str(uuid.uuid4()), "type": "email.send",
           "payload": f"welcome {key}".encode(),
           "created_at": datetime.datetime.now(datetime.timezone.utc),
           "meta": {"producer": "kafka-python"}}
    futures.append(producer.send("jobs", key=key.encode(), value=encode(job)))
producer.flush()
for f in futures:
    f.get(timeout=30)  # raises if this job was not acknowledged
producer.close()
