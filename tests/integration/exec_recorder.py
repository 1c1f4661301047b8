"""exec_recorder.py — an exec handler child (handlers.exec) that records every job it runs.

Usage: handlers.exec = /usr/bin/python3 -u exec_recorder.py FILE [--time] [--sleep MS]
Appends each job of a batch to FILE as one JSON line (the job exactly as kjobs handed it over:
id, type, key, topic, partition, offset, attempt, meta, payload_b64), then answers "ok" for the
batch. Tests read FILE to see which jobs a real `kjobs run` decoded and ran, and where.
One write per batch with O_APPEND, so children of several worker threads never interleave lines.
With --time, each job also gets "started_at_ms": the wall clock (epoch ms) when its batch
reached the handler, before it answers (test_scheduling.py compares it with the due time).
With --sleep MS, the jobs of a batch run one after another, each taking MS milliseconds, and
each gets "started_at_ms" and "ended_at_ms" (test_flow_control.py measures overlap with them).
A job whose id contains "~retryN" (N a number) answers "retry" on attempts 1..N and "ok" after;
"~fail" answers "fail" (permanent); those jobs' lines also get "result" (test_retry_ordering.py).
A job whose id contains "~slowN" takes N ms; a line {"id": .., "slow_started_at_ms": ..} is written
for it when it starts (so a test can wait for a long job to be running).
"""
import json
import os
import re
import sys
import time


def main():
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    timed = "--time" in sys.argv[2:]
    sleep_ms = 0
    if "--sleep" in sys.argv[2:]:
        sleep_ms = int(sys.argv[sys.argv.index("--sleep") + 1])
    for line in sys.stdin:  # one batch per line; EOF: kjobs is shutting down
        if not line.strip():
            continue
        started = int(time.time() * 1000)
        request = json.loads(line)
        batch = request["batch"]
        if timed:
            for job in batch:
                job["started_at_ms"] = started
        if sleep_ms:
            for job in batch:
                job["started_at_ms"] = int(time.time() * 1000)
                time.sleep(sleep_ms / 1000.0)
                job["ended_at_ms"] = int(time.time() * 1000)
        for job in batch:
            slow = re.search(r"~slow(\d+)", job["id"])
            if slow:
                os.write(fd, (json.dumps({"id": job["id"], "slow_started_at_ms":
                                          int(time.time() * 1000)}) + "\n").encode())
                time.sleep(int(slow.group(1)) / 1000.0)
        results = []
        for job in batch:
            status = "ok"
            m = re.search(r"~retry(\d+)", job["id"])
            if m and job["attempt"] <= int(m.group(1)):
                status = "retry"
            elif "~fail" in job["id"]:
                status = "fail"
            if m or "~fail" in job["id"]:
                job["result"] = status
            results.append({"id": job["id"], "status": status,
                            **({"error": "asked to by its id"} if status != "ok" else {})})
        os.write(fd, "".join(json.dumps(job) + "\n" for job in batch).encode())
        reply = {"batch_id": request.get("batch_id"), "results": results}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
