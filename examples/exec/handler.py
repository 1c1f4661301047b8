#!/usr/bin/env python3
"""handler.py — an example kjobs exec handler in Python 3 (standard library only).

kjobs starts this once per worker thread (handlers.exec = ["python3", "-u", "handler.py"]) and
speaks JSON lines with it: one {"batch":[...]} line in on stdin, one {"results":[...]} line out
on stdout, per batch, echoing the request's "batch_id" so kjobs can tell a late or repeated reply
from the pending one. Anything written to stderr ends up in kjobs' JSON log. Exit when stdin
closes (kjobs is shutting down). See README.md for the protocol.

Job types handled here:
  email.send     pretend to send an e-mail (payload: JSON {"to": ...} or any text) -> ok
  exec.ok        ok
  exec.retry     retry; payload is the retry_after_ms to ask for (ASCII number, optional)
  exec.fail      permanent failure (goes to the DLQ)
  exec.crash     exit(3) in the middle of the batch, before answering (kjobs restarts us)
  exec.garbage   answer the batch with a line that is not JSON
  exec.sleep     sleep payload milliseconds, then ok (to provoke handlers.exec_timeout)
  anything else  fail with "unknown job type"
"""
import base64
import json
import os
import sys
import time


def handle(job):
    """Return a result object for one job; may also exit or return the marker "garbage"."""
    payload = base64.b64decode(job["payload_b64"])
    jtype = job["type"]
    if jtype in ("email.send", "exec.ok"):
        return {"id": job["id"], "status": "ok"}
    if jtype == "exec.retry":
        text = payload.decode("utf-8", "replace").strip()
        result = {"id": job["id"], "status": "retry",
                  "error": f"exec.retry: asked to retry (attempt {job['attempt']})"}
        if text.isdigit():
            result["retry_after_ms"] = int(text)
        return result
    if jtype == "exec.fail":
        return {"id": job["id"], "status": "fail", "error": "exec.fail: permanent failure"}
    if jtype == "exec.crash":
        sys.stderr.write(f"handler.py: exec.crash job {job['id']}, exiting with status 3\n")
        sys.stderr.flush()
        os._exit(3)
    if jtype == "exec.garbage":
        return "garbage"
    if jtype == "exec.sleep":
        time.sleep(int(payload or b"0") / 1000.0)
        return {"id": job["id"], "status": "ok"}
    return {"id": job["id"], "status": "fail", "error": f"unknown job type {jtype!r}"}


def main():
    pid = os.getpid()
    for line in sys.stdin:  # one batch per line; EOF = shut down
        if not line.strip():
            continue
        request = json.loads(line)
        batch = request["batch"]
        results, garbage = [], False
        for job in batch:
            r = handle(job)
            if r == "garbage":
                garbage = True
            else:
                results.append(r)
        sys.stderr.write(f"handler.py[{pid}]: batch of {len(batch)} job(s), "
                         f"types {sorted({j['type'] for j in batch})}\n")
        sys.stderr.flush()
        if garbage:
            sys.stdout.write("this is not JSON\n")
        else:
            reply = {"batch_id": request.get("batch_id"), "results": results}
            sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
