#!/usr/bin/env python3
"""handler_binary.py — the example handler of handler.py, on the binary framing through the
kjobs_exec helper (handlers.exec_protocol = "binary"; handlers.exec = ["python3", "-u",
"examples/exec/handler_binary.py"]). No protocol code here: kjobs_exec.serve() reads the frames,
calls handle() per job and writes the replies. See README.md.

Job types: email.send / exec.ok -> ok; exec.retry -> retry (ASCII payload: retry_after_ms);
exec.fail -> permanent failure; exec.crash -> exit(3) mid-batch; exec.sleep -> sleep payload ms,
then ok; anything else -> permanent failure "unknown job type".
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kjobs_exec  # noqa: E402


def handle(job):
    t = job.type
    if t == "email.send" or t == "exec.ok":
        return
    if t == "exec.retry":
        text = job.payload.decode("utf-8", "replace").strip()
        raise kjobs_exec.Retry(f"exec.retry: asked to retry (attempt {job.attempt})",
                               retry_after_ms=int(text) if text.isdigit() else None)
    if t == "exec.fail":
        raise kjobs_exec.Fail("exec.fail: permanent failure")
    if t == "exec.crash":
        print(f"handler_binary.py: exec.crash job {job.id}, exiting with status 3", flush=True)
        os._exit(3)
    if t == "exec.sleep":
        time.sleep(int(job.payload or b"0") / 1000.0)
        return
    raise kjobs_exec.Fail(f"unknown job type {t!r}")


if __name__ == "__main__":
    kjobs_exec.serve(handle)
