"""test_trace.py — W3C trace context end to end: kafka-python + Apache Avro produce jobs with
`traceparent`/`tracestate` in the record headers, only in the job's meta map, in both, invalid,
of a higher version, or not at all; a real `kjobs run` hands them to an exec handler child that
records every job exactly as it received it; the test checks the `traceparent`/`tracestate`
fields the child saw (header first, meta as fallback, invalid values null and counted in
kjobs_trace_context_invalid_total{field}), and that a failing job's ladder copy
(jobs.retry.1) and dead letter (jobs.dlq) keep the headers — and that its second attempt,
consumed from the ladder, sees the same trace context.

Works on the embedded broker and, with KJOBS_TEST_KAFKA, on real Kafka (harness.Broker).
Every wait is on data (the child's record file, peek), never a fixed sleep.
Run with /usr/bin/python3."""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import kjobs_cmd, wait_until  # noqa: E402
from test_interop_python import JOB_SCHEMA, avro_encode  # noqa: E402

HTTP_PORT = int(os.environ.get("KJOBS_TEST_TRACE_HTTP_PORT", "26181"))
TP_HDR = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"   # W3C §3.2.3
TP_META = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # W3C §3.1
TP_FAIL = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-00"
TS_HDR = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"                   # W3C §3.1
TS_META = "congo=t61rcWkgMzE"

# An exec child that writes every job it is handed to FILE (one JSON line per job, as
# received) and fails type trace.fail (retryable), answering ok for the rest.
CHILD = r"""
import json, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for line in sys.stdin:
    req = json.loads(line)
    os.write(fd, "".join(json.dumps(j) + "\n" for j in req["batch"]).encode())
    res = [{"id": j["id"], "status": "retry", "error": "trace.fail asked to fail"}
           if j["type"] == "trace.fail" else {"id": j["id"], "status": "ok"}
           for j in req["batch"]]
    sys.stdout.write(json.dumps({"batch_id": req["batch_id"], "results": res}) + "\n")
    sys.stdout.flush()
"""

# id -> (type, headers, meta, expected traceparent, expected tracestate)
JOBS = {
    "hdr": ("trace.ok", [("traceparent", TP_HDR), ("tracestate", TS_HDR)], {}, TP_HDR, TS_HDR),
    "meta": ("trace.ok", [], {"traceparent": TP_META, "tracestate": TS_META}, TP_META, TS_META),
    # the headers are the carrier when they hold a traceparent: meta's tracestate is not used
    "both": ("trace.ok", [("TraceParent", TP_HDR)], {"traceparent": TP_META,
                                                     "tracestate": TS_META}, TP_HDR, None),
    # all-zero trace-id (W3C §3.2.2.3): ignored, counted; its tracestate is not parsed (§3.3)
    "bad": ("trace.ok", [("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"),
                         ("tracestate", TS_HDR)], {}, None, None),
    # a tracestate without a traceparent is discarded (§4.2), counted
    "orphan": ("trace.ok", [("tracestate", TS_HDR)], {}, None, None),
    # a higher version (§3.2.4) is handed on as version 00 with only the sampled flag
    "v1": ("trace.ok", [("traceparent", "01" + TP_HDR[2:-2] + "09-future")], {}, TP_HDR, None),
    # an invalid tracestate alone is dropped; the traceparent stays (§3.3)
    "badstate": ("trace.ok", [("traceparent", TP_HDR), ("tracestate", "Upper=1")], {}, TP_HDR,
                 None),
    "none": ("trace.ok", [], {}, None, None),
    "fail": ("trace.fail", [("traceparent", TP_FAIL), ("tracestate", "fail=1"),
                            ("x-app", "kept")], {}, TP_FAIL, "fail=1"),
}


def produce(bootstrap):
    producer = harness.python_producer(bootstrap)
    now = datetime.datetime.now(datetime.timezone.utc)
    for jid, (jtype, headers, meta, _, _) in JOBS.items():
        value = avro_encode(JOB_SCHEMA, {"id": jid, "type": jtype, "payload": b"",
                                         "created_at": now, "meta": meta})
        producer.send("jobs", value=value, key=jid.encode(),
                      headers=[(n, v.encode()) for n, v in headers]).get(timeout=60)
    producer.close()


def metric(text, name, **labels):
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]


def header_values(rec, name):
    return [v for n, v in rec["headers"] if n == name]


def test_trace_context_reaches_handlers_and_copies():
    tmp = tempfile.mkdtemp(prefix="kjobs-trace-")
    try:
        _scenario(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _scenario(tmp):
    seen_path = os.path.join(tmp, "seen.jsonl")
    child = os.path.join(tmp, "child.py")
    with open(child, "w") as f:
        f.write(CHILD)
    layout = {"KJOBS_RETRY_DELAYS": "200ms"}
    env = dict(os.environ, **layout, KJOBS_RETRY_MAX_ATTEMPTS="2",
               KJOBS_HANDLERS_EXEC=f"/usr/bin/python3 -u {child} {seen_path}",
               KJOBS_HANDLERS_EXEC_TYPES="trace.ok,trace.fail",
               KJOBS_HTTP_LISTEN=f"127.0.0.1:{HTTP_PORT}")
    old_env = os.environ.get("KJOBS_RETRY_DELAYS")
    os.environ["KJOBS_RETRY_DELAYS"] = "200ms"  # the embedded broker's topic layout
    try:
        broker = harness.Broker(partitions=1, env=layout)
    finally:
        if old_env is None:
            del os.environ["KJOBS_RETRY_DELAYS"]
        else:
            os.environ["KJOBS_RETRY_DELAYS"] = old_env
    with broker:
        b = broker.bootstrap
        produce(b)
        proc = subprocess.Popen(kjobs_cmd("run", "-b", b, "-X", "fetch.wait.max.ms=5"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        log = []
        reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            # every job once, the failing one twice (main topic, then jobs.retry.1)
            want = len(JOBS) + 1
            wait_until(f"{want} jobs handed to the child", lambda: len(records(seen_path)) >= want
                       or proc.poll() is not None, timeout=120)
            assert proc.poll() is None, "kjobs run exited:\n" + "".join(log[-20:])
            dlq = harness.peek(b, "jobs.dlq", 1)
            ladder = harness.peek(b, "jobs.retry.1", 1)
            with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=10) as r:
                metrics = r.read().decode()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            reader.join(10)
        assert rc == 0, f"kjobs run exited {rc}:\n" + "".join(log[-20:])

    seen = records(seen_path)
    assert len(seen) == len(JOBS) + 1, [j["id"] for j in seen]
    by_id = {}
    for job in seen:
        by_id.setdefault(job["id"], []).append(job)
    assert set(by_id) == set(JOBS), sorted(by_id)
    for jid, (_, _, meta, want_tp, want_ts) in JOBS.items():
        for job in by_id[jid]:
            # both fields are always present in the exec protocol: a string or null
            assert "traceparent" in job and "tracestate" in job, job
            assert job["traceparent"] == want_tp, (jid, job["traceparent"], want_tp)
            assert job["tracestate"] == want_ts, (jid, job["tracestate"], want_ts)
            assert job["meta"] == meta, (jid, job["meta"])  # meta itself is passed unchanged
    attempts = sorted((j["attempt"], j["topic"]) for j in by_id["fail"])
    assert attempts == [(1, "jobs"), (2, "jobs.retry.1")], attempts

    # the failing job's copies keep the original trace headers, once each, unchanged
    for rec, attempt in ((ladder[0], "1"), (dlq[0], "2")):
        assert rec["id"] == "fail", rec
        assert header_values(rec, "traceparent") == [TP_FAIL], rec["headers"]
        assert header_values(rec, "tracestate") == ["fail=1"], rec["headers"]
        assert header_values(rec, "x-app") == ["kept"], rec["headers"]
        assert header_values(rec, "kjobs-attempt") == [attempt], rec["headers"]
    assert header_values(dlq[0], "kjobs-error-class") == ["retryable"], dlq[0]["headers"]

    # ignored values are counted: "bad" (traceparent), "orphan" and "badstate" (tracestate)
    assert metric(metrics, "kjobs_trace_context_invalid_total", field="traceparent") == 1, \
        metrics
    assert metric(metrics, "kjobs_trace_context_invalid_total", field="tracestate") == 2, \
        metrics


if __name__ == "__main__":
    harness.main([test_trace_context_reaches_handlers_and_copies])
