"""test_breaker.py — the DLQ circuit breaker and exactly-once mode, against real processes.

Breaker: a backlog of permanent failures trips it; consumption stops with jobs left unconsumed
(not dead-lettered), /readyz says 503 with the reason, kjobs_circuit_breaker_open is 1; SIGUSR1
closes it, the skipped jobs are re-read (sought back), and in the end every job is in the DLQ
exactly once — nothing lost, nothing dead-lettered twice.

Exactly-once: a flaky job passes the ladder with transactions and succeeds. The crash guarantee
(no duplicate copy after kill -9) cannot be shown on the embedded broker, whose TxnOffsetCommit
discards offsets (docs/retries.md); with KJOBS_TEST_KAFKA=host:port set to a real Kafka whose
topics exist, that scenario runs too. Run with /usr/bin/python3.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs, kjobs_cmd, run  # noqa: E402

FAST_GROUP = ["-X", "fetch.wait.max.ms=5", "-X", "session.timeout.ms=6000",
              "-X", "heartbeat.interval.ms=500"]


class Worker:
    """A `kjobs run` process with its HTTP port read from its 'http listening' log line."""

    def __init__(self, bootstrap, env):
        full = dict(os.environ, KJOBS_HTTP_LISTEN="127.0.0.1:0", **env)
        self.proc = subprocess.Popen(kjobs_cmd("run", "-b", bootstrap, *FAST_GROUP),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=full)
        self.lines = []
        self.port = None
        for line in self.proc.stderr:
            self.lines.append(line)
            obj = json.loads(line)
            if obj["msg"] == "http listening":
                self.port = obj["port"]
                break
        assert self.port, "no 'http listening' line: " + "".join(self.lines[-5:])
        # keep draining stderr, or the worker blocks once the pipe is full
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name, **labels):
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            m = re.match(r'^(\w+)(\{[^}]*\})? (\S+)$', line)
            if not m or m.group(1) != name:
                continue
            lbl = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(lbl.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def wait_for(self, what, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)  # re-reads /metrics: waiting for an event with a deadline
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return rc, "".join(self.lines)


def test_breaker_stops_consumption_and_resumes_without_loss():
    total = 1000
    with harness.Broker(partitions=2) as broker:
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail-permanent",
                      "--count", str(total)))
        w = Worker(broker.bootstrap, {"KJOBS_DLQ_BREAKER_CONSECUTIVE": "200",
                                      "KJOBS_DLQ_BREAKER_WINDOW": "0",
                                      "KJOBS_BATCH_MAX_JOBS": "50"})
        try:
            w.wait_for("breaker open", lambda: w.metric("kjobs_circuit_breaker_open") == 1)
            status, body = w.get("/readyz")
            assert status == 503 and "circuit breaker" in body, (status, body)
            dead = lambda: w.metric("kjobs_dlq_routed_total", **{"class": "permanent"})  # noqa
            # in-flight batches finish and their copies are acknowledged; then nothing moves
            w.wait_for("in-flight work settled", lambda: w.metric("kjobs_in_flight_jobs") == 0
                       and dead() == w.metric("kjobs_jobs_total", outcome="dead_lettered"))
            settled = dead()
            # consumption stopped: at most the batches in flight when it tripped went past 200
            assert 200 <= settled <= 200 + 2 * 50, settled
            assert settled < total
            # resume by hand until everything is through (each round trips it again)
            for _ in range(20):
                if w.metric("kjobs_dlq_routed_total", **{"class": "permanent"}) >= total:
                    break
                w.proc.send_signal(signal.SIGUSR1)
                w.wait_for("breaker closed and re-opened or done", lambda: (
                    w.metric("kjobs_dlq_routed_total", **{"class": "permanent"}) >= total or
                    w.metric("kjobs_dlq_routed_total", **{"class": "permanent"}) > settled))
                settled = w.metric("kjobs_dlq_routed_total", **{"class": "permanent"})
            assert w.metric("kjobs_dlq_routed_total", **{"class": "permanent"}) == total
        finally:
            rc, log = w.stop()
        assert rc == 0, log[-2000:]
        assert "circuit breaker OPEN" in log and "circuit breaker closed" in log
        dlq = harness.peek(broker.bootstrap, "jobs.dlq", total)
        ids = [r["id"] for r in dlq]
        assert len(set(ids)) == total, f"{total - len(set(ids))} jobs dead-lettered twice"


def test_exactly_once_mode_routes_through_transactions():
    with harness.Broker(partitions=2) as broker:
        ids = run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.flaky",
                            "--payload", "1", "--count", "20")).stdout.split()
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop",
                      "--count", "200"))
        w = Worker(broker.bootstrap, {"KJOBS_RETRY_EXACTLY_ONCE": "true",
                                      "KJOBS_RETRY_DELAYS": "1s"})
        try:
            w.wait_for("flaky jobs succeeded on the ladder", lambda: w.metric(
                "kjobs_jobs_total", topic="jobs.retry.1", type="kjobs.flaky", outcome="ok") == 20)
            assert w.metric("kjobs_jobs_total", topic="jobs", type="kjobs.noop",
                            outcome="ok") == 200
            assert w.metric("kjobs_commits_total", result="ok") >= 1
            assert w.metric("kjobs_commits_total", result="error") == 0
        finally:
            rc, log = w.stop()
        assert rc == 0, log[-2000:]
        copies = harness.peek(broker.bootstrap, "jobs.retry.1", 20)
        assert sorted(c["id"] for c in copies) == sorted(ids)
        assert all(hdrs(c)["kjobs-attempt"] == "1" for c in copies)


def test_exactly_once_mode_commits_under_a_backlog_of_failures():
    """Failing jobs keep arriving: every worker thread routes copies while the poll thread
    commits transactions. A commit must not wait for copies queued behind its own lock (it
    once did: the transaction aborted after 60 s and the worker stopped)."""
    with harness.Broker(partitions=4) as broker:
        rounds, per_round = 20, 1000
        w = Worker(broker.bootstrap, {"KJOBS_RETRY_EXACTLY_ONCE": "true",
                                      "KJOBS_RETRY_DELAYS": "1h"})
        try:
            for _ in range(rounds):  # each round lands while the last one is being routed
                run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail",
                              "--count", str(per_round)), timeout=300)
                assert w.proc.poll() is None, "the worker stopped"
            total = rounds * per_round
            w.wait_for("every job routed", lambda: w.proc.poll() is not None
                       or w.metric("kjobs_retry_routed_total") >= total, timeout=240)
            assert w.proc.poll() is None, "the worker stopped: " + "".join(w.lines[-3:])
            assert w.metric("kjobs_commits_total", result="ok") >= 2
            assert w.metric("kjobs_commits_total", result="error") == 0
        finally:
            rc, log = w.stop()
        assert rc == 0, log[-2000:]
        assert "transaction aborted" not in log
        if harness.REAL_KAFKA:
            assert lag_total(broker.bootstrap) == 0


def test_two_exactly_once_workers_on_one_host_do_not_fence_each_other():
    """Two exactly-once workers with the same configuration on one host (same client id and
    hostname): each must get a transactional id of its own. They once shared one, and the
    second fenced the first ("fenced by a newer instance": transaction aborted, exit)."""
    with harness.Broker(partitions=4) as broker:
        env = {"KJOBS_RETRY_EXACTLY_ONCE": "true", "KJOBS_RETRY_DELAYS": "1h"}
        a = Worker(broker.bootstrap, env)
        b = Worker(broker.bootstrap, env)
        try:
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail",
                          "--count", "400"), timeout=120)
            for w in (a, b):  # both route copies in transactions of their own
                w.wait_for("copies routed by each worker", lambda w=w: w.proc.poll() is not None
                           or w.metric("kjobs_commits_total", result="ok") >= 1, timeout=120)
            total = lambda: a.metric("kjobs_retry_routed_total") + \
                b.metric("kjobs_retry_routed_total")  # noqa: E731
            a.wait_for("every job routed", lambda: a.proc.poll() is not None
                       or b.proc.poll() is not None or total() >= 400, timeout=120)
            assert a.proc.poll() is None and b.proc.poll() is None, "a worker stopped"
        finally:
            codes = [w.stop()[0] for w in (a, b)]
        logs = "".join(a.lines + b.lines)
        assert "fenced" not in logs.lower(), [l for l in logs.splitlines() if "fenced" in l][:3]
        assert codes == [0, 0], codes


def test_exactly_once_crash_leaves_no_duplicate_copy_on_real_kafka():
    """kill -9 in the middle of transactions under load, twice, then a clean run: a
    read_committed reader sees each job's ladder copy exactly once (aborted copies invisible),
    and the group's committed offsets reach the end of the main topic (consumed offsets went
    into the same transactions)."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("needs a real Kafka in KJOBS_TEST_KAFKA; the embedded broker's "
                           "TxnOffsetCommit discards offsets (docs/retries.md)")
    with harness.Broker(partitions=4) as broker:
        bootstrap = broker.bootstrap
        ids = set()

        def feed():  # jobs keep arriving while the workers run and die
            for _ in range(10):
                ids.update(run(kjobs_cmd("enqueue", "-b", bootstrap, "--type", "kjobs.fail",
                                         "--count", "500"), timeout=300).stdout.split())
        feeder = threading.Thread(target=feed)
        feeder.start()
        env = {"KJOBS_RETRY_EXACTLY_ONCE": "true", "KJOBS_RETRY_DELAYS": "1h"}
        # the crashing workers start at most 200 jobs a second, so that each is killed with
        # most of the 5,000 still to run however fast this machine's feeder and broker are
        paced = dict(env, KJOBS_LIMITS=json.dumps([{"type": "kjobs.fail", "rate": "200/s"}]))
        for _ in range(2):
            w = Worker(bootstrap, paced)
            try:  # each worker routes some copies, then dies mid-transaction
                w.wait_for("300 copies", lambda: w.metric("kjobs_retry_routed_total") >= 300,
                           timeout=180)
            finally:
                w.proc.kill()  # copies of the open transaction are aborted
                w.proc.wait()
                w.reader.join(timeout=10)
            if not feeder.is_alive():
                # the killed worker's open transaction holds its offsets "unstable" until the
                # broker aborts it (transaction.timeout.ms): `kjobs lag` cannot read them until
                # then (-1), so wait for a reading
                (lag,) = harness.wait_until("a readable lag", lambda: (
                    lambda lag: (lag,) if lag >= 0 else None)(lag_total(bootstrap)), timeout=180)
                assert lag > 0, f"the crash came too late: nothing left to run (lag {lag})"
        feeder.join()
        assert len(ids) == 5000
        w = Worker(bootstrap, env)
        try:
            w.wait_for("the main topic drained", lambda: lag_total(bootstrap) == 0,
                       timeout=300)
        finally:
            rc, log = w.stop()
        assert rc == 0, log[-2000:]
        copies = [r["id"] for r in harness.peek(bootstrap, "jobs.retry.1", len(ids),
                                                 timeout=120)]
        dup = len(copies) - len(set(copies))
        assert dup == 0 and set(copies) == ids, \
            f"{dup} duplicate copies, {len(ids - set(copies))} missing"


def lag_total(bootstrap):
    """The group's total lag on the main topic, from `kjobs lag` (committed vs log end)."""
    p = run(kjobs_cmd("lag", "-b", bootstrap), check=False)
    rows = [line.split() for line in p.stdout.splitlines()]
    rows = [r for r in rows if len(r) >= 6 and r[1] == "jobs"]
    return sum(int(r[5]) for r in rows) if rows and p.returncode == 0 else -1


if __name__ == "__main__":
    harness.main([test_breaker_stops_consumption_and_resumes_without_loss,
                  test_exactly_once_mode_routes_through_transactions,
                  test_exactly_once_mode_commits_under_a_backlog_of_failures,
                  test_two_exactly_once_workers_on_one_host_do_not_fence_each_other,
                  test_exactly_once_crash_leaves_no_duplicate_copy_on_real_kafka])
