"""test_crash_loop.py — the crash-loop guard (processor/crash_guard.h, dlq.crash_loop_limit), end
to end: a job whose handler segfaults the whole `kjobs run` process (the example recorder
plugin's payload "crash") on a real `kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA), with
workers restarted after each crash the way a supervisor (systemd, Kubernetes) would. Run with
/usr/bin/python3.

What is checked:
- With dlq.crash_loop_limit 3 the poison job runs 4 or 5 times (once in a normal batch, at most
  once in a careful batch, then alone under 3 careful owners), every one of those workers dies
  of SIGSEGV, and the next worker dead-letters it with class crash-loop and a reason naming the
  limit, without running it;
- the jobs behind it then run exactly once, the jobs before it at least once (they shared the
  crashing batch, so they are re-run: at-least-once) and at most twice;
- a clean stop in between (SIGTERM) clears the guard: the next worker batches again at once;
- with dlq.crash_loop_limit 0 there is no guard: a worker after a crash runs the same batch.
Workers use classic static membership (kafka.group_instance_id) and a 6 s session, so each
restart gets the partition back at once or after at most 6 s, not the default 45 s.
"""
import os
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
from harness import hdrs  # noqa: E402
import procs  # noqa: E402
from procs import Worker, peek_all  # noqa: E402

PLUGIN = os.environ.get("KJOBS_EXAMPLE_PLUGIN") or os.path.join(
    os.path.dirname(harness.KJOBS), "examples", "libkjobs_example_recorder.so")


def runs(path):
    """job id -> times the recorder ran it (it records before a "crash" payload crashes)."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    job_id = line.split("\t")[0]
                    out[job_id] = out.get(job_id, 0) + 1
    return out


def enqueue_lines(bootstrap, jobs):
    import json
    lines = "".join(json.dumps({"id": i, "type": "example.record", "key": "k", "payload": p}) + "\n"
                    for i, p in jobs)
    harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap), input=lines)


def worker(bootstrap, record_file, **extra):
    env = {"KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
           "KJOBS_KAFKA_GROUP_PROTOCOL": "classic", "KJOBS_KAFKA_GROUP_INSTANCE_ID": "crashy",
           "KJOBS_RETRY_DELAYS": "1s", "KJOBS_DLQ_CRASH_LOOP_LIMIT": "3",
           # the broker's minimum: a dead member's partitions move on after 6 s at most
           "KJOBS_KAFKA_PROPERTIES": '["session.timeout.ms=6000"]'}
    env.update(extra)
    return Worker(bootstrap, env=env, name="crashy")


def wait_exit(w, timeout=60):
    w.proc.wait(timeout=timeout)
    w.poll_lines()
    return w.proc.returncode


def died_of_the_segfault(w, rc):
    """Killed by SIGSEGV; or, in the ASan+UBSan build, stopped by the sanitizer's report of the
    same fault (UBSan: the null store; ASan: the SEGV) with its exit code."""
    if rc == -signal.SIGSEGV:
        return True
    reports = ("AddressSanitizer: SEGV", "runtime error: store to null pointer")
    return rc not in (0, None) and any(l.get("level") == "raw" and any(r in l["msg"] for r in reports)
                                       for l in w.lines)


def test_poison_job_is_dead_lettered_after_the_limit():
    record_file = tempfile.mktemp(prefix="kjobs-crash-", suffix=".tsv")
    before = [(f"before-{i}", "ok") for i in range(3)]
    after = [(f"after-{i}", "ok") for i in range(3)]
    with procs.Broker(partitions=1) as broker:
        enqueue_lines(broker.bootstrap, before + [("poison", "crash")] + after)
        crashes = 0
        alone = 0
        dead_lettered = False
        for attempt in range(1, 8):
            w = worker(broker.bootstrap, record_file)
            try:
                procs.wait_until(lambda: w.proc.poll() is not None
                                 or w.msgs("job failed, dead-lettered"), 60,
                                 "a crash or a dead letter")
                if w.proc.poll() is None:
                    harness.wait_until("the jobs behind it to run",
                                       lambda: all(runs(record_file).get(i) for i, _ in after), 60)
                    assert w.stop() == 0
                    dead_lettered = True
                    break
                rc = wait_exit(w)
                assert died_of_the_segfault(w, rc), \
                    f"worker {attempt} exited {rc}, not by the segfault: {w.tail()}"
                crashes += 1
                alone += len(w.msgs("crash guard: running a job alone"))
                if attempt >= 2:
                    assert w.msgs("the partition's previous owner died holding it: running "
                                  "the jobs it may have had in flight carefully"), w.tail()
            finally:
                w.close()
        assert dead_lettered, f"not dead-lettered after {crashes} crashes"
        got = runs(record_file)
        os.unlink(record_file)
        assert 4 <= crashes <= 5, crashes
        assert got["poison"] == crashes, \
            f"the poison job ran {got['poison']} times in {crashes} crashes"
        for job_id, _ in after:
            assert got[job_id] == 1, (job_id, got)
        for job_id, _ in before:
            assert 1 <= got[job_id] <= 2, (job_id, got)
        assert alone >= 3, alone
        [dead] = peek_all(broker.bootstrap, "jobs.dlq")
        h = hdrs(dead)
        assert dead["id"] == "poison" and h["kjobs-error-class"] == "crash-loop", h
        assert "3 worker processes in a row died" in h["kjobs-error"], h
        assert h["kjobs-original-topic"] == "jobs", h
        print(f"  dead-lettered after {crashes} crashes ({alone} runs alone)")


def test_clean_stop_clears_the_guard_and_limit_zero_turns_it_off():
    record_file = tempfile.mktemp(prefix="kjobs-crash-", suffix=".tsv")
    with procs.Broker(partitions=1) as broker:
        enqueue_lines(broker.bootstrap, [("one", "sleep:300")])
        w = worker(broker.bootstrap, record_file)
        try:
            harness.wait_until("the job to run", lambda: runs(record_file).get("one"), 60)
            assert w.stop() == 0
        finally:
            w.close()
        enqueue_lines(broker.bootstrap, [("two", "ok"), ("three", "ok")])
        w = worker(broker.bootstrap, record_file)
        try:
            harness.wait_until("the next jobs to run",
                               lambda: runs(record_file).get("three"), 60)
            assert not w.msgs("crash guard: running a job alone"), \
                "careful mode after a clean stop"
            assert w.stop() == 0
        finally:
            w.close()
        # limit 0: no guard; a crash is followed by a plain re-run of the same batch
        enqueue_lines(broker.bootstrap, [("boom", "crash"), ("four", "ok")])
        for _ in range(2):
            w = worker(broker.bootstrap, record_file, KJOBS_DLQ_CRASH_LOOP_LIMIT="0")
            try:
                assert died_of_the_segfault(w, wait_exit(w)), w.tail()
                assert not w.msgs("crash guard: running a job alone"), w.tail()
            finally:
                w.close()
        got = runs(record_file)
        os.unlink(record_file)
        assert got["boom"] == 2 and "four" not in got, got
        assert got["one"] == 1 and got["two"] == 1 and got["three"] == 1, got


if __name__ == "__main__":
    harness.main([test_poison_job_is_dead_lettered_after_the_limit,
                  test_clean_stop_clears_the_guard_and_limit_zero_turns_it_off])
