"""test_flow_control.py — flow control per job type (`limits`, docs/flow-control.md), end to end:
a real `kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA) and real `kjobs run` workers whose
jobs run in an exec handler (exec_recorder.py --sleep) that records when each job started and
ended. Jobs are produced by kafka-python to chosen partitions. Run with /usr/bin/python3.

What is checked:
- A concurrency cap of 1 holds: the run intervals of the capped type never overlap, on 4
  partitions and 4 worker threads — and the same jobs run by a group without the limit do
  overlap (so the check can fail). Per-partition order holds under the cap; every job runs
  once; kjobs_throttle_wait_seconds{limit="concurrency"} moves.
- A rate limit of 5/s (burst 1) holds: in no 1-second window do more than burst + 5 jobs of the
  type start (one more for clock jitter between admission and the handler), and 15 jobs take at
  least the 2.8 s the rate implies; jobs of another type on another partition are not held
  back by it (they all start before the fifth paced job); kjobs_throttle_wait_seconds{limit=
  "rate"} moves.
- A throttled worker still stops cleanly on SIGTERM (exit 0) with the rest of its jobs unrun
  and uncommitted: a second worker of the same group runs exactly those.
- A partition waiting for a token does not keep the circuit breaker from closing after its
  cooldown.
- An empty Fetch holds the worker's fetching up for about 100 ms, kjobs' fetch.wait.max.ms
  (librdkafka's own default, 500 ms, stalled drains: docs/configuration.md), and a user's
  fetch.wait.max.ms still wins: librdkafka's fetch debug of an idle worker shows its group
  consumer's Fetches following each other at that interval.
- A new group starts every partition at its log start offset, resolved when it is assigned
  ("partition assigned" names a real offset, not librdkafka's logical "beginning", -2, which
  librdkafka resolved per partition and, for a partition whose leader it had not reached yet,
  500 ms later: on Kafka 11 of 16 partitions of a fresh group started half a second late); on
  real Kafka, records deleted from the head of a partition (DeleteRecords) move that offset,
  and the first job run there is the first one kept.
"""
import collections
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
from procs import Worker  # noqa: E402
from test_ladder import avro_job  # noqa: E402
from test_real_faults import delete_records  # noqa: E402
from test_scheduling import RECORDER, recorded  # noqa: E402


def produce_records(bootstrap, records):
    """records: [(partition, id, key bytes or None, type)] produced to "jobs" in order,
    acks=all, each acknowledged before the next (kafka-python)."""
    # retries: on real Kafka a topic just (re)created may not have its leaders known yet
    producer = harness.python_producer(bootstrap)
    now = int(time.time() * 1000)
    for partition, job_id, key, type_ in records:
        producer.send("jobs", partition=partition, key=key,
                      value=avro_job(job_id, type_, b"x", now)).get(timeout=30)
    producer.flush()
    producer.close()


def produce(bootstrap, plan):
    """plan: [(partition, id, type)], keyed k<partition>."""
    produce_records(bootstrap, [(p, i, f"k{p}".encode(), t) for p, i, t in plan])


def worker_env(record_file, sleep_ms, group, limits=None, **extra):
    env = {"KJOBS_HANDLERS_EXEC":
           f"/usr/bin/python3 -u {RECORDER} {record_file} --sleep {sleep_ms}",
           "KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_RETRY_DELAYS": "1s"}
    if limits is not None:
        env["KJOBS_LIMITS"] = json.dumps(limits)
    env.update(extra)
    return env


def max_overlap(runs):
    """Most run intervals [started, ended) open at one instant."""
    events = sorted([(r["started_at_ms"], 1) for r in runs] + [(r["ended_at_ms"], -1) for r in runs],
                    key=lambda e: (e[0], e[1]))  # an end at t closes before a start at t opens
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def run_group(bootstrap, group, want, sleep_ms, limits=None, **extra):
    record_file = tempfile.mktemp(prefix="kjobs-flow-", suffix=".jsonl")
    w = Worker(bootstrap, env=worker_env(record_file, sleep_ms, group, limits, **extra))
    try:
        port = w.http_port()
        harness.wait_until(f"group {group} to run every job",
                           lambda: want <= {r["id"] for r in recorded(record_file)}, 120)
        waits = w.metric_sum(port, "kjobs_throttle_wait_seconds_count")
        assert w.stop() == 0
    finally:
        w.close()
    runs = recorded(record_file)
    os.unlink(record_file)
    ids = [r["id"] for r in runs]
    assert len(ids) == len(set(ids)) and set(ids) == want, \
        f"group {group}: lost or duplicated ({len(ids)} runs, {len(set(ids))} distinct)"
    return runs, waits


def test_concurrency_cap():
    plan = [(p, f"slow-{p}-{i}", "app.slow") for i in range(3) for p in range(4)]
    want = {job_id for _, job_id, _ in plan}
    with procs.Broker(partitions=4) as broker:
        produce(broker.bootstrap, plan)
        free, free_waits = run_group(broker.bootstrap, "flow-nocap", want, 150,
                                     KJOBS_WORKERS="4", KJOBS_BATCH_MAX_JOBS="1")
        capped, capped_waits = run_group(
            broker.bootstrap, "flow-cap", want, 150,
            limits=[{"type": "app.slow", "concurrency": 1}], KJOBS_WORKERS="4",
            KJOBS_BATCH_MAX_JOBS="1")
    assert max_overlap(free) >= 2, "without a cap the jobs never overlapped: the check is void"
    assert max_overlap(capped) == 1, f"cap 1 exceeded: {max_overlap(capped)} ran at once"
    assert free_waits == 0 and capped_waits > 0, (free_waits, capped_waits)
    for p in range(4):
        order = [r["offset"] for r in sorted(capped, key=lambda r: r["started_at_ms"])
                 if r["partition"] == p]
        assert order == sorted(order), f"partition {p} ran out of order under the cap: {order}"
    print(f"  max overlap: {max_overlap(free)} without the cap, {max_overlap(capped)} with it; "
          f"{int(capped_waits)} waits")


def test_rate_limit():
    paced = [(0, f"paced-{i}", "app.paced") for i in range(15)]
    free = [(1, f"free-{i}", "app.free") for i in range(20)]
    want = {job_id for _, job_id, _ in paced + free}
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, paced + free)
        runs, waits = run_group(broker.bootstrap, "flow-rate", want, 1,
                                limits=[{"type": "app.paced", "rate": "5/s"}],
                                KJOBS_WORKERS="2")
    starts = sorted(r["started_at_ms"] for r in runs if r["type"] == "app.paced")
    window = max(sum(1 for t in starts if s <= t < s + 1000) for s in starts)
    span = starts[-1] - starts[0]
    assert window <= 1 + 5 + 1, f"{window} paced jobs started within one second (rate 5/s)"
    assert span >= 2800 - 200, f"15 jobs at 5/s took only {span} ms"
    fifth = starts[4]
    late_free = [r for r in runs if r["type"] == "app.free" and r["started_at_ms"] >= fifth]
    assert not late_free, f"{len(late_free)} jobs of another partition waited for the rate"
    assert waits >= 10, f"kjobs_throttle_wait_seconds counted {waits} waits for 15 paced jobs"
    print(f"  15 jobs at 5/s: span {span} ms, at most {window} in any second, {int(waits)} waits")


def test_throttled_worker_stops_and_leaves_the_rest():
    plan = [(0, f"held-{i}", "app.held") for i in range(8)]
    want = {job_id for _, job_id, _ in plan}
    record_file = tempfile.mktemp(prefix="kjobs-flow-", suffix=".jsonl")
    with procs.Broker(partitions=1) as broker:
        produce(broker.bootstrap, plan)
        w = Worker(broker.bootstrap,
                   env=worker_env(record_file, 1, "flow-stop",
                                  [{"type": "app.held", "rate": "1/1m"}]))
        try:
            harness.wait_until("the first job to run",
                               lambda: len(recorded(record_file)) >= 1, 60)
            w.wait_for(lambda l: l["msg"] == "job over its type's limit, partition waits", 30,
                       "the next job to wait for its token")
            assert w.stop() == 0, "a worker waiting on a rate limit did not stop cleanly"
        finally:
            w.close()
        first = {r["id"] for r in recorded(record_file)}
        assert len(first) == 1, first
        w2 = Worker(broker.bootstrap, env=worker_env(record_file, 1, "flow-stop"))
        try:
            harness.wait_until("the rest to run",
                               lambda: want <= {r["id"] for r in recorded(record_file)}, 60)
            assert w2.stop() == 0
        finally:
            w2.close()
    ids = [r["id"] for r in recorded(record_file)]
    os.unlink(record_file)
    assert len(ids) == len(set(ids)) == len(want), \
        f"the stopped worker's unrun jobs ran {len(ids)} times for {len(want)} jobs"


def test_breaker_is_not_held_by_a_rate_wait():
    """A partition waiting for a token (1/1m) must not keep the circuit breaker from closing
    after its 2 s cooldown: its waiting jobs are dropped and re-read like any held job."""
    held = [(0, f"held-{i}", "app.held") for i in range(3)]
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, held)
        record_file = tempfile.mktemp(prefix="kjobs-flow-", suffix=".jsonl")
        w = Worker(broker.bootstrap,
                   env=worker_env(record_file, 1, "flow-breaker",
                                  [{"type": "app.held", "rate": "1/1m"}],
                                  KJOBS_HANDLERS_EXEC_TYPES="app.held",
                                  KJOBS_DLQ_BREAKER_CONSECUTIVE="3",
                                  KJOBS_DLQ_BREAKER_COOLDOWN="2s"))
        try:
            w.wait_for(lambda l: l["msg"] == "job over its type's limit, partition waits", 60,
                       "the second job to wait for its token")
            # held-0's success is fed to the breaker after its exec child answered: before the
            # dead letters, or it would break their run of 3 (seen on a loaded CI machine)
            w.wait_for(lambda l: l["msg"] == "job done" and l.get("id") == "held-0", 60,
                       "the first job to finish")
            # jobs of a type nothing handles: dead-lettered (unknown-type), the breaker opens
            produce(broker.bootstrap, [(1, f"orphan-{i}", "app.orphan") for i in range(4)])
            opened = w.wait_for(lambda l: l["msg"] == "circuit breaker OPEN: consumption stopped",
                                60, "the breaker to open")
            closed = w.wait_for(lambda l: l["msg"] == "circuit breaker closed: consumption resumed",
                                30, "the breaker to close after its cooldown")
            took = procs.log_ts_ms(closed) - procs.log_ts_ms(opened)
            assert took < 10000, f"the breaker closed {took} ms after opening (cooldown 2 s)"
            assert w.stop() == 0
        finally:
            w.close()
        ran = [r["id"] for r in recorded(record_file)]
        os.unlink(record_file)
    assert ran == ["held-0"], ran
    print(f"  breaker closed {took} ms after opening, with a partition waiting for a 1/1m token")


FETCH_SENT = re.compile(r"^\[thrd:([^\]]+)\]: .*Fetch \d+/\d+/\d+ toppar")
FETCH_CONTROL = re.compile(r"Fetch topic \S+\.control \[")


def idle_fetch_interval_ms(bootstrap, group, args=()):
    """Median time (ms) between the group consumer's Fetch requests to one broker while nothing
    is produced: each is empty, so the broker holds it for fetch.wait.max.ms before answering.
    librdkafka has one Fetch in flight per broker, so the interval is taken per (client, broker
    thread); the control topic's reader (a client of its own) is left out. (A group of its own
    each time: a classic member that left is forgotten only after its session timeout.)"""
    w = Worker(bootstrap, env={"KJOBS_RDKAFKA_DEBUG": "fetch", "KJOBS_KAFKA_GROUP": group},
               args=args, fast_fetch=False)
    sent, control = collections.defaultdict(list), set()
    try:
        w.wait_assigned()

        def enough(line):
            if line.get("facility") != "FETCH":
                return False
            if FETCH_CONTROL.search(line["msg"]):
                control.add(line.get("client"))
            m = FETCH_SENT.search(line["msg"])
            if m:
                sent[(line.get("client"), m.group(1))].append(procs.log_ts_ms(line))
            return any(len(v) >= 8 for k, v in sent.items() if k[0] not in control)
        w.wait_for(enough, 30, "8 Fetch requests of the group consumer to one broker")
        assert w.stop() == 0
    finally:
        w.close()
    gaps = sorted(b - a for k, v in sent.items() if k[0] not in control
                  for a, b in zip(v[2:], v[3:]))  # past the first, partial ones
    return gaps[len(gaps) // 2]


def test_an_empty_fetch_holds_fetching_up_for_100_ms():
    with procs.Broker(partitions=2) as broker:
        ours = idle_fetch_interval_ms(broker.bootstrap, "fetch-ours")
        users = idle_fetch_interval_ms(broker.bootstrap, "fetch-users",
                                       ("-X", "fetch.wait.max.ms=500"))
    print(f"  empty Fetches every {ours} ms (kjobs' setting), {users} ms (-X "
          f"fetch.wait.max.ms=500)")
    assert 60 <= ours <= 250, f"kjobs' fetch wait: Fetches {ours} ms apart, expected ~100"
    assert users >= 400, f"the user's fetch.wait.max.ms=500 did not win: {users} ms apart"


def test_a_new_group_starts_at_each_log_start_offset():
    parts = 4
    with procs.Broker(partitions=parts) as broker:
        produce(broker.bootstrap, [(p, f"start-{p}-{i}", "kjobs.noop")
                                   for p in range(parts) for i in range(3)])
        kept = {p: 0 for p in range(parts)}
        if harness.REAL_KAFKA:  # the head of partition 1 deleted: its log start moves to 2
            delete_records(broker.bootstrap, "jobs", {1: 2})
            kept[1] = 2
        want = {f"start-{p}-{i}" for p in range(parts) for i in range(kept[p], 3)}
        done = set()

        def all_done(line):
            if line["msg"] == "job done" and line.get("id") in want:
                done.add(line["id"])
            return done == want
        w = Worker(broker.bootstrap, env={"KJOBS_KAFKA_GROUP": "log-start"})
        try:
            w.wait_for(all_done, 60, "the kept jobs to run")
            starts = {l["partition"]: l["offset"] for l in w.msgs("partition assigned")
                      if l["topic"] == "jobs"}
            ran = {l["id"] for l in w.msgs("job done")}
            assert w.stop() == 0
        finally:
            w.close()
    print(f"  partitions assigned at {starts} (log start offsets {kept})")
    assert starts == kept, f"assigned at {starts}, log start offsets {kept}"
    assert not ran - want, f"deleted jobs ran: {sorted(ran - want)}"


if __name__ == "__main__":
    harness.main([test_concurrency_cap, test_rate_limit,
                  test_throttled_worker_stops_and_leaves_the_rest,
                  test_breaker_is_not_held_by_a_rate_wait,
                  test_an_empty_fetch_holds_fetching_up_for_100_ms,
                  test_a_new_group_starts_at_each_log_start_offset])
