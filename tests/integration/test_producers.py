"""test_producers.py — every producer in docs/producers.md, run as the doc shows it, against a
broker; then a real `kjobs run` must decode and run every job, and an independent reader must
find each key on the partition Java's murmur2 partitioner picks.

Run with /usr/bin/python3. The producers are the files in docs/producers/ (the doc shows them
verbatim: test_doc_shows_the_tested_files), each run once with the same keys:
- confluent-kafka + Apache Avro (python3-confluent-kafka, python3-avro), plain binary;
- kafka-python + Apache Avro (python3-kafka), plain binary;
- KafkaJS + avsc (npm, .deps/node), plain binary;
- Java: kafka-clients + Apache Avro (tests/producers/pom.xml, built by build-java.sh into
  .deps/producers-java), single-object encoding. Real Kafka only: Java clients (3.9.1 and 4.1.1
  tried) never get past ApiVersions with the embedded broker (librdkafka's mock cluster);
- C: librdkafka + kjobs' codec (kjobs_producer_c, built from docs/producers/CMakeLists.txt),
  plain binary;
- kcat with pre-encoded files (written here with Apache Avro, half plain binary, half
  single-object with the specification's CRC-64-AVRO fingerprint: test_interop_python);
- `kjobs enqueue` from a shell script, single-object.
Checks, per producer and key: exactly one job; the job as the producer meant it (type, payload,
meta, created_at) both as kjobs' worker ran it (handlers.exec = exec_recorder.py) and as
kafka-python + Apache Avro read it back (which also checks the encoding); the record's partition
equals toPositive(murmur2(key)) % partitions (kafka-python's murmur2) and, where the Java producer
ran, the partition Java's own client chose. Nothing is dead-lettered or retried. The keys are
checked to be discriminating: librdkafka's default partitioner (CRC32) would put most elsewhere.

`test_producers.py --write-doc` copies the files into docs/producers.md's snippet blocks.
"""
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import SOURCE_DIR  # noqa: E402
from test_interop_python import (JOB_PCF, JOB_SCHEMA, avro_decode, avro_encode,  # noqa: E402
                                 single_object_header)

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402

DOC = os.path.join(SOURCE_DIR, "docs", "producers.md")
SNIPPETS = os.path.join(SOURCE_DIR, "docs", "producers")
PARTITIONS = 8
KEYS = [f"customer-{i}" for i in range(24)] + ["ключ-ü", "order/42"]
NODE_PATH = os.path.join(SOURCE_DIR, ".deps", "node", "node_modules")
PRODUCER_C = os.environ.get("KJOBS_PRODUCER_C") or os.path.join(
    SOURCE_DIR, "build", "tests", "integration", "producers", "kjobs_producer_c")
JAVA_ON_EMBEDDED = ("Java clients never get past ApiVersions with the embedded broker "
                    "(librdkafka's mock cluster; kafka-clients 3.9.1 and 4.1.1 tried)")


def murmur2_partition(key):
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def run_producer(argv, env=None):
    """Run one producer from the repository root (the snippets read schemas/job.avsc)."""
    p = subprocess.run(argv, cwd=SOURCE_DIR, capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, **(env or {})))
    assert p.returncode == 0, \
        f"{' '.join(argv[:3])} … exited {p.returncode}\nstdout:\n{p.stdout[-2000:]}\n" \
        f"stderr:\n{p.stderr[-4000:]}"
    return p


def java_classpath():
    p = subprocess.run(["bash", os.path.join(SOURCE_DIR, "tests", "producers", "build-java.sh")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"build-java.sh exited {p.returncode}: {p.stderr[-4000:]}"
    return p.stdout.strip()


def kcat_files(tmp):
    """Pre-encoded jobs for kcat_producer.sh: KEY FILE pairs; even keys plain binary, odd keys
    single-object. Returns (args, {key: encoding})."""
    args, encodings = [], {}
    for i, key in enumerate(KEYS):
        datum = {"id": f"kcat-{i}-{time.time_ns()}", "type": "email.send",
                 "payload": f"welcome {key}".encode(),
                 "created_at": datetime.datetime.now(datetime.timezone.utc),
                 "meta": {"producer": "kcat"}}
        value = avro_encode(JOB_SCHEMA, datum)
        if i % 2:
            value = single_object_header(JOB_PCF) + value
        path = os.path.join(tmp, f"job-{i}.avro")
        with open(path, "wb") as f:
            f.write(value)
        args += [key, path]
        encodings[key] = "single-object" if i % 2 else "binary"
    return args, encodings


# The producers, by the name each writes into meta.producer, and the file that is each one.
FILES = {"confluent-kafka": "confluent_kafka_producer.py",
         "kafka-python": "kafka_python_producer.py", "kafkajs": "kafkajs_producer.js",
         "c": "producer.c", "kcat": "kcat_producer.sh", "kjobs-enqueue": "enqueue.sh",
         "java": "JobProducer.java"}


def producers(bootstrap, tmp):
    """[(name, argv, env, {key: encoding the doc says it writes})] for this broker kind."""
    def each(enc):
        return {k: enc for k in KEYS}

    def script(name):
        return os.path.join(SNIPPETS, FILES[name])
    bin_dir = os.path.join(tmp, "bin")  # `kjobs` on PATH for enqueue.sh, whatever KJOBS_BIN's name
    os.makedirs(bin_dir)
    os.symlink(os.path.abspath(harness.KJOBS), os.path.join(bin_dir, "kjobs"))
    kcat_args, kcat_enc = kcat_files(tmp)
    out = [
        ("confluent-kafka", ["/usr/bin/python3", script("confluent-kafka"), bootstrap, *KEYS],
         None, each("binary")),
        ("kafka-python", ["/usr/bin/python3", script("kafka-python"), bootstrap, *KEYS], None,
         each("binary")),
        ("kafkajs", ["node", script("kafkajs"), bootstrap, *KEYS], {"NODE_PATH": NODE_PATH},
         each("binary")),
        ("c", [PRODUCER_C, bootstrap, *KEYS], None, each("binary")),
        ("kcat", ["sh", script("kcat"), bootstrap, *kcat_args], None, kcat_enc),
        ("kjobs-enqueue", ["sh", script("kjobs-enqueue"), bootstrap, *KEYS],
         {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}, each("single-object")),
    ]
    if harness.REAL_KAFKA:
        out.append(("java", ["java", "-cp", java_classpath(), "JobProducer", bootstrap, *KEYS],
                    None, each("single-object")))
    return out



def end_offsets(consumer, topics):
    parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
    return sum(consumer.end_offsets(parts).values())


def test_keys_are_discriminating():
    """A producer left on librdkafka's default partitioner (consistent_random: CRC32) must
    fail the placement check: most of KEYS land elsewhere under CRC32."""
    crc = {k: (zlib.crc32(k.encode()) & 0xFFFFFFFF) % PARTITIONS for k in KEYS}
    differ = [k for k in KEYS if crc[k] != murmur2_partition(k)]
    assert len(differ) > len(KEYS) // 2, f"only {len(differ)} of {len(KEYS)} keys differ"
    assert len({murmur2_partition(k) for k in KEYS}) == PARTITIONS  # every partition gets keys


def test_every_producer_enqueues_jobs_kjobs_runs():
    tmp = tempfile.mkdtemp(prefix="kjobs-producers-")
    try:
        _scenario(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _scenario(tmp):
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    with harness.Broker(partitions=PARTITIONS) as broker:
        b = broker.bootstrap
        table = producers(b, tmp)
        assert {t[0] for t in table} == set(FILES) - (set() if harness.REAL_KAFKA else {"java"})
        if not harness.REAL_KAFKA:
            print(f"   java: not run here: {JAVA_ON_EMBEDDED}", flush=True)
        for name, argv, env, _ in table:
            t0 = time.monotonic()
            run_producer(argv, env)
            print(f"   {name}: {len(KEYS)} jobs enqueued ({time.monotonic() - t0:.1f}s)",
                  flush=True)
        total = len(table) * len(KEYS)

        # The independent reader: kafka-python + Apache Avro, encoding checked per record.
        seen = {}  # (producer, key) -> (partition, encoding, job)
        for msg in harness.read_topic(b, "jobs", total):
            job = avro_decode(msg.value)
            encoding = "single-object" if msg.value[:2] == b"\xc3\x01" else "binary"
            who = job["meta"].get("producer")
            key = msg.key.decode()
            assert (who, key) not in seen, f"{who}: key {key} enqueued twice"
            seen[(who, key)] = (msg.partition, encoding, job)
        java_partition = {}
        for name, _, _, encodings in table:
            for key in KEYS:
                assert (name, key) in seen, f"{name}: no job with key {key}"
                partition, encoding, job = seen[(name, key)]
                assert encoding == encodings[key], \
                    f"{name}: key {key} written {encoding}, the doc says {encodings[key]}"
                assert job["type"] == "email.send", f"{name}: {job}"
                assert job["payload"] == f"welcome {key}".encode(), f"{name}: {job}"
                assert job["meta"] == {"producer": name}, f"{name}: meta {job['meta']}"
                now = datetime.datetime.now(datetime.timezone.utc)
                assert started <= job["created_at"] <= now, \
                    f"{name}: created_at {job['created_at']} not between {started} and {now}"
                assert partition == murmur2_partition(key), \
                    f"{name}: key {key} on partition {partition}, murmur2 says " \
                    f"{murmur2_partition(key)}"
                if name == "java":
                    java_partition[key] = partition
        if java_partition:  # Java's own client placed these keys: everyone agrees with it
            for (name, key), (partition, _, _) in seen.items():
                assert partition == java_partition[key], \
                    f"{name}: key {key} on {partition}, Java put it on {java_partition[key]}"
        ids = {job["id"] for _, _, job in seen.values()}
        assert len(ids) == total, f"{total - len(ids)} job ids used twice"

        # The real worker: every job decoded and run once, nothing retried or dead-lettered.
        record_file = os.path.join(tmp, "ran.jsonl")
        recorder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exec_recorder.py")
        watcher = KafkaConsumer(bootstrap_servers=b.split(","), api_version=(2, 5, 0))
        failed_topics = sorted(t for t in watcher.topics()
                               if t == "jobs.dlq" or t.startswith("jobs.retry."))
        assert "jobs.dlq" in failed_topics and "jobs.retry.1" in failed_topics, failed_topics

        def ran():
            if not os.path.exists(record_file):
                return []
            with open(record_file) as f:
                text = f.read()
            return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines()]

        # LoggedWorker passes its process this environment (read when it starts)
        os.environ["KJOBS_HANDLERS_EXEC"] = f"/usr/bin/python3 -u {recorder} {record_file}"
        try:
            worker = harness.LoggedWorker(b)
        finally:
            del os.environ["KJOBS_HANDLERS_EXEC"]
        with worker:
            harness.wait_until(
                f"the worker to run {total} jobs (or route some to the ladder/DLQ)",
                lambda: worker.proc.poll() is not None or
                len(ran()) + end_offsets(watcher, failed_topics) >= total, timeout=120)
            assert worker.proc.poll() is None, f"kjobs run exited {worker.proc.returncode}"
        routed = end_offsets(watcher, failed_topics)
        watcher.close()
        if routed:
            dlq = harness.run(harness.kjobs_cmd("peek", "-b", b, "--topic", "jobs.dlq",
                                                "--from-beginning", "--timeout", "5"),
                              check=False).stdout
            raise AssertionError(f"{routed} jobs retried or dead-lettered; DLQ:\n{dlq[:3000]}")
        jobs = ran()
        assert len(jobs) == total, f"the worker ran {len(jobs)} jobs, wanted {total}"
        by_id = {j["id"]: j for j in jobs}
        assert len(by_id) == total, "the worker ran a job twice"
        for (name, key), (partition, _, job) in seen.items():
            got = by_id.get(job["id"])
            assert got, f"{name}: job {job['id']} (key {key}) never ran"
            assert (got["type"], got["key"], got["topic"], got["partition"], got["meta"]) == \
                ("email.send", key, "jobs", partition, {"producer": name}), (name, got)
            assert base64.b64decode(got["payload_b64"]) == f"welcome {key}".encode()
            assert got["attempt"] == 1, got
    print(f"   {len(table)} producers x {len(KEYS)} keys: decoded and run by kjobs, each key on "
          f"its murmur2 partition of {PARTITIONS}", flush=True)


SNIPPET_RE = re.compile(r"<!-- file: (docs/producers/[^ ]+) -->\n```[a-z]*\n(.*?)```\n", re.S)


def test_doc_shows_the_tested_files():
    """Every snippet block in docs/producers.md is byte for byte a file in docs/producers/, and
    every file there is shown and run (FILES; CMakeLists.txt builds the C one)."""
    with open(DOC) as f:
        text = f.read()
    shown = {}
    for m in SNIPPET_RE.finditer(text):
        path = m.group(1)
        assert path not in shown, f"{path} shown twice"
        with open(os.path.join(SOURCE_DIR, path)) as f:
            content = f.read()
        assert m.group(2) == content, \
            f"docs/producers.md's block for {path} differs from the file " \
            f"(tests/integration/test_producers.py --write-doc copies the files in)"
        shown[path] = True
    files = {f"docs/producers/{n}" for n in os.listdir(SNIPPETS)}
    assert set(shown) == files, f"not shown: {sorted(files - set(shown))}, " \
                                f"shown but missing: {sorted(set(shown) - files)}"
    run_files = {f"docs/producers/{n}" for n in FILES.values()}
    run_files.add("docs/producers/CMakeLists.txt")  # builds producer.c's binary
    from test_schema_registry import SR_FILES  # Schema Registry producers run there
    run_files |= {f"docs/producers/{n}" for n in SR_FILES.values()}
    assert run_files == files, f"files in docs/producers/ no test runs: {sorted(files - run_files)}"


def write_doc():
    with open(DOC) as f:
        text = f.read()

    def fill(m):
        with open(os.path.join(SOURCE_DIR, m.group(1))) as f:
            return m.group(0)[:m.start(2) - m.start(0)] + f.read() + "```\n"
    with open(DOC, "w") as f:
        f.write(SNIPPET_RE.sub(fill, text))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-doc"]:
        write_doc()
        sys.exit(0)
    harness.main([test_doc_shows_the_tested_files, test_keys_are_discriminating,
                  test_every_producer_enqueues_jobs_kjobs_runs])
