"""test_scheduling.py — delayed and scheduled jobs (docs/scheduling.md), end to end: a real
`kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA) and real `kjobs run` workers whose jobs run
in an exec handler (exec_recorder.py --time) that records when each one started. Run with
/usr/bin/python3.

What is checked:
- `kjobs enqueue --delay` and `--at` jobs carry kjobs-run-at (and not the deprecated alias
  kjobs-deliver-at), never start before it (the handler's own clock, start >= due), nor later
  than the shortest ladder step (+ slack) after it; they run once, as attempt 1, from a ladder
  topic.
- Independent clients set the header themselves: kafka-python and KafkaJS jobs with
  kjobs-run-at, one kafka-python job with only the deprecated alias kjobs-deliver-at, and one
  with both names saying the same time are all held (start >= due, from a ladder topic) while
  a due job behind them on the same partition runs at once.
- Due jobs enqueued behind them on the same partition are not blocked: every one starts
  before the first delayed job is due.
- Nothing is lost, nothing runs twice; the main topic's offsets complete (lag 0 at the end).
- A kjobs-run-at in the past runs at once from the main topic.
- Malformed, repeated or too-far (beyond schedule.max_delay) kjobs-run-at, kjobs-run-at and
  kjobs-deliver-at on one record saying different times, and a delayed job with no retry
  ladder configured, go to the DLQ with class invalid-header and a reason naming the header;
  a valid job behind them still runs.
- `kjobs enqueue`: --delay with --at, a bad duration, a bad RFC 3339 time and a delay beyond
  schedule.max_delay are usage errors (exit 2) with a clear message.
The precision (start - due, p50/p99) is printed; bench/scheduling_precision.py measures it for
longer delays.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
from harness import hdrs  # noqa: E402
import procs  # noqa: E402
from procs import Worker, peek_all  # noqa: E402
from test_ladder import avro_job  # noqa: E402

RECORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exec_recorder.py")
NODE_PATH = os.pathsep.join(p for p in (
    os.environ.get("NODE_PATH"),
    os.path.join(harness.SOURCE_DIR, ".deps", "node", "node_modules")) if p)

# KafkaJS + avsc, as docs/scheduling.md shows it: argv BOOTSTRAP SCHEMA DELAY_MS ID...; each job
# gets kjobs-run-at = Date.now() + DELAY_MS, key "k"; prints nothing, exits 0 when all acked.
KAFKAJS_SCHEDULE = r"""
'use strict';
const fs = require('fs');
const avro = require('avsc');
const { Kafka, Partitioners, logLevel } = require('kafkajs');
const [bootstrap, schema, delayMs, ...ids] = process.argv.slice(2);
const jobType = avro.Type.forSchema(JSON.parse(fs.readFileSync(schema, 'utf8')));
(async () => {
  const kafka = new Kafka({ brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const dueMs = Date.now() + Number(delayMs);
  await producer.send({
    topic: 'jobs', acks: -1,
    messages: ids.map((id) => ({
      key: 'k',
      value: jobType.toBuffer({ id, type: 'app.delayed', payload: Buffer.from('x'),
                                created_at: Date.now(), meta: {} }),
      headers: { 'kjobs-run-at': String(dueMs) },
    })),
  });
  await producer.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def recorded(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def enqueue(bootstrap, *args, check=True):
    p = harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap, *args), check=check)
    return p if not check else p.stdout.split()


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))]


def worker_env(record_file, **extra):
    env = {"KJOBS_HANDLERS_EXEC": f"/usr/bin/python3 -u {RECORDER} {record_file} --time",
           "KJOBS_KAFKA_CLIENT_ID": "scheduling"}
    env.update(extra)
    return env


def test_delayed_jobs_run_when_due_and_block_nothing():
    record_file = tempfile.mktemp(prefix="kjobs-sched-", suffix=".jsonl")
    env = worker_env(record_file, KJOBS_RETRY_DELAYS="1s,5s,30s")
    with procs.Broker(partitions=1) as broker:
        w = Worker(broker.bootstrap, env=env)
        try:
            w.wait_assigned()
            t0 = int(time.time() * 1000)
            delayed = enqueue(broker.bootstrap, "--type", "app.delayed", "--key", "k",
                              "--delay", "4s", "--count", "10")
            at = datetime.datetime.fromtimestamp((t0 + 6500) / 1000, datetime.timezone.utc)
            at_text = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            at_ids = enqueue(broker.bootstrap, "--type", "app.at", "--key", "k", "--at", at_text,
                             "--count", "5")
            past = enqueue(broker.bootstrap, "--type", "app.past", "--key", "k",
                           "--at", "2020-01-01T00:00:00Z")
            due_now = enqueue(broker.bootstrap, "--type", "app.now", "--key", "k",
                              "--count", "20")
            want = set(delayed) | set(at_ids) | set(past) | set(due_now)
            harness.wait_until("every job to run",
                               lambda: want <= {r["id"] for r in recorded(record_file)}, 60)
            assert w.stop() == 0
        finally:
            w.close()
        runs = recorded(record_file)
        os.unlink(record_file)
        ids = [r["id"] for r in runs]
        assert len(ids) == len(set(ids)) == len(want) and set(ids) == want, \
            f"lost or duplicated: {len(ids)} runs, {len(set(ids))} distinct, {len(want)} enqueued"
        main = {r["id"]: r for r in peek_all(broker.bootstrap, "jobs")}
        by_id = {r["id"]: r for r in runs}
        lateness = []
        for job_id in list(delayed) + list(at_ids) + list(past):
            h = hdrs(main[job_id])
            assert "kjobs-run-at" in h and "kjobs-deliver-at" not in h, (job_id, h)
        for job_id in list(delayed) + list(at_ids):
            due = int(hdrs(main[job_id])["kjobs-run-at"])
            run = by_id[job_id]
            assert run["started_at_ms"] >= due, (job_id, run["started_at_ms"], due)
            assert run["attempt"] == 1 and run["topic"].startswith("jobs.retry."), run
            lateness.append(run["started_at_ms"] - due)
        at_due = int(hdrs(main[at_ids[0]])["kjobs-run-at"])
        assert at_due == int(at.timestamp() * 1000), (at_due, at)
        first_due = min(int(hdrs(main[i])["kjobs-run-at"]) for i in delayed)
        for job_id in list(due_now) + list(past):
            run = by_id[job_id]
            assert run["topic"] == "jobs" and run["attempt"] == 1, run
            assert run["started_at_ms"] < first_due, \
                f"a due job waited behind a delayed one: started {run['started_at_ms']}, " \
                f"first delayed due {first_due}"
        assert w.counts["job not due yet, scheduled"] == 15, w.counts
        # the bound docs/scheduling.md gives: the last leg may wait behind records of the
        # shortest step (1 s here) written before it; 3 s of slack for a loaded machine
        assert max(lateness) <= 1000 + 3000, sorted(lateness)
        print(f"  start - due over {len(lateness)} delayed jobs (4 s and 6.5 s, ladder 1s,5s,30s): "
              f"p50 {percentile(lateness, 50)} ms, p99 {percentile(lateness, 99)} ms, "
              f"max {max(lateness)} ms")


def test_independent_clients_schedule_with_run_at():
    """kafka-python and KafkaJS producers set kjobs-run-at themselves (../shared/CONTRACT.md);
    one job uses only the deprecated alias kjobs-deliver-at, one both names with one time."""
    record_file = tempfile.mktemp(prefix="kjobs-sched-", suffix=".jsonl")
    js_file = tempfile.mktemp(prefix="kjobs-sched-", suffix=".js")
    with open(js_file, "w") as f:
        f.write(KAFKAJS_SCHEDULE)
    env = worker_env(record_file, KJOBS_RETRY_DELAYS="1s,5s,30s")
    py_ids = [f"py-run-at-{i}" for i in range(3)]
    js_ids = [f"js-run-at-{i}" for i in range(3)]
    scheduled = py_ids + js_ids + ["py-alias", "py-both"]
    with procs.Broker(partitions=1) as broker:
        w = Worker(broker.bootstrap, env=env)
        try:
            w.wait_assigned()
            producer = harness.python_producer(broker.bootstrap)

            def send(job_id, type_, headers):
                now = int(time.time() * 1000)
                producer.send("jobs", key=b"k", value=avro_job(job_id, type_, b"x", now),
                              headers=headers).get(timeout=30)

            def due_in(ms):
                return str(int(time.time() * 1000) + ms).encode()
            p = subprocess.run(["node", js_file, broker.bootstrap,
                                os.path.join(harness.SOURCE_DIR, "schemas", "job.avsc"), "5000",
                                *js_ids], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, NODE_PATH=NODE_PATH))
            assert p.returncode == 0, f"KafkaJS producer exited {p.returncode}: {p.stderr[-3000:]}"
            for job_id in py_ids:
                send(job_id, "app.delayed", [("kjobs-run-at", due_in(4000))])
            send("py-alias", "app.delayed", [("kjobs-deliver-at", due_in(4000))])
            both = due_in(4000)
            send("py-both", "app.delayed", [("kjobs-deliver-at", both), ("kjobs-run-at", both)])
            send("py-now", "app.now", [("x-app", b"1")])
            producer.flush()
            producer.close()
            want = set(scheduled) | {"py-now"}
            harness.wait_until("every job to run",
                               lambda: want <= {r["id"] for r in recorded(record_file)}, 60)
            assert w.stop() == 0
        finally:
            w.close()
            os.unlink(js_file)
        runs = recorded(record_file)
        os.unlink(record_file)
        ids = [r["id"] for r in runs]
        assert len(ids) == len(set(ids)) and set(ids) == want, sorted(ids)
        main = {r["id"]: hdrs(r) for r in peek_all(broker.bootstrap, "jobs")}
        by_id = {r["id"]: r for r in runs}
        dues = {}
        for job_id in scheduled:
            h = main[job_id]
            dues[job_id] = int(h["kjobs-deliver-at" if job_id == "py-alias" else "kjobs-run-at"])
            run = by_id[job_id]
            assert run["started_at_ms"] >= dues[job_id], \
                f"{job_id} ran early: started {run['started_at_ms']}, due {dues[job_id]}"
            assert run["attempt"] == 1 and run["topic"].startswith("jobs.retry."), run
        assert "kjobs-run-at" not in main["py-alias"], main["py-alias"]
        now_run = by_id["py-now"]
        assert now_run["topic"] == "jobs" and now_run["started_at_ms"] < min(dues.values()), \
            (now_run, min(dues.values()))
        assert w.counts["job not due yet, scheduled"] == len(scheduled), w.counts
        late = {i: by_id[i]["started_at_ms"] - dues[i] for i in scheduled}
        assert max(late.values()) <= 1000 + 3000, late
        print(f"  independent clients: {len(scheduled)} jobs held until due, start - due "
              f"max {max(late.values())} ms (py-alias {late['py-alias']} ms)")


def test_bad_due_times_are_dead_lettered_with_the_reason():
    record_file = tempfile.mktemp(prefix="kjobs-sched-", suffix=".jsonl")
    now = int(time.time() * 1000)
    later = str(now + 60 * 1000).encode()
    cases = {  # id -> (headers, expected reason fragment, header it names)
        "sched-garbage": ([("kjobs-run-at", b"tomorrow")], "not a decimal epoch time",
                          "kjobs-run-at"),
        "sched-signed": ([("kjobs-run-at", b"+1000")], "not a decimal epoch time",
                         "kjobs-run-at"),
        "sched-twice": ([("kjobs-run-at", str(now).encode()),
                         ("kjobs-run-at", str(now).encode())], "more than once", "kjobs-run-at"),
        "sched-too-far": ([("kjobs-run-at", str(now + 2 * 3600 * 1000).encode())],
                          "more than schedule.max_delay", "kjobs-run-at"),
        # both names, different times: ambiguous, never guessed (the earlier would run early)
        "sched-disagree": ([("kjobs-run-at", later), ("kjobs-deliver-at", str(now).encode())],
                           "both must be the same time", "kjobs-deliver-at"),
    }
    with procs.Broker(partitions=1) as broker:
        producer = harness.python_producer(broker.bootstrap)
        for job_id, (headers, _, _) in cases.items():
            producer.send("jobs", key=b"k", value=avro_job(job_id, "app.bad", b"x", now),
                          headers=headers).get(timeout=30)
        producer.send("jobs", key=b"k", value=avro_job("sched-after", "app.ok", b"x", now),
                      headers=[("x-app", b"1")]).get(timeout=30)
        producer.flush()
        producer.close()
        w = Worker(broker.bootstrap,
                   env=worker_env(record_file, KJOBS_RETRY_DELAYS="1s",
                                  KJOBS_SCHEDULE_MAX_DELAY="1h"))
        try:
            w.wait_count("job failed, dead-lettered", len(cases), 30)
            harness.wait_until("the job behind them to run",
                               lambda: "sched-after" in {r["id"] for r in recorded(record_file)},
                               30)
            assert w.stop() == 0
        finally:
            w.close()
        ran = {r["id"] for r in recorded(record_file)}
        os.unlink(record_file)
        assert ran == {"sched-after"}, ran
        dlq = {r["id"]: hdrs(r) for r in peek_all(broker.bootstrap, "jobs.dlq")}
        assert set(dlq) == set(cases), dlq.keys()
        for job_id, (_, why, header) in cases.items():
            h = dlq[job_id]
            assert h["kjobs-error-class"] == "invalid-header", (job_id, h)
            assert "invalid kjobs-run-at header" in h["kjobs-error"] or \
                h["kjobs-error"].startswith("kjobs-run-at too far ahead"), (job_id, h)
            assert header in h["kjobs-error"] and why in h["kjobs-error"], (job_id, h)
            assert h["kjobs-attempt"] == "1" and h["kjobs-original-topic"] == "jobs", h
        assert not peek_all(broker.bootstrap, "jobs.retry.1"), "a bad due time was scheduled"


def test_no_ladder_dead_letters_a_delayed_job():
    record_file = tempfile.mktemp(prefix="kjobs-sched-", suffix=".jsonl")
    with procs.Broker(partitions=1) as broker:
        [delayed] = enqueue(broker.bootstrap, "--type", "app.delayed", "--key", "k",
                            "--delay", "1m")
        [after] = enqueue(broker.bootstrap, "--type", "app.ok", "--key", "k")
        w = Worker(broker.bootstrap, env=worker_env(record_file, KJOBS_RETRY_DELAYS=""))
        try:
            w.wait_count("job failed, dead-lettered", 1, 30)
            harness.wait_until("the job behind it to run",
                               lambda: after in {r["id"] for r in recorded(record_file)}, 30)
            assert w.stop() == 0
        finally:
            w.close()
        ran = {r["id"] for r in recorded(record_file)}
        os.unlink(record_file)
        assert ran == {after}, ran
        [dead] = peek_all(broker.bootstrap, "jobs.dlq")
        h = hdrs(dead)
        assert dead["id"] == delayed and h["kjobs-error-class"] == "invalid-header", h
        assert "no retry ladder" in h["kjobs-error"], h


def test_enqueue_flag_errors():
    with procs.Broker(partitions=1) as broker:
        b = broker.bootstrap
        for args, why in (
                (("--delay", "10s", "--at", "2030-01-01T00:00:00Z"), "mutually exclusive"),
                (("--delay", "soon"), "--delay: expected a duration"),
                (("--delay", "-5s"), "--delay: expected a duration"),
                (("--at", "2030-01-01 00:00"), "--at: expected an RFC 3339 time"),
                (("--at", "2030-02-30T00:00:00Z"), "--at: expected an RFC 3339 time"),
                (("--delay", "8d"), "more than schedule.max_delay"),
        ):
            p = enqueue(b, "--type", "app.x", *args, check=False)
            assert p.returncode == 2 and why in p.stderr, (args, p.returncode, p.stderr)
            assert not p.stdout.strip(), p.stdout
        p = enqueue(b, "--type", "app.x", "--delay", "2h", check=False)
        assert p.returncode == 0, p.stderr  # within the default 7 days
        help_text = harness.run(harness.kjobs_cmd("enqueue", "--help")).stdout
        assert "--delay DURATION" in help_text and "--at RFC3339" in help_text, help_text


if __name__ == "__main__":
    harness.main([test_delayed_jobs_run_when_due_and_block_nothing,
                  test_independent_clients_schedule_with_run_at,
                  test_bad_due_times_are_dead_lettered_with_the_reason,
                  test_no_ladder_dead_letters_a_delayed_job,
                  test_enqueue_flag_errors])
