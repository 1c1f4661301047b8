#!/usr/bin/python3
"""retry_ordering.py — the cost of retry.ordering = "key" (key-ordered retries) over "none".

Usage: KJOBS_BIN=build/kjobs /usr/bin/python3 bench/retry_ordering.py
       [--brokers embedded,kafka] [--kafka 127.0.0.1:39092] [--jobs 20000] [--keys 200]
       [--partitions 4] [--fail 0.01,0.05] [--runs 2] [--workers 4] [--delay 1s]
       [--plugin build/bench/libkjobs_retryord_plugin.so] [--out FILE.json]

For each broker kind (`embedded`: a fresh `kjobs broker --partitions P` per run; `kafka`: the
real cluster at --kafka, every user topic and group deleted and the layout created again per
run — do not point it at a cluster you share), each failure fraction F and each repetition, the
same JOBS jobs are enqueued (`kjobs enqueue`) onto fresh topics and drained by one fresh
`kjobs run` per ordering, "none" and "key" alternating which goes first. A job is of type
bench.flaky-order (bench/retryord_plugin.c, loaded as a handler plugin: in-process, ~µs per
job); job i has key "key-(i % KEYS)" (kjobs' murmur2 puts the keys on the partitions) and a
fixed random set of round(F x JOBS) jobs (seed 1, the same for both orderings) ask for a retry
on their first attempt; everything else succeeds at once. retry.delays = DELAY (one step), other
settings default except workers = W.

Per run: wall time, from the last "partition assigned" log line (group join excluded; the
"key" ladder scan included) to the handler start of the last job's first success (the plugin's
records); jobs/s = JOBS / wall; the time by which 50 % and 99 % of the jobs had succeeded;
kjobs_jobs_total by outcome (ok, retry, parked, dead_lettered) from /metrics; ladder records
written (log end offsets of the ladder topics, `kjobs lag --json`); the "key" ladder scan's
duration (its "key order: ladder read" log line); and from the plugin's records, in
handler-start order: key-order violations (jobs whose first success started before the first
success of an earlier job of their key; the "none" ordering is expected to have some, "key"
none), keys affected, jobs that never succeeded (lost), and jobs that succeeded more than once.
A run that does not finish within --timeout is reported STUCK with its counters and log tail.

Prints one line per run, then per broker and F the medians and the ratio key/none as a Markdown
table for bench/RESULTS-ordering.md; --out writes every run as JSON.
"""
import argparse
import json
import os
import random
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


def make_plan(jobs, keys, fail, seed=1):
    """[(index, key, fails)]: production order; round(fail x jobs) jobs fail once."""
    failing = set(random.Random(seed).sample(range(jobs), round(fail * jobs)))
    return [(i, f"key-{i % keys}", 1 if i in failing else 0) for i in range(jobs)]


def enqueue(bootstrap, plan):
    lines = "".join(json.dumps({"type": JOB_TYPE, "id": f"j{i}", "key": key,
                                "payload": f"{i} {fails}"}) + "\n" for i, key, fails in plan)
    p = harness.run(harness.kjobs_cmd("enqueue", "-b", bootstrap), input=lines, timeout=300)
    assert len(p.stdout.split()) == len(plan), "not every job was acknowledged"


class Cluster:
    """Fresh topics for one run: an embedded `kjobs broker`, or the real cluster reset."""

    def __init__(self, kind, kafka, partitions, env):
        self.kind, self.broker = kind, None
        if kind == "embedded":
            self.broker = procs.Broker(partitions=partitions, env=env)
            self.bootstrap = self.broker.bootstrap
        else:
            real_kafka.BOOTSTRAP = kafka
            self.bootstrap = real_kafka.reset(partitions, env=env)

    def close(self):
        if self.broker:
            self.broker.stop()


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
    main = sum(r["log_end_offset"] for r in rows if r["topic"] == "jobs")
    ladder = sum(r["log_end_offset"] for r in rows if r["topic"] != "jobs")
    return main, ladder


def read_records(path):
    """[(seq, job, attempt, ok, t_us)] in handler-start order."""
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def analyse(records, plan):
    """Key order, lost and duplicate jobs, completion times, from the plugin's records."""
    first_ok, ok_count = {}, {}
    for seq, job, _attempt, ok, t_us in records:
        if ok:
            ok_count[job] = ok_count.get(job, 0) + 1
            first_ok.setdefault(job, (seq, t_us))
    violations, keys_hit, running_max = 0, set(), {}
    for i, key, _ in plan:  # production order; per key, a success must not precede an earlier one
        if i not in first_ok:
            continue
        seq = first_ok[i][0]
        if seq < running_max.get(key, -1):
            violations += 1
            keys_hit.add(key)
        running_max[key] = max(running_max.get(key, -1), seq)
    times = sorted(t for _, t in first_ok.values())
    return {"violations": violations, "keys_violated": len(keys_hit),
            "lost": sum(1 for i, _, _ in plan if i not in first_ok),
            "duplicates": sum(1 for n in ok_count.values() if n > 1),
            "runs": len(records), "ok_times_us": times}


def one_run(cluster, group, ordering, plan, a):
    record_file = tempfile.mktemp(prefix="kjobs-retryord-", suffix=".txt")
    env = {"KJOBS_KAFKA_GROUP": group, "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_LOG_LEVEL": "info", "KJOBS_WORKERS": str(a.workers),
           "KJOBS_RETRY_DELAYS": a.delay, "KJOBS_RETRY_ORDERING": ordering,
           "KJOBS_HANDLERS_PLUGIN": a.plugin, "BENCH_OUT": record_file}
    w = procs.Worker(cluster.bootstrap, env=env, name=f"bench-ro-{ordering}")
    res = {"ordering": ordering, "stuck": False}
    try:
        port = w.http_port()
        deadline = time.monotonic() + a.timeout
        while True:
            w.poll_lines()
            m = metrics(port)
            if m.get("ok", 0) >= len(plan):
                break
            if time.monotonic() >= deadline or w.proc.poll() is not None:
                res["stuck"] = True
                res["tail"] = w.tail(12)
                break
            time.sleep(0.05)  # scrape interval of a done-check; the times come from records
        res["metrics"] = metrics(port)
        assigned = w.msgs("partition assigned")
        res["start_ms"] = max(procs.log_ts_ms(l) for l in assigned) if assigned else None
        scans = w.msgs("key order: ladder read")
        res["scan_ms"] = sum(l.get("duration_ms", 0) for l in scans) if scans else None
        res["warnings"] = [l for l in w.lines if l.get("level") in ("warn", "error")
                           and l.get("facility") != "CONFWARN"][:20]  # not procs' -X fetch.wait
        rc = w.stop()
        res["exit"] = rc
    finally:
        w.close()
    res["main_records"], res["ladder_records"] = ladder_records(cluster.bootstrap, group, a.delay)
    if os.path.exists(record_file):
        res.update(analyse(read_records(record_file), plan))
        os.unlink(record_file)
    else:
        res.update({"violations": None, "lost": None, "duplicates": None, "runs": 0,
                    "ok_times_us": []})
    times = res.pop("ok_times_us")
    if times and res["start_ms"]:
        start_us = res["start_ms"] * 1000

        def at(q):  # seconds from start until the fraction q of all jobs had succeeded
            return (times[min(len(times), max(1, round(q * len(plan)))) - 1] - start_us) / 1e6
        res["wall_s"] = (times[-1] - start_us) / 1e6 if not res["lost"] else None
        res["p50_s"], res["p99_s"] = at(0.50), at(0.99)
    return res


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def run_line(kind, fail, rep, r):
    extra = " STUCK" if r["stuck"] else ""
    m = r["metrics"]
    return (f"{kind} f={fail:g} run {rep} {r['ordering']:>4}: wall {fmt(r.get('wall_s'), '.2f')} s,"
            f" p50 {fmt(r.get('p50_s'), '.2f')} s, p99 {fmt(r.get('p99_s'), '.2f')} s,"
            f" ok {m.get('ok', 0):.0f}, retry {m.get('retry', 0):.0f},"
            f" parked {m.get('parked', 0):.0f}, dead {m.get('dead_lettered', 0):.0f},"
            f" ladder records {r['ladder_records']}, handler runs {r['runs']},"
            f" scan {fmt(r['scan_ms'], 'd')} ms, order violations {fmt(r['violations'], 'd')}"
            f" ({fmt(r.get('keys_violated'), 'd')} keys), lost {fmt(r['lost'], 'd')},"
            f" dup {fmt(r['duplicates'], 'd')}, exit {r.get('exit')}{extra}")


def summary(results, a):
    """Medians per (broker, fail, ordering) and ratios key/none, as Markdown."""
    out = ["| broker | fail | ordering | wall s | jobs/s | p50 s | p99 s | parked | retried "
           "| ladder records | handler runs | order violations (keys) | lost | dup |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for kind in a.brokers:
        for fail in a.fail:
            med = {}
            for ordering in ("none", "key"):
                rs = [r for r in results if r["broker"] == kind and r["fail"] == fail
                      and r["ordering"] == ordering]
                if not rs:
                    continue

                def m(f, rs=rs):
                    vals = [f(r) for r in rs]
                    return None if any(v is None for v in vals) else statistics.median(vals)
                d = {"wall": m(lambda r: r.get("wall_s")), "p50": m(lambda r: r.get("p50_s")),
                     "p99": m(lambda r: r.get("p99_s")),
                     "parked": m(lambda r: r["metrics"].get("parked", 0)),
                     "retry": m(lambda r: r["metrics"].get("retry", 0)),
                     "ladder": m(lambda r: r["ladder_records"]), "runs": m(lambda r: r["runs"]),
                     "viol": "/".join(f"{r['violations']} ({r.get('keys_violated')})" for r in rs),
                     "lost": sum(r["lost"] or 0 for r in rs),
                     "dup": sum(r["duplicates"] or 0 for r in rs),
                     "stuck": sum(r["stuck"] for r in rs)}
                med[ordering] = d
                rate = a.jobs / d["wall"] if d["wall"] else None
                out.append(f"| {kind} | {fail:.0%} | {ordering}{' (STUCK)' if d['stuck'] else ''} "
                           f"| {fmt(d['wall'], '.2f')} | {fmt(rate, ',.0f')} "
                           f"| {fmt(d['p50'], '.2f')} | {fmt(d['p99'], '.2f')} "
                           f"| {fmt(d['parked'], ',.0f')} | {fmt(d['retry'], ',.0f')} "
                           f"| {fmt(d['ladder'], ',.0f')} | {fmt(d['runs'], ',.0f')} "
                           f"| {d['viol']} | {d['lost']} | {d['dup']} |")
            if "none" in med and "key" in med:
                n, k = med["none"], med["key"]

                def ratio(x, y):
                    return f"{x / y:.2f}×" if x is not None and y else "–"
                ratios.append(f"| {kind} | {fail:.0%} | {ratio(k['wall'], n['wall'])} "
                              f"| {ratio(n['wall'], k['wall'])} | {ratio(k['p50'], n['p50'])} "
                              f"| {ratio(k['p99'], n['p99'])} "
                              f"| {ratio(k['ladder'], n['ladder'])} "
                              f"| {ratio(k['runs'], n['runs'])} |")
    out += ["", "Ratios key ÷ none (of the medians):",
            "", "| broker | fail | wall | jobs/s | p50 | p99 | ladder records | handler runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"] + ratios
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", default="embedded,kafka")
    ap.add_argument("--kafka", default="127.0.0.1:39092")
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
    a = ap.parse_args()
    a.brokers = [b for b in a.brokers.split(",") if b]
    a.fail = [float(f) for f in a.fail.split(",")]
    a.plugin = os.path.abspath(a.plugin)
    assert os.path.exists(a.plugin), f"no plugin at {a.plugin} (make kjobs_retryord_plugin)"
    broker_env = {"KJOBS_RETRY_DELAYS": a.delay}  # the ladder topics the workers expect
    rev = subprocess.run(harness.kjobs_cmd("version"), capture_output=True, text=True).stdout
    print(f"kjobs: {rev.strip()}; {a.jobs} jobs, {a.keys} keys, {a.partitions} partitions, "
          f"workers {a.workers}, retry.delays {a.delay}, fail {a.fail}, runs {a.runs}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    t0 = time.monotonic()
    stamp = int(time.time())
    for kind in a.brokers:
        for fail in a.fail:
            plan = make_plan(a.jobs, a.keys, fail)
            for rep in range(1, a.runs + 1):
                order = ["none", "key"] if rep % 2 else ["key", "none"]
                for ordering in order:
                    cluster = Cluster(kind, a.kafka, a.partitions, broker_env)
                    try:
                        enqueue(cluster.bootstrap, plan)
                        group = f"bench-ro-{stamp}-{kind}-{fail:g}-{rep}-{ordering}"
                        r = one_run(cluster, group, ordering, plan, a)
                    finally:
                        cluster.close()
                    r.update({"broker": kind, "fail": fail, "rep": rep})
                    results.append(r)
                    print(run_line(kind, fail, rep, r), flush=True)
                    for wl in r["warnings"]:
                        print(f"    {json.dumps(wl)}", flush=True)
                    if r["stuck"]:
                        print(f"    log tail:\n{r['tail']}", flush=True)
    print(f"\ntotal {time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.2f}\n")
    print(summary(results, a))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
