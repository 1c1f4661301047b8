"""test_key_ordering.py — per-key parallelism (batch.ordering = "key", docs/ordering.md), end to
end: a real `kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA) and real `kjobs run` workers
whose jobs run in an exec handler (exec_recorder.py --sleep) that records when each job started
and ended. Jobs are produced by kafka-python to chosen partitions, with chosen keys. Run with
/usr/bin/python3.

What is checked, with key ordering on 2 partitions and 4 worker threads:
- per key, jobs start in offset order and never overlap (each starts after the previous one of
  its key ended);
- jobs of different keys of ONE partition overlap in time (more than one running at once in a
  single partition) — and the same jobs under the default partition ordering never do, so the
  overlap check can fail (and the order checker is shown a crafted violation first);
- every job, keyed or keyless, ran exactly once on a clean run;
- after the worker stopped (SIGTERM), the group's committed offset of every main partition is
  its high watermark (`kjobs lag`).
- A worker stopped mid-run with key lanes busy leaves nothing behind: a second worker of the
  group runs the rest; every job ran at least once, and per key the second worker's runs are in
  offset order too (a job the first finished above its partition's committed offset may run
  again: at-least-once, as documented).
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
from procs import Worker  # noqa: E402
from test_flow_control import max_overlap, produce_records  # noqa: E402
from test_scheduling import RECORDER, recorded  # noqa: E402


def produce(bootstrap, plan):
    """plan: [(partition, id, key or None)] produced in order, acks=all, type app.keyed."""
    produce_records(bootstrap, [(p, i, k.encode() if k else None, "app.keyed")
                                for p, i, k in plan])


def make_plan(partitions=2, keys=8, per_key=4, keyless=6):
    """Keys interleaved within each partition (k0, k1, ... k7, k0, ...), keyless jobs between."""
    plan = []
    for i in range(per_key):
        for k in range(keys):
            for p in range(partitions):
                plan.append((p, f"p{p}-k{k}-{i}", f"p{p}-k{k}"))
        for p in range(partitions):
            for n in range(keyless * i // per_key, keyless * (i + 1) // per_key):
                plan.append((p, f"p{p}-nokey-{n}", None))
    return plan


def worker_env(record_file, group, ordering, sleep_ms=40, **extra):
    env = {"KJOBS_HANDLERS_EXEC":
           f"/usr/bin/python3 -u {RECORDER} {record_file} --sleep {sleep_ms}",
           "KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_RETRY_DELAYS": "1s", "KJOBS_WORKERS": "4", "KJOBS_BATCH_ORDERING": ordering}
    env.update(extra)
    return env


def key_order_violations(runs):
    """Per key (keyless jobs have no order): runs sorted by start must have increasing offsets,
    each starting at or after the previous one's end. Returns a list of readable violations."""
    by_key = {}
    for r in runs:
        if r.get("key") is not None:
            by_key.setdefault((r["partition"], r["key"]), []).append(r)
    bad = []
    for key, rs in by_key.items():
        rs.sort(key=lambda r: (r["started_at_ms"], r["ended_at_ms"]))
        for a, b in zip(rs, rs[1:]):
            if b["offset"] <= a["offset"]:
                bad.append(f"{key}: offset {b['offset']} started after {a['offset']}")
            if b["started_at_ms"] < a["ended_at_ms"]:
                bad.append(f"{key}: offset {b['offset']} started at {b['started_at_ms']} before "
                           f"offset {a['offset']} ended at {a['ended_at_ms']}")
    return bad


def committed_vs_end(bootstrap, group):
    """{partition: (committed, log end)} of the main topic for `group` (`kjobs lag --json`)."""
    p = harness.run(harness.kjobs_cmd("lag", "-b", bootstrap, "-G", group, "--json"))
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    return {r["partition"]: (r["current_offset"], r["log_end_offset"])
            for r in rows if r["topic"] == "jobs"}


def run_group(bootstrap, group, ordering, want, **extra):
    record_file = tempfile.mktemp(prefix="kjobs-keyord-", suffix=".jsonl")
    w = Worker(bootstrap, env=worker_env(record_file, group, ordering, **extra))
    try:
        w.http_port()
        harness.wait_until(f"group {group} to run every job",
                           lambda: want <= {r["id"] for r in recorded(record_file)}, 120)
        assert w.stop() == 0
    finally:
        w.close()
    runs = recorded(record_file)
    os.unlink(record_file)
    return runs


def test_checker_catches_a_violation():
    """The order check can fail: a crafted overlap and a crafted reversal are both reported."""
    ok = [{"partition": 0, "key": "a", "offset": 1, "started_at_ms": 0, "ended_at_ms": 10},
          {"partition": 0, "key": "a", "offset": 2, "started_at_ms": 10, "ended_at_ms": 20}]
    overlap = [dict(ok[0]), dict(ok[1], started_at_ms=5)]
    reversed_ = [dict(ok[0], offset=3), ok[1]]
    assert key_order_violations(ok) == []
    assert len(key_order_violations(overlap)) == 1, key_order_violations(overlap)
    assert len(key_order_violations(reversed_)) == 1, key_order_violations(reversed_)


def test_keys_run_in_parallel_in_order_once():
    plan = make_plan()
    want = {job_id for _, job_id, _ in plan}
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, plan)
        by_key = run_group(broker.bootstrap, "keyord-key", "key", want)
        key_offsets = committed_vs_end(broker.bootstrap, "keyord-key")
        by_partition = run_group(broker.bootstrap, "keyord-partition", "partition", want)
    for name, runs in (("key", by_key), ("partition", by_partition)):
        ids = [r["id"] for r in runs]
        assert len(ids) == len(set(ids)) and set(ids) == want, \
            f"{name} ordering: lost or duplicated ({len(ids)} runs, {len(set(ids))} distinct)"
        bad = key_order_violations(runs)
        assert not bad, f"{name} ordering broke key order: {bad[:5]}"
    overlap_key = {p: max_overlap([r for r in by_key if r["partition"] == p]) for p in (0, 1)}
    overlap_part = {p: max_overlap([r for r in by_partition if r["partition"] == p])
                    for p in (0, 1)}
    assert all(n == 1 for n in overlap_part.values()), \
        f"partition ordering ran jobs of one partition at once: {overlap_part}"
    assert all(n >= 2 for n in overlap_key.values()), \
        f"key ordering never ran two keys of one partition at once: {overlap_key}"
    for p, (committed, end) in key_offsets.items():
        assert committed == end, f"partition {p}: committed {committed}, high watermark {end}"
    span = lambda runs: max(r["ended_at_ms"] for r in runs) - min(r["started_at_ms"] for r in runs)
    print(f"  most jobs of one partition at once: {overlap_key} by key, {overlap_part} by "
          f"partition; {len(plan)} jobs took {span(by_key)} ms by key, {span(by_partition)} ms "
          f"by partition; committed = end {key_offsets}")


def test_stop_midway_then_the_rest_runs():
    plan = make_plan(per_key=8)
    want = {job_id for _, job_id, _ in plan}
    record_file = tempfile.mktemp(prefix="kjobs-keyord-", suffix=".jsonl")
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, plan)
        # small batches: a stop finishes in-flight batches, so big ones would run everything
        w = Worker(broker.bootstrap,
                   env=worker_env(record_file, "keyord-stop", "key", KJOBS_BATCH_MAX_JOBS="2"))
        try:
            harness.wait_until("a quarter of the jobs to run",
                               lambda: len(recorded(record_file)) >= len(plan) // 4, 60)
            assert w.stop() == 0, "a key-ordered worker did not stop cleanly"
        finally:
            w.close()
        first = recorded(record_file)
        assert len(first) < len(plan), "everything ran before the stop: the test is void"
        w2 = Worker(broker.bootstrap, env=worker_env(record_file, "keyord-stop", "key"))
        try:
            harness.wait_until("the rest to run",
                               lambda: want <= {r["id"] for r in recorded(record_file)}, 120)
            assert w2.stop() == 0
        finally:
            w2.close()
        offsets = committed_vs_end(broker.bootstrap, "keyord-stop")
    runs = recorded(record_file)
    os.unlink(record_file)
    second = runs[len(first):]
    assert {r["id"] for r in runs} == want
    for name, part in (("first", first), ("second", second)):
        ids = [r["id"] for r in part]
        assert len(ids) == len(set(ids)), f"the {name} worker ran a job twice"
        bad = key_order_violations(part)
        assert not bad, f"the {name} worker broke key order: {bad[:5]}"
    for p, (committed, end) in offsets.items():
        assert committed == end, f"partition {p}: committed {committed}, high watermark {end}"
    again = len(runs) - len(want)
    print(f"  stopped after {len(first)} of {len(plan)} jobs; {again} finished jobs ran again "
          f"(above the committed offset: at-least-once)")


if __name__ == "__main__":
    harness.main([test_checker_catches_a_violation, test_keys_run_in_parallel_in_order_once,
                  test_stop_midway_then_the_rest_runs])
