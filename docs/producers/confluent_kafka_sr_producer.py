"""confluent_kafka_sr_producer.py — enqueue kjobs jobs through a Confluent Schema Registry:
confluent-kafka's SerializingProducer with its AvroSerializer (fastavro + requests).

Usage (from a directory holding schemas/job.avsc):
    python3 confluent_kafka_sr_producer.py BOOTSTRAP REGISTRY_URL KEY...
Registers schemas/job.avsc under the subject "jobs-value" (the serializer's default), sends one
email.send job per KEY to the topic "jobs" in Schema Registry framing (00, schema id, Avro body)
and exits 1 unless every job was acknowledged. Basic auth from SCHEMA_REGISTRY_USER and
SCHEMA_REGISTRY_PASSWORD when set. kjobs reads these values when kafka.schema_registry_url
points at the same registry.
"""
import datetime
import os
import sys
import uuid

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

bootstrap, registry_url, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
registry_conf = {"url": registry_url}
if os.environ.get("SCHEMA_REGISTRY_USER"):
    registry_conf["basic.auth.user.info"] = (
        f"{os.environ['SCHEMA_REGISTRY_USER']}:{os.environ['SCHEMA_REGISTRY_PASSWORD']}")
registry = SchemaRegistryClient(registry_conf)
producer = SerializingProducer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,        # acks=all, no duplicates on retries
    "partitioner": "murmur2_random",   # put keys where Java's partitioner (and kjobs) does
    "key.serializer": StringSerializer("utf_8"),
    "value.serializer": AvroSerializer(registry, open("schemas/job.avsc").read()),
})
failed = []


def on_delivery(err, msg):
    if err is not None:
        failed.append(err)


for key in keys:
    job = {"id": str(uuid.uuid4()), "type": "email.send",
           "payload": f"welcome {key}".encode(),
           "created_at": datetime.datetime.now(datetime.timezone.utc),
           "meta": {"producer": "confluent-kafka-sr"}}
    producer.produce("jobs", key=key, value=job, on_delivery=on_delivery)
    producer.poll(0)
unsent = producer.flush(30)
if failed or unsent:
    sys.exit(f"not enqueued: {unsent} unsent, errors: {failed}")
