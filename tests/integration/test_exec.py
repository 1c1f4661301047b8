"""test_exec.py — the exec handler (handlers.exec) end to end: a real `kjobs broker`, a real
`kjobs run`, and both example children (examples/exec/handler.py and handler.js). Per language:
ok jobs; retry with the child's error and retry_after_ms (jobs.retry.1); fail (jobs.dlq, class
permanent); a child crashing mid-batch (batch retried, child restarted, later jobs succeed,
"exec child exited" logged); a garbage reply (retryable, restarted); a child sleeping past
handlers.exec_timeout (class timeout); child stderr in kjobs' JSON log; handlers.exec_types
limiting what the child gets (other types: DLQ, class unknown-type). A child repeating a stale
reply (discarded, never counted for a later batch) and a 1,400-byte multi-byte handler error
(cut on a character boundary with "…", log line intact). Also checks that the
Grafana dashboard and docs/operations.md only name metrics that processor/metrics.c registers.

Every wait is on an event (a log line of the worker, records arriving in peek), never a fixed
sleep. Run with /usr/bin/python3."""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs, SOURCE_DIR, kjobs_cmd, run  # noqa: E402

EXAMPLES = os.path.join(SOURCE_DIR, "examples", "exec")
# Run kjobs through a symlink with a name of our own, so a neighbour's name-based pkill on a
# shared host cannot stop this suite's broker or worker mid-test (seen in practice).
_BIN_DIR = tempfile.mkdtemp(prefix="kjobs-exec-bin-")
atexit.register(shutil.rmtree, _BIN_DIR, True)
os.symlink(os.path.abspath(harness.KJOBS), os.path.join(_BIN_DIR, "kjexec"))
harness.KJOBS = os.path.join(_BIN_DIR, "kjexec")
EXEC_TYPES = "email.send,exec.ok,exec.retry,exec.fail,exec.crash,exec.garbage,exec.sleep"


class Worker:
    """`kjobs run` with JSON logs collected from stderr by a reader thread."""

    def __init__(self, bootstrap, env, broker=None):
        self.broker = broker  # a harness.Broker whose death ends every wait with a clear error
        full_env = dict(os.environ)
        full_env.update({"KJOBS_HTTP_LISTEN": "", "KJOBS_LOG_LEVEL": "debug"})
        full_env.update(env)
        self.proc = subprocess.Popen(
            kjobs_cmd("run", "-b", bootstrap, "-X", "fetch.wait.max.ms=5"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)
        self.logs = []
        self.bad_lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                obj = json.loads(line)
                assert isinstance(obj, dict) and {"ts", "level", "msg"} <= obj.keys()
            except Exception:
                obj = None
            with self.cond:
                if obj is None:
                    self.bad_lines.append(line)
                else:
                    self.logs.append(obj)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pred, what, count=1, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [l for l in self.logs if pred(l)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if self.broker and self.broker.proc.poll() is not None:
                    raise AssertionError(f"the broker died (exit {self.broker.proc.returncode})"
                                         f" while waiting for {what}")
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    tail = "\n".join(json.dumps(l) for l in self.logs[-25:])
                    raise AssertionError(f"timed out waiting for {what}; last logs:\n{tail}")
                self.cond.wait(min(left, 1.0))

    def count(self, pred):
        with self.cond:
            return sum(1 for l in self.logs if pred(l))

    def stop(self):
        if self.broker and self.broker.proc.poll() is not None and self.proc.poll() is None:
            self.proc.kill()  # no broker to drain against; the original error is what matters
            self.proc.wait()
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("kjobs run did not stop on SIGTERM")
        self.reader.join(10)
        assert rc == 0, f"kjobs run exited {rc}"
        assert not self.bad_lines, f"non-JSON lines on kjobs' stderr: {self.bad_lines[:5]}"


def enqueue(bootstrap, jtype, count=1, payload=None):
    args = ["enqueue", "-b", bootstrap, "--type", jtype, "--count", str(count)]
    if payload is not None:
        args += ["--payload", payload]
    ids = run(kjobs_cmd(*args)).stdout.split()
    assert len(ids) == count, ids
    return ids


def peek_all(bootstrap, topic, count):
    records = harness.peek(bootstrap, topic, count)
    return {r["id"]: r for r in records}


def procs_peek_all(bootstrap, topic):
    """Every record of a topic (peek stops at the end of every partition)."""
    p = run(kjobs_cmd("peek", "-b", bootstrap, "--topic", topic, "--from-beginning",
                      "--timeout", "30"))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def done(ids):
    ids = set(ids)
    return lambda l: l["msg"] == "job done" and l.get("id") in ids


def routed(jid, dead):
    msg = "job failed, dead-lettered" if dead else "job failed, retry routed"
    return lambda l: l["msg"] == msg and l.get("id") == jid


def exec_scenario(command, child_tag):
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": command, "KJOBS_HANDLERS_EXEC_TYPES": EXEC_TYPES,
                       "KJOBS_HANDLERS_EXEC_TIMEOUT": "3s", "KJOBS_RETRY_DELAYS": "200ms",
                       "KJOBS_RETRY_MAX_ATTEMPTS": "2"}, broker)
        try:
            started = lambda l: l["msg"] == "exec child started"  # noqa: E731
            exited = lambda l: l["msg"] == "exec child exited"  # noqa: E731

            # ok, retry (child's error and delay), fail, a type exec_types does not list
            ok_ids = enqueue(b, "email.send", count=10)
            [rid] = enqueue(b, "exec.retry", payload="1500")
            [fid] = enqueue(b, "exec.fail")
            [uid] = enqueue(b, "not.listed")
            w.wait_for(done(ok_ids), "10 email.send jobs done", count=10)
            [r] = w.wait_for(routed(rid, False), "exec.retry routed to the ladder")
            assert r["class"] == "retryable" and r["error"] == \
                "exec.retry: asked to retry (attempt 1)", r
            [f] = w.wait_for(routed(fid, True), "exec.fail dead-lettered")
            assert f["class"] == "permanent" and f["error"] == "exec.fail: permanent failure", f
            [u] = w.wait_for(routed(uid, True), "not.listed dead-lettered")
            assert u["class"] == "unknown-type", u
            w.wait_for(routed(rid, True), "exec.retry dead-lettered after its 2nd attempt")

            # child stderr is relayed line by line as JSON log lines
            [s, *_] = w.wait_for(lambda l: l["msg"] == "exec child stderr"
                                 and l.get("line", "").startswith(child_tag + "["),
                                 "child stderr in the log")
            assert s["stream"] == "stderr" and isinstance(s["child_pid"], int), s
            assert s["line"].startswith(f"{child_tag}[{s['child_pid']}]: batch of"), s

            # crash mid-batch: retryable, child restarted, later jobs still succeed
            starts = w.count(started)
            [cid] = enqueue(b, "exec.crash")
            [c1] = w.wait_for(routed(cid, False), "exec.crash retry routed")
            assert c1["class"] == "retryable" and "exited during the batch" in c1["error"] \
                and "exit 3" in c1["error"], c1
            crash_exits = w.wait_for(lambda l: exited(l) and l["status"] == "exit 3",
                                     "exec child exited (exit 3)")
            assert crash_exits[0]["child_pid"] > 0, crash_exits
            w.wait_for(routed(cid, True), "exec.crash dead-lettered after 2 attempts")
            later = enqueue(b, "email.send", count=5)
            w.wait_for(done(later), "email.send after the crash", count=5)
            assert w.count(started) > starts, "no child restarted after the crash"

            # garbage reply: retryable, child killed and restarted
            [gid] = enqueue(b, "exec.garbage")
            [g1] = w.wait_for(routed(gid, False), "exec.garbage retry routed")
            assert g1["class"] == "retryable" and "invalid reply" in g1["error"] \
                and "not JSON" in g1["error"], g1
            w.wait_for(lambda l: exited(l) and l["reason"] == "invalid reply",
                       "child killed after an invalid reply")
            w.wait_for(routed(gid, True), "exec.garbage dead-lettered after 2 attempts")
            later = enqueue(b, "email.send", count=5)
            w.wait_for(done(later), "email.send after the garbage reply", count=5)

            # timeout: a child sleeping past handlers.exec_timeout (3 s: a cold node child on a
            # loaded machine took over 1 s to answer its first batch, sending ok jobs to the
            # ladder)
            [tid] = enqueue(b, "exec.sleep", payload="8000")
            [t1] = w.wait_for(routed(tid, False), "exec.sleep timed out, retry routed")
            assert t1["class"] == "timeout" and "no reply within 3000 ms" in t1["error"], t1
            w.wait_for(lambda l: exited(l) and l["reason"] == "timeout", "child killed on timeout")
            [t2] = w.wait_for(routed(tid, True), "exec.sleep dead-lettered after 2 timeouts")
            assert t2["class"] == "timeout", t2
            later = enqueue(b, "email.send", count=3)
            w.wait_for(done(later), "email.send after the timeout", count=3)

            # what landed on the ladder and in the DLQ, with the headers users see
            # exec.retry's 1500 ms is longer than the 200 ms step: it hops along jobs.retry.1
            # (identical copies) until due, so the topic holds more than one copy of it
            ladder = {}
            for r in procs_peek_all(b, "jobs.retry.1"):
                ladder.setdefault(r["id"], r)
            assert set(ladder) == {rid, cid, gid, tid}, ladder.keys()
            h = hdrs(ladder[rid])
            assert h["kjobs-error"] == "exec.retry: asked to retry (attempt 1)", h
            assert h["kjobs-error-class"] == "retryable" and h["kjobs-attempt"] == "1", h
            delay = int(h["kjobs-not-before"]) - int(h["kjobs-failed-at"])
            assert 1400 <= delay <= 1600, f"retry_after_ms 1500 not honoured: {delay} ms"
            assert hdrs(ladder[cid])["kjobs-error-class"] == "retryable"
            assert "invalid reply" in hdrs(ladder[gid])["kjobs-error"]
            assert hdrs(ladder[tid])["kjobs-error-class"] == "timeout"
            dlq = peek_all(b, "jobs.dlq", 6)
            assert set(dlq) == {fid, uid, rid, cid, gid, tid}, dlq.keys()
            classes = {k: hdrs(v)["kjobs-error-class"] for k, v in dlq.items()}
            assert classes == {fid: "permanent", uid: "unknown-type", rid: "retryable",
                               cid: "retryable", gid: "retryable", tid: "timeout"}, classes
            assert hdrs(dlq[fid])["kjobs-error"] == "exec.fail: permanent failure"
        finally:
            w.stop()
        # clean shutdown: every child got EOF on stdin and exited by itself
        shutdown = [l for l in w.logs if l["msg"] == "exec child exited"
                    and l["reason"] == "shutdown"]
        assert shutdown and all(l["status"] == "exit 0" for l in shutdown), shutdown


def test_exec_python():
    exec_scenario(f"{sys.executable} -u {EXAMPLES}/handler.py", "handler.py")


def test_exec_node():
    node = shutil.which("node")
    assert node, "node not found in PATH"
    exec_scenario(f"{node} {EXAMPLES}/handler.js", "handler.js")


def test_exec_missing_program_is_a_config_error():
    p = run(kjobs_cmd("run", "-b", "127.0.0.1:1"), check=False,
            env={"KJOBS_HANDLERS_EXEC": "/nonexistent/handler --token=s3cret",
                 "KJOBS_HTTP_LISTEN": ""})
    assert p.returncode == 2, p
    assert "handlers.exec" in p.stderr and "s3cret" not in p.stderr, p.stderr


def metric_table_names():
    """Metric names registered by processor/metrics.c (string literals starting kjobs_)."""
    text = open(os.path.join(SOURCE_DIR, "processor", "metrics.c")).read()
    names = set(re.findall(r'"(kjobs_[a-z0-9_]+)"', text))
    assert len(names) >= 15, names
    return names


def base_metric(name, known):
    if name in known:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return None


def test_dashboard_and_docs_name_only_real_metrics():
    known = metric_table_names()
    dash_text = open(os.path.join(SOURCE_DIR, "docs", "grafana-dashboard.json")).read()
    dash = json.loads(dash_text)
    assert dash.get("panels") and dash.get("title"), "not a Grafana dashboard"
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs, "dashboard has no queries"
    used = set(re.findall(r"\bkjobs_[a-z0-9_]+", dash_text))
    unknown = sorted(n for n in used if base_metric(n, known) is None)
    assert not unknown, f"dashboard names metrics that metrics.c does not register: {unknown}"
    ops = open(os.path.join(SOURCE_DIR, "docs", "operations.md")).read()
    unknown = sorted(n for n in set(re.findall(r"\bkjobs_[a-z0-9_]+", ops))
                     if base_metric(n, known) is None)
    assert not unknown, f"operations.md names unknown metrics: {unknown}"
    missing = sorted(n for n in known if f"`{n}" not in ops)
    assert not missing, f"operations.md does not document: {missing}"


# A child that (a) answers every batch, but on its 4th request first repeats its reply to the
# 3rd (a stale line, as a child with a buffering bug writes it), without echoing batch_id; and
# (b) fails "long.fail" jobs with an error of 700 "é" (1,400 bytes, a character across byte
# 1,023).
STALE_CHILD = r"""
import json, sys
n, last = 0, None
for line in sys.stdin:
    n += 1
    req = json.loads(line)
    res = [{"id": j["id"], "status": "fail", "error": "\u00e9" * 700} if j["type"] == "long.fail"
           else {"id": j["id"], "status": "ok"} for j in req["batch"]]
    out = json.dumps({"results": res}) + "\n"
    if n == 4:
        sys.stdout.write(last)
    sys.stdout.write(out)
    sys.stdout.flush()
    last = out
"""


def test_exec_stale_reply_and_long_error():
    """Issue #10 items 8 and 6 end to end. A repeated reply never counts for a later batch: no
    job of the following batches is retried, and the stale line is discarded with a warning.
    A 1,400-byte handler error with a multi-byte character across byte 1,023 reaches the DLQ
    as valid UTF-8 of at most 1,023 bytes ending with "…", and the worker's "dead-lettered" log
    line keeps id, topic, offset and the error."""
    child = os.path.join(_BIN_DIR, "stale_child.py")
    with open(child, "w") as f:
        f.write(STALE_CHILD)
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {child}",
                       "KJOBS_WORKERS": "1", "KJOBS_RETRY_DELAYS": "200ms"}, broker)
        try:
            all_ids = []
            for _ in range(6):  # one enqueue at a time: at least one batch each
                ids = enqueue(b, "exec.ok", count=3)
                all_ids += ids
                w.wait_for(done(ids), "3 exec.ok jobs done", count=3)
            w.wait_for(lambda l: l["msg"] == "exec child reply discarded",
                       "the stale reply discarded with a warning")
            retried = [l for l in w.logs if l["msg"].startswith("job failed")
                       and l.get("id") in set(all_ids)]
            assert not retried, retried[:3]

            [lid] = enqueue(b, "long.fail")
            [d] = w.wait_for(routed(lid, True), "long.fail dead-lettered")
            assert d["topic"] == "jobs" and isinstance(d["offset"], int) and "log_error" not in d, d
            err = d["error"]
            assert err.endswith("\u2026") and err.startswith("\u00e9" * 10), err[:40]
            assert len(err.encode()) <= 1023 and set(err[:-1]) == {"\u00e9"}, len(err.encode())
            [rec] = harness.peek(b, "jobs.dlq", 1)
            h = hdrs(rec)
            assert isinstance(h["kjobs-error"], str), h["kjobs-error"]  # valid UTF-8, not base64
            assert h["kjobs-error"] == err
        finally:
            w.stop()


ODD_CHILD = r"""
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    res = []
    for j in req["batch"]:
        t = j["type"]
        if t == "odd.nul":  # "\u0000" is valid JSON
            res.append({"id": j["id"], "status": "fail", "error": "bad\u0000byte"})
        elif t == "odd.huge" and j["attempt"] == 1:
            res.append({"id": j["id"], "status": "retry", "retry_after_ms": 9223372036854775807})
        elif t == "odd.big":  # its DLQ copy is too large: reduced, error cut on a character
            res.append({"id": j["id"], "status": "fail", "error": "\u00e9" * 600})
        else:
            res.append({"id": j["id"], "status": "ok"})
    sys.stdout.write(json.dumps({"batch_id": req["batch_id"], "results": res}) + "\n")
    sys.stdout.flush()
"""


def test_exec_odd_replies_fail_only_their_job():
    """A NUL in one result's error, a retry_after_ms beyond int64, a copy too large for the
    producer: each affects its own job only. The NUL job is dead-lettered as permanent and its
    batch-mate succeeds; the huge delay is capped at 30 days (as for plugins); the reduced dead
    letter's kjobs-error is valid UTF-8 cut on a character with "…"."""
    child = os.path.join(_BIN_DIR, "odd_child.py")
    with open(child, "w") as f:
        f.write(ODD_CHILD)
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {child}",
                       "KJOBS_WORKERS": "1", "KJOBS_RETRY_DELAYS": "200ms",
                       "KJOBS_RDKAFKA_MESSAGE_MAX_BYTES": "1000"}, broker)
        try:
            text = "".join(json.dumps({"type": t, "id": i, "key": "k"}) + "\n" for t, i in (
                ("odd.ok", "mate"), ("odd.nul", "nul"), ("odd.huge", "huge"),
                ("odd.big", "big")))
            run(kjobs_cmd("enqueue", "-b", b), input=text)
            w.wait_for(done(["mate"]), "the NUL job's batch-mate done")
            [nul] = w.wait_for(routed("nul", True), "the NUL job dead-lettered")
            assert nul["class"] == "permanent", nul
            [huge] = w.wait_for(routed("huge", False), "the huge delay routed to the ladder")
            w.wait_for(routed("big", True), "the big-error job dead-lettered")
            assert not [l for l in w.logs if l["msg"] == "exec child exited"], "child killed"
            [copy] = harness.peek(b, "jobs.retry.1", 1)
            h = hdrs(copy)
            delay = int(h["kjobs-not-before"]) - int(h["kjobs-failed-at"])
            assert delay == 30 * 86400 * 1000, delay
            big = [r for r in harness.peek(b, "jobs.dlq", 2) if hdrs(r).get("kjobs-truncated")]
            assert big, "no reduced dead letter"
            err = hdrs(big[0])["kjobs-error"]
            assert isinstance(err, str) and err.endswith("\u2026"), err  # str: valid UTF-8
            assert len(err.encode()) <= 1023
        finally:
            w.stop()


if __name__ == "__main__":
    harness.main([test_dashboard_and_docs_name_only_real_metrics,
                  test_exec_missing_program_is_a_config_error, test_exec_python, test_exec_node,
                  test_exec_stale_reply_and_long_error, test_exec_odd_replies_fail_only_their_job])
