"""test_timeouts.py — time limits of in-process handlers (handlers.timeout, handlers.timeouts,
handlers.timeout_grace; processor/handler_deadline.h), end to end on a `kjobs broker` (or real
Kafka with KJOBS_TEST_KAFKA). Run with /usr/bin/python3.

What is checked:
- cooperative cancel: the built-in kjobs.sleep checks kjobs_job_cancelled(); with a 1 s limit a
  600 s sleep returns after about 1 s and the job is dead-lettered (retry.max_attempts 1) with
  class timeout and a reason naming the limit and the handler's own words; a 50 ms sleep under
  the same limit succeeds; the worker logs the overdue call and keeps running (the jobs behind
  it on the same partition run);
- the hard stop: the example recorder's "sleep:N" ignores cancellation; 1 s past its 1 s limit
  (handlers.timeout_grace 1s) the worker logs the job and exits with status 1, and with
  dlq.crash_loop_limit 1 the restarted workers dead-letter the job with class crash-loop after
  at most 3 such exits while the jobs behind it run exactly once;
- a long job keeps the group: a 25 s job with max.poll.interval.ms 10 s and a 6 s session runs
  once, no partition is revoked or lost while it runs, and jobs of the other partition finish
  while it is still running (bench/long_job_proof.sh runs the same check with a 10-minute job
  and max.poll.interval.ms 60 s);
- a handlers.timeouts entry for a type no in-process handler claims stops the worker with an
  error naming the setting.
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
from harness import hdrs  # noqa: E402
import procs  # noqa: E402
from procs import Worker, peek_all  # noqa: E402

PLUGIN = os.environ.get("KJOBS_EXAMPLE_PLUGIN") or os.path.join(
    os.path.dirname(harness.KJOBS), "examples", "libkjobs_example_recorder.so")
# the broker's minimum: a dead member's partitions move on after 6 s at most
SHORT_SESSION = '["session.timeout.ms=6000"]'


def records(path):
    """The recorder's lines as dicts (id, key, partition, offset, attempt, time_ms)."""
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    c = line.rstrip("\n").split("\t")
                    out.append({"id": c[0], "key": c[1], "partition": int(c[2]),
                                "offset": int(c[3]), "attempt": int(c[4]), "pid": int(c[6]),
                                "time_ms": int(c[8])})
    return out


def enqueue(bootstrap, jobs):
    """jobs: (id, type, key, payload) tuples, enqueued in this order."""
    lines = "".join(json.dumps({"id": i, "type": t, "key": k, "payload": p}) + "\n"
                    for i, t, k, p in jobs)
    harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap), input=lines)


def test_cooperative_cancel_fails_the_job_with_class_timeout():
    record_file = tempfile.mktemp(prefix="kjobs-timeouts-", suffix=".tsv")
    with procs.Broker(partitions=1) as broker:
        enqueue(broker.bootstrap, [("slow", "kjobs.sleep", "k", "600000"),
                                   ("quick", "kjobs.sleep", "k", "50"),
                                   ("behind", "example.record", "k", "ok")])
        w = Worker(broker.bootstrap, name="cancel", env={
            "KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
            "KJOBS_HANDLERS_TIMEOUTS": "kjobs.sleep=1s", "KJOBS_RETRY_MAX_ATTEMPTS": "1"})
        try:
            start = time.monotonic()
            harness.wait_until("the job behind the slow one to run",
                               lambda: any(r["id"] == "behind" for r in records(record_file)), 60)
            took = time.monotonic() - start
            [late] = w.msgs("handler past its time limit: its jobs fail with class timeout when "
                            "it returns (kjobs_job_cancelled() is true)")
            assert late["id"] == "slow" and late["limit_ms"] == 1000, late
            assert w.proc.poll() is None, f"the worker exited {w.proc.returncode}: {w.tail()}"
            assert w.stop() == 0, w.tail()
        finally:
            w.close()
        dead = peek_all(broker.bootstrap, "jobs.dlq")
        assert [d["id"] for d in dead] == ["slow"], [d["id"] for d in dead]
        h = hdrs(dead[0])
        assert h["kjobs-error-class"] == "timeout", h
        assert "over its time limit of 1000 ms" in h["kjobs-error"], h
        assert "the handler said: kjobs.sleep: cancelled" in h["kjobs-error"], h
        # the 600 s sleep gave up at its limit (the test's own 60 s bound would fail otherwise)
        print(f"  slow job cancelled, the job behind it ran {took:.1f} s after start")
    os.unlink(record_file)


def test_overrun_past_the_grace_exits_and_the_crash_guard_dead_letters_it():
    record_file = tempfile.mktemp(prefix="kjobs-timeouts-", suffix=".tsv")
    with procs.Broker(partitions=1) as broker:
        enqueue(broker.bootstrap, [("hang", "example.record", "k", "sleep:600000"),
                                   ("after-1", "example.record", "k", "ok"),
                                   ("after-2", "example.record", "k", "ok")])
        exits = 0
        for attempt in range(1, 6):
            w = Worker(broker.bootstrap, name="overrun", env={
                "KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
                "KJOBS_HANDLERS_TIMEOUT": "1s", "KJOBS_HANDLERS_TIMEOUT_GRACE": "1s",
                "KJOBS_DLQ_CRASH_LOOP_LIMIT": "1", "KJOBS_KAFKA_GROUP_PROTOCOL": "classic",
                "KJOBS_KAFKA_GROUP_INSTANCE_ID": "overrun", "KJOBS_KAFKA_PROPERTIES": SHORT_SESSION})
            try:
                procs.wait_until(lambda: w.proc.poll() is not None
                                 or w.msgs("job failed, dead-lettered"), 90,
                                 "an exit or a dead letter")
                if w.proc.poll() is None:
                    harness.wait_until("the jobs behind it to run", lambda: {
                        r["id"] for r in records(record_file)} >= {"after-1", "after-2"}, 60)
                    assert w.stop() == 0, w.tail()
                    break
                w.proc.wait()
                w.poll_lines()
                assert w.proc.returncode == 1, f"exit {w.proc.returncode}: {w.tail()}"
                [gave_up] = w.msgs("handler still running past its time limit and "
                                   "handlers.timeout_grace: exiting (status 1); its job runs "
                                   "again on the next owner")
                assert gave_up["id"] == "hang" and gave_up["running_ms"] >= 2000, gave_up
                exits += 1
            finally:
                w.close()
        assert 1 <= exits <= 3, exits
        got = records(record_file)
        assert sorted(r["id"] for r in got) == ["after-1", "after-2"], got
        [dead] = peek_all(broker.bootstrap, "jobs.dlq")
        h = hdrs(dead)
        assert dead["id"] == "hang" and h["kjobs-error-class"] == "crash-loop", h
        print(f"  {exits} exits at the grace, then dead-lettered as crash-loop")
    os.unlink(record_file)


def long_job_keeps_the_group(job_ms, max_poll_ms, partitions=2):
    """One job of job_ms on a worker with max.poll.interval.ms = max_poll_ms; other jobs on the
    other partitions meanwhile. Returns (long job record, other records)."""
    record_file = tempfile.mktemp(prefix="kjobs-timeouts-", suffix=".tsv")
    with procs.Broker(partitions=partitions) as broker:
        w = Worker(broker.bootstrap, name="long", env={
            "KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
            "KJOBS_WORKERS": str(partitions),
            # a 10 s session (at most the interval, as librdkafka requires): 6 s expired now and
            # then on a loaded 2-core CI machine running 3 brokers
            "KJOBS_KAFKA_PROPERTIES": json.dumps(
                [f"max.poll.interval.ms={max_poll_ms}",
                 f"session.timeout.ms={min(max_poll_ms, 10000)}"]),
            "KJOBS_HANDLERS_TIMEOUT": f"{2 * job_ms}ms"})
        try:
            # every partition of the main topic and its 3 ladder steps (default retry.delays)
            w.wait_count("partition assigned", partitions * 4, 60)
            assigned = len(w.msgs("partition assigned"))
            enqueue(broker.bootstrap, [("long", "example.record", "long-key", f"sleep:{job_ms}")])
            enqueue(broker.bootstrap,
                    [(f"other-{i}", "example.record", f"key-{i}", "ok") for i in range(64)])
            harness.wait_until("the long job to finish",
                               lambda: any(r["id"] == "long" for r in records(record_file)),
                               job_ms / 1000 + 120)
            harness.wait_until("every other job to run", lambda: len(
                {r["id"] for r in records(record_file)}) == 65, 60)
            got = records(record_file)
            ids = [r["id"] for r in got]
            assert ids.count("long") == 1, ids.count("long")
            assert len(ids) == 65, f"{len(ids)} runs of 65 jobs"
            for bad in ("partition revoked", "partition lost",
                        "worker stalled past its session timeout: holding its partitions "
                        "(it may have lost them)"):
                assert not w.msgs(bad), f"{bad}: {w.tail()}"
            assert len(w.msgs("partition assigned")) == assigned, "a rebalance during the job"
            assert w.stop() == 0, w.tail()
        finally:
            w.close()
    os.unlink(record_file)
    [long_rec] = [r for r in got if r["id"] == "long"]
    return long_rec, [r for r in got if r["id"] != "long"]


def test_long_job_keeps_group_membership():
    job_ms = int(os.environ.get("KJOBS_LONG_JOB_MS", "25000"))
    max_poll_ms = int(os.environ.get("KJOBS_LONG_JOB_MAX_POLL_MS", "10000"))
    long_rec, others = long_job_keeps_the_group(job_ms, max_poll_ms)
    elsewhere = [r for r in others if r["partition"] != long_rec["partition"]]
    assert elsewhere, "no other job landed on another partition"
    during = [r for r in elsewhere if r["time_ms"] < long_rec["time_ms"]]
    assert len(during) == len(elsewhere), \
        f"{len(elsewhere) - len(during)} jobs of other partitions waited for the long job"
    print(f"  {job_ms / 1000:.0f} s job with max.poll.interval.ms {max_poll_ms}: ran once, no "
          f"rebalance; {len(during)} jobs of the other partition finished meanwhile")


def test_rebalance_during_a_long_job_keeps_both_members():
    """Classic eager protocol (every partition is revoked at each rebalance): a second member
    joins while a 20 s job runs with max.poll.interval.ms 10 s. The revoke waits 5 s (half the
    interval), then gives the partition up while the job runs: no member is dropped from the
    group (before: the waiting member missed the rebalance timeout, was dropped, and the job
    moved from member to member, run 3 times in 60 s), the job runs at most twice — and when the
    partition comes back to the same process, its second run waits for the given-up one — and
    every other job runs; no memory is kept for the given-up partition (the ASan build's leak
    check at exit)."""
    record_file = tempfile.mktemp(prefix="kjobs-timeouts-", suffix=".tsv")
    env = {"KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
           "KJOBS_WORKERS": "2", "KJOBS_KAFKA_GROUP_PROTOCOL": "classic",
           # the embedded broker waits session.timeout.ms - 1 s for a rebalance (librdkafka's
           # mock; Kafka waits max.poll.interval.ms): equal values give both the same bound
           "KJOBS_KAFKA_PROPERTIES": json.dumps(["max.poll.interval.ms=10000",
                                                 "session.timeout.ms=10000"])}
    with procs.Broker(partitions=2) as broker:
        a = Worker(broker.bootstrap, name="A", env=env)
        b = None
        try:
            a.wait_count("partition assigned", 2, 60)
            enqueue(broker.bootstrap, [("long", "example.record", "long-key", "sleep:20000")])
            b = Worker(broker.bootstrap, name="B", env=env)
            gave_up = a.wait_for(lambda l: l["msg"].startswith("partition revoked while a batch "
                                                                "still runs"), 60, "the give-up")
            assert 5000 <= gave_up["waited_ms"] < 9000, gave_up
            enqueue(broker.bootstrap,
                    [(f"other-{i}", "example.record", f"key-{i}", "ok") for i in range(20)])
            harness.wait_until("every job to run", lambda: len(
                {r["id"] for r in records(record_file)}) == 21, 90)
            a.wait_for(lambda l: l["msg"] == "batch of a given-up partition finished: outcomes "
                       "dropped", 60, "the given-up batch to end")
            long_runs = [r for r in records(record_file) if r["id"] == "long"]
            runs = len(long_runs)
            assert 1 <= runs <= 2, runs  # twice when it moved to B: a run on each member
            # back to the same process while the given-up run went on: held until it returned,
            # and the job it finished is carried over, not run again
            came_back = a.msgs("partition assigned while its given-up batch still runs here: "
                               "held until that batch returns")
            if came_back:
                a.wait_for(lambda l: l["msg"] == "partition released: the given-up batch of its "
                           "previous assignment here returned", 60, "the release")
                assert runs == 1, f"ran {runs} times though the partition came back to A"
                assert a.wait_for(lambda l: l["msg"] == "batch of a given-up partition "
                                  "finished: outcomes dropped", 60, "the end of the given-up run"
                                  )["carried_to_new_assignment"] >= 1
            for w in (a, b):
                dropped = [l for l in w.lines if "Unknown member" in (l.get("error") or "")
                           or "Unknown member" in (l.get("msg") or "")]
                assert not dropped, f"{w.name} was dropped from the group: {dropped[:2]}"
                assert w.proc.poll() is None, f"{w.name} exited: {w.tail()}"
            assert a.stop() == 0 and b.stop() == 0
            print(f"  partition given up after {gave_up['waited_ms']} ms; the long job ran "
                  f"{runs} time(s); no member dropped")
        finally:
            a.close()
            if b:
                b.close()
    os.unlink(record_file)


def test_timeout_for_an_unclaimed_type_is_an_error():
    """A type no in-process handler claims, or one named twice, is a configuration error naming
    the setting's source: from `run --check-config` (exit 2, before any Kafka) and from `run`."""
    cases = {"kjobs.slep=1s": 'no built-in or plugin handler claims job type "kjobs.slep"',
             "kjobs.sleep=1s,kjobs.sleep=2s": 'job type "kjobs.sleep" is named twice',
             "kjobs.sleep=2s;kjobs.noop=1s": "expected \"type=duration\""}
    for value, want in cases.items():
        p = harness.run(harness.kjobs_cmd("run", "--check-config"),
                        env={"KJOBS_HANDLERS_TIMEOUTS": value}, check=False)
        assert p.returncode == 2, (value, p.returncode, p.stdout, p.stderr)
        assert want in p.stderr and "KJOBS_HANDLERS_TIMEOUTS" in p.stderr, (value, p.stderr)
    with procs.Broker(partitions=1) as broker:
        w = Worker(broker.bootstrap, name="typo", env={"KJOBS_HANDLERS_TIMEOUTS": "kjobs.slep=1s"})
        try:
            w.proc.wait(timeout=60)
            w.poll_lines()
            assert w.proc.returncode == 2, w.tail()
            assert any('no built-in or plugin handler claims job type "kjobs.slep"'
                       in l.get("msg", "") for l in w.lines), w.tail()
        finally:
            w.close()


if __name__ == "__main__":
    harness.main([test_cooperative_cancel_fails_the_job_with_class_timeout,
                  test_overrun_past_the_grace_exits_and_the_crash_guard_dead_letters_it,
                  test_long_job_keeps_group_membership,
                  test_rebalance_during_a_long_job_keeps_both_members,
                  test_timeout_for_an_unclaimed_type_is_an_error])
