#!/usr/bin/python3
"""key_ordering.py — the speedup of batch.ordering = "key" over "partition" (issue #16 item 4).

Usage: KJOBS_BIN=build/kjobs /usr/bin/python3 bench/key_ordering.py [--runs 5] [--jobs 2000]
       [--keys 64] [--workers 16] [--partitions 4] [--sleep-ms 10]

One `kjobs broker --partitions P` (embedded; or real Kafka with KJOBS_TEST_KAFKA, as the
integration tests); JOBS jobs of the built-in `kjobs.sleep` type (payload: milliseconds) with
KEYS distinct keys (placed by kjobs' murmur2 partitioner) are enqueued once. Each run is a fresh
consumer group reading them all from the beginning with `workers = W` and one ordering; the
orderings alternate within a run so both see the same machine load. A run's time is from its
last "partition assigned" log line (group join excluded) to the first /metrics scrape that
shows every job done (kjobs_jobs_total; scraped every 20 ms). The ideal times are the busiest
partition's jobs x SLEEP (partition: it runs them one after another; murmur2 does not spread a
few keys evenly) and JOBS x SLEEP / min(W, KEYS) (key). Prints one line per run and the medians
(times, rates and the per-run ratio partition/key) as a Markdown table for bench/RESULTS-ordering.md.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402


def enqueue(bootstrap, jobs, keys, sleep_ms):
    lines = "".join(json.dumps({"type": "kjobs.sleep", "key": f"key-{i % keys}",
                                "payload": str(sleep_ms)}) + "\n" for i in range(jobs))
    p = harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap), input=lines, timeout=300)
    assert len(p.stdout.split()) == jobs, "not every job was acknowledged"


def one_run(bootstrap, group, ordering, jobs, workers):
    env = {"KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_LOG_LEVEL": "info", "KJOBS_WORKERS": str(workers),
           "KJOBS_BATCH_ORDERING": ordering, "KJOBS_RETRY_DELAYS": "1s"}
    w = procs.Worker(bootstrap, env=env, name=f"bench-{ordering}")
    try:
        port = w.http_port()
        deadline = time.monotonic() + 600
        while True:
            w.poll_lines()
            done = w.metric_sum(port, "kjobs_jobs_total")
            if done >= jobs:
                end_ms = int(time.time() * 1000)
                break
            assert time.monotonic() < deadline, f"{group}: {done} of {jobs} jobs after 600 s"
            time.sleep(0.02)  # scrape interval of a measurement, not synchronisation
        start_ms = max(procs.log_ts_ms(l) for l in w.msgs("partition assigned"))
        assert w.stop() == 0
    finally:
        w.close()
    return (end_ms - start_ms) / 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--sleep-ms", type=int, default=10)
    a = ap.parse_args()
    rows = []
    with procs.Broker(partitions=a.partitions) as broker:
        enqueue(broker.bootstrap, a.jobs, a.keys, a.sleep_ms)
        lag = harness.run(harness.kjobs_cmd("lag", "-b", broker.bootstrap, "--json"))
        per_partition = sorted(json.loads(l)["log_end_offset"] for l in lag.stdout.splitlines()
                               if l.strip() and json.loads(l)["topic"] == "jobs")
        print(f"jobs per partition (murmur2 of {a.keys} keys): {per_partition}", flush=True)
        stamp = int(time.time())
        for run in range(1, a.runs + 1):
            order = ["partition", "key"] if run % 2 else ["key", "partition"]
            t = {}
            for ordering in order:
                t[ordering] = one_run(broker.bootstrap, f"bench-ko-{stamp}-{run}-{ordering}",
                                      ordering, a.jobs, a.workers)
            rows.append(t)
            print(f"run {run}: partition {t['partition']:.2f} s, key {t['key']:.2f} s, "
                  f"speedup {t['partition'] / t['key']:.2f}x", flush=True)
    ideal_p = max(per_partition) * a.sleep_ms / 1000.0  # the busiest partition, alone
    ideal_k = a.jobs * a.sleep_ms / 1000.0 / min(a.workers, a.keys)
    print()
    print("| run | partition s | key s | partition jobs/s | key jobs/s | **speedup** |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, t in enumerate(rows, 1):
        print(f"| {i} | {t['partition']:.2f} | {t['key']:.2f} | {a.jobs / t['partition']:,.0f} | "
              f"{a.jobs / t['key']:,.0f} | {t['partition'] / t['key']:.2f}× |")
    mp = statistics.median(t["partition"] for t in rows)
    mk = statistics.median(t["key"] for t in rows)
    ms = statistics.median(t["partition"] / t["key"] for t in rows)
    print(f"| **median** | {mp:.2f} | {mk:.2f} | {a.jobs / mp:,.0f} | {a.jobs / mk:,.0f} | "
          f"**{ms:.2f}×** |")
    print(f"\nideal: partition {ideal_p:.2f} s (its busiest partition's jobs one after another), "
          f"key {ideal_k:.2f} s "
          f"({min(a.workers, a.keys)} at once); speedup bound {ideal_p / ideal_k:.1f}×")


if __name__ == "__main__":
    main()
