"""test_exec_binary.py — the exec handler's binary framing (handlers.exec_protocol = "binary")
end to end: a real `kjobs broker`, a real `kjobs run`, and children written with the helper
libraries examples/exec/kjobs_exec.py and kjobs_exec.js (handler_binary.py / handler_binary.js).

Per language: ok jobs; retry with the child's error and retry_after_ms (ladder headers); fail
(DLQ, class permanent); a retried job dead-lettered after its last attempt; a child crashing
mid-batch (retried, restarted, later jobs succeed); print()/console.log from the handler lands
in kjobs' log, not in the frames; every field of a job (id, type, key, topic, partition,
attempt, meta, payload bytes, traceparent) arrives as enqueued. Then an untrusted child writing
garbage frames (oversized length, text instead of a frame, short frame, bad status byte,
trailing bytes): each is an invalid reply (retryable, child restarted), kjobs keeps running and
exits 0; a stale batch_id frame is discarded and counted; a JSON-lines child configured as
binary fails with a message that says so.

Every wait is on an event (a log line of the worker), never a fixed sleep. Run with
/usr/bin/python3."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs, kjobs_cmd, run  # noqa: E402
from test_exec import (EXAMPLES, Worker, _BIN_DIR, done, enqueue, peek_all,  # noqa: E402
                       procs_peek_all, routed)

TYPES = "email.send,exec.ok,exec.retry,exec.fail,exec.crash,echo"
BINARY = {"KJOBS_HANDLERS_EXEC_PROTOCOL": "binary"}

# The same "echo" job type in both languages: fail permanently with every field as JSON, so
# the dead letter's kjobs-error header shows what the child received.
ECHO_PY = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import kjobs_exec

def handle(job):
    if job.type != "echo":
        return
    raise kjobs_exec.Fail(json.dumps({
        "id": job.id, "type": job.type, "key": job.key.hex() if job.key is not None else None,
        "topic": job.topic, "partition": job.partition, "attempt": job.attempt,
        "meta": job.meta, "payload": job.payload.hex(), "traceparent": job.traceparent,
        "created_at_positive": job.created_at > 0, "offset_ok": job.offset >= 0},
        sort_keys=True))

kjobs_exec.serve(handle)
"""
ECHO_JS = r"""
const kjobs = require(process.argv[2] + '/kjobs_exec');
kjobs.serve((job) => {
  if (job.type !== 'echo') return;
  const o = { id: job.id, type: job.type, key: job.key === null ? null : job.key.toString('hex'),
    topic: job.topic, partition: job.partition, attempt: job.attempt, meta: job.meta,
    payload: job.payload.toString('hex'), traceparent: job.traceparent,
    created_at_positive: job.createdAt > 0, offset_ok: job.offset >= 0 };
  const sorted = {};
  for (const k of Object.keys(o).sort()) sorted[k] = o[k];
  throw new kjobs.Fail(JSON.stringify(sorted));
});
"""
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def enqueue_echo(b):
    line = json.dumps({"type": "echo", "id": "echo-1", "key": "k\u00e9y-1",
                       "payload_b64": "AAEC/4BuZXdsaW5lCg==",
                       "meta": {"a": "1", "traceparent": TRACEPARENT, "\u00fc": "\u00e9"}})
    ids = run(kjobs_cmd("enqueue", "-b", b), input=line + "\n").stdout.split()
    assert ids == ["echo-1"], ids


def check_echo(error):
    got = json.loads(error)
    want = {"id": "echo-1", "type": "echo", "key": "k\u00e9y-1".encode().hex(), "topic": "jobs",
            "attempt": 1, "meta": {"a": "1", "traceparent": TRACEPARENT, "\u00fc": "\u00e9"},
            "payload": bytes.fromhex("000102ff806e65776c696e650a").hex(),
            "traceparent": TRACEPARENT, "created_at_positive": True, "offset_ok": True}
    got.pop("partition")  # wherever the key landed; checked to be an int below
    assert got == want, (got, want)
    assert isinstance(json.loads(error)["partition"], int)


def binary_scenario(command, echo_command, tag):
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": command, "KJOBS_HANDLERS_EXEC_TYPES": TYPES,
                       "KJOBS_HANDLERS_EXEC_TIMEOUT": "5s", "KJOBS_RETRY_DELAYS": "200ms",
                       "KJOBS_RETRY_MAX_ATTEMPTS": "2", **BINARY}, broker)
        try:
            ok_ids = enqueue(b, "email.send", count=50)
            [rid] = enqueue(b, "exec.retry", payload="1500")
            [fid] = enqueue(b, "exec.fail")
            w.wait_for(done(ok_ids), "50 email.send jobs done", count=50)
            [r] = w.wait_for(routed(rid, False), "exec.retry routed to the ladder")
            assert r["class"] == "retryable" and \
                r["error"] == "exec.retry: asked to retry (attempt 1)", r
            [f] = w.wait_for(routed(fid, True), "exec.fail dead-lettered")
            assert f["class"] == "permanent" and f["error"] == "exec.fail: permanent failure", f
            [r2] = w.wait_for(routed(rid, True), "exec.retry dead-lettered after 2 attempts")
            assert r2["error"] == "exec.retry: asked to retry (attempt 2)", r2

            # crash mid-batch: retryable, restarted, later jobs succeed; the handler's own
            # print()/console output reached kjobs' log as stderr, not the frames
            [cid] = enqueue(b, "exec.crash")
            [c1] = w.wait_for(routed(cid, False), "exec.crash retry routed")
            assert "exited during the batch" in c1["error"] and "exit 3" in c1["error"], c1
            assert "hello" not in c1["error"], c1  # the child did announce itself
            w.wait_for(lambda l: l["msg"] == "exec child stderr"
                       and l.get("line", "").startswith(f"{tag}: exec.crash job {cid}"),
                       "the crashing handler's own output in the log")
            # its second attempt (from the ladder) crashes the child again: wait for it, so
            # the jobs below restart the child and one is alive to be stopped at shutdown
            w.wait_for(routed(cid, True), "exec.crash dead-lettered after 2 attempts")
            later = enqueue(b, "email.send", count=5)
            w.wait_for(done(later), "email.send after the crash", count=5)

            ladder = {}
            for rec in procs_peek_all(b, "jobs.retry.1"):
                ladder.setdefault(rec["id"], rec)
            h = hdrs(ladder[rid])
            assert h["kjobs-error"] == "exec.retry: asked to retry (attempt 1)", h
            delay = int(h["kjobs-not-before"]) - int(h["kjobs-failed-at"])
            assert 1400 <= delay <= 1600, f"retry_after_ms 1500 not honoured: {delay} ms"
            dlq = peek_all(b, "jobs.dlq", 3)
            assert hdrs(dlq[fid])["kjobs-error-class"] == "permanent"
            assert not [l for l in w.logs if l["msg"] == "exec child reply discarded"]
        finally:
            w.stop()
        shutdown = [l for l in w.logs if l["msg"] == "exec child exited"
                    and l["reason"] == "shutdown"]
        assert shutdown and all(l["status"] == "exit 0" for l in shutdown), shutdown

    # every field arrives as enqueued
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": echo_command, "KJOBS_WORKERS": "1", **BINARY},
                   broker)
        try:
            enqueue_echo(b)
            [e] = w.wait_for(routed("echo-1", True), "the echo job dead-lettered")
            check_echo(e["error"])
        finally:
            w.stop()


def test_binary_python():
    child = os.path.join(_BIN_DIR, "echo_child.py")
    with open(child, "w") as f:
        f.write(ECHO_PY)
    binary_scenario(f"{sys.executable} -u {EXAMPLES}/handler_binary.py",
                    f"{sys.executable} -u {child} {EXAMPLES}", "handler_binary.py")


def test_binary_node():
    node = shutil.which("node")
    assert node, "node not found in PATH"
    child = os.path.join(_BIN_DIR, "echo_child.js")
    with open(child, "w") as f:
        f.write(ECHO_JS)
    binary_scenario(f"{node} {EXAMPLES}/handler_binary.js", f"{node} {child} {EXAMPLES}",
                    "handler_binary.js")


# An untrusted child: announces the framing, then answers each batch (one job each here) as
# its first job's type says, byte by byte, without the helper.
GARBAGE_CHILD = r"""
import struct, sys
out, inp = sys.stdout.buffer, sys.stdin.buffer
out.write(b"kjobs-exec binary 1\n"); out.flush()
def frame(body): return struct.pack("<I", len(body)) + body
while True:
    head = inp.read(4)
    if len(head) < 4: break
    (n,) = struct.unpack("<I", head)
    body = inp.read(n)
    kind, bid, count = struct.unpack_from("<cQI", body, 0)
    idl, tyl = struct.unpack_from("<II", body, 13 + 24)
    jtype = body[13 + 56 + idl:13 + 56 + idl + tyl].decode()
    ok = struct.pack("<cQI", b"R", bid, count) + bytes(count)
    reply = {
        "g.oversize": struct.pack("<I", 0x7fffffff) + b"x" * 64,
        "g.text": b"this is not a frame\n",
        "g.short": struct.pack("<I", 3) + b"abc",
        "g.status": frame(struct.pack("<cQI", b"R", bid, 1) + b"\x07"),
        "g.trailing": frame(ok + b"junk"),
        "g.toomany": frame(struct.pack("<cQI", b"R", bid, count + 1) + bytes(count + 1)),
        "g.stale": frame(struct.pack("<cQI", b"R", bid + 1000, count) + bytes(count)) + frame(ok),
    }.get(jtype, frame(ok))
    out.write(reply); out.flush()
"""

GARBAGE = {  # type -> what the batch's error must say
    "g.oversize": "frame length 2147483647 above the limit of 67108864 bytes",
    "g.text": "frame length 1936287860 above the limit",  # "this" read as a u32 length
    "g.short": "frame length 3 below the 13-byte reply header",
    "g.status": "result 0 has status 7, expected 0, 1 or 2",
    "g.trailing": "4 bytes after the last result",
    "g.toomany": "2 results for a batch of 1 jobs",
}


def test_binary_garbage_from_the_child():
    child = os.path.join(_BIN_DIR, "garbage_child.py")
    with open(child, "w") as f:
        f.write(GARBAGE_CHILD)
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {child}",
                       "KJOBS_WORKERS": "1", "KJOBS_RETRY_DELAYS": "200ms",
                       "KJOBS_RETRY_MAX_ATTEMPTS": "2", **BINARY}, broker)
        try:
            for jtype, why in GARBAGE.items():
                [gid] = enqueue(b, jtype)  # one at a time: a batch of this job alone
                [g] = w.wait_for(routed(gid, False), f"{jtype} routed to the ladder")
                assert g["class"] == "retryable" and "invalid reply" in g["error"] and \
                    why in g["error"], (jtype, g)
                w.wait_for(routed(gid, True), f"{jtype} dead-lettered after 2 attempts")
            killed = w.count(lambda l: l["msg"] == "exec child exited"
                             and l["reason"] == "invalid reply")
            assert killed >= len(GARBAGE), killed
            # a stale batch id is discarded and counted; the real reply counts
            [sid] = enqueue(b, "g.stale")
            w.wait_for(done([sid]), "the job after a stale frame done")
            [d] = w.wait_for(lambda l: l["msg"] == "exec child reply discarded", "stale frame")
            assert d["reply_batch_id"] == d["expected_batch_id"] + 1000, d
            later = enqueue(b, "g.ok", count=20)
            w.wait_for(done(later), "ok jobs after all the garbage", count=20)
        finally:
            w.stop()  # asserts a clean exit 0: no crash on any of it


def test_binary_json_child_is_a_clear_error():
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {EXAMPLES}/handler.py",
                       "KJOBS_WORKERS": "1", "KJOBS_RETRY_DELAYS": "200ms",
                       "KJOBS_HANDLERS_EXEC_TIMEOUT": "3s",  # it may wait for a newline
                       "KJOBS_RETRY_MAX_ATTEMPTS": "2", **BINARY}, broker)
        try:
            [jid] = enqueue(b, "email.send")
            [r] = w.wait_for(routed(jid, False), "the job routed to the ladder")
            assert "never wrote the binary hello line" in r["error"], r
        finally:
            w.stop()


if __name__ == "__main__":
    harness.main([test_binary_python, test_binary_node, test_binary_garbage_from_the_child,
                  test_binary_json_child_is_a_clear_error])
