"""test_retry_ordering.py — key-ordered retries (retry.ordering = "key", docs/ordering.md), end to
end: a real `kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA) and real `kjobs run` workers
whose jobs run in an exec handler (exec_recorder.py) that fails the jobs whose id asks for it
("~retryN": retry on attempts 1..N; "~fail": a permanent failure) and records every run with its
start and end. Jobs are produced by kafka-python to chosen partitions, with chosen keys. Run with
/usr/bin/python3.

What is checked:
- with "key": per key, the jobs' successful runs are in production order — a job retried twice
  on the ladder still runs before the later jobs of its key, which were parked behind it
  (jobs_total{outcome="parked"} moves; their ladder copies carry kjobs-parked-behind naming it);
  a job dead-lettered releases the jobs behind it; other keys of the same partition run at once,
  not after the retried job; every job succeeds exactly once;
- the same jobs with the default "none": a later job of the key runs before the retried one
  succeeds (so the order check can fail);
- durable across a crash: a worker killed (SIGKILL) while a job waits on the ladder with a later
  job of its key parked behind it; a second worker reads the ladder back, and a job of that key
  produced after the crash still waits behind the retried one;
- a group of two, the second joining midway (a rebalance moves partitions with their ladder
  partitions): key order holds across both;
- a rolling switch on the classic protocol: a "key" member joins a "none" member's group and
  both run (range for both);
- a batch holding a parked job given up at a rebalance, its partition back in the same process:
  the parked job still runs, after its key's retry;
- a ladder topic with fewer partitions than the main topic is refused at start;
- config errors: a bad value names file, line and setting; "key" with another assignor set is
  refused, naming both settings.
"""
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
from procs import Worker, peek_all  # noqa: E402
from test_flow_control import produce_records  # noqa: E402
from test_scheduling import RECORDER, recorded  # noqa: E402


def produce(bootstrap, plan):
    """plan: [(partition, id, key)] produced in order, acks=all, type app.ordered."""
    produce_records(bootstrap, [(p, i, k.encode() if k else None, "app.ordered")
                                for p, i, k in plan])


def worker_env(record_file, group, ordering, delays="1s,1s", **extra):
    env = {"KJOBS_HANDLERS_EXEC": f"/usr/bin/python3 -u {RECORDER} {record_file} --sleep 20",
           "KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_RETRY_DELAYS": delays, "KJOBS_RETRY_MAX_ATTEMPTS": "4", "KJOBS_WORKERS": "4",
           "KJOBS_RETRY_ORDERING": ordering}
    env.update(extra)
    return env


def ok_runs(runs):
    return [r for r in runs if r.get("result", "ok") == "ok"]


def order_violations(runs, plan):
    """Per key: the successful runs, by start time, must follow the plan's order (a job
    dead-lettered is skipped). Returns readable violations."""
    seq = {job_id: n for n, (_, job_id, _) in enumerate(plan)}
    first_ok = {}
    for r in sorted(ok_runs(runs), key=lambda r: r["started_at_ms"]):
        first_ok.setdefault(r["id"], r)
    by_key = {}
    for r in first_ok.values():
        if r.get("key") is not None:
            by_key.setdefault(r["key"], []).append(r)
    bad = []
    for key, rs in by_key.items():
        rs.sort(key=lambda r: r["started_at_ms"])
        for a, b in zip(rs, rs[1:]):
            if seq[b["id"]] < seq[a["id"]]:
                bad.append(f"key {key}: {b['id']} started at {b['started_at_ms']} after "
                           f"{a['id']} at {a['started_at_ms']}")
    return bad


PLAN = [  # partition 0: a's first job retries twice; b flows; partition 1: c retries once, d dies
    (0, "a1~retry2", "a"), (0, "b1", "b"), (0, "a2", "a"), (0, "b2", "b"), (0, "a3", "a"),
    (0, "b3", "b"), (1, "c1~retry1", "c"), (1, "d1~fail", "d"), (1, "c2", "c"), (1, "d2", "d"),
    (1, "c3", "c"), (0, "nokey", None),
]
WANT_OK = {job_id for _, job_id, _ in PLAN if "~fail" not in job_id}


def run_plan(bootstrap, group, ordering, **extra):
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".jsonl")
    w = Worker(bootstrap, env=worker_env(record_file, group, ordering, **extra), name=group)
    try:
        port = w.http_port()
        harness.wait_until(f"group {group} to finish every job",
                           lambda: WANT_OK <= {r["id"] for r in ok_runs(recorded(record_file))},
                           120)
        parked = parked_count(port)
        assert w.stop() == 0, w.tail()
    finally:
        w.close()
    runs = recorded(record_file)
    os.unlink(record_file)
    return runs, parked


def parked_count(port):
    """jobs_total{outcome="parked"}, summed over its series, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kjobs_jobs_total{") and 'outcome="parked"' in line)


def test_checker_catches_a_violation():
    """The order check can fail: a2 succeeding before a1 is reported, the reverse is not."""
    a1 = {"id": "a1~retry2", "key": "a", "result": "ok", "started_at_ms": 2}
    a2 = {"id": "a2", "key": "a", "started_at_ms": 1}
    assert len(order_violations([a1, a2], PLAN)) == 1
    assert order_violations([a1, dict(a2, started_at_ms=3)], PLAN) == []


def test_later_jobs_of_a_key_wait_behind_its_retry():
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, PLAN)
        keyed, parked = run_plan(broker.bootstrap, "retryord-key", "key")
        copies = [r for t in ("jobs.retry.1", "jobs.retry.2")
                  for r in peek_all(broker.bootstrap, t)]
    with procs.Broker(partitions=2) as broker:  # fresh topics: no ladder copies of the above
        produce(broker.bootstrap, PLAN)
        plain, _ = run_plan(broker.bootstrap, "retryord-none", "none")
    bad = order_violations(keyed, PLAN)
    assert not bad, f"key-ordered retries broke key order: {bad}"
    oks = [r["id"] for r in ok_runs(keyed)]
    assert sorted(oks) == sorted(WANT_OK), f"not every job succeeded exactly once: {sorted(oks)}"
    a1 = next(r for r in ok_runs(keyed) if r["id"] == "a1~retry2")
    assert a1["attempt"] == 3, a1
    b3 = next(r for r in keyed if r["id"] == "b3")
    assert b3["started_at_ms"] < a1["started_at_ms"], \
        "key b waited for key a's retry: other keys must flow"
    d_runs = [r for r in keyed if r["id"].startswith("d")]
    assert [r["id"] for r in d_runs] == ["d1~fail", "d2"], d_runs
    assert parked >= 4, f"jobs_total{{outcome=\"parked\"}} = {parked}, want a2, a3, c2, c3 at least"
    behind = {}
    for rec in copies:
        h = harness.hdrs(rec)
        if "kjobs-parked-behind" in h:
            behind.setdefault(rec["id"], set()).add(int(h["kjobs-parked-behind"]))
            assert h["kjobs-error-class"] == "parked" and h["kjobs-attempt"] == "0", h
    assert {"a2", "a3", "c2", "c3"} <= set(behind), f"parked copies: {behind}"
    assert len(behind["a2"]) == 1 and behind["a2"] == behind["a3"], behind
    # the default lets a later job of the key overtake: the check above can fail
    bad_plain = order_violations(plain, PLAN)
    assert bad_plain, "retry.ordering = none kept key order: the test cannot tell the difference"
    print(f"  key: {len(keyed)} runs, {parked:.0f} parked, order kept; none: "
          f"{len(bad_plain)} overtakes, e.g. {bad_plain[0]}")


def test_in_place_retries_keep_key_order():
    """retry.in_place_attempts = 2 with "key": a1 (retried twice) and c1 (once) succeed in place
    (attempts 3 and 2, nothing on the ladder, nothing parked) and the later jobs of their keys
    still run after them: the jobs behind an in-place retry wait for its outcome."""
    with procs.Broker(partitions=2) as broker:
        produce(broker.bootstrap, PLAN)
        runs, parked = run_plan(broker.bootstrap, "retryord-in-place", "key",
                                KJOBS_RETRY_IN_PLACE_ATTEMPTS="2",
                                KJOBS_RETRY_IN_PLACE_DELAY="200ms")
        copies = [r for t in ("jobs.retry.1", "jobs.retry.2")
                  for r in peek_all(broker.bootstrap, t)]
    bad = order_violations(runs, PLAN)
    assert not bad, f"in-place retries broke key order: {bad}"
    oks = [r["id"] for r in ok_runs(runs)]
    assert sorted(oks) == sorted(WANT_OK), f"not every job succeeded exactly once: {sorted(oks)}"
    a1 = [r for r in runs if r["id"] == "a1~retry2"]
    assert [r["attempt"] for r in a1] == [1, 2, 3], a1
    assert all(b["started_at_ms"] - a["ended_at_ms"] >= 200 for a, b in zip(a1, a1[1:])), a1
    assert [r["attempt"] for r in runs if r["id"] == "c1~retry1"] == [1, 2]
    assert not copies, f"in-place retries wrote ladder copies: {[r['id'] for r in copies]}"
    assert parked == 0, parked


def test_order_survives_a_crash():
    plan1 = [(0, "x1~retry1", "x"), (0, "x2", "x"), (0, "y1", "y")]
    plan2 = [(0, "x3", "x"), (0, "y2", "y")]
    plan = plan1 + plan2
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".jsonl")
    with procs.Broker(partitions=1) as broker:
        produce(broker.bootstrap, plan1)
        # x1's retry waits 25 s; the second worker takes over soon (static membership: the
        # same group.instance.id; the embedded broker takes about 10 s), so x1 still waits when
        # x3 arrives. The crash guard is off: its careful mode is not what is tested here.
        env = worker_env(record_file, "retryord-crash", "key", delays="25s",
                         KJOBS_DLQ_CRASH_LOOP_LIMIT="0",
                         KJOBS_KAFKA_GROUP_PROTOCOL="classic",
                         KJOBS_KAFKA_GROUP_INSTANCE_ID="retryord-crash",
                         KJOBS_KAFKA_PROPERTIES='["session.timeout.ms=6000"]')
        w = Worker(broker.bootstrap, env=env, name="crash-first")
        try:
            port = w.http_port()
            harness.wait_until("x2 parked behind x1", lambda: parked_count(port) >= 1, 60)
            w.kill9()
        finally:
            w.close()
        w2 = Worker(broker.bootstrap, env=env, name="crash-second")
        try:
            w2.wait_for(lambda l: l["msg"] == "key order: ladder read", 60, "the ladder scan")
            produce(broker.bootstrap, plan2)
            harness.wait_until("every job to succeed", lambda: {i for _, i, _ in plan} <= {
                r["id"] for r in ok_runs(recorded(record_file))}, 120)
            assert w2.stop() == 0, w2.tail()
        finally:
            w2.close()
    runs = recorded(record_file)
    os.unlink(record_file)
    bad = order_violations(runs, plan)
    assert not bad, f"key order broken across the crash: {bad}"
    first = {}
    for r in sorted(ok_runs(runs), key=lambda r: r["started_at_ms"]):
        first.setdefault(r["id"], r["started_at_ms"])
    assert first["y2"] < first["x1~retry1"], "key y waited for key x after the restart"
    print(f"  after the crash: x1 ok at +{first['x1~retry1'] - first['y1']} ms, then x2, x3; "
          f"y2 ran {first['x1~retry1'] - first['y2']} ms before x1")


def test_two_workers_and_a_rebalance():
    """Key order holds in a group of two while the second joins midway: the range assignor moves
    each main partition with its ladder partitions, and the new owner reads them first."""
    keys = [f"k{n}" for n in range(16)]
    plan = [(n % 4, f"{k}-{i}" + ("~retry1" if (n + i) % 4 == 0 else ""), k)
            for i in range(8) for n, k in enumerate(keys)]
    want = {job_id for _, job_id, _ in plan}
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".jsonl")
    half = len(plan) // 2  # the second half is produced once the second worker has partitions
    with procs.Broker(partitions=4) as broker:
        produce(broker.bootstrap, plan[:half])
        env = worker_env(record_file, "retryord-pair", "key", delays="2s")
        first = Worker(broker.bootstrap, env=env, name="pair-first")
        second = None
        try:
            harness.wait_until("a fifth of the jobs to succeed",
                               lambda: len(ok_runs(recorded(record_file))) >= len(plan) // 5, 60)
            second = Worker(broker.bootstrap, env=env, name="pair-second")
            second.wait_for(lambda l: l["msg"] == "key order: ladder read", 90,
                            "the second worker to get partitions and read their ladder")
            produce(broker.bootstrap, plan[half:])
            harness.wait_until("every job to succeed", lambda: want <= {
                r["id"] for r in ok_runs(recorded(record_file))}, 180)
            assert first.stop() == 0, first.tail()
            assert second.stop() == 0, second.tail()
            second_ran = len(second.msgs("key order: ladder read"))
        finally:
            first.close()
            if second:
                second.close()
    runs = recorded(record_file)
    os.unlink(record_file)
    bad = order_violations(runs, plan)
    assert not bad, f"key order broken in a group of two: {bad[:5]}"
    assert second_ran >= 1, "the second worker never read a ladder: it got no partition"
    print(f"  {len(plan)} jobs, {len(runs)} runs over two workers, order kept per key")


def test_a_rolling_switch_on_the_classic_protocol_keeps_the_group_running():
    """A member with "key" (range only) joins a classic group of a member with "none"
    (roundrobin, then range): both get partitions (range for both), none is refused with
    INCONSISTENT_GROUP_PROTOCOL, and the group runs every job."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("needs a real Kafka in KJOBS_TEST_KAFKA: librdkafka's mock cluster "
                           "takes the leader's first assignor, not one every member offers "
                           "(rdkafka_mock_cgrp.c: 'FIXME: ... blindly use the first protocol')")
    plan = [(n % 4, f"roll-{n}", f"k{n % 8}") for n in range(40)]
    want = {job_id for _, job_id, _ in plan}
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".jsonl")
    with procs.Broker(partitions=4) as broker:
        common = {"KJOBS_KAFKA_GROUP_PROTOCOL": "classic"}
        old = Worker(broker.bootstrap, name="roll-none",
                     env=worker_env(record_file, "retryord-roll", "none", **common))
        new = None
        try:
            old.wait_assigned()
            new = Worker(broker.bootstrap, name="roll-key",
                         env=worker_env(record_file, "retryord-roll", "key", **common))
            new.wait_for(lambda l: l["msg"] == "key order: ladder read", 60,
                         "the key-ordered member to get partitions")
            produce(broker.bootstrap, plan)
            harness.wait_until("every job to run", lambda: want <= {
                r["id"] for r in recorded(record_file)}, 90)
            assert not [l for l in old.lines + new.lines
                        if "Inconsistent group protocol" in l.get("msg", "")]
            assert old.stop() == 0, old.tail()
            assert new.stop() == 0, new.tail()
            old_parts = [l for l in old.msgs("partition assigned")]
        finally:
            old.close()
            if new:
                new.close()
    os.unlink(record_file)
    assert old_parts, "the member with \"none\" had no partition"


def test_a_ladder_with_fewer_partitions_is_refused():
    """A ladder topic with another partition count than the main topic cannot keep each main
    partition's copies with it on one member (fewer: no partition of that number; more: the
    range assignor splits the ladder differently): the worker says so and exits 1."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("needs a real Kafka in KJOBS_TEST_KAFKA: the embedded broker makes "
                           "every topic with one partition count and has no CreateTopics")
    with procs.Broker(partitions=2) as broker:
        # `kjobs topics --create` keeps existing topics (and, with "key", says the layout
        # cannot serve it: exit 1): the main topic and the DLQ with 4
        # partitions (no ladder yet), then the ladder with 2
        for partitions, delays in (("4", ""), ("2", "1s")):
            harness.run(harness.kjobs_cmd("topics", "-b", broker.bootstrap, "--create"),
                        env={"KJOBS_TOPICS_MAIN": "uneven", "KJOBS_RETRY_DELAYS": delays,
                             "KJOBS_TOPICS_PARTITIONS": partitions})
        env = {"KJOBS_TOPICS_MAIN": "uneven", "KJOBS_RETRY_DELAYS": "1s",
               "KJOBS_RETRY_ORDERING": "key"}
        t = harness.run(harness.kjobs_cmd("topics", "-b", broker.bootstrap, "--create"),
                        check=False, env=env)
        p = harness.run(harness.kjobs_cmd("run", "-b", broker.bootstrap), check=False, env=env,
                        timeout=60)
    assert t.returncode == 1 and "exists  uneven.retry.1" in t.stdout and \
        '"topic":"uneven.retry.1","partitions":2' in t.stderr, (t.stdout, t.stderr[-600:])
    assert p.returncode == 1, (p.returncode, p.stderr[-800:])
    assert "ladder topic uneven.retry.1 has 2 partitions, the main topic uneven 4" \
        in p.stderr, p.stderr[-800:]


def test_a_parked_job_in_a_given_up_batch_still_runs():
    """A batch holding a parked job and a slow job of another key is given up at a rebalance
    (the revoke waits half of max.poll.interval.ms, 5 s here) and its partition comes back to
    the same process: the parked job must not be taken for finished (it never ran) — it is
    parked again and runs after its key's retry."""
    plan = []
    for p in (0, 1):
        plan += [(p, f"p{p}-k1~retry1", f"k{p}"), (p, f"p{p}-k2", f"k{p}"),
                 (p, f"p{p}-slow~slow12000", f"s{p}")]
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".jsonl")
    env = worker_env(record_file, "retryord-giveup", "key", delays="20s",
                     KJOBS_KAFKA_GROUP_PROTOCOL="classic", KJOBS_HANDLERS_EXEC_TIMEOUT="60s",
                     KJOBS_KAFKA_PROPERTIES='["max.poll.interval.ms=10000",'
                                           '"session.timeout.ms=10000"]')
    with procs.Broker(partitions=2) as broker:
        first = Worker(broker.bootstrap, env=env, name="giveup-first")
        second = None
        try:
            first.wait_for(lambda l: l["msg"] == "key order: ladder read", 60, "the ladder scan")
            produce(broker.bootstrap, plan)
            harness.wait_until("both slow jobs to be running", lambda: len(
                [r for r in recorded(record_file) if "slow_started_at_ms" in r]) >= 2, 60)
            second = Worker(broker.bootstrap, env=env, name="giveup-second")
            harness.wait_until("every job to succeed", lambda: {i for _, i, _ in plan} <= {
                r["id"] for r in ok_runs(recorded(record_file)) if "slow_started_at_ms" not in r},
                120)
            given_up = first.msgs("batch of a given-up partition finished: outcomes dropped")
            assert first.stop() == 0, first.tail()
            assert second.stop() == 0, second.tail()
        finally:
            first.close()
            if second:
                second.close()
    runs = [r for r in recorded(record_file) if "slow_started_at_ms" not in r]
    os.unlink(record_file)
    assert given_up, "no batch was given up: the scenario did not happen (the test is void)"
    bad = order_violations(runs, plan)
    assert not bad, f"key order broken: {bad}"
    print(f"  {len(given_up)} given-up batch(es); every parked job ran after its key's retry")


def test_config_errors():
    cfg = tempfile.mktemp(suffix=".cfg")
    with open(cfg, "w") as f:
        f.write('kafka = { bootstrap = "127.0.0.1:9"; };\nretry = {\n  ordering = "keys";\n};\n')
    p = harness.run(harness.kjobs_cmd("run", "-c", cfg, "--check-config"), check=False)
    assert p.returncode == 2 and f"{cfg}:3: retry.ordering" in p.stderr, p.stderr
    with open(cfg, "w") as f:
        f.write('kafka = { bootstrap = "127.0.0.1:9"; group_protocol = "classic";\n'
                '  properties = [ "partition.assignment.strategy=roundrobin" ]; };\n'
                'retry = { ordering = "key"; };\n')
    p = harness.run(harness.kjobs_cmd("run", "-c", cfg, "--check-config"), check=False)
    assert p.returncode == 2 and f"{cfg}:3: retry.ordering" in p.stderr and \
        "partition.assignment.strategy is set to another" in p.stderr, p.stderr
    os.unlink(cfg)


if __name__ == "__main__":
    harness.main([test_checker_catches_a_violation, test_later_jobs_of_a_key_wait_behind_its_retry,
                  test_in_place_retries_keep_key_order,
                  test_order_survives_a_crash, test_two_workers_and_a_rebalance,
                  test_a_rolling_switch_on_the_classic_protocol_keeps_the_group_running,
                  test_a_parked_job_in_a_given_up_batch_still_runs,
                  test_a_ladder_with_fewer_partitions_is_refused, test_config_errors])
