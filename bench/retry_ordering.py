#!/usr/bin/python3
"""retry_ordering.py — the cost of retry.ordering = "key" (key-ordered retries) over "none".

Usage: KJOBS_BIN=build/kjobs /usr/bin/python3 bench/retry_ordering.py
       [--brokers embedded,kafka] [--kafka 127.0.0.1:39092] [--kafka-dir /tmp/kj-bench]
       [--modes backlog,paced] [--rate 2000] [--jobs 20000] [--keys 200] [--partitions 4]
       [--fail 0.01,0.05] [--runs 2] [--workers 4] [--delay 1s] [--timeout 120]
       [--plugin build/bench/libkjobs_retryord_plugin.so] [--out FILE.json] [--keep DIR]
       [--ladder-check]

For each broker kind (`embedded`: a fresh `kjobs broker --partitions P` per run; `kafka`: the
real cluster at --kafka, EVERY user topic and group deleted and the layout created again per
run, as the integration tests do — never point it at a cluster you share), each mode, each
failure fraction F and each repetition, the same JOBS jobs go onto fresh topics and are run by
one fresh `kjobs run` per ordering, "none" and "key" alternating which goes first. Job i is of
type bench.flaky-order (bench/retryord_plugin.c, a handler plugin: in-process, about a
microsecond per job), has key "key-(i % KEYS)" (kjobs' murmur2 places the keys on the
partitions), and a fixed random set of round(F x JOBS) jobs (seed 1, the same for both
orderings) asks for a retry on its first attempt; every other run succeeds at once.
retry.delays = DELAY (one ladder step), workers = W, other settings default.

Modes:
- backlog: the jobs are enqueued before the worker starts (the worst case for "key": every
  later job of a key is still waiting when its first failure happens). Times count from the
  first handler call: wall = until the last job's first success; p50/p99 = until 50 %/99 % of
  the jobs had succeeded; jobs/s = JOBS / wall. (From the last "partition assigned" log line
  to the first handler call the worker waits 0.5 or 1.0 s in every run, both orderings, both
  brokers: it pauses its partitions at assignment and resumes them ~20 ms later, and
  librdkafka's broker thread, with nothing else to fetch, only notices the resume at its next
  wake-up. That step, a constant, is reported as "first run"; the "key" ladder scan, 50-90 ms,
  runs inside it and is reported on its own.)
- paced: the worker starts first (for "key", its ladder scan is done), runs one warm-up
  kjobs.noop job, then `kjobs enqueue` is fed RATE jobs/s, as a steady producer would. wall
  counts from the first job fed; p50/p99/max are per-job latencies: the job's created_at (set
  by `kjobs enqueue` as it reads the line) to the start of its first successful run.

Per run it also reports when the first handler call started (backlog: from the last
"partition assigned"; paced: from the feed's start); kjobs_jobs_total by outcome (ok, retry,
parked, dead_lettered) from /metrics; ladder records written (log end offsets of the ladder
topics, `kjobs lag --json`); CPU seconds of the worker (from the worker's start to the end of
the run) and of the broker process (the embedded broker, or the Kafka JVM found by
--kafka-dir/node-*/pid) over the same span; the "key" ladder scan's duration ("key order:
ladder read"); and from the plugin's records, in handler-start order: key-order violations
(jobs whose first success started before the first success of an earlier job of their key:
"none" has them, "key" must have 0), keys affected, jobs that never succeeded (lost), jobs
that succeeded more than once, and (paced)
"flow after a key's retry": of the jobs created after their key's first failed job had
succeeded, the share that succeeded within 100 ms of creation (does the key flow again?).
With --ladder-check, after each "key" run the ladder is read back (kcat) and its parked
copies are timed: how many are due earlier than one step delay after they were written, and how
long the records written before them in their partition (released in offset order) hold them
past the time they could run (their due time, or when they were written if that is later; a
lower bound: it counts those records' due times, not their actual releases) — held_*: the
whole partition released in offset order (kjobs before 72fd191); lane_held_*: only the records
before them on their own lane (since 72fd191: parked copies on lanes of their own, by key).
Each "key" run also reports, from the plugin's records (measured, not modelled), the jobs that
waited behind a failure of their key (created before an earlier failed job of their key had
succeeded; succeeding on their first run) and how long after the previous job of their key
they succeeded, overall and for the job right behind the failed one.
A run not finished within --timeout (paced: JOBS / RATE more) is reported STUCK with its log
tail.

Prints one line per run, then per mode the medians, the ratio key ÷ none, and the bound that
the order itself sets in backlog mode (a key's failures run one after another: its last job
cannot succeed before its number of failures x DELAY) as Markdown tables for
bench/RESULTS-ordering.md; --out writes every run as JSON; --keep DIR keeps each run's plugin
records (DIR/GROUP.records: "seq job attempt ok t_us created_ms") and worker log (DIR/GROUP.log),
and of a stuck run the ladder as it was left (DIR/GROUP.ladder: kcat "topic partition offset
timestamp key headers").
"""
import argparse
import glob
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
import real_kafka  # noqa: E402

JOB_TYPE = "bench.flaky-order"
TICK = os.sysconf("SC_CLK_TCK")


def make_plan(jobs, keys, fail, seed=1):
    """[(index, key, fails)] in production order; round(fail x jobs) jobs fail once."""
    failing = set(random.Random(seed).sample(range(jobs), round(fail * jobs)))
    return [(i, f"key-{i % keys}", 1 if i in failing else 0) for i in range(jobs)]


def job_lines(plan):
    return [json.dumps({"type": JOB_TYPE, "id": f"j{i}", "key": key, "payload": f"{i} {fails}"})
            + "\n" for i, key, fails in plan]


def enqueue_all(bootstrap, plan):
    p = harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap), input="".join(job_lines(plan)),
                    timeout=300)
    assert len(p.stdout.split()) == len(plan), "not every job was acknowledged"


def enqueue_paced(bootstrap, plan, rate, warm):
    """Feed `kjobs enqueue` rate lines a second (10 ms ticks); returns the feed's start (ms).
    A kjobs.noop job goes first, and the feed starts once warm() says it ran: a new producer's
    first delivery waits for its connection and metadata (about 0.5 s), which is not the cost
    of anything measured here."""
    lines = job_lines(plan)
    ack = tempfile.TemporaryFile()
    p = subprocess.Popen(harness.kjobs_cmd("enqueue", "-b", bootstrap), stdin=subprocess.PIPE,
                         stdout=ack, stderr=subprocess.PIPE)
    p.stdin.write(b'{"type": "kjobs.noop", "id": "warm-up"}\n')
    p.stdin.flush()
    procs.wait_until(warm, 30, "the warm-up job to run")
    start_ms, t0, sent = int(time.time() * 1000), time.monotonic(), 0
    while sent < len(lines):
        due = min(len(lines), int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            p.stdin.write("".join(lines[sent:due]).encode())
            p.stdin.flush()
            sent = due
        time.sleep(0.01)  # the pacing tick
    p.stdin.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, f"kjobs enqueue failed: {err[-2000:]}"
    ack.seek(0)
    assert len(ack.read().split()) == len(plan) + 1, "not every job was acknowledged"
    return start_ms


class Cluster:
    """Fresh topics for one run: an embedded `kjobs broker`, or the real cluster reset."""

    def __init__(self, kind, a, env):
        self.kind, self.broker = kind, None
        if kind == "embedded":
            self.broker = procs.Broker(partitions=a.partitions, env=env)
            self.bootstrap = self.broker.bootstrap
            self.pids = [self.broker.proc.pid]
        else:
            real_kafka.BOOTSTRAP = a.kafka
            self.bootstrap = real_kafka.reset(a.partitions, env=env)
            self.pids = []
            for f in glob.glob(os.path.join(a.kafka_dir, "node-*", "pid")):
                with open(f) as fh:
                    self.pids.append(int(fh.read().strip()))

    def cpu_s(self):
        return sum(cpu_s(pid) for pid in self.pids)

    def close(self):
        if self.broker:
            self.broker.stop()


def cpu_s(pid):
    """utime + stime of a live process, seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def metrics(port):
    """kjobs_jobs_total summed by outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("kjobs_jobs_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return out


def ladder_records(bootstrap, group, delay):
    p = harness.run(harness.kjobs_cmd("lag", "-b", bootstrap, "-G", group, "--json"),
                    env={"KJOBS_RETRY_DELAYS": delay})  # the ladder the workers had
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    per_topic = {}
    for r in rows:
        if r["topic"] != "jobs":
            per_topic[r["topic"]] = per_topic.get(r["topic"], 0) + r["log_end_offset"]
    return per_topic


def read_topic(bootstrap, topic):
    """Every record the broker still has of a topic, as {partition, offset, timestamp,
    headers: {name: value}} with the two headers ladder_check reads (kcat to the end: no job
    decoding, and no waiting for a count the embedded broker may no longer hold)."""
    p = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "%p %o %T %k %h\\n"], capture_output=True, timeout=300)
    assert p.returncode == 0, f"kcat: {p.stderr.decode(errors='replace')[-2000:]}"
    out = []
    for line in p.stdout.decode(errors="replace").split("\n"):
        if not line:
            continue
        part, off, ts, key, hdrs = (line.split(" ", 4) + [""])[:5]
        h = {name: m.group(1) for name in ("kjobs-not-before", "kjobs-parked-behind")
             for m in [re.search(rf"(?:^|,){name}=(\d+)", hdrs)] if m}
        out.append({"partition": int(part), "offset": int(off), "timestamp": int(ts),
                    "key": key, "headers": h})
    return out  # fewer than the log end offsets when the broker dropped the oldest (embedded)


def parked_lane(key, workers):
    """The lane processor/worker.c (lane_for, since 72fd191) gives a parked copy on a
    key-ordered ladder partition: 1 + FNV-1a(key) mixed, modulo PARKED_LANES = min(workers, 8);
    every other ladder record is on lane 0."""
    h = 1469598103934665603
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return 1 + (h ^ (h >> 29)) % min(workers, 8)


def ladder_check(bootstrap, per_topic, workers):
    """The parked copies on the ladder (`kjobs peek`): how many are due earlier than their
    step's delay after they were written, and how long the records written before them hold
    them past their own due time — held_*: if the partition is released in offset order (kjobs
    before 72fd191); lane_held_*: if only the records before them on their own lane hold them
    (since 72fd191: parked copies on lanes 1..min(workers, 8) by key, retry copies on lane 0)."""
    early, held, lane_held, read, first = 0, [], [], 0, []
    for topic, n in per_topic.items():
        if n == 0:
            continue
        step_ms = None
        by_part = {}
        for rec in read_topic(bootstrap, topic):
            by_part.setdefault(rec["partition"], []).append(rec)
            read += 1
        first += [min(r["offset"] for r in rs) for rs in by_part.values()]
        for rs in by_part.values():
            rs.sort(key=lambda r: r["offset"])
            due_ahead, lane_ahead = 0, {}
            for rec in rs:
                h = rec["headers"]
                nb, ts = int(h.get("kjobs-not-before", 0)), rec["timestamp"]
                if "kjobs-parked-behind" not in h and step_ms is None:
                    step_ms = nb - ts  # a failure's copy: due one step delay after written
                # when it could run at the earliest: its hold, and not before it was written
                due = max(ts, nb if step_ms is None else min(nb, ts + step_ms))
                lane = parked_lane(rec["key"], workers) if "kjobs-parked-behind" in h else 0
                if "kjobs-parked-behind" in h:
                    early += step_ms is not None and nb < ts + step_ms
                    held.append(max(0, due_ahead - due))
                    lane_held.append(max(0, lane_ahead.get(lane, 0) - due))
                due_ahead = max(due_ahead, due)
                lane_ahead[lane] = max(lane_ahead.get(lane, 0), due)
    held.sort()
    lane_held.sort()
    if not held:
        return {"read": read, "parked_copies": 0}
    return {"read": read, "first_offsets": first, "parked_copies": len(held), "due_early": early,
            "held_p50_ms": quantile(held, 0.5), "held_p90_ms": quantile(held, 0.9),
            "held_max_ms": held[-1],
            "held_over_100ms": f"{sum(1 for x in held if x > 100) / len(held):.0%}",
            "lane_held_p50_ms": quantile(lane_held, 0.5),
            "lane_held_p90_ms": quantile(lane_held, 0.9), "lane_held_max_ms": lane_held[-1],
            "lane_held_over_100ms":
                f"{sum(1 for x in lane_held if x > 100) / len(lane_held):.0%}"}


def read_records(path):
    """[(seq, job, attempt, ok, t_us, created_ms)] in handler-start order."""
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def analyse(records, plan):
    """Key order, lost and duplicate jobs, first-success times, from the plugin's records."""
    first_ok, ok_count = {}, {}
    for seq, job, _attempt, ok, t_us, created_ms in records:
        if ok:
            ok_count[job] = ok_count.get(job, 0) + 1
            first_ok.setdefault(job, (seq, t_us, created_ms))
    violations, keys_hit, running_max = 0, set(), {}
    for i, key, _ in plan:  # production order; per key, a success must not precede an earlier one
        if i not in first_ok:
            continue
        seq = first_ok[i][0]
        if seq < running_max.get(key, -1):
            violations += 1
            keys_hit.add(key)
        running_max[key] = max(running_max.get(key, -1), seq)
    # does a key flow again once its first failed job succeeded? The jobs created after that:
    # the share of them that succeeded within 100 ms of their creation (paced mode only)
    by_key, flowed, later = {}, 0, 0
    for i, key, fails in plan:
        by_key.setdefault(key, []).append((i, fails))
    for ks in by_key.values():
        done = next((first_ok[i][1] / 1000 for i, fails in ks if fails and i in first_ok), None)
        if done is None:
            continue
        for i, _ in ks:
            if i in first_ok and first_ok[i][2] > done:
                later += 1
                flowed += first_ok[i][1] / 1000 - first_ok[i][2] < 100
    # measured, not modelled: the jobs that had to wait for an earlier failure of their key
    # (created before that failure's first success) and succeed on their first run — how long
    # after the last earlier job of their key had succeeded did they succeed?
    # next: of those, the ones right behind a failed job of their key (the job before them in
    # their key failed) — how long after that retry succeeded did they succeed?
    after, nxt = [], []
    for ks in by_key.values():
        prev_ok, fail_ok = None, None  # latest success (us) of an earlier job; of a failed one
        prev_failed = False
        for i, fails in ks:
            if i not in first_ok:
                prev_failed = False
                continue
            t_us, created_ms = first_ok[i][1], first_ok[i][2]
            if not fails and fail_ok is not None and fail_ok > created_ms * 1000:
                after.append((t_us - prev_ok) / 1000)
                if prev_failed:
                    nxt.append((t_us - prev_ok) / 1000)
            prev_ok = t_us if prev_ok is None else max(prev_ok, t_us)
            if fails:
                fail_ok = t_us if fail_ok is None else max(fail_ok, t_us)
            prev_failed = bool(fails)
    after.sort()
    nxt.sort()
    return {"violations": violations, "keys_violated": len(keys_hit),
            "flow": flowed / later if later else None,
            "waited": len(after),
            "after_pred_p50_ms": quantile(after, 0.5) if after else None,
            "after_pred_p90_ms": quantile(after, 0.9) if after else None,
            "after_pred_max_ms": after[-1] if after else None,
            "after_pred_over_100ms": (sum(1 for x in after if x > 100) / len(after)
                                      if after else None),
            "next_waited": len(nxt),
            "next_p50_ms": quantile(nxt, 0.5) if nxt else None,
            "next_p90_ms": quantile(nxt, 0.9) if nxt else None,
            "next_max_ms": nxt[-1] if nxt else None,
            "next_over_100ms": sum(1 for x in nxt if x > 100) / len(nxt) if nxt else None,
            "lost": sum(1 for i, _, _ in plan if i not in first_ok),
            "duplicates": sum(1 for n in ok_count.values() if n > 1),
            "runs": len(records),
            "first_run_us": min((r[4] for r in records), default=None),
            "ok_times_us": sorted(t for _, t, _ in first_ok.values()),
            "latencies_us": sorted(t - c * 1000 for _, t, c in first_ok.values())}


def quantile(sorted_vals, q):
    return sorted_vals[min(len(sorted_vals), max(1, round(q * len(sorted_vals)))) - 1]


def one_run(cluster, group, ordering, plan, mode, a):
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".txt")
    env = {"KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_LOG_LEVEL": "info", "KJOBS_WORKERS": str(a.workers),
           "KJOBS_RETRY_DELAYS": a.delay, "KJOBS_RETRY_ORDERING": ordering,
           "KJOBS_HANDLERS_PLUGIN": a.plugin, "BENCH_OUT": record_file}
    res = {"ordering": ordering, "stuck": False}
    broker_cpu0 = cluster.cpu_s()
    w = procs.Worker(cluster.bootstrap, env=env, name=group)
    try:
        port = w.http_port()
        timeout = a.timeout
        if mode == "paced":
            # every partition of the main topic and of the ladder here (and, for "key", read)
            want = a.partitions * (1 + len(a.delay.split(",")))
            w.wait_count("partition assigned", want, 60)
            if ordering == "key":
                w.wait_for(lambda l: sum(x.get("partitions", 0) for x in w.lines
                                         if x["msg"] == "key order: ladder read") >= a.partitions,
                           60, "the ladder scan")
            feed_ms = enqueue_paced(cluster.bootstrap, plan, a.rate,
                                    lambda: metrics(port).get("ok", 0) >= 1)
            timeout += len(plan) / a.rate
        deadline = time.monotonic() + timeout
        while True:
            w.poll_lines()
            if metrics(port).get("ok", 0) >= len(plan) + (mode == "paced"):  # + the warm-up
                break
            if time.monotonic() >= deadline or w.proc.poll() is not None:
                res["stuck"] = True
                res["tail"] = w.tail(12)
                break
            time.sleep(0.05)  # the done-check's interval; times come from the plugin's records
        res["worker_cpu_s"] = cpu_s(w.proc.pid)
        res["broker_cpu_s"] = cluster.cpu_s() - broker_cpu0
        res["metrics"] = metrics(port)
        assigned = w.msgs("partition assigned")
        start_ms = max(procs.log_ts_ms(l) for l in assigned) if assigned else None
        if mode == "paced":
            start_ms = feed_ms
        scans = w.msgs("key order: ladder read")
        res["scan_ms"] = sum(l.get("duration_ms", 0) for l in scans) if scans else None
        res["warnings"] = [l for l in w.lines if l.get("level") in ("warn", "error")
                           and l.get("facility") != "CONFWARN"][:20]  # not procs' -X fetch.wait
        res["exit"] = w.stop()
    finally:
        w.close()
    per_topic = ladder_records(cluster.bootstrap, group, a.delay)
    res["ladder_records"] = sum(per_topic.values())
    if res["stuck"] and a.keep:  # the ladder as the stuck worker left it, headers and all
        os.makedirs(a.keep, exist_ok=True)
        with open(os.path.join(a.keep, f"{group}.ladder"), "wb") as f:
            for topic in per_topic:
                p = subprocess.run(["kcat", "-C", "-b", cluster.bootstrap, "-t", topic, "-o",
                                    "beginning", "-e", "-q", "-f", "%t %p %o %T %k %h\\n"],
                                   capture_output=True, timeout=300)
                f.write(p.stdout)
    if a.ladder_check and ordering == "key":
        res["ladder_check"] = ladder_check(cluster.bootstrap, per_topic, a.workers)
    if os.path.exists(record_file):
        res.update(analyse(read_records(record_file), plan))
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            os.replace(record_file, os.path.join(a.keep, f"{group}.records"))
        else:
            os.unlink(record_file)
    else:
        res.update({"violations": None, "keys_violated": None, "lost": None, "duplicates": None,
                    "flow": None,
                    "runs": 0, "first_run_us": None, "ok_times_us": [], "latencies_us": []})
    times, lats = res.pop("ok_times_us"), res.pop("latencies_us")
    first_us = res.pop("first_run_us")
    res["wall_s"] = res["p50_s"] = res["p99_s"] = res["max_s"] = res["first_s"] = None
    if times and start_ms:
        start_us = start_ms * 1000
        res["first_s"] = (first_us - start_us) / 1e6  # the first handler call
        if mode == "backlog":
            start_us = first_us  # not the fetch start-up (the same for both orderings)
        if not res["lost"]:
            res["wall_s"] = (times[-1] - start_us) / 1e6
        if mode == "backlog":  # since the start, until that share of the jobs had succeeded
            res["p50_s"] = (quantile(times, 0.50) - start_us) / 1e6
            res["p99_s"] = (quantile(times, 0.99) - start_us) / 1e6
        else:  # per-job latency, created_at to its first successful run
            res["p50_s"], res["p99_s"] = quantile(lats, 0.50) / 1e6, quantile(lats, 0.99) / 1e6
            res["max_s"] = lats[-1] / 1e6
    return res


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def run_line(r):
    m = r["metrics"]
    return (f"{r['broker']} {r['mode']} f={r['fail']:g} run {r['rep']} {r['ordering']:>4}: "
            f"first run {fmt(r['first_s'], '.2f')} s, wall {fmt(r['wall_s'], '.2f')} s, "
            f"p50 {fmt(r['p50_s'], '.3f')} s, p99 {fmt(r['p99_s'], '.3f')} s, "
            f"max {fmt(r['max_s'], '.3f')} s, "
            f"ok {m.get('ok', 0):.0f}, retry {m.get('retry', 0):.0f}, "
            f"parked {m.get('parked', 0):.0f}, dead {m.get('dead_lettered', 0):.0f}, "
            f"ladder records {r['ladder_records']}, handler runs {r['runs']}, "
            f"cpu worker {r['worker_cpu_s']:.2f} s broker {r['broker_cpu_s']:.2f} s, "
            f"scan {fmt(r['scan_ms'], 'd')} ms, order violations {fmt(r['violations'], 'd')} "
            f"({fmt(r['keys_violated'], 'd')} keys), lost {fmt(r['lost'], 'd')}, "
            f"dup {fmt(r['duplicates'], 'd')}, flow after a key's retry {fmt(r['flow'], '.0%')}, "
            f"exit {r.get('exit')}{' STUCK' if r['stuck'] else ''}"
            + (f"\n    waited behind a failure of their key: {r['waited']} jobs; succeeded after "
               f"the previous job of their key: p50 {fmt(r['after_pred_p50_ms'], '.1f')} ms, "
               f"p90 {fmt(r['after_pred_p90_ms'], '.1f')} ms, "
               f"max {fmt(r['after_pred_max_ms'], '.1f')} ms, "
               f"over 100 ms {fmt(r['after_pred_over_100ms'], '.0%')}; of them right behind "
               f"a failed job: {r['next_waited']}, after its success: "
               f"p50 {fmt(r['next_p50_ms'], '.1f')} ms, p90 {fmt(r['next_p90_ms'], '.1f')} ms, "
               f"max {fmt(r['next_max_ms'], '.1f')} ms, "
               f"over 100 ms {fmt(r['next_over_100ms'], '.0%')}"
               if r.get("waited") and r["ordering"] == "key" else "")
            + (f"\n    ladder check: {json.dumps(r['ladder_check'])}" if "ladder_check" in r
               else ""))


def summary(results, a, bounds):
    """Per mode: medians per (broker, fail, ordering), and the ratios key ÷ none, as Markdown."""
    out = []
    for mode in a.modes:
        what = ("times from the first handler call; p50/p99: until 50 %/99 % of the jobs had "
                "succeeded"
                if mode == "backlog" else
                f"{a.rate:,} jobs/s fed; p50/p99/max: per-job latency, created_at to first "
                "successful run")
        rate_col = "jobs/s" if mode == "backlog" else "after the feed s"
        out += [f"**{mode}** ({what}; medians of {a.runs} runs; violations: each run)", "",
                f"| broker | fail | ordering | wall s | {rate_col} | p50 s | p99 s | max s "
                "| parked "
                "| ladder records | CPU s worker | CPU s broker | flow after a key's retry "
                "| order violations (keys) | lost | dup |",
                "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        ratios = []
        for kind in a.brokers:
            for fail in a.fail:
                med = {}
                for ordering in ("none", "key"):
                    rs = [r for r in results if r["broker"] == kind and r["fail"] == fail
                          and r["ordering"] == ordering and r["mode"] == mode]
                    if not rs:
                        continue

                    def m(f, rs=rs):
                        vals = [f(r) for r in rs]
                        return None if any(v is None for v in vals) else statistics.median(vals)
                    d = {"wall": m(lambda r: r["wall_s"]), "p50": m(lambda r: r["p50_s"]),
                         "p99": m(lambda r: r["p99_s"]), "max": m(lambda r: r["max_s"]),
                         "parked": m(lambda r: r["metrics"].get("parked", 0)),
                         "ladder": m(lambda r: r["ladder_records"]),
                         "wcpu": m(lambda r: r["worker_cpu_s"]),
                         "bcpu": m(lambda r: r["broker_cpu_s"]), "flow": m(lambda r: r["flow"]),
                         "viol": ", ".join(f"{fmt(r['violations'], 'd')} "
                                           f"({fmt(r['keys_violated'], 'd')})" for r in rs),
                         "lost": sum(r["lost"] or 0 for r in rs),
                         "dup": sum(r["duplicates"] or 0 for r in rs),
                         "stuck": sum(r["stuck"] for r in rs)}
                    med[ordering] = d
                    if mode == "backlog":  # jobs/s
                        rate = a.jobs / d["wall"] if d["wall"] else None
                    else:  # the feed sets the rate: how long the last jobs took after it ended
                        rate = d["wall"] - a.jobs / a.rate if d["wall"] else None
                    out.append(
                        f"| {kind} | {fail:.0%} | {ordering}{' (STUCK)' if d['stuck'] else ''} "
                        f"| {fmt(d['wall'], '.2f')} "
                        f"| {fmt(rate, ',.0f' if mode == 'backlog' else '.2f')} "
                        f"| {fmt(d['p50'], '.3f')} | {fmt(d['p99'], '.3f')} "
                        f"| {fmt(d['max'], '.3f')} | {fmt(d['parked'], ',.0f')} "
                        f"| {fmt(d['ladder'], ',.0f')} | {fmt(d['wcpu'], '.2f')} "
                        f"| {fmt(d['bcpu'], '.2f')} | {fmt(d['flow'], '.0%')} | {d['viol']} "
                        f"| {d['lost']} | {d['dup']} |")
                if "none" in med and "key" in med:
                    n, k = med["none"], med["key"]

                    def ratio(x, y):
                        return f"{x / y:.2f}×" if x is not None and y else "–"
                    ratios.append(
                        f"| {kind} | {fail:.0%} | {ratio(k['wall'], n['wall'])} "
                        f"| {ratio(n['wall'], k['wall']) if mode == 'backlog' else '–'} "
                        f"| {ratio(k['p50'], n['p50'])} "
                        f"| {ratio(k['p99'], n['p99'])} | {ratio(k['max'], n['max'])} "
                        f"| {ratio(k['ladder'], n['ladder'])} | {ratio(k['wcpu'], n['wcpu'])} "
                        f"| {ratio(k['bcpu'], n['bcpu'])} |")
        out += ["", f"Ratios key ÷ none ({mode}, of the medians):", "",
                "| broker | fail | wall | jobs/s | p50 | p99 | max | ladder records "
                "| CPU worker | CPU broker |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + ratios + [""]
    out.append("Bound set by the order itself (backlog): a key's failures wait one after "
               "another, so its last job succeeds no sooner than failures x delay; the most "
               "failures on one key: " +
               ", ".join(f"{fail:.0%}: {n} ({n * a.delay_s:g} s)" for fail, n in bounds.items()))
    return "\n".join(out)


def parse_duration_s(text):
    text = text.split(",")[0].strip()
    for suffix, mult in (("ms", 0.001), ("s", 1), ("m", 60)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * mult
    return float(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", default="embedded,kafka")
    ap.add_argument("--kafka", default="127.0.0.1:39092")
    ap.add_argument("--kafka-dir", default=os.environ.get("KAFKA_LOCAL_DIR", "/tmp/kj-bench"),
                    help="scripts/kafka.sh's directory, for the broker's pid (CPU time)")
    ap.add_argument("--modes", default="backlog,paced")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--fail", default="0.01,0.05")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--delay", default="1s")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--plugin", default=os.path.join(os.path.dirname(harness.KJOBS), "bench",
                                                     "libkjobs_retryord_plugin.so"))
    ap.add_argument("--out")
    ap.add_argument("--ladder-check", action="store_true",
                    help="after each key run, read the ladder back and time its parked copies")
    ap.add_argument("--keep", help="a directory: keep each run's plugin records there")
    a = ap.parse_args()
    a.brokers = [b for b in a.brokers.split(",") if b]
    a.modes = [m for m in a.modes.split(",") if m]
    a.fail = [float(f) for f in a.fail.split(",")]
    a.delay_s = parse_duration_s(a.delay)
    a.plugin = os.path.abspath(a.plugin)
    if a.keep:
        os.environ["KJOBS_TEST_KEEP_LOGS"] = a.keep  # procs.Worker copies its log there
    assert os.path.exists(a.plugin), f"no plugin at {a.plugin} (make kjobs_retryord_plugin)"
    broker_env = {"KJOBS_RETRY_DELAYS": a.delay}  # the ladder topics the workers expect
    rev = subprocess.run(harness.kjobs_cmd("version"), capture_output=True, text=True).stdout
    print(f"{rev.strip()}; {a.jobs} jobs, {a.keys} keys, {a.partitions} partitions, "
          f"workers {a.workers}, retry.delays {a.delay}, fail {a.fail}, modes {a.modes} "
          f"(paced: {a.rate} jobs/s), runs {a.runs}, load {os.getloadavg()[0]:.2f}", flush=True)
    results, bounds = [], {}
    t0, stamp = time.monotonic(), int(time.time())
    for fail in a.fail:
        per_key = {}
        for _, key, fails in make_plan(a.jobs, a.keys, fail):
            per_key[key] = per_key.get(key, 0) + fails
        bounds[fail] = max(per_key.values())
    for kind in a.brokers:
        for mode in a.modes:
            for fail in a.fail:
                plan = make_plan(a.jobs, a.keys, fail)
                for rep in range(1, a.runs + 1):
                    for ordering in (["none", "key"] if rep % 2 else ["key", "none"]):
                        cluster = Cluster(kind, a, broker_env)
                        try:
                            if mode == "backlog":
                                enqueue_all(cluster.bootstrap, plan)
                            group = f"bench-ro-{stamp}-{kind}-{mode}-{fail:g}-{rep}-{ordering}"
                            r = one_run(cluster, group, ordering, plan, mode, a)
                        finally:
                            cluster.close()
                        r.update({"broker": kind, "mode": mode, "fail": fail, "rep": rep})
                        results.append(r)
                        print(run_line(r), flush=True)
                        for wl in r["warnings"]:
                            print(f"    {json.dumps(wl)}", flush=True)
                        if r["stuck"]:
                            print(f"    log tail:\n{r['tail']}", flush=True)
    print(f"\ntotal {time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.2f}\n")
    print(summary(results, a, bounds))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
