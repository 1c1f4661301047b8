"""console_handler.py — an exec handler child (handlers.exec) for the console tests.

Usage: handlers.exec = /usr/bin/python3 -u console_handler.py GATE_FILE
Jobs of type "console.gated" fail permanently (so they are dead-lettered at once) while
GATE_FILE does not exist, and succeed once it does: a test dead-letters some, creates the file,
replays them from the console and sees them succeed. Every other type succeeds. Each job that
succeeds is appended to GATE_FILE + ".ok" as its id, one line each (what the test waits for).
"""
import json
import os
import sys


def main():
    gate = sys.argv[1]
    ok_fd = os.open(gate + ".ok", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        results, done = [], []
        for job in request["batch"]:
            if job["type"] == "console.gated" and not os.path.exists(gate):
                results.append({"id": job["id"], "status": "fail",
                                "error": "gate closed <b>not markup</b>"})
            else:
                results.append({"id": job["id"], "status": "ok"})
                done.append(job["id"])
        if done:
            os.write(ok_fd, "".join(i + "\n" for i in done).encode())
        sys.stdout.write(json.dumps({"batch_id": request.get("batch_id"), "results": results}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
