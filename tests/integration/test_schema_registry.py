"""test_schema_registry.py — jobs in Confluent Schema Registry framing (00, 4-byte schema id,
Avro body), run by a real `kjobs run` with kafka.schema_registry_url set.

The registry is a STUB (stub_registry.py, Python stdlib): no real registry runs here — Apicurio
Registry's app does not resolve from Maven Central (io.apicurio:apicurio-registry-schema-util-
provider is not served) and Confluent's registry is not on Maven Central. The producers are
real, independent serializers, run as docs/producers.md shows them:
- KafkaJS + @kafkajs/confluent-schema-registry (npm, .deps/node): docs/producers/
  kafkajs_sr_producer.js;
- confluent-kafka's AvroSerializer (python3-confluent-kafka; needs fastavro, which Debian 12
  does not package, and requests): docs/producers/confluent_kafka_sr_producer.py — run when
  /usr/bin/python3 can import both, else reported as skipped.
Checks: every job runs as produced; an unknown id and incompatible schemas go to the DLQ with
class decode and the id in kjobs-error; each id is fetched at most once per worker thread (cache); basic auth works and
the password is never logged; a registry outage holds the jobs (no DLQ, no commit past them,
kjobs_schema_registry_waiting_batches = 1) until the registry answers; without
kafka.schema_registry_url the DLQ reason says so. Real Kafka with KJOBS_TEST_KAFKA, as the
other tests.
"""
import base64
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import SOURCE_DIR  # noqa: E402
from stub_registry import StubRegistry  # noqa: E402
from test_interop_python import JOB_SCHEMA, avro_encode  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

# docs/producers/ files this test runs (test_producers.py checks every file there is run)
SR_FILES = {"kafkajs-sr": "kafkajs_sr_producer.js",
            "confluent-kafka-sr": "confluent_kafka_sr_producer.py"}
NODE_PATH = os.pathsep.join(p for p in (
    os.environ.get("NODE_PATH"), os.path.join(SOURCE_DIR, ".deps", "node", "node_modules")) if p)
KEYS = [f"customer-{i}" for i in range(6)]
RECORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exec_recorder.py")
USER, PASSWORD = "kjobs", "sr-secret-5f0c1d"
ORDER_SCHEMA = json.dumps({"type": "record", "name": "Order", "namespace": "shop",
                           "fields": [{"name": "id", "type": "string"}]})


def framed(schema_id, body):
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def job_body(job_type="email.send", payload=b"x"):
    return avro_encode(JOB_SCHEMA, {"id": str(uuid.uuid4()), "type": job_type,
                                    "payload": payload,
                                    "created_at": datetime.datetime.now(datetime.timezone.utc),
                                    "meta": {}})


def produce_raw(bootstrap, values, key=b"raw"):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for v in values:
        p.produce("jobs", key=key, value=v)
    assert p.flush(30) == 0


def available_producers():
    """(name, argv prefix, env) of each producer that can run here; prints why one cannot."""
    out = []
    node_ok = subprocess.run(["node", "-e", "require('@kafkajs/confluent-schema-registry')"],
                             env=dict(os.environ, NODE_PATH=NODE_PATH),
                             capture_output=True).returncode == 0
    if node_ok:
        out.append(("kafkajs-sr", ["node", os.path.join("docs", "producers", SR_FILES["kafkajs-sr"])],
                    {"NODE_PATH": NODE_PATH}))
    else:
        print("   kafkajs-sr: skipped, @kafkajs/confluent-schema-registry is not installed "
              "(scripts/install-deps.sh)", flush=True)
    py = subprocess.run(["/usr/bin/python3", "-c", "import fastavro, requests"],
                        capture_output=True, text=True)
    if py.returncode == 0:
        out.append(("confluent-kafka-sr",
                    ["/usr/bin/python3", os.path.join("docs", "producers",
                                                      SR_FILES["confluent-kafka-sr"])], {}))
    else:
        print("   confluent-kafka-sr: skipped, /usr/bin/python3 cannot import fastavro and "
              f"requests ({py.stderr.strip().splitlines()[-1]}); Debian 12 has no fastavro "
              "package", flush=True)
    return out


def recorded(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines()]


def end_offset(bootstrap, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap.split(","), api_version=(2, 5, 0))
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    n = sum(c.end_offsets(parts).values())
    c.close()
    return n


def committed(bootstrap, group="kjobs", topic="jobs"):
    c = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group,
                      enable_auto_commit=False, api_version=(2, 5, 0))
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    n = sum(c.committed(tp) or 0 for tp in parts)
    c.close()
    return n


def worker(bootstrap, record_file, env):
    """A LoggedWorker with the exec recorder and `env` (read when it starts)."""
    env = dict(env, KJOBS_HANDLERS_EXEC=f"/usr/bin/python3 -u {RECORDER} {record_file}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return harness.LoggedWorker(bootstrap)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def metric(w, name, labels=""):
    port = harness.wait_until("the http port", lambda: next(
        (l["port"] for l in w.logs() if l["msg"] == "http listening"), None))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + (labels or "")) and (labels or line[len(name)] in " {"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def readyz(w):
    """(status, body) of the worker's GET /readyz."""
    port = harness.wait_until("the http port", lambda: next(
        (l["port"] for l in w.logs() if l["msg"] == "http listening"), None))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()


def dlq_records(bootstrap, count):
    return harness.peek(bootstrap, "jobs.dlq", count, timeout=30)


def test_serializers_run_bad_ids_dead_letter():
    producers = available_producers()
    if not producers:
        raise harness.Skip("no Schema Registry serializer installed here")
    stub = StubRegistry(user=USER, password=PASSWORD).start()
    tmp = tempfile.mkdtemp(prefix="kjobs-sr-")
    try:
        with harness.Broker(partitions=2) as broker:
            b = broker.bootstrap
            for name, argv, env in producers:
                p = subprocess.run(argv + [b, stub.url] + KEYS, cwd=SOURCE_DIR, text=True,
                                   capture_output=True, timeout=180,
                                   env=dict(os.environ, SCHEMA_REGISTRY_USER=USER,
                                            SCHEMA_REGISTRY_PASSWORD=PASSWORD, **env))
                assert p.returncode == 0, f"{name}: {p.stdout[-2000:]}{p.stderr[-4000:]}"
            good_ids = sorted(stub.schemas)
            assert good_ids, "the serializers registered nothing"
            # bad ids: unknown, a record that is not a Job, a protobuf schema
            order_id = stub.register("orders-value", ORDER_SCHEMA)
            proto_id = stub.register("p-value", 'syntax = "proto3";', "PROTOBUF")
            produce_raw(b, [framed(4242, job_body()), framed(order_id, job_body()),
                            framed(proto_id, job_body())])
            n_good = len(producers) * len(KEYS)
            ran_file = os.path.join(tmp, "ran.jsonl")
            with worker(b, ran_file, {"KJOBS_KAFKA_SCHEMA_REGISTRY_URL": stub.url,
                                      "KJOBS_KAFKA_SCHEMA_REGISTRY_USER": USER,
                                      "KJOBS_KAFKA_SCHEMA_REGISTRY_PASSWORD": PASSWORD}) as w:
                harness.wait_until("good jobs run and bad ones dead-lettered", lambda:
                                   len(recorded(ran_file)) >= n_good and
                                   end_offset(b, "jobs.dlq") >= 3, timeout=120)
                logs = open(w.log.name).read()
            assert PASSWORD not in logs, "the registry password was logged"
            jobs = recorded(ran_file)
            assert len(jobs) == n_good, f"ran {len(jobs)} jobs, wanted {n_good}"
            for name, _, _ in producers:
                mine = [j for j in jobs if j["meta"] == {"producer": name}]
                assert sorted(j["key"] for j in mine) == sorted(KEYS), (name, mine)
                for j in mine:
                    assert j["type"] == "email.send" and j["attempt"] == 1, j
                    assert base64.b64decode(j["payload_b64"]) == f"welcome {j['key']}".encode()
            for sid in good_ids:  # at most one GET per id and worker thread (workers = 2),
                # however many jobs named it: threads that miss the cache at once both ask
                assert 1 <= stub.gets_of(sid) <= 2, (sid, stub.requests)
            reasons = {}
            for rec in dlq_records(b, 3):
                h = harness.hdrs(rec)
                assert h["kjobs-error-class"] == "decode", h
                reasons[h["kjobs-error"]] = rec
            want = [f"schema id 4242: the registry does not know it (HTTP 404, error code 40403",
                    f"schema id {order_id}: not a kjobs.Job schema: its schema does not resolve",
                    f"schema id {proto_id}: not a kjobs.Job schema: its schemaType is PROTOBUF"]
            for text in want:
                assert any(text in r for r in reasons), f"no DLQ reason with {text!r}: {list(reasons)}"
            print(f"   {', '.join(n for n, _, _ in producers)} x {len(KEYS)} keys run; "
                  f"3 bad ids dead-lettered", flush=True)
    finally:
        stub.stop()


def test_registry_outage_holds_jobs():
    """While the registry answers 503, framed jobs are neither run nor dead-lettered nor
    committed; once it answers, they run and the offsets commit."""
    stub = StubRegistry().start()
    tmp = tempfile.mkdtemp(prefix="kjobs-sr-")
    try:
        with harness.Broker(partitions=1) as broker:
            b = broker.bootstrap
            sid = stub.register("jobs-value", str(JOB_SCHEMA))
            produce_raw(b, [framed(sid, job_body()) for _ in range(3)])
            stub.down = True
            ran_file = os.path.join(tmp, "ran.jsonl")
            with worker(b, ran_file, {"KJOBS_KAFKA_SCHEMA_REGISTRY_URL": stub.url,
                                      "KJOBS_KAFKA_SCHEMA_REGISTRY_TIMEOUT": "1s"}) as w:
                harness.wait_until("the batch to wait for the registry", lambda:
                                   w.count("waiting for the schema registry: batch held") >= 1)
                harness.wait_until("two failed tries", lambda: stub.gets_of(sid) >= 2)
                assert metric(w, "kjobs_schema_registry_waiting_batches") == 1
                assert readyz(w) == (503, "not ready: waiting for the schema registry "
                                         "(batches held)")
                assert metric(w, "kjobs_schema_registry_requests_total",
                              '{result="error"}') >= 2
                time.sleep(1)  # commits run every 200 ms: give one the chance to be wrong
                assert recorded(ran_file) == []
                assert end_offset(b, "jobs.dlq") == 0
                assert committed(b) == 0, "committed past jobs waiting for the registry"
                stub.down = False
                harness.wait_until("the jobs to run", lambda: len(recorded(ran_file)) == 3)
                harness.wait_until("the commit", lambda: committed(b) == 3)
                assert w.count("schema registry answered: batch released") == 1
                assert metric(w, "kjobs_schema_registry_waiting_batches") == 0
                assert readyz(w)[0] == 200
                assert metric(w, "kjobs_schema_registry_requests_total", '{result="found"}') == 1
            assert end_offset(b, "jobs.dlq") == 0
    finally:
        stub.stop()


def test_registry_outage_at_shutdown_commits_nothing_past():
    """SIGTERM while a batch waits for the registry: a clean exit (0) within the grace period,
    the jobs neither run, dead-lettered nor committed (the next worker runs them)."""
    stub = StubRegistry().start()
    stub.down = True
    tmp = tempfile.mkdtemp(prefix="kjobs-sr-")
    try:
        with harness.Broker(partitions=1) as broker:
            b = broker.bootstrap
            produce_raw(b, [framed(1, job_body()) for _ in range(2)])
            ran_file = os.path.join(tmp, "ran.jsonl")
            w = worker(b, ran_file, {"KJOBS_KAFKA_SCHEMA_REGISTRY_URL": stub.url})
            with w:
                harness.wait_until("the batch to wait for the registry", lambda:
                                   w.count("waiting for the schema registry: batch held") >= 1)
                started = time.monotonic()
                assert w.stop() == 0
                assert time.monotonic() - started < 15, "shutdown waited for the registry"
            assert recorded(ran_file) == []
            assert end_offset(b, "jobs.dlq") == 0
            assert committed(b) == 0
    finally:
        stub.stop()


def test_without_registry_url_dead_letters_naming_the_id():
    tmp = tempfile.mkdtemp(prefix="kjobs-sr-")
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        produce_raw(b, [framed(77, job_body())])
        with worker(b, os.path.join(tmp, "ran.jsonl"), {}):
            harness.wait_until("the DLQ copy", lambda: end_offset(b, "jobs.dlq") == 1)
        h = harness.hdrs(dlq_records(b, 1)[0])
        assert h["kjobs-error-class"] == "decode", h
        assert ("Confluent Schema Registry framing, schema id 77, but kafka.schema_registry_url "
                "is not set") in h["kjobs-error"], h
        # the CLI never asks a registry: peek says so and names the id, whatever is configured
        shown = harness.peek(b, "jobs", 1, timeout=30)[0]
        assert shown["schema_id"] == 77, shown
        assert "do not consult the registry" in shown["error"], shown


if __name__ == "__main__":
    harness.main([test_serializers_run_bad_ids_dead_letter, test_registry_outage_holds_jobs,
                  test_registry_outage_at_shutdown_commits_nothing_past,
                  test_without_registry_url_dead_letters_naming_the_id])
