#!/usr/bin/python3
"""scheduling_precision.py — how late delayed jobs start: start - due (p50/p99/max) per delay.

Usage: bench/scheduling_precision.py [--kjobs BUILD/kjobs] [--bootstrap HOST:PORT]
                                      [--jobs N] [--rounds R] [--delays 1s,10s,60s]
                                      [--ladder 10s,1m,10m]

Starts `kjobs broker` (unless --bootstrap names a running cluster: then it uses a fresh topic
set under a unique main-topic name) and one `kjobs run` worker whose exec handler
(tests/integration/exec_recorder.py --time) records the wall clock at which each job reached
it. For every delay it enqueues N jobs with `kjobs enqueue --delay D`, in R rounds of N/R
jobs 0.1-0.6 s apart (random), the delays interleaved, across all partitions — so due times
do not line up with each other or with the worker's poll — waits until every job ran, and
prints, per delay,
start - due from the recorded start and the job's own kjobs-run-at header. Every job must
start at or after its due time; a job starting early fails the run (exit 1).

Precision is bounded below by how the ladder holds a job (docs/scheduling.md): a job lands on
the step whose delay fits the time left and hops down until the time left is shorter than the
shortest step, from where the poll thread releases it at its due time; what remains is the
wake-up of the paused ladder partition, the fetch, the batch and the exec round trip.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDER = os.path.join(HERE, "..", "tests", "integration", "exec_recorder.py")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kjobs", default=os.path.join(HERE, "..", "build", "kjobs"))
    ap.add_argument("--bootstrap")
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--delays", default="1s,10s,60s")
    ap.add_argument("--ladder", default="10s,1m,10m")
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args()
    kjobs = os.path.abspath(a.kjobs)
    broker = None
    main_topic = "jobs"
    env = dict(os.environ)
    if a.bootstrap:
        bootstrap = a.bootstrap
        main_topic = f"sched-bench-{int(time.time())}"
        env["KJOBS_TOPICS_MAIN"] = main_topic
        env["KJOBS_TOPICS_PARTITIONS"] = str(a.partitions)
        env["KJOBS_TOPICS_REPLICATION_FACTOR"] = "1"
    else:
        broker = subprocess.Popen([kjobs, "broker", "--partitions", str(a.partitions)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        bootstrap = broker.stdout.readline().strip()
    env["KJOBS_RETRY_DELAYS"] = a.ladder
    if a.bootstrap:
        subprocess.run([kjobs, "topics", "--create", "-b", bootstrap], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    record = tempfile.mktemp(prefix="kjobs-sched-bench-", suffix=".jsonl")
    wenv = dict(env, KJOBS_HANDLERS_EXEC=f"/usr/bin/python3 -u {RECORDER} {record} --time",
                KJOBS_HTTP_LISTEN="", KJOBS_LOG_LEVEL="warn",
                KJOBS_KAFKA_GROUP=f"sched-bench-{os.getpid()}")
    worker = subprocess.Popen([kjobs, "run", "-b", bootstrap, "-X", "fetch.wait.max.ms=5"],
                              env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)  # join the group before the clock starts
        delays = a.delays.split(",")
        ids = {}
        rng = random.Random(15)
        per_round = max(1, a.jobs // a.rounds)
        for _ in range(a.rounds):
            for d in delays:
                p = subprocess.run([kjobs, "enqueue", "-b", bootstrap, "--type", "bench.delayed",
                                    "--delay", d, "--count", str(per_round)],
                                   env=env, check=True, capture_output=True, text=True)
                for i in p.stdout.split():
                    ids[i] = d
            time.sleep(rng.uniform(0.1, 0.6))
        # due times from the records themselves
        p = subprocess.run([kjobs, "peek", "-b", bootstrap, "--topic", main_topic,
                            "--from-beginning", "--count", str(len(ids)), "--timeout", "60"],
                           env=env, check=True, capture_output=True, text=True)
        due = {}
        for line in p.stdout.splitlines():
            r = json.loads(line)
            due[r["id"]] = int(dict(r["headers"])["kjobs-run-at"])
        deadline = time.time() + 3600 * 2
        runs = {}
        while time.time() < deadline and len(runs) < len(ids):
            time.sleep(1)
            if os.path.exists(record):
                with open(record) as f:
                    for line in f:
                        r = json.loads(line)
                        runs.setdefault(r["id"], r)
            if worker.poll() is not None:
                sys.exit(f"worker exited {worker.returncode}")
        missing = set(ids) - set(runs)
        early = 0
        print(f"ladder {a.ladder}, {a.partitions} partitions, {a.jobs} jobs per delay in "
              f"{a.rounds} rounds, "
              f"host {os.uname().nodename}, {os.cpu_count()} cpus")
        print("| delay | jobs | start - due p50 | p99 | max | min |")
        print("|---|---|---|---|---|---|")
        for d in delays:
            late = [runs[i]["started_at_ms"] - due[i] for i, dd in ids.items()
                    if dd == d and i in runs]
            early += sum(1 for x in late if x < 0)
            print(f"| {d} | {len(late)} | {pct(late, 50)} ms | {pct(late, 99)} ms | "
                  f"{max(late)} ms | {min(late)} ms |")
        if missing or early:
            sys.exit(f"FAILED: {len(missing)} jobs never ran, {early} started before due")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        if broker:
            broker.terminate()
            broker.wait(timeout=30)
        if os.path.exists(record):
            os.unlink(record)


if __name__ == "__main__":
    main()
