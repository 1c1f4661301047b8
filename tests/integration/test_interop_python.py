"""test_interop_python.py — kjobs and independent Python clients agree on the wire format.

Run with /usr/bin/python3 (Debian's python3-kafka 2.0.2 and python3-avro 1.11.1).
- kjobs enqueue → kafka-python consumer + Apache Avro's DatumReader, both encodings; keyed
  jobs land on the partition kafka-python's own murmur2 partitioner picks.
- kafka-python + Apache Avro DatumWriter → kjobs peek, both encodings, including a job written
  with the older schema version (schemas/job.v1.avsc) that must resolve with meta = {}.
- Garbage bytes → kjobs peek reports a decode error and keeps going.
- Key placement: kcat and confluent-kafka (python3-confluent-kafka; both librdkafka) put keys
  where kjobs does with partitioner=murmur2_random, and most keys elsewhere with their default
  (consistent_random, CRC32) — the README's statement of which clients agree.

The single-object header is built here from the Avro specification independently of kjobs:
CRC-64-AVRO is computed in Python over the Parsing Canonical Form written out by hand (the
form Java's SchemaNormalization produces: logicalType stripped, "long" in simple form).
python3-avro 1.11.1's own `canonical_form` keeps {"type":"long"} for the logical type, which
the specification's [PRIMITIVES] rule turns into "long", so it is not used as the reference.
"""
import datetime
import io
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs  # noqa: E402

import avro.io  # noqa: E402
import avro.schema  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402

SCHEMA_DIR = os.path.join(harness.SOURCE_DIR, "schemas")
JOB_SCHEMA = avro.schema.parse(open(os.path.join(SCHEMA_DIR, "job.avsc")).read())
JOB_V1_SCHEMA = avro.schema.parse(open(os.path.join(SCHEMA_DIR, "job.v1.avsc")).read())

# Parsing Canonical Form of schemas/job.avsc per the Avro specification.
JOB_PCF = ('{"name":"kjobs.Job","type":"record","fields":[{"name":"id","type":"string"},'
           '{"name":"type","type":"string"},{"name":"payload","type":"bytes"},'
           '{"name":"created_at","type":"long"},'
           '{"name":"meta","type":{"type":"map","values":"string"}}]}')
JOB_V1_PCF = ('{"name":"kjobs.Job","type":"record","fields":[{"name":"id","type":"string"},'
              '{"name":"type","type":"string"},{"name":"payload","type":"bytes"},'
              '{"name":"created_at","type":"long"}]}')

CRC64_EMPTY = 0xC15D213AA4D7A795
CRC64_TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
    CRC64_TABLE.append(fp)


def crc64_avro(data: bytes) -> int:
    fp = CRC64_EMPTY
    for b in data:
        fp = (fp >> 8) ^ CRC64_TABLE[(fp ^ b) & 0xFF]
    return fp


def single_object_header(pcf: str) -> bytes:
    return b"\xc3\x01" + crc64_avro(pcf.encode()).to_bytes(8, "little")


def avro_encode(schema, datum) -> bytes:
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def avro_decode(value: bytes) -> dict:
    if value[:2] == b"\xc3\x01":
        assert value[:10] == single_object_header(JOB_PCF), "fingerprint differs from the spec's"
        value = value[10:]
    return avro.io.DatumReader(JOB_SCHEMA).read(avro.io.BinaryDecoder(io.BytesIO(value)))



SAMPLE_JOBS = [
    {"type": "email.send", "key": f"customer-{i % 7}", "payload": f"hello {i} \u00e9\u4e2d",
     "meta": {"traceparent": f"00-{i:032x}-{i:016x}-01"}}
    for i in range(40)
] + [{"type": "blob", "payload_b64": "AAEC/wD+", "id": "binary-job-1"}]


def enqueue_and_read_back(encoding, partitions=4):
    with harness.Broker(partitions=partitions) as broker:
        lines = "".join(json.dumps(j) + "\n" for j in SAMPLE_JOBS)
        p = harness.run(harness.kjobs_cmd("enqueue", "-b", broker.bootstrap, "--encoding",
                                          encoding), input=lines)
        ids = p.stdout.split()
        assert len(ids) == len(SAMPLE_JOBS), f"enqueue printed {len(ids)} ids"
        assert "binary-job-1" in ids
        records = harness.read_topic(broker.bootstrap, "jobs", len(SAMPLE_JOBS))
    by_id = {}
    for msg in records:
        if encoding == "single-object":
            assert msg.value[:2] == b"\xc3\x01", "not single-object encoded"
        else:
            assert msg.value[:2] != b"\xc3\x01"
        job = avro_decode(msg.value)
        by_id[job["id"]] = (job, msg)
    assert set(by_id) == set(ids)
    seen = 0
    for spec in SAMPLE_JOBS:
        matches = [(j, m) for j, m in by_id.values() if j["type"] == spec["type"] and (
            spec.get("id") == j["id"] or
            ("payload" in spec and j["payload"] == spec["payload"].encode()))]
        assert len(matches) == 1, f"job {spec} not found exactly once"
        job, msg = matches[0]
        if "payload_b64" in spec:
            assert job["payload"] == b"\x00\x01\x02\xff\x00\xfe"
        assert job["meta"] == spec.get("meta", {})
        assert isinstance(job["created_at"], datetime.datetime)
        age = datetime.datetime.now(datetime.timezone.utc) - job["created_at"]
        assert abs(age.total_seconds()) < 600, f"created_at is off: {job['created_at']}"
        if "key" in spec:
            assert msg.key == spec["key"].encode()
            want = (murmur2(msg.key) & 0x7FFFFFFF) % partitions
            assert msg.partition == want, f"key {spec['key']}: partition {msg.partition} != {want}"
        seen += 1
    assert seen == len(SAMPLE_JOBS)


def test_kjobs_enqueue_binary_read_by_python_avro():
    enqueue_and_read_back("binary")


def test_kjobs_enqueue_single_object_read_by_python_avro():
    enqueue_and_read_back("single-object")


def test_python_produced_jobs_decoded_by_kjobs_peek():
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    created_ms = 1767323045678
    cases = []
    for i in range(10):
        datum = {"id": f"py-bin-{i}", "type": "py.binary", "payload": f"p{i}".encode(),
                 "created_at": created, "meta": {"n": str(i)}}
        cases.append((f"k{i}", avro_encode(JOB_SCHEMA, datum), datum))
    for i in range(10):
        datum = {"id": f"py-so-{i}", "type": "py.single", "payload": bytes([i, 0, 255]),
                 "created_at": created, "meta": {}}
        cases.append((None, single_object_header(JOB_PCF) + avro_encode(JOB_SCHEMA, datum),
                       datum))
    for i in range(5):  # older writer schema, resolved to the current reader: meta = {}
        datum = {"id": f"py-v1-{i}", "type": "py.v1", "payload": b"old",
                 "created_at": created}
        cases.append((None, single_object_header(JOB_V1_PCF) +
                      avro_encode(JOB_V1_SCHEMA, datum), datum))
    with harness.Broker(partitions=3) as broker:
        producer = harness.python_producer(broker.bootstrap)
        sent = [producer.send("jobs", key=key.encode() if key else None, value=value,
                              headers=[("origin", b"python")]) for key, value, _ in cases]
        sent.append(producer.send("jobs", value=b"\x07garbage\xff\xff"))  # not a job
        producer.flush()
        for future in sent:  # every record acknowledged, or the test says why not
            future.get(timeout=30)
        producer.close()
        lines = harness.peek(broker.bootstrap, "jobs", len(cases) + 1)
    by_id = {l["id"]: l for l in lines if "id" in l}
    errors = [l for l in lines if "error" in l]
    assert len(errors) == 1 and errors[0]["value_b64"], errors
    for key, value, datum in cases:
        got = by_id[datum["id"]]
        assert got["type"] == datum["type"]
        assert got["created_at"] == created_ms
        import base64
        assert base64.b64decode(got["payload_b64"]) == datum["payload"]
        assert got["meta"] == datum.get("meta", {})
        assert hdrs(got) == {"origin": "python"}
        assert got["encoding"] == ("single-object" if value[:2] == b"\xc3\x01" else "binary")
        if key:
            assert got["key"] == key


def test_schema_command_matches_specification():
    p = harness.run(harness.kjobs_cmd("schema"))
    assert p.stdout.strip() == JOB_PCF, p.stdout
    p = harness.run(harness.kjobs_cmd("schema", "--fingerprint"))
    value_hex, wire_hex = p.stdout.split()
    fp = crc64_avro(JOB_PCF.encode())
    assert int(value_hex, 16) == fp
    assert bytes.fromhex(wire_hex) == fp.to_bytes(8, "little")


KCAT = "/usr/bin/kcat"


def key_partitions(bootstrap, topic, count):
    """{key: partition} of every record of a topic, read back with kcat."""
    p = subprocess.run([KCAT, "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%k\t%p\n"],
                       capture_output=True, text=True, timeout=120, check=True)
    rows = [l.split("\t") for l in p.stdout.splitlines() if l]
    assert len(rows) == count, f"{topic}: read {len(rows)} records, wanted {count}"
    return {k: int(part) for k, part in rows}


def test_librdkafka_clients_agree_on_key_placement_with_murmur2_random():
    """README: kjobs places keys with Java's murmur2; librdkafka clients (kcat, confluent-kafka)
    agree only with partitioner=murmur2_random — their default, consistent_random (CRC32),
    puts many keys elsewhere. Each client writes the same keys to its own topic (same
    partition count); kcat reads the placements back."""
    from confluent_kafka import Producer
    partitions, keys = 8, [f"key-{i}-{i * 7919 % 1000}" for i in range(300)]
    with harness.Broker(partitions=partitions) as broker:
        b = broker.bootstrap
        lines = "".join(json.dumps({"type": "kjobs.noop", "key": k}) + "\n" for k in keys)
        harness.run(harness.kjobs_cmd("enqueue", "-b", b), input=lines)
        kcat_in = "".join(f"{k}:x\n" for k in keys)
        for topic, extra in (("jobs.retry.1", ["-X", "partitioner=murmur2_random"]),
                             ("jobs.retry.2", [])):
            subprocess.run([KCAT, "-P", "-b", b, "-t", topic, "-K:", *extra], input=kcat_in,
                           text=True, timeout=120, check=True)
        for topic, conf in (("jobs.retry.3", {"partitioner": "murmur2_random"}),
                            ("jobs.dlq", {})):
            prod = Producer({"bootstrap.servers": b, **conf})
            for k in keys:
                prod.produce(topic, b"x", key=k.encode())
            assert prod.flush(60) == 0
        placed = key_partitions(b, "jobs", len(keys))
        assert all(placed[k] == (murmur2(k.encode()) & 0x7FFFFFFF) % partitions for k in keys)
        assert len(set(placed.values())) == partitions  # the keys spread: a meaningful check
        for topic, who, agree in (("jobs.retry.1", "kcat -X partitioner=murmur2_random", True),
                                  ("jobs.retry.3", "confluent-kafka murmur2_random", True),
                                  ("jobs.retry.2", "kcat (default partitioner)", False),
                                  ("jobs.dlq", "confluent-kafka (default partitioner)", False)):
            theirs = key_partitions(b, topic, len(keys))
            differ = [k for k in keys if theirs[k] != placed[k]]
            if agree:
                assert not differ, f"{who}: {len(differ)} keys placed elsewhere, e.g. {differ[:3]}"
            else:
                assert len(differ) > len(keys) // 2, \
                    f"{who}: only {len(differ)} of {len(keys)} keys differ (README says most do)"


if __name__ == "__main__":
    harness.main([test_kjobs_enqueue_binary_read_by_python_avro,
                  test_kjobs_enqueue_single_object_read_by_python_avro,
                  test_python_produced_jobs_decoded_by_kjobs_peek,
                  test_schema_command_matches_specification,
                  test_librdkafka_clients_agree_on_key_placement_with_murmur2_random])
