"""bench.py — the kjobs benchmark driver behind scripts/bench.sh (run with /usr/bin/python3).

Runs every benchmark against `kjobs broker` (the embedded mock cluster, a separate process),
with the programs of bench/ (loadgen, raw_consumer, the bench plugin), and writes
bench/RESULTS.md. With --kafka (a 1-broker Apache Kafka started with scripts/kafka.sh and
stopped at the end) or --bootstrap B (an existing cluster), drain, latency, rss and retry run
on real Kafka instead, each case on fresh topics and groups, and the results go to
bench/RESULTS-kafka.md; there the latency runs also time raw_consumer on the same stream.
Timings come from the processes themselves (the plugin's handler-start timestamps,
raw_consumer's first/last message), never from polling, except the tail of the retry
benchmark (retries are kjobs.flaky jobs the plugin cannot see: /metrics is polled then) and
the warm-up before a latency run on Kafka.

Benchmarks (see bench/README.md for what each one means):
  drain    pre-filled backlog; kjobs (noop) vs a raw librdkafka consumer: CPU µs per job
           (primary) and wall-clock jobs/s, each consumer of each run on its own fresh broker,
           alternating who goes first; median and min-max of the per-run ratios; worker VmHWM
           (--drain-extras: kcat and the jemalloc experiment too)
  latency  enqueue -> handler start at a fixed rate, default settings
  rss      worker VmHWM with 1 job and with a 1M-job backlog
  retry    jobs/s with 10% of jobs failing once (1 s ladder) vs all-success, paired
  scaleout a second worker joins under load: time to its first job; stall of the partitions
           that stayed on the first worker
  scale-steps (only with --only; also scale-steps-kip848) 1 -> 4 workers and back under one
           steady load, one step at a time: per step the time until the new member's partitions
           all flow, the longest gap of every partition that did not move, handovers,
           duplicates, lost jobs. With --kafka --brokers 3 on a 3-broker cluster

Never asserts performance: it fails only when the harness itself breaks (a process dies, a
count is wrong, data was dropped by the broker).
"""
import argparse
import json
import os
import shlex
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LADDER = ["jobs.retry.1", "jobs.retry.2", "jobs.retry.3"]  # the default config's ladder
LIVE_BROKERS = []
# An experiment of the drain benchmark: the same kjobs binary with jemalloc preloaded (the
# profile shows glibc arena-lock contention on cross-thread frees; see bench/README.md).
JEMALLOC = next((p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                             "/usr/lib/libjemalloc.so.2") if os.path.exists(p)), None)


def check_brokers():
    for b in list(LIVE_BROKERS):
        b.check()


class HarnessError(Exception):
    pass


class BrokerDied(HarnessError):
    """Our broker exited without being asked to. On a shared machine this has happened (a
    SIGTERM from outside); the benchmark is then run again once."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Ctx:
    def __init__(self, build, work, quick, kafka=None, kafka_pid=None):
        self.build = build
        self.work = work
        self.quick = quick
        # kafka: the bootstrap list of a real Apache Kafka cluster (--kafka / --bootstrap), or
        # None for the embedded broker. The mock holds an empty Fetch for the full
        # fetch.wait.max.ms, so every consumer gets 5 ms there; a real broker answers a Fetch
        # when data arrives, so on Kafka every client runs with librdkafka's defaults.
        self.kafka = kafka
        self.kafka_pid = kafka_pid  # the broker JVM when we started it (liveness, VmHWM)
        self.fetch_args = [] if kafka else ["-X", "fetch.wait.max.ms=5"]
        # on a cluster of 3 or more brokers topics are made as in production: RF 3, min ISR 2
        self.brokers = len(kafka.split(",")) if kafka else 1
        self.topic_env = ({"KJOBS_TOPICS_REPLICATION_FACTOR": "3",
                           "KJOBS_TOPICS_MIN_INSYNC_REPLICAS": "2"} if self.brokers >= 3 else {})
        # kjobs runs under a name of its own (a symlink): on this shared host brokers have been
        # stopped by signals from outside (a neighbour's name-based pkill, most likely; see
        # tests/integration/test_runtime.py), and such sweeps then miss ours
        self.kjobs = os.path.join(work, "kjbench")
        os.symlink(os.path.join(build, "kjobs"), self.kjobs)
        self.loadgen = os.path.join(build, "bench", "loadgen")
        self.raw = os.path.join(build, "bench", "raw_consumer")
        self.plugin = os.path.join(build, "bench", "libkjobs_bench_plugin.so")
        self.seq = 0

    def name(self, prefix):
        self.seq += 1
        return f"{prefix}-{os.getpid()}-{self.seq}"

    def path(self, name):
        return os.path.join(self.work, name)

    def broker(self, partitions):
        """Where one benchmark case runs: a fresh `kjobs broker`, or fresh topics on Kafka."""
        return KafkaTopics(self, partitions) if self.kafka else Broker(self, partitions)


# ---- processes --------------------------------------------------------------------------------

class Broker:
    def __init__(self, ctx, partitions):
        self.err = open(ctx.path(ctx.name("broker") + ".err"), "w")
        self.proc = subprocess.Popen([ctx.kjobs, "broker", "--partitions", str(partitions)],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     stdin=subprocess.DEVNULL)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            raise HarnessError("kjobs broker printed no bootstrap address")
        self.partitions = partitions
        self.main, self.ladder, self.env = "jobs", LADDER, {}  # the default layout
        self.stopping = False
        LIVE_BROKERS.append(self)

    def check(self):
        if not self.stopping and self.proc.poll() is not None:
            raise BrokerDied(f"kjobs broker {self.bootstrap} exited ({self.proc.returncode}) "
                             f"without being stopped")

    def rss_kb(self):
        return vm_hwm_kb(self.proc.pid)

    def cpu_s(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.stopping = True
        if self in LIVE_BROKERS:
            LIVE_BROKERS.remove(self)
        stop_process(self.proc)
        self.err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class KafkaTopics:
    """A fresh kjobs topic layout (main, ladder, dead letters) with its own main-topic name on
    the real cluster, created like production does it (`kjobs topics --create`, Admin API);
    deleted again on stop (best effort), so each case starts from empty topics. Workers get
    the names through KJOBS_TOPICS_MAIN (the ladder and DLQ follow it)."""

    def __init__(self, ctx, partitions):
        self.ctx, self.bootstrap, self.partitions = ctx, ctx.kafka, partitions
        self.main = ctx.name("jobs")
        self.ladder = [f"{self.main}.retry.{i}" for i in (1, 2, 3)]
        self.env = {"KJOBS_TOPICS_MAIN": self.main}
        p = subprocess.run([ctx.kjobs, "topics", "-b", self.bootstrap, "--create"],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, KJOBS_TOPICS_PARTITIONS=str(partitions),
                                    **ctx.topic_env, **self.env))
        if p.returncode != 0:
            raise HarnessError(f"kjobs topics --create {self.main}: {p.stderr[-2000:]}")
        # a created topic is served once every partition has a leader: wait for its metadata
        deadline = time.monotonic() + 60
        while subprocess.run([ctx.raw, "-b", self.bootstrap, "--watermarks", "-t", self.main,
                              *sum((["-t", t] for t in self.ladder), [])],
                             capture_output=True, timeout=60).returncode != 0:
            if time.monotonic() > deadline:
                raise HarnessError(f"topics of {self.main} not served within 60 s")
            time.sleep(0.2)
        LIVE_BROKERS.append(self)

    def check(self):
        if self.ctx.kafka_pid and not os.path.exists(f"/proc/{self.ctx.kafka_pid}"):
            raise HarnessError(f"the Kafka broker (pid {self.ctx.kafka_pid}) is gone")

    def rss_kb(self):
        return vm_hwm_kb(self.ctx.kafka_pid) if self.ctx.kafka_pid else None

    def cpu_s(self):
        """The broker JVM's CPU seconds when its pid is known (--kafka, or BENCH_KAFKA_PID
        with --bootstrap); None otherwise."""
        pid = self.ctx.kafka_pid or os.environ.get("BENCH_KAFKA_PID")
        return cpu_seconds(int(pid)) if pid else None

    def stop(self):
        if self in LIVE_BROKERS:
            LIVE_BROKERS.remove(self)
        try:
            from kafka import KafkaAdminClient  # kafka-python (Debian's /usr/bin/python3)
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","),
                                     client_id="kjobs-bench", request_timeout_ms=30000)
            try:
                admin.delete_topics([self.main, *self.ladder, self.main + ".dlq"],
                                    timeout_ms=30000)
            finally:
                admin.close()
        except Exception as e:  # leftovers cost disk, not correctness: fresh names every case
            log(f"could not delete the topics of {self.main}: {e}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_process(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (all threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def fmt_int(v):
    return "—" if v is None else f"{v:,.0f}"


def rx_bytes(pid):
    """Bytes the process's open TCP connections received (`ss -tinp`: bytes_received of each
    socket it owns): for a worker, what its brokers sent, fetch responses above all, so
    records fetched again after a pause show here. Connections already closed are not
    counted (a worker keeps its broker connections open)."""
    try:
        out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total, mine, seen = 0, False, False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            mine = f"pid={pid}," in line
            continue
        m = re.search(r"bytes_received:(\d+)", line)
        if mine and m:
            total += int(m.group(1))
            seen = True
    return total if seen else None  # none seen: a prefix that did not exec, or ss -p blind


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def free_port():
    """A loopback TCP port free now (the kernel's pick): a fixed range once ran into a Kafka
    broker's listener (19092) and the worker exited on its HTTP bind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """`kjobs run` with the bench plugin; records land in `out` at exit."""

    def __init__(self, ctx, b, group, end_marks=0, env=None, tag="worker", extra=(),
                 prefix=()):
        self.name = ctx.name(tag)
        self.out = ctx.path(self.name + ".records")
        self.marks = self.out + ".marks"
        self.errpath = ctx.path(self.name + ".err")
        self.err = open(self.errpath, "w")
        self.http = f"127.0.0.1:{free_port()}"
        full = dict(os.environ)
        full.update({"KJOBS_HANDLERS_PLUGIN": ctx.plugin, "KJOBS_KAFKA_GROUP": group,
                     "KJOBS_HTTP_LISTEN": self.http, "BENCH_OUT": self.out,
                     "BENCH_END_MARKS": str(end_marks)})
        full.update(b.env)
        full.update(env or {})
        self.launched_at = time.time()
        self.proc = subprocess.Popen([*prefix, ctx.kjobs, "run", "-b", b.bootstrap,
                                      *ctx.fetch_args, *extra], stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=full, stdin=subprocess.DEVNULL)

    def logs(self):
        out = []
        with open(self.errpath) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_for_log(self, msg, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.logs():
                if rec.get("msg") == msg:
                    return rec
            check_brokers()
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited {self.proc.returncode} waiting for {msg!r}")
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: no {msg!r} log line within {timeout}s")

    def wait_marks(self, timeout):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.marks):
            check_brokers()
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited {self.proc.returncode} before its end marks")
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: end marks not all handled within {timeout}s")
            time.sleep(0.05)
        return read_records(self.marks)

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as r:
            return r.read().decode()

    def hwm_kb(self):
        return vm_hwm_kb(self.proc.pid)

    def stop(self, timeout=30, check=True):
        rc = stop_process(self.proc, timeout)
        self.err.close()
        self.exit_code = rc
        if rc != 0 and check:
            raise HarnessError(f"{self.name} exited {rc} on SIGTERM (see {self.errpath})")
        return read_records(self.out) if os.path.exists(self.out) else []


def read_records(path):
    recs = []
    with open(path) as f:
        for line in f:
            k, p, t, lat = line.split()
            recs.append((int(k), int(p), int(t), int(lat)))
    return recs


def run_json(args, timeout=600, env=None):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **env) if env else None)
    if p.returncode != 0:
        check_brokers()
        raise HarnessError(f"{' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def fill(ctx, b, count, marks=True, flaky_every=0, type_=None, payload_bytes=0, flaky_fails=None):
    args = [ctx.loadgen, "-b", b.bootstrap, "-t", b.main, "fill", "--count", str(count)]
    if flaky_fails is not None:
        args += ["--flaky-fails", str(flaky_fails)]
    if payload_bytes:
        args += ["--payload-bytes", str(payload_bytes)]
    if marks:
        args.append("--marks")
    if flaky_every:
        args += ["--flaky-every", str(flaky_every)]
    if type_:
        args += ["--type", type_]
    res = run_json(args)[0]
    if res["failed"] or res["acked"] != res["produced"]:
        raise HarnessError(f"loadgen fill: {res}")
    return res


def check_backlog(ctx, b, expected):
    """Nothing dropped by the broker's ~5 MiB/partition retention: low watermarks all 0 and
    the high watermarks add up to what was produced."""
    res = run_json([ctx.raw, "-b", b.bootstrap, "--watermarks", "-t", b.main])[0]
    if res["low_max"] != 0 or res["high_sum"] != expected:
        raise HarnessError(f"backlog not intact (broker retention dropped data?): {res}, "
                           f"expected high_sum {expected}")
    return res


def metric_sum(text, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("kjobs_jobs_total{"):
            continue
        m = re.match(r'kjobs_jobs_total\{([^}]*)\}\s+(\S+)', line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def metric_value(text, name):
    """The value of an unlabelled metric (a counter or gauge) from /metrics text; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


# ---- drain ------------------------------------------------------------------------------------

def mark_span(recs):
    """(first start mark, last end mark, seconds between them) of a worker's bench marks."""
    first = min(t for k, _, t, _ in recs if k == 1)
    last = max(t for k, _, t, _ in recs if k == 2)
    return first, last, (last - first) / 1e6


def per_job_us(before, after, jobs):
    """CPU µs per job between two CPU-seconds readings, or None if either is unknown."""
    return (after - before) * 1e6 / jobs if before is not None and after is not None else None


def kjobs_drain(ctx, b, partitions, total_msgs, env=None, timeout=300, want_rx=False):
    """One kjobs drain in a fresh group; rate over first start mark .. last end mark.
    want_rx: also read the bytes the worker received so far (runs `ss`; the retry pairs'
    figure), else rx_bytes is None."""
    w = Worker(ctx, b, ctx.name("kjobs-drain"), end_marks=partitions, env=env,
               tag="drain", prefix=shlex.split(os.environ.get("BENCH_WORKER_PREFIX", "")))
    try:
        recs = w.wait_marks(timeout)
        hwm = w.hwm_kb()
        cpu = cpu_seconds(w.proc.pid)
        bcpu = b.cpu_s()  # the broker's CPU seconds at the end of the drain (None if unknown)
        rx = rx_bytes(w.proc.pid) if want_rx else None
    except BaseException:
        stop_process(w.proc)
        raise
    first, last, span = mark_span(recs)
    # the longest time no bench.lat job started, when the backlog has them (bench.lat records
    # its handler-start time): a drain that stalls shows here, whatever its average rate
    lats = sorted(t for k, _, t, _ in recs if k == 0)
    stall = max((b - a for a, b in zip(lats, lats[1:])), default=None)
    return {"rate": (total_msgs - 1) / span, "span_s": span, "hwm_kb": hwm, "worker": w,
            "stall_ms": stall / 1e3 if stall is not None else None,
            "cpu_us_per_msg": cpu * 1e6 / total_msgs if cpu is not None else None,
            "broker_cpu_s": bcpu, "rx_bytes": rx, "first_us": first, "last_us": last}


def rdkafka_version(ctx):
    """The librdkafka the bench binaries run with, as a tuple (e.g. (2, 15, 1))."""
    if not hasattr(ctx, "rdkafka_tuple"):
        v = re.findall(r"librdkafka (\d+)\.(\d+)\.(\d+)", sh([ctx.kjobs, "version"]))
        ctx.rdkafka_tuple = tuple(int(x) for x in v[0]) if v else (0, 0, 0)
    return ctx.rdkafka_tuple


def raw_copy_drain(ctx, b, total_msgs, copy_every=0):
    """The retry path's floor: the raw consumer on the main topic alone, producing every
    copy_every-th message (with nine kjobs-sized headers) to the first ladder topic when
    copy_every > 0 (bench/raw_consumer.c, --copy-every). CPU includes flushing the copies.
    Both cases wait 1 ms, not librdkafka's 1 s, before fetching again into a full prefetch
    queue, as kjobs does (processor/worker.c, prefetch_conf): the client slowed by its copies
    filled its queue and stopped fetching for a second (a bimodal 250k or 790k msgs/s)."""
    args = [ctx.raw, "-b", b.bootstrap, "-G", ctx.name("raw-copy"), "-n", str(total_msgs),
            "-t", b.main, *ctx.fetch_args]
    if rdkafka_version(ctx) >= (2, 2, 0):
        args += ["-X", "fetch.queue.backoff.ms=1"]
    if copy_every:
        args += ["--copy-every", str(copy_every), "--copy-topic", b.ladder[0]]
    bcpu0 = b.cpu_s()
    res = run_json(args)[0]
    bcpu = b.cpu_s()
    if copy_every and res["copies_acked"] != total_msgs // copy_every:
        raise HarnessError(f"raw copies: {res}")
    return {"main_rate": res["rate"], "cpu_us_per_job": res["cpu_s"] * 1e6 / total_msgs,
            "broker_cpu_us_per_job": per_job_us(bcpu0, bcpu, total_msgs)}


def raw_drain(ctx, b, total_msgs, env=None):
    res = run_json([ctx.raw, "-b", b.bootstrap, "-G", ctx.name("raw-drain"), "-n", str(total_msgs),
                    *sum((["-t", t] for t in [b.main, *b.ladder]), []), *ctx.fetch_args],
                   env=env)[0]
    return {"rate": res["rate"], "span_s": res["first_to_last_s"],
            "cpu_us_per_msg": res["cpu_s"] * 1e6 / total_msgs, "hwm_kb": res["hwm_kb"]}


def kcat_drain(ctx, b, total_msgs):
    """kcat -C -G: its stdout ('%p\\n' per message) is timestamped as it arrives; the rate is
    taken between the first and the last chunk (stdio buffering: ~1-2k messages a chunk)."""
    kcat = shutil.which("kcat")
    if not kcat:
        return None
    p = subprocess.Popen([kcat, "-b", b.bootstrap, "-G", ctx.name("kcat-drain"), *ctx.fetch_args,
                          "-X", "auto.offset.reset=earliest", "-c",
                          str(total_msgs), "-f", "%p\n", "-q", b.main, *b.ladder],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    first_t = last_t = None
    first_n = n = 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        now = time.time()
        n += chunk.count(b"\n")
        if first_t is None:
            first_t, first_n = now, n
        last_t = now
    p.wait()
    if n < total_msgs or last_t is None or last_t <= first_t:
        return None
    return {"rate": (n - first_n) / (last_t - first_t), "span_s": last_t - first_t}


def spread(vals):
    """(median, min, max) of the values that are not None, or three NaNs."""
    vals = [v for v in vals if v is not None and v == v]
    if not vals:
        return (float("nan"),) * 3
    return statistics.median(vals), min(vals), max(vals)


# The drain's consumers: kjobs and raw_consumer always; with --drain-extras also the jemalloc
# experiment and kcat (each costs its own fresh broker and fill per run).
DRAIN_MAIN = ["kjobs", "raw"]
DRAIN_EXTRAS = ["kjobs_jemalloc", "raw_jemalloc", "kcat"]


def drain_one(ctx, cfg, what):
    """One consumer of one run: a fresh broker (on Kafka: fresh topics) filled with its own
    backlog, checked intact before and after, drained by `what` in a fresh group. Nothing is
    shared with the other consumer of the run but the machine, so neither drains a broker the
    other has warmed (page cache of the mock's log, its fetch index) or left busy."""
    P, N = cfg["drain_partitions"], cfg["drain_jobs"]
    total = N + 2 * P
    with ctx.broker(P) as b:
        f = fill(ctx, b, N)
        wm = check_backlog(ctx, b, total)
        if what in ("kjobs", "kjobs_jemalloc"):
            res = kjobs_drain(ctx, b, P, total,
                              env={"LD_PRELOAD": JEMALLOC} if what == "kjobs_jemalloc" else None)
            res["worker"].stop()
            del res["worker"]
        elif what in ("raw", "raw_jemalloc"):
            res = raw_drain(ctx, b, total,
                            env={"LD_PRELOAD": JEMALLOC} if what == "raw_jemalloc" else None)
        else:
            res = kcat_drain(ctx, b, total)
        check_backlog(ctx, b, total)  # still intact after the drain
        if res is not None:
            res.update(fill=f, watermarks=wm, broker_hwm_kb=b.rss_kb(),
                       load1=float(open("/proc/loadavg").read().split()[0]))
    return res


def bench_drain(ctx, cfg):
    P, N, runs = cfg["drain_partitions"], cfg["drain_jobs"], cfg["drain_runs"]
    total = N + 2 * P
    extras = [x for x in DRAIN_EXTRAS if cfg.get("drain_extras") and
              not ("jemalloc" in x and (not JEMALLOC or ctx.quick or not cfg.get("jemalloc", True)))]
    log(f"drain: {N} noop jobs over {P} partitions, {runs} runs of "
        f"{' / '.join(DRAIN_MAIN + extras)}, each on a fresh broker, order alternating")
    rows = []
    for r in range(runs):
        # alternate who goes first, so neither always runs while the machine is fresher
        order = (DRAIN_MAIN if r % 2 == 0 else DRAIN_MAIN[::-1]) + extras
        row = {"order": order}
        for what in order:
            row[what] = drain_one(ctx, cfg, what)
        row.setdefault("kcat", None)
        row["ratio"] = row["kjobs"]["rate"] / row["raw"]["rate"]
        row["load1"] = row["kjobs"]["load1"]
        row["cpu_ratio"] = row["kjobs"]["cpu_us_per_msg"] / row["raw"]["cpu_us_per_msg"]
        if "kjobs_jemalloc" in row:
            row["jemalloc_ratio"] = (row["kjobs_jemalloc"]["rate"] /
                                     row["raw_jemalloc"]["rate"])
        log(f"  run {r + 1} ({' then '.join(order)}): CPU {row['kjobs']['cpu_us_per_msg']:.2f} vs "
            f"{row['raw']['cpu_us_per_msg']:.2f} µs/msg ({row['cpu_ratio']:.2f}×); wall kjobs "
            f"{row['kjobs']['rate']:.0f}/s, raw {row['raw']['rate']:.0f}/s ({row['ratio']:.1%}); "
            f"VmHWM {row['kjobs']['hwm_kb']} kB; load {row['load1']}")
        rows.append(row)

    def col(key, field):
        return [r[key][field] if r.get(key) else None for r in rows]

    first = rows[0]["kjobs"]
    out = {"partitions": P, "jobs": N, "messages": total, "fill": first["fill"],
           "watermarks": first["watermarks"], "rows": rows, "method": "fresh-broker",
           "broker_hwm_kb": max(r[w]["broker_hwm_kb"] or 0 for r in rows for w in DRAIN_MAIN)
           or None,
           "kcat_rate": med(col("kcat", "rate")),
           "hwm_kb": med(col("kjobs", "hwm_kb")),
           "raw_hwm_kb": med(col("raw", "hwm_kb")),
           "jemalloc_rate": med(col("kjobs_jemalloc", "rate")),
           "jemalloc_ratio": med(r.get("jemalloc_ratio") for r in rows),
           "raw_jemalloc_rate": med(col("raw_jemalloc", "rate")),
           "raw_jemalloc_cpu_us": med(col("raw_jemalloc", "cpu_us_per_msg")),
           "jemalloc_cpu_us": med(col("kjobs_jemalloc", "cpu_us_per_msg"))}
    # (median, min, max) of the figures the targets are about
    for name, vals in (("kjobs_cpu_us", col("kjobs", "cpu_us_per_msg")),
                       ("raw_cpu_us", col("raw", "cpu_us_per_msg")),
                       ("cpu_ratio", [r["cpu_ratio"] for r in rows]),
                       ("kjobs_rate", col("kjobs", "rate")),
                       ("raw_rate", col("raw", "rate")),
                       ("ratio", [r["ratio"] for r in rows])):
        out[name], out[name + "_min"], out[name + "_max"] = spread(vals)
    return out


# ---- latency ----------------------------------------------------------------------------------

LAT_VARIANTS = {
    # what the brief asks for: default settings everywhere
    "default": {"gen": [], "env": {}},
    # the same run with the producer's wait removed too (linger.ms=0; the worker's
    # batch.max_wait_ms is 0 by default): what is left is transport, the broker and kjobs itself
    "no-waits": {"gen": ["-X", "linger.ms=0"], "env": {"KJOBS_BATCH_MAX_WAIT_MS": "0"}},
    # the default before 2026-12-01: a partition's first job waits up to 5 ms for its batch
    "batch-wait-5ms": {"gen": [], "env": {"KJOBS_BATCH_MAX_WAIT_MS": "5"}},
}


def lat_run(ctx, cfg, variant):
    rate, secs, P = cfg["lat_rate"], cfg["lat_seconds"], cfg["lat_partitions"]
    v = LAT_VARIANTS[variant]
    # the load, then a start and an end mark per partition (on Kafka: two more warm-up jobs,
    # one for the consumers, one for loadgen's producer)
    n = int(rate * secs) + (4 if ctx.kafka else 2) * P
    raw, warmup_s = None, None
    with ctx.broker(P) as b:
        w = Worker(ctx, b, ctx.name("lat"), end_marks=P, tag="lat", env=v["env"])
        try:
            w.wait_for_log("partition assigned")
            if ctx.kafka:  # the raw consumer reads the same stream at the same time, own group
                raw = ctx.path(ctx.name("raw-lat"))
                rawp = subprocess.Popen([ctx.raw, "-b", b.bootstrap, "-G", os.path.basename(raw),
                                         "-n", str(n), "--latency", raw + ".lat",
                                         *sum((["-t", t] for t in [b.main, *b.ladder]), []),
                                         *ctx.fetch_args], stdout=subprocess.PIPE,
                                        stderr=open(raw + ".err", "w"), text=True)
                # Warm-up: a fresh group on a fresh topic resolves its start offsets and opens
                # its fetch sessions after the assignment; the measurement is of the steady
                # state, so the load starts once both consumers handled one job per partition.
                t_warm = time.monotonic()
                deadline = t_warm + 60
                while "assigned" not in open(raw + ".err").read():
                    if rawp.poll() is not None or time.monotonic() > deadline:
                        raise HarnessError(f"raw_consumer not assigned (see {raw}.err)")
                    time.sleep(0.05)
                fill(ctx, b, P, marks=False, type_="bench.start")
                while (metric_sum(w.metrics(), type="bench.start", outcome="ok") < P
                       or "first message" not in open(raw + ".err").read()):
                    if rawp.poll() is not None or time.monotonic() > deadline:
                        raise HarnessError(f"latency warm-up not done in 60 s (see {raw}.err)")
                    time.sleep(0.05)
                warmup_s = time.monotonic() - t_warm
            time.sleep(1.0)  # let the assignment settle (cooperative rebalance rounds)
            gen = run_json([ctx.loadgen, "-b", b.bootstrap, "-t", b.main, *v["gen"], "rate",
                            "--rate", str(rate), "--seconds", str(secs),
                            *(["--warmup"] if ctx.kafka else [])],
                           timeout=secs * 3 + 60)[0]
            fill(ctx, b, 0)  # end marks behind the load on every partition
            w.wait_marks(60)
            hwm = w.hwm_kb()
            cpu = cpu_seconds(w.proc.pid)
            if raw:
                out, _ = rawp.communicate(timeout=60)
                if rawp.returncode != 0:
                    raise HarnessError(f"raw_consumer exited {rawp.returncode} (see {raw}.err)")
                raw_res = json.loads(out.splitlines()[0])
        except BaseException:
            stop_process(w.proc)
            if raw:
                stop_process(rawp)
            raise
        recs = w.stop()
    lats = sorted(lat / 1000.0 for k, _, _, lat in recs if k == 0)
    if len(lats) < gen["acked"]:
        raise HarnessError(f"latency: {len(lats)} jobs recorded, {gen['acked']} produced")
    row = {"variant": variant, "jobs": len(lats), "produced": gen["acked"],
           "gen_rate": gen["rate"], "gen_max_behind_ms": gen["max_behind_ms"],
           "p50": pct(lats, 0.50), "p90": pct(lats, 0.90), "p99": pct(lats, 0.99),
           "p999": pct(lats, 0.999), "max": lats[-1], "hwm_kb": hwm, "worker_cpu_s": cpu,
           "cpu_us_per_job": cpu * 1e6 / n if cpu is not None else None, "warmup_s": warmup_s,
           "load1": float(open("/proc/loadavg").read().split()[0])}
    if raw:
        with open(raw + ".lat") as f:
            rl = sorted(int(x) / 1000.0 for x in f)
        if len(rl) < gen["acked"]:
            raise HarnessError(f"latency: raw_consumer saw {len(rl)} stamps, {gen['acked']} produced")
        row.update({"raw_p50": pct(rl, 0.50), "raw_p90": pct(rl, 0.90), "raw_p99": pct(rl, 0.99),
                    "raw_p999": pct(rl, 0.999), "raw_max": rl[-1],
                    "raw_cpu_us_per_job": raw_res["cpu_s"] * 1e6 / n,
                    "raw_hwm_kb": raw_res["hwm_kb"]})
        row["p99_minus_raw"] = row["p99"] - row["raw_p99"]
    return row


def bench_latency(ctx, cfg):
    rate, secs, runs, P = cfg["lat_rate"], cfg["lat_seconds"], cfg["runs"], cfg["lat_partitions"]
    variants = cfg.get("lat_variants", list(LAT_VARIANTS))
    log(f"latency: {rate} jobs/s for {secs}s over {P} partitions, {runs} runs each of "
        f"{', '.join(variants)}{' (and raw_consumer on the same stream)' if ctx.kafka else ''}")
    rows = {v: [] for v in LAT_VARIANTS}
    for r in range(runs):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            row = lat_run(ctx, cfg, variant)
            log(f"  run {r + 1} {variant}: p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms, max "
                f"{row['max']:.2f} ms ({row['jobs']} jobs at {row['gen_rate']:.0f}/s, load "
                f"{row['load1']})" + (f"; raw_consumer p50 {row['raw_p50']:.2f} p99 "
                                      f"{row['raw_p99']:.2f} max {row['raw_max']:.2f} ms"
                                      if "raw_p99" in row else ""))
            rows[variant].append(row)
    out = {"rate": rate, "seconds": secs, "partitions": P, "rows": rows["default"],
           "variants": rows}
    for k in ("p50", "p90", "p99", "p999", "max", "cpu_us_per_job", "raw_p50", "raw_p90",
              "raw_p99", "raw_p999", "raw_max", "raw_cpu_us_per_job", "p99_minus_raw"):
        out[k] = med(r.get(k) for r in rows["default"])
        out["nowait_" + k] = med(r.get(k) for r in rows["no-waits"])
        out["wait5_" + k] = med(r.get(k) for r in rows["batch-wait-5ms"])
    return out


# ---- rss --------------------------------------------------------------------------------------

def bench_rss(ctx, cfg):
    P, N, runs = cfg["rss_partitions"], cfg["rss_jobs"], cfg["runs"]
    log(f"rss: worker VmHWM with 1 job and with {N // 2}, {N} and {2 * N}-job backlogs over {P} "
        f"partitions")
    one, big = [], []
    for r in range(runs):
        with ctx.broker(P) as b:  # a fresh broker each time: exactly one job in it
            fill(ctx, b, 1, marks=False, type_="bench.end")
            check_backlog(ctx, b, 1)
            w = Worker(ctx, b, ctx.name("rss1"), end_marks=1, tag="rss1")
            try:
                w.wait_marks(60)
                time.sleep(1.0)
                one.append(w.hwm_kb())
            finally:
                stop_process(w.proc)
            log(f"  run {r + 1}: 1 job: VmHWM {one[-1]} kB")
    half, double = [], []
    broker_hwm = None
    # three backlog sizes over the same partitions: below batch.max_pending per partition (no
    # pause), above it, and twice that; a bounded worker levels off
    for size, out in ((N // 2, half), (N, big), (2 * N, double)):
        with ctx.broker(P) as b:
            total = size + 2 * P
            fill(ctx, b, size)
            check_backlog(ctx, b, total)
            for r in range(runs):
                k = kjobs_drain(ctx, b, P, total)
                k["worker"].stop()
                out.append({"hwm_kb": k["hwm_kb"], "rate": k["rate"]})
                log(f"  run {r + 1}: {size} backlog: VmHWM {k['hwm_kb']} kB ({k['rate']:.0f} jobs/s)")
            check_backlog(ctx, b, total)
            broker_hwm = b.rss_kb()
    return {"partitions": P, "jobs": N, "one": one, "big": big, "one_kb": med(one),
            "half": half, "half_kb": med(r["hwm_kb"] for r in half),
            "double": double, "double_kb": med(r["hwm_kb"] for r in double),
            "double_rate": med(r["rate"] for r in double),
            "big_kb": med(r["hwm_kb"] for r in big), "big_rate": med(r["rate"] for r in big),
            "broker_hwm_kb": broker_hwm}


# ---- memory (issue #18 item 3) ----------------------------------------------------------------

def bench_memory(ctx, cfg):
    """Worker VmHWM over backlogs of different sizes and partition counts, with real payloads
    and retries: every case a fresh broker (or fresh topics) filled with N jobs of P bytes, every
    10th (BENCH_MEM_FLAKY_EVERY) failing once (ladder step 1 s), drained by one worker with default settings until every
    retry succeeded; VmHWM read then. A worker bounded per process and in bytes stays flat
    across rows."""
    env = {"KJOBS_RETRY_DELAYS": "1s"}
    # BENCH_MEM_FLAKY_EVERY: every how many jobs one fails once (10; 0: none, the control
    # that tells the retry path's share of the peak)
    every = int(os.environ.get("BENCH_MEM_FLAKY_EVERY", "10"))
    # BENCH_MEM_IN_PLACE=1: the failing jobs are retried once in place (retry.in_place_attempts
    # 1, no delay) instead of on the ladder
    in_place = os.environ.get("BENCH_MEM_IN_PLACE", "") == "1"
    if in_place:
        env["KJOBS_RETRY_IN_PLACE_ATTEMPTS"] = "1"
    rows = []
    for P, N, payload in cfg["mem_cases"]:
        for r in range(cfg["mem_runs"]):
            with ctx.broker(P) as b:
                total = N + 2 * P
                fill(ctx, b, N, flaky_every=every, payload_bytes=payload)
                check_backlog(ctx, b, total)
                k = kjobs_drain(ctx, b, P, total, env=env, timeout=600)
                w = k["worker"]
                try:
                    deadline = time.monotonic() + 300
                    while every and metric_sum(w.metrics(),
                                               topic=b.main if in_place else b.ladder[0],
                                               type="kjobs.flaky", outcome="ok") < N // every:
                        check_brokers()
                        if time.monotonic() > deadline:
                            raise HarnessError("memory: retries did not all succeed in 300 s")
                        time.sleep(0.05)
                    hwm = w.hwm_kb()
                    cpu = cpu_seconds(w.proc.pid)
                    rx = rx_bytes(w.proc.pid)
                finally:
                    w.stop()
                row = {"partitions": P, "jobs": N, "payload": payload, "flaky_every": every,
                       "hwm_kb": hwm,
                       "rate": k["rate"], "cpu_us": cpu * 1e6 / N if cpu is not None else None,
                       "rx_bytes_per_job": rx / N if rx is not None else None,
                       "load1": float(open("/proc/loadavg").read().split()[0])}
                log(f"  memory: {N} jobs of {payload} B over {P} partitions "
                    f"({100 // every if every else 0}% retried): "
                    f"VmHWM {hwm / 1024:.1f} MiB, first attempts {k['rate']:.0f} jobs/s, "
                    f"CPU {row['cpu_us'] or float('nan'):.2f} us/job until every retry ran"
                    + (f", received {row['rx_bytes_per_job']:.0f} B/job"
                       if row["rx_bytes_per_job"] is not None else ""))
                rows.append(row)
    return {"rows": rows}


# ---- retry ------------------------------------------------------------------------------------

def bench_retry(ctx, cfg):
    P, N, runs = cfg["retry_partitions"], cfg["retry_jobs"], cfg["runs"]
    flaky = N // 10
    env = {"KJOBS_RETRY_DELAYS": "1s"}
    # the same 10 % retried once in place (retry.in_place_attempts = 1) after this delay
    in_place_delay = os.environ.get("BENCH_RETRY_IN_PLACE_DELAY", "0")
    in_place_env = dict(env, KJOBS_RETRY_IN_PLACE_ATTEMPTS="1",
                        KJOBS_RETRY_IN_PLACE_DELAY=in_place_delay)
    # BENCH_RETRY_CASES: which of ok, mix, flaky (the ladder), in_place, raw (the bare client's
    # floor) to run, e.g. "ok,mix,in_place" for more pairs of those ratios in the same time;
    # "ok" is always run. "mix" is the fair control: the same backlog, every 10th job
    # kjobs.flaky too, but with payload "0" (never fails): the same handler calls per batch
    # (a batch of mixed types is one handler call per run of one type), none failing. The order
    # alternates between pairs (ABBA), so a drift of the machine during a run favours no case.
    cases = [c for c in os.environ.get("BENCH_RETRY_CASES", "ok,mix,flaky,in_place,raw").split(",")
             if c]
    if not set(cases) <= {"ok", "mix", "flaky", "in_place", "raw"}:
        raise HarnessError(f"BENCH_RETRY_CASES: unknown case in {cases}")
    if "raw" in cases and not {"flaky", "in_place"} <= set(cases):
        raise HarnessError("BENCH_RETRY_CASES: raw (the floor) needs flaky and in_place")
    kinds = ["ok"] + [c for c in ("mix", "flaky", "in_place") if c in cases]
    log(f"retry: {N} jobs over {P} partitions, all ok vs 10% kjobs.flaky (1 s retry; and in "
        f"place after {in_place_delay} ms), {runs} pairs of {','.join(kinds)}")
    rows = []
    for r in range(runs):
        row = {}
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            with ctx.broker(P) as b:
                fill(ctx, b, N, flaky_every=0 if kind == "ok" else 10, type_="bench.lat",
                     flaky_fails=0 if kind == "mix" else None)
                total = N + 2 * P
                check_backlog(ctx, b, total)
                bcpu0 = b.cpu_s()
                k = kjobs_drain(ctx, b, P, total, env=in_place_env if kind == "in_place" else env,
                                want_rx=True)
                w = k["worker"]
                try:
                    done_us = k["last_us"]
                    if kind in ("flaky", "in_place"):  # poll /metrics until all retries ran
                        deadline = time.monotonic() + 120
                        topic = b.main if kind == "in_place" else b.ladder[0]
                        while True:
                            m = w.metrics()
                            if metric_sum(m, topic=topic, type="kjobs.flaky",
                                          outcome="ok") >= flaky:
                                done_us = int(time.time() * 1e6)
                                break
                            check_brokers()
                            if time.monotonic() > deadline:
                                raise HarnessError("retry: retries did not all succeed in 120 s")
                            time.sleep(0.02)
                    cpu = cpu_seconds(w.proc.pid)  # the whole worker, retries included
                    bcpu = b.cpu_s()
                    rx = rx_bytes(w.proc.pid)
                    m = w.metrics()
                    main_ok = metric_sum(m, topic=b.main, outcome="ok")
                    main_retry = metric_sum(m, topic=b.main, outcome="retry")
                finally:
                    w.stop()
                if main_ok + main_retry < N or main_retry != (flaky if kind == "flaky" else 0):
                    raise HarnessError(f"retry: counts off: ok {main_ok} retry {main_retry}")
                if kind == "in_place" and metric_value(m, "kjobs_retries_in_place_total") != flaky:
                    raise HarnessError("retry: in place: not every flaky job retried in place")
                row[kind] = {"main_rate": k["rate"], "main_span_s": k["span_s"],
                             "done_s": (done_us - k["first_us"]) / 1e6,
                             "done_rate": N / ((done_us - k["first_us"]) / 1e6),
                             "retried": main_retry,
                             "cpu_us_per_job": cpu * 1e6 / N if cpu is not None else None,
                             "rx_bytes_per_job": rx / N if rx is not None else None,
                             "broker_cpu_us_per_job": per_job_us(bcpu0, bcpu, N),
                             # CPU until the main drain's last end mark (before the retries
                             # run): what competes with the first attempts for the 2 cores
                             "main_cpu_us_per_job": k["cpu_us_per_msg"],
                             "main_broker_cpu_us_per_job": per_job_us(bcpu0, k["broker_cpu_s"],
                                                                      N),
                             "main_rx_bytes_per_job": k["rx_bytes"] / N
                             if k["rx_bytes"] is not None else None,
                             "stall_ms": k["stall_ms"]}
        if "flaky" in row:
            row["ratio_main"] = row["flaky"]["main_rate"] / row["ok"]["main_rate"]
        if "in_place" in row:
            row["ratio_in_place"] = row["in_place"]["main_rate"] / row["ok"]["main_rate"]
            if row["ok"]["cpu_us_per_job"] and row["in_place"]["cpu_us_per_job"]:
                row["cpu_ratio_in_place"] = (row["in_place"]["cpu_us_per_job"]
                                             / row["ok"]["cpu_us_per_job"])
        for k in ("flaky", "in_place"):  # against the fair control
            if k in row and "mix" in row:
                row[f"ratio_{k}_mix"] = row[k]["main_rate"] / row["mix"]["main_rate"]
                if row["mix"]["cpu_us_per_job"] and row[k]["cpu_us_per_job"]:
                    row[f"cpu_ratio_{k}_mix"] = (row[k]["cpu_us_per_job"]
                                                 / row["mix"]["cpu_us_per_job"])
        row["load1"] = float(open("/proc/loadavg").read().split()[0])
        log(f"  pair {r + 1}: all ok {row['ok']['main_rate']:.0f}/s "
            f"(CPU {row['ok']['cpu_us_per_job'] or 0:.2f} us/job)"
            + "".join(f"; {k} {row[k]['main_rate']:.0f}/s "
                      f"({row[k]['main_rate'] / row['ok']['main_rate']:.1%} of ok"
                      + (f", {row[f'ratio_{k}_mix']:.1%} of mix" if f"ratio_{k}_mix" in row
                         else "")
                      + f", CPU {row[k]['cpu_us_per_job'] or 0:.2f} us/job"
                      + (f", received {row[k]['rx_bytes_per_job']:.0f} B/job"
                         if row[k].get("rx_bytes_per_job") is not None else "")
                      + (f", broker CPU {row[k]['broker_cpu_us_per_job']:.2f} us/job"
                         if row[k].get("broker_cpu_us_per_job") is not None else "") + ")"
                      for k in kinds[1:])
            + f"; load {row['load1']:.2f}")
        if "raw" not in cases:
            rows.append(row)
            continue
        # the floor: a raw client reading the same backlog, then also writing 10 % of it back
        for kind, every in (("raw_ok", 0), ("raw_copy", 10)):
            with ctx.broker(P) as b:
                fill(ctx, b, N, flaky_every=10 if every else 0, type_="bench.lat")
                check_backlog(ctx, b, N + 2 * P)
                row[kind] = raw_copy_drain(ctx, b, N + 2 * P, every)
        row["raw_ratio"] = row["raw_copy"]["main_rate"] / row["raw_ok"]["main_rate"]
        log(f"  pair {r + 1}: all ok {row['ok']['main_rate']:.0f}/s; 10% flaky "
            f"{row['flaky']['main_rate']:.0f}/s first attempts ({row['ratio_main']:.1%}), in "
            f"place {row['in_place']['main_rate']:.0f}/s ({row['ratio_in_place']:.1%}, CPU "
            f"{row['in_place']['cpu_us_per_job'] or 0:.2f} us/job), all "
            f"done after {row['flaky']['done_s']:.2f}s; CPU {row['ok']['cpu_us_per_job'] or 0:.2f}"
            f" / {row['flaky']['cpu_us_per_job'] or 0:.2f} us/job (broker "
            f"{row['ok']['broker_cpu_us_per_job'] or 0:.2f} / "
            f"{row['flaky']['broker_cpu_us_per_job'] or 0:.2f}); main drain CPU worker+broker "
            f"{row['ok']['main_cpu_us_per_job'] or 0:.2f}+"
            f"{row['ok']['main_broker_cpu_us_per_job'] or 0:.2f} / "
            f"{row['flaky']['main_cpu_us_per_job'] or 0:.2f}+"
            f"{row['flaky']['main_broker_cpu_us_per_job'] or 0:.2f} us/job, received "
            f"{row['ok']['main_rx_bytes_per_job'] or 0:.0f} / "
            f"{row['flaky']['main_rx_bytes_per_job'] or 0:.0f} B/job (all done "
            f"{row['ok']['rx_bytes_per_job'] or 0:.0f} / {row['flaky']['rx_bytes_per_job'] or 0:.0f}"
            f"); longest stall {row['ok']['stall_ms'] or 0:.0f} / "
            f"{row['flaky']['stall_ms'] or 0:.0f} ms; raw consumer {row['raw_ok']['main_rate']:.0f}"
            f"/s, writing 10% back {row['raw_copy']['main_rate']:.0f}/s ({row['raw_ratio']:.1%}), "
            f"CPU {row['raw_ok']['cpu_us_per_job']:.2f} / {row['raw_copy']['cpu_us_per_job']:.2f}"
            f" us/msg (broker {row['raw_ok']['broker_cpu_us_per_job'] or 0:.2f} / "
            f"{row['raw_copy']['broker_cpu_us_per_job'] or 0:.2f})")
        rows.append(row)
    def v(kind, key):  # a case's figure over the pairs that ran it
        return (r[kind].get(key) for r in rows if kind in r)

    def ratio(num, den, key):
        return med(r[num][key] / r[den][key] for r in rows
                   if num in r and den in r and r[num][key] and r[den][key])

    return {"partitions": P, "jobs": N, "flaky": flaky, "cases": cases, "rows": rows,
            "ok_rate": med(v("ok", "main_rate")),
            "flaky_rate": med(v("flaky", "main_rate")),
            "ratio": med(r.get("ratio_main") for r in rows),
            "in_place_delay": in_place_delay,
            "in_place_rate": med(v("in_place", "main_rate")),
            "ratio_in_place": med(r.get("ratio_in_place") for r in rows),
            "in_place_cpu_us": med(v("in_place", "cpu_us_per_job")),
            "in_place_cpu_ratio": med(r.get("cpu_ratio_in_place") for r in rows),
            "mix_rate": med(v("mix", "main_rate")),
            "ratio_in_place_mix": med(r.get("ratio_in_place_mix") for r in rows),
            "cpu_ratio_in_place_mix": med(r.get("cpu_ratio_in_place_mix") for r in rows),
            "ratio_flaky_mix": med(r.get("ratio_flaky_mix") for r in rows),
            "cpu_ratio_flaky_mix": med(r.get("cpu_ratio_flaky_mix") for r in rows),
            "raw_ok_rate": med(v("raw_ok", "main_rate")),
            "raw_copy_rate": med(v("raw_copy", "main_rate")),
            "raw_ratio": med(r.get("raw_ratio") for r in rows),
            "raw_ok_cpu_us": med(v("raw_ok", "cpu_us_per_job")),
            "raw_copy_cpu_us": med(v("raw_copy", "cpu_us_per_job")),
            "ok_done_s": med(v("ok", "done_s")),
            "ok_cpu_us": med(v("ok", "cpu_us_per_job")),
            "flaky_cpu_us": med(v("flaky", "cpu_us_per_job")),
            "cpu_ratio": ratio("flaky", "ok", "cpu_us_per_job"),
            "flaky_done_s": med(v("flaky", "done_s")),
            "ok_rx": med(v("ok", "rx_bytes_per_job")),
            "flaky_rx": med(v("flaky", "rx_bytes_per_job")),
            "ok_stall_ms": med(v("ok", "stall_ms")),
            "flaky_stall_ms": med(v("flaky", "stall_ms"))}


# ---- scale-out --------------------------------------------------------------------------------

def log_ts(rec):
    t = time.strptime(rec["ts"][:19], "%Y-%m-%dT%H:%M:%S")
    return time.mktime(t) - time.timezone + float("0" + rec["ts"][19:-1])


def max_gap(times, lo, hi):
    """Longest interval with no job handled, over [lo, hi], for one partition's sorted times."""
    pts = [lo] + [t for t in times if lo < t < hi] + [hi]
    return max(b - a for a, b in zip(pts, pts[1:]))


# The mock broker completes a rebalance only once session.timeout.ms has expired for members
# that did not rejoin (tests/integration/test_runtime.py): with the 45 s default a join costs
# ~45 s. The benchmark uses the smallest session timeout Kafka allows by default, as the
# runtime tests do; the figure is then bounded below by it.
SO_GROUP_TIMEOUTS = ("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300")


def so_group_args(ctx, protocol):
    """The group settings of a scale-out run: KIP-848 takes its timeouts from the broker (and
    librdkafka refuses the classic ones with it); a real broker completes a classic rebalance
    as soon as the members rejoin, so only the mock needs the short session."""
    if protocol == "consumer":
        return ()
    return () if ctx.kafka else SO_GROUP_TIMEOUTS


def kip848_missing(ctx):
    """The build's `kjobs version` line when its librdkafka has no KIP-848 (< 2.12), else None."""
    out = subprocess.run([os.path.join(ctx.build, "kjobs"), "version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"librdkafka (\d+)\.(\d+)", out)
    return out if not m or (int(m.group(1)), int(m.group(2))) < (2, 12) else None


def bench_scaleout(ctx, cfg, protocol="classic"):
    P, rate, secs, join_at, runs = (cfg["so_partitions"], cfg["so_rate"], cfg["so_seconds"],
                                    cfg["so_join_at"], cfg["runs"])
    log(f"scale-out ({protocol} group protocol): {rate} jobs/s over {P} partitions for {secs}s; "
        f"a second worker joins after {join_at}s; {runs} runs")
    group_args = so_group_args(ctx, protocol)
    group_env = {"KJOBS_KAFKA_GROUP_PROTOCOL": protocol}
    if protocol == "consumer":
        out = kip848_missing(ctx)
        if out:
            log(f"  skipped: KIP-848 needs librdkafka >= 2.12 ({out.strip()!r})")
            return None
    rows = []
    for r in range(runs):
        with ctx.broker(P) as b:
            group = ctx.name("so")
            a = Worker(ctx, b, group, tag="so-a", extra=group_args, env=group_env)
            wb = None
            try:
                a.wait_for_log("partition assigned")
                time.sleep(1.0)
                gen = subprocess.Popen([ctx.loadgen, "-b", b.bootstrap, "-t", b.main, "rate", "--rate",
                                        str(rate), "--seconds", str(secs)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                gen_start = time.time()
                time.sleep(join_at)
                wb = Worker(ctx, b, group, tag="so-b", extra=group_args, env=group_env)
                out, err = gen.communicate(timeout=secs * 3 + 60)
                if gen.returncode != 0:
                    raise HarnessError(f"loadgen rate exited {gen.returncode}: {err}")
                produced = json.loads(out)["acked"]
                # wait (bounded) until the two workers together handled every job
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    check_brokers()
                    handled = 0
                    for w in (a, wb):
                        try:
                            handled += metric_sum(w.metrics(), type="bench.lat", outcome="ok")
                        except OSError:
                            pass
                    if handled >= produced:
                        break
                    time.sleep(0.2)
                time.sleep(0.5)
                recs_b = wb.stop(timeout=60, check=False)
                wb_launch, wb_logs, b_rc = wb.launched_at, wb.logs(), wb.exit_code
                wb = None
                recs_a = a.stop(timeout=60, check=False)
                a_logs, a_rc = a.logs(), a.exit_code
            except BaseException:
                stop_process(a.proc)
                if wb:
                    stop_process(wb.proc)
                raise
        lat_a = [(p, t / 1e6, lat) for k, p, t, lat in recs_a if k == 0]
        lat_b = [(p, t / 1e6, lat) for k, p, t, lat in recs_b if k == 0]
        if len(lat_a) + len(lat_b) < produced:
            raise HarnessError(f"scale-out: {len(lat_a) + len(lat_b)} handled < {produced}")
        if not lat_b:
            raise HarnessError("scale-out: the second worker handled nothing")
        b_first = min(t for _, t, _ in lat_b)
        b_assigned = [log_ts(x) for x in wb_logs if x.get("msg") == "partition assigned"]
        a_revoked = [log_ts(x) for x in a_logs if x.get("msg") == "partition revoked"
                     and x.get("topic") == b.main and log_ts(x) < b_first + 30]
        moved = sorted({p for p, _, _ in lat_b})
        stayed = sorted({p for p, _, _ in lat_a} - set(moved))
        by_part = {}
        for p, t, _ in lat_a:
            by_part.setdefault(p, []).append(t)
        for v in by_part.values():
            v.sort()
        window_hi = b_first + 1.0
        stall = max((max_gap(by_part[p], wb_launch, window_hi) for p in stayed), default=0)
        base = max((max_gap(by_part[p], gen_start + 1.0, wb_launch) for p in stayed), default=0)
        handover = []
        for p in moved:
            a_last = max((t for pp, t, _ in lat_a if pp == p and t < b_first + 0.5),
                         default=None)
            b_first_p = min(t for pp, t, _ in lat_b if pp == p)
            if a_last is not None:
                handover.append(b_first_p - a_last)
        in_window = sorted(lat / 1000 for p, t, lat in lat_a + lat_b
                           if wb_launch <= t <= window_hi + 1.0)
        row = {"produced": produced, "handled": len(lat_a) + len(lat_b),
               "duplicates": len(lat_a) + len(lat_b) - produced,
               "join_to_first_job_s": b_first - wb_launch,
               "join_to_assigned_s": (min(b_assigned) - wb_launch) if b_assigned else None,
               "moved": len(moved), "stayed": len(stayed),
               "stayed_stall_ms": stall * 1e3, "stayed_baseline_gap_ms": base * 1e3,
               "handover_max_ms": max(handover) * 1e3 if handover else None,
               "revoked_on_a": len(a_revoked),
               "window_p99_ms": pct(in_window, 0.99), "window_max_ms": in_window[-1]
               if in_window else None, "exit_codes": [a_rc, b_rc],
               "a_revoked_main": sum(1 for x in a_logs if x.get("msg") == "partition revoked"
                                     and x.get("topic") == b.main and log_ts(x) > wb_launch
                                     and log_ts(x) < b_first + 5),
               "protocol": ("eager (every partition of A revoked)" if sum(
                   1 for x in a_logs if x.get("msg") == "partition revoked" and
                   x.get("topic") == b.main and wb_launch < log_ts(x) < b_first + 5) >= P
                   else "cooperative (only moved partitions revoked)"),
               "a_lost": sum(1 for x in a_logs if x.get("msg") == "partition lost"
                             and x.get("topic") == b.main),
               "a_lost_after_s": min((log_ts(x) - wb_launch for x in a_logs
                                      if x.get("msg") == "partition lost"), default=None),
               "a_reassigned_after_s": min((log_ts(x) - wb_launch for x in a_logs
                                            if x.get("msg") == "partition assigned"
                                            and log_ts(x) > wb_launch), default=None)}
        log(f"  run {r + 1}: B first job {row['join_to_first_job_s']:.2f}s after launch; A lost "
            f"{row['a_lost']} partitions at +{fmt_ms(row['a_lost_after_s'])}s, reassigned at "
            f"+{fmt_ms(row['a_reassigned_after_s'])}s; exit codes {row['exit_codes']}; "
            f"{len(moved)} moved / {len(stayed)} stayed; stayed stall "
            f"{row['stayed_stall_ms']:.0f} ms (baseline {row['stayed_baseline_gap_ms']:.0f} ms)")
        rows.append(row)
    return {"partitions": P, "rate": rate, "seconds": secs, "join_at": join_at, "rows": rows,
            "group_protocol": protocol,
            "group_args": " ".join([f"kafka.group_protocol={protocol}", *group_args[1::2]]),
            **{k: med(r[k] for r in rows) for k in (
                "join_to_first_job_s", "join_to_assigned_s", "stayed_stall_ms",
                "stayed_baseline_gap_ms", "handover_max_ms", "window_p99_ms", "window_max_ms")}}


# ---- scale-steps (1 -> 4 workers and back under load) ------------------------------------------

def read_live(w):
    """A running worker's per-partition first/last bench.lat handler start (the plugin's
    $BENCH_OUT.live, rewritten every BENCH_LIVE_MS): {partition: (first_s, last_s)}."""
    out = {}
    try:
        with open(w.out + ".live") as f:
            for line in f:
                p, first, last = line.split()
                out[int(p)] = (int(first) / 1e6, int(last) / 1e6)
    except (OSError, ValueError):
        pass
    return out


def main_assignment(w, topic):
    """The main-topic partitions a worker holds now, by its own log lines, in order."""
    held = set()
    for x in w.logs():
        if x.get("topic") != topic:
            continue
        if x.get("msg") == "partition assigned":
            held.add(x.get("partition"))
        elif x.get("msg") in ("partition revoked", "partition lost"):
            held.discard(x.get("partition"))
    return held


def ss_wait(cond, timeout, what, procs):
    """Polls cond() every 50 ms; returns the seconds waited, or None after timeout (a finding
    to report, not a harness error). A worker that exits on its own is a harness error."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        check_brokers()
        for w in procs:
            if w.proc.poll() is not None:
                raise HarnessError(f"{w.name} exited {w.proc.returncode} while waiting for {what}")
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    log(f"  not reached within {timeout}s: {what}")
    return None


def bench_scale_steps(ctx, cfg, protocol="classic"):
    """Scale 1 -> 4 workers and back under a steady load, on one set of topics: worker A
    alone, then B, C, D launched one at a time (each once every partition it was assigned
    handled a job, plus a settle time), then D, C, B stopped with SIGTERM one at a time (each
    once every partition is handled again by the remaining workers, plus the settle time). The
    per-job records of every worker (the bench plugin's, written at exit) give, per step: who
    owned each partition before and after, the longest gap between two handled jobs on every
    partition that did not move, the handover gap of the moved ones, duplicates; every job is
    identified by (partition, the producer's stamp), so lost jobs are counted too."""
    P, rate, settle, n_workers = (cfg["ss_partitions"], cfg["ss_rate"], cfg["ss_settle"],
                                  cfg["ss_workers"])
    runs, flow_timeout = cfg["runs"], cfg["ss_flow_timeout"]
    log(f"scale-steps ({protocol} group protocol): {rate} jobs/s over {P} partitions; 1 -> "
        f"{n_workers} workers and back, {settle}s settle per step; {runs} runs")
    if protocol == "consumer":
        out = kip848_missing(ctx)
        if out:
            log(f"  skipped: KIP-848 needs librdkafka >= 2.12 ({out.strip()!r})")
            return {"skipped": f"KIP-848 (group.protocol=consumer) needs librdkafka >= 2.12; "
                               f"this build runs {out.strip()}", "group_protocol": protocol}
    group_args = so_group_args(ctx, protocol)
    env = {"KJOBS_KAFKA_GROUP_PROTOCOL": protocol, "BENCH_LIVE_MS": "100"}
    rows = []
    for r in range(runs):
        load_start = open("/proc/loadavg").read().split()[:3]
        with ctx.broker(P) as b:
            group = ctx.name("ss")
            names = "ABCDEFGH"[:n_workers]
            ws = []
            gen = None
            try:
                a = Worker(ctx, b, group, tag="ss-a", extra=group_args, env=env)
                ws.append(a)
                a.wait_for_log("partition assigned")
                # --warmup: the producer has its id and leader connections before the load
                # starts (without it the first ~2 s arrive in bursts: gaps of 1-2.5 s on A)
                gen = subprocess.Popen([ctx.loadgen, "-b", b.bootstrap, "-t", b.main, "rate",
                                        "--rate", str(rate), "--seconds", "100000", "--warmup"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                gen_start = time.time()
                # A flowing on every partition, 2 s more, then a settle window: the baseline
                ss_wait(lambda: len(read_live(a)) == P, flow_timeout, "A on every partition", ws)
                time.sleep(2.0)
                base_lo = time.time()
                time.sleep(settle)
                steps = []
                for i in range(1, n_workers):  # scale out: add B, C, D
                    w = Worker(ctx, b, group, tag="ss-" + names[i].lower(), extra=group_args,
                               env=env)
                    ws.append(w)
                    n = len(ws)

                    def flowing(w=w, n=n):
                        held = main_assignment(w, b.main)
                        live = read_live(w)
                        return len(held) >= P // n and held <= set(live)
                    waited = ss_wait(flowing, flow_timeout, f"{names[i]} flowing on all its "
                                     f"partitions", [x for x in ws])
                    steps.append({"step": f"+{names[i]} ({n - 1}→{n})", "action": "add",
                                  "worker": i, "t": w.launched_at, "members": n,
                                  "wait_s": waited})
                    time.sleep(settle)
                for i in range(n_workers - 1, 0, -1):  # scale in: SIGTERM D, C, B
                    w = ws[i]
                    t = time.time()
                    w.proc.send_signal(signal.SIGTERM)
                    try:
                        w.proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        w.proc.kill()
                        w.proc.wait()
                    t_exit = time.time()
                    rest = ws[:i]

                    def flowing_again(rest=rest, t_exit=t_exit):
                        lives = [read_live(x) for x in rest]
                        return all(any(lv.get(p, (0, 0))[1] > t_exit for lv in lives)
                                   for p in range(P))
                    waited = ss_wait(flowing_again, flow_timeout, f"every partition flowing "
                                     f"after {names[i]} stopped", rest)
                    steps.append({"step": f"−{names[i]} ({i + 1}→{i})", "action": "stop",
                                  "worker": i, "t": t, "members": i, "exit_code":
                                  w.proc.returncode, "shutdown_s": t_exit - t,
                                  "wait_s": waited})
                    time.sleep(settle)
                t_end = time.time()
                gen.send_signal(signal.SIGTERM)
                out, err = gen.communicate(timeout=120)
                if gen.returncode != 0:
                    raise HarnessError(f"loadgen rate exited {gen.returncode}: {err}")
                gen = None
                produced = json.loads(out)["acked"]
                recs = {}
                for i in range(1, n_workers):
                    recs[i] = ws[i].stop(timeout=60, check=False)
                # A alone now: wait (bounded) until every job was handled somewhere
                others = sum(sum(1 for x in recs[i] if x[0] == 0) for i in recs)
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    check_brokers()
                    try:
                        if metric_sum(a.metrics(), type="bench.lat", outcome="ok") + others \
                                >= produced:
                            break
                    except OSError:
                        pass
                    time.sleep(0.2)
                time.sleep(0.5)
                recs[0] = a.stop(timeout=60, check=False)
                logs = {i: w.logs() for i, w in enumerate(ws)}
                exit_a = a.exit_code
            except BaseException:
                if gen and gen.poll() is None:
                    gen.kill()
                for w in ws:
                    stop_process(w.proc)
                raise
        row = ss_analyse(P, names, ws, recs, logs, steps, produced, gen_start, base_lo, t_end,
                         b.main)
        row.update({"exit_code_a": exit_a, "load_start": load_start,
                    "load_end": open("/proc/loadavg").read().split()[:3]})
        log(f"  run {r + 1}: " + "; ".join(
            f"{s['step']} stayed gap max {fmt_ms(s['stayed_gap_max_ms'])} ms"
            + (f", all flowing {fmt_ms(s['to_all_flowing_s'])} s" if s.get('to_all_flowing_s')
               is not None else "") for s in row["steps"])
            + f"; duplicates {row['duplicates']}, lost {row['lost']}; load "
            f"{' '.join(row['load_start'])} -> {' '.join(row['load_end'])}")
        rows.append(row)
    return {"partitions": P, "rate": rate, "settle_s": settle, "workers": n_workers,
            "rows": rows, "group_protocol": protocol,
            "group_args": " ".join([f"kafka.group_protocol={protocol}", *group_args[1::2]])}


def ss_analyse(P, names, ws, recs, logs, steps, produced, gen_start, base_lo, t_end, topic):
    # every bench.lat job: (partition, handler start s, worker, job key = (partition, stamp))
    jobs = []
    for i, rr in recs.items():
        for k, p, t, lat in rr:
            if k == 0:
                jobs.append((t / 1e6, p, i, (p, t - lat)))
    jobs.sort()
    seen, dup_times = set(), []
    for t, p, i, key in jobs:
        if key in seen:
            dup_times.append(t)
        seen.add(key)
    by_p = {p: [] for p in range(P)}  # sorted (t, worker)
    for t, p, i, _ in jobs:
        by_p.setdefault(p, []).append((t, i))
    bounds = [s["t"] for s in steps] + [t_end]

    def owner_at(p, when):
        last = None
        for t, i in by_p[p]:
            if t > when:
                break
            last = i
        return last

    def gaps(lo, hi, parts):
        return {p: max_gap([t for t, _ in by_p[p]], lo, hi) * 1e3 for p in parts}

    def pcts(vals):
        v = sorted(vals)
        return {"p50": pct(v, 0.5), "p90": pct(v, 0.9), "max": v[-1] if v else None}

    base = gaps(base_lo, steps[0]["t"], range(P))
    out_steps = [{"step": "A alone (baseline)", "members": 1, "window_s": steps[0]["t"] - base_lo,
                  "stayed": P, "moved": 0, "stayed_gap_max_ms": max(base.values()),
                  "stayed_gap_ms": {str(p): round(g, 1) for p, g in sorted(base.items())},
                  "stayed_gap_pcts": pcts(base.values())}]
    for k, s in enumerate(steps):
        lo, hi = s["t"], bounds[k + 1]
        moved, stayed, handover, new_first = [], [], [], {}
        for p in range(P):
            before, after = owner_at(p, lo), owner_at(p, hi)
            inside = {i for t, i in by_p[p] if lo <= t <= hi}
            if before == after and inside <= {before}:
                stayed.append(p)
                continue
            moved.append(p)
            first_new = min((t for t, i in by_p[p] if lo <= t <= hi and i == after), default=None)
            if first_new is None:
                continue
            new_first[p] = first_new
            old_last = max((t for t, i in by_p[p] if t < first_new and i == before),
                           default=None)
            if old_last is not None:
                handover.append((first_new - old_last) * 1e3)
        g = gaps(lo, hi, stayed)
        worst = max(g, key=g.get) if g else None
        in_win = sorted(lat / 1000 for i, rr in recs.items() for k_, p, t, lat in rr
                        if k_ == 0 and lo <= t / 1e6 <= hi)
        row = dict(s)
        row.update({"window_s": hi - lo, "moved": len(moved), "stayed": len(stayed),
                    "moved_partitions": moved,
                    "stayed_gap_max_ms": g[worst] if g else None,
                    "stayed_gap_ms": {str(p): round(v, 1) for p, v in sorted(g.items())},
                    "stayed_gap_pcts": pcts(g.values()),
                    "handover_max_ms": max(handover) if handover else None,
                    "handover_p50_ms": statistics.median(handover) if handover else None,
                    "duplicates": sum(1 for t in dup_times if lo <= t < hi),
                    "window_p99_ms": pct(in_win, 0.99), "window_max_ms": in_win[-1] if in_win
                    else None,
                    "revoked_on_staying": sum(
                        1 for i, lg in logs.items() if i != s["worker"] for x in lg
                        if x.get("msg") in ("partition revoked", "partition lost")
                        and x.get("topic") == topic and lo <= log_ts(x) <= hi)})
        if g:  # where the worst gap of a stayed partition sits (to find it in the logs)
            ts = [lo] + [t for t, _ in by_p[worst] if lo < t < hi] + [hi]
            j = max(range(len(ts) - 1), key=lambda j: ts[j + 1] - ts[j])
            row["stayed_gap_worst"] = {
                "partition": worst, "worker": names[owner_at(worst, hi)],
                "from_s": ts[j] - lo, "utc": time.strftime("%H:%M:%S", time.gmtime(ts[j]))
                + f".{int(ts[j] * 1000) % 1000:03d}"}
        if s["action"] == "add":
            i = s["worker"]
            mine = [t for t, p, w, _ in jobs if w == i and lo <= t <= hi]
            owned = [p for p in range(P) if owner_at(p, hi) == i]
            firsts = [min(t for t, w in by_p[p] if w == i and t >= lo) for p in owned]
            assigned = [log_ts(x) for x in logs[i] if x.get("msg") == "partition assigned"
                        and x.get("topic") == topic]
            row.update({"partitions_of_new": len(owned),
                        "to_assigned_s": min(assigned) - lo if assigned else None,
                        "to_first_job_s": min(mine) - lo if mine else None,
                        "to_all_flowing_s": max(firsts) - lo if firsts else None})
        else:
            row.update({"to_all_flowing_s": max(new_first.values()) - lo if new_first else None})
        row.pop("t")
        out_steps.append(row)
    distinct = len(seen)
    return {"produced": produced, "handled": len(jobs), "distinct": distinct,
            "duplicates": len(jobs) - distinct, "lost": produced - distinct,
            "load_seconds": t_end - gen_start, "steps": out_steps}


# ---- profile (not part of the default set: --only profile) ----------------------------------

def bench_profile(ctx, cfg):
    """One kjobs drain of the drain backlog under `perf record` (CPU-clock samples, DWARF call
    graphs); writes perf.data into the work directory (kept) and prints the top symbols."""
    P, N = cfg["drain_partitions"], cfg["drain_jobs"]
    total = N + 2 * P
    out = ctx.path("kjobs.perf.data")
    log(f"profile: one kjobs drain of {N} jobs over {P} partitions under perf record -> {out}")
    with ctx.broker(P) as b:
        fill(ctx, b, N)
        check_backlog(ctx, b, total)
        rate = drain_under_perf(ctx, b, P, total, "profile",
                                ("perf", "record", "-q", "-e", "cpu-clock", "-F", "4000",
                                 "--call-graph", "dwarf,16384", "-o", out, "--"))
    top = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "sym", "-g",
                          "none", "--stdio", "--percent-limit", "1"], capture_output=True,
                         text=True, timeout=600).stdout
    print(f"kjobs drain under perf: {rate:,.0f} jobs/s\n" +
          "\n".join(l for l in top.splitlines() if l.strip() and not l.startswith("#")))
    return {"perf_data": out, "rate": rate}


def drain_under_perf(ctx, b, partitions, total, tag, perf, env=None):
    """One worker drain of b's backlog (total records, end marks on every partition) run under
    perf (perf: the `perf record ... -o FILE --` prefix), stopped with SIGINT once drained so
    perf writes its data. Returns the drain rate, jobs/s (first start mark .. last end mark)."""
    w = Worker(ctx, b, ctx.name("profile"), end_marks=partitions, tag=tag, env=env, prefix=perf)
    try:
        recs = w.wait_marks(600)
    finally:
        w.proc.send_signal(signal.SIGINT)  # perf stops the worker and writes its data
        w.proc.wait(timeout=120)
    return (total - 1) / mark_span(recs)[2]


def perf_samples(data):
    """{(dso, symbol): samples} of one perf.data (cpu-clock samples, all threads)."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                          "-g", "none", "--stdio", "-n", "--percent-limit", "0"],
                         capture_output=True, text=True, timeout=600).stdout
    got = {}
    for line in out.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*\S)", line)
        if m:
            key = (m.group(2), m.group(3))
            got[key] = got.get(key, 0) + int(m.group(1))
    return got


def bench_profile_retry(ctx, cfg):
    """The retry benchmark's two cases (all ok; every 10th job kjobs.flaky, failing once)
    drained once each under `perf record` (cpu-clock, 2 kHz), each stopped when its main
    drain is over (before any retry is due): where the CPU the retry path adds to the main
    drain goes. Prints, by symbol, samples per 1,000 jobs in each case and the difference,
    largest first; the perf data stay in the work directory (ok.perf.data, flaky.perf.data)."""
    P, N = cfg["retry_partitions"], cfg["retry_jobs"]
    total = N + 2 * P
    perf = ("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g")
    per_job, rates = {}, {}
    for kind in ("ok", "flaky"):
        out = ctx.path(f"{kind}.perf.data")
        log(f"profile-retry: one kjobs drain of {N} jobs ({kind}) over {P} partitions under "
            f"perf record -> {out}")
        with ctx.broker(P) as b:
            fill(ctx, b, N, flaky_every=10 if kind == "flaky" else 0)
            check_backlog(ctx, b, total)
            rates[kind] = drain_under_perf(ctx, b, P, total, f"profile-{kind}",
                                           (*perf, "-o", out, "--"),
                                           env={"KJOBS_RETRY_DELAYS": "1s"})
        per_job[kind] = {k: v * 1000 / N for k, v in perf_samples(out).items()}
    ok, fl = per_job["ok"], per_job["flaky"]
    rows = sorted(set(ok) | set(fl), key=lambda k: fl.get(k, 0) - ok.get(k, 0), reverse=True)
    lines = [f"{'ok':>8} {'flaky':>8} {'diff':>8}  samples per 1,000 jobs (2 kHz: 1 = 0.5 us/job)",
             f"{sum(ok.values()):8.1f} {sum(fl.values()):8.1f} "
             f"{sum(fl.values()) - sum(ok.values()):8.1f}  all"]
    for k in rows[:40]:
        lines.append(f"{ok.get(k, 0):8.2f} {fl.get(k, 0):8.2f} {fl.get(k, 0) - ok.get(k, 0):8.2f}"
                     f"  {k[1]} ({k[0]})")
    print("\n".join(lines))
    print(f"drains under perf: all ok {rates['ok']:,.0f} jobs/s, 10% flaky "
          f"{rates['flaky']:,.0f} jobs/s (first attempts)")
    return {"rates": rates}


# ---- report -----------------------------------------------------------------------------------

def sh(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except OSError:
        return "?"


def machine_info(ctx):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    version = "?"
    m = re.search(r"project\(kjobs VERSION (\S+)", open(os.path.join(SRC, "CMakeLists.txt")).read())
    if m:
        version = m.group(1)
    return {"nproc": os.cpu_count(), "mem": mem, "cpu": cpu, "kernel": platform.release(),
            "kjobs": version, "git": sh(["git", "-C", SRC, "rev-parse", "--short", "HEAD"]),
            "dirty": bool(sh(["git", "-C", SRC, "status", "--porcelain", "--untracked-files=no"])),
            # the one the binaries run with (they may link .deps' build, not the system's)
            "rdkafka": (re.findall(r"librdkafka (\S+)",
                                   sh([os.path.join(ctx.build, "kjobs"), "version"])) or ["?"])[0],
            "gcc": sh(["gcc", "-dumpfullversion"]), "kcat": (sh(["kcat", "-V"]).splitlines()
                                                             or ["?"])[0],
            "load": open("/proc/loadavg").read().split()[:3],
            "kafka_version": re.search(r"<kafka.version>(.*?)</kafka.version>", open(os.path.join(
                SRC, "tests", "kafka", "pom.xml")).read()).group(1) if ctx.kafka else None,
            "java": (subprocess.run(["java", "-version"], capture_output=True, text=True)
                     .stderr.splitlines() or ["?"])[0] if ctx.kafka else None}


def build_type(build_dir):
    """The CMake build type of the build directory, with its usual flags."""
    flags = {"RelWithDebInfo": " (-O2 -g)", "Release": " (-O3)", "Debug": " (-g)"}
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    t = line.split("=", 1)[1].strip()
                    return t + flags.get(t, "")
    except OSError:
        pass
    return "unknown"


def fmt_rate(v):
    return f"{v:,.0f}" if v == v else "n/a"


def fmt_ms(v):
    return f"{v:.2f}" if v is not None and v == v else "n/a"


def fmt_kb(v):
    return f"{v / 1024:.1f} MiB" if v is not None and v == v else "n/a"


def report(ctx, cfg, info, res, command, started, load_end):
    L = []
    kafka = bool(ctx.kafka)
    L.append("# kjobs benchmark results" + (" — real Apache Kafka\n" if kafka else "\n"))
    L.append("Generated by `scripts/bench.sh` (bench/bench.py); see bench/README.md for what each "
             "number means and does not mean. Medians of the runs listed; ratios are taken "
             "within one run and then the median of those ratios is reported.\n")
    L.append("## Machine and build\n")
    L.append(f"- command: `{command}`")
    L.append(f"- date: {started} (duration {res['duration_s']:.0f} s)")
    L.append(f"- CPU: {info['cpu']}, nproc {info['nproc']}, memory {info['mem']}, kernel "
             f"{info['kernel']}")
    L.append(f"- load average (1/5/15 min) at start {' '.join(info['load'])}, at end "
             f"{' '.join(load_end)} (the machine is shared: other builds were running)")
    L.append(f"- kjobs {info['kjobs']} (git {info['git']}{', uncommitted changes' if info['dirty'] else ''}), "
             f"librdkafka {info['rdkafka']}, gcc {info['gcc']}, {info['kcat']}; build "
             f"{build_type(ctx.build)}")
    if kafka:
        nb = ctx.brokers
        L.append(f"- broker: Apache Kafka {info['kafka_version']} (KRaft, {nb} combined "
                 f"broker+controller{'s' if nb > 1 else ''}, `scripts/kafka.sh start --brokers "
                 f"{nb}`, loopback, data on "
                 f"local disk, JVM heap {os.environ.get('KAFKA_HEAP_OPTS', '-Xms256m -Xmx1g')}"
                 f"{' each' if nb > 1 else ''}; "
                 f"{info['java']}) on the same 2 cores as the worker; each case on fresh topics "
                 f"(`kjobs topics --create`, replication factor "
                 f"{'3, min.insync.replicas 2' if nb >= 3 else '1'}) and fresh consumer groups; "
                 f"worker: `kjobs run -b ADDR` with default settings (workers=2, "
                 f"batch.max_jobs=100, batch.max_wait_ms=0, batch.max_pending=10000; "
                 f"librdkafka's fetch defaults: a real broker answers a Fetch as soon as data "
                 f"arrives) and the bench plugin loaded\n")
    else:
        L.append("- broker: `kjobs broker` (librdkafka mock cluster, 1 broker, loopback), a "
                 "separate process on the same 2 cores as the worker; worker: `kjobs run -b ADDR "
                 "-X fetch.wait.max.ms=5` with default settings (workers=2, batch.max_jobs=100, "
                 "batch.max_wait_ms=0, batch.max_pending=10000) and the bench plugin loaded\n")

    d = res.get("drain")
    if d:
        L.append("## Drain (pre-filled backlog): CPU per job and wall-clock rate\n")
        L.append(f"{d['jobs']:,} kjobs.noop jobs over {d['partitions']} partitions plus one "
                 f"bench.start/bench.end mark per partition ({d['messages']:,} messages). "
                 + ("Every consumer of every run drains its own fresh topics, "
                    if kafka else "Every consumer of every run drains its own fresh `kjobs broker`, ")
                 + "filled by loadgen (linger.ms=100) just before it and checked intact before "
                 "and after (low watermarks 0, high watermarks add up to what was produced); "
                 "kjobs and raw_consumer alternate which goes first; each in a fresh group from "
                 "the beginning.\n")
        L.append("**CPU per job** (primary): user+system seconds of the whole consumer process "
                 "(every thread, startup and group join included; kjobs: /proc/PID/stat when the "
                 "last end mark ran, raw_consumer: getrusage(RUSAGE_SELF) after its last message) "
                 "÷ messages. It moves much less than wall time with the other load of a shared machine; what "
                 "still moves it (raw_consumer's most) is how much each fetch brings, which the "
                 "mock broker's pacing sets. **Wall "
                 "rate**: messages between the first and the last one handled ÷ that time (kjobs: "
                 "handler start of the first bench.start mark to the last bench.end mark; "
                 "raw_consumer: first to last message returned by rd_kafka_consumer_poll), group "
                 "join excluded; it moves with everything else running on the machine. Ratios are "
                 "taken within a run, then the median (min–max) over the runs.\n")
        L.append("| run | order | kjobs CPU µs/job | raw CPU µs/msg | **CPU kjobs / raw** | "
                 "kjobs jobs/s | raw msgs/s | **wall kjobs / raw** | kjobs VmHWM | raw VmHWM | "
                 "1-min load |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, r in enumerate(d["rows"], 1):
            L.append(f"| {i} | {r.get('order', ['?'])[0]} first | "
                     f"{r['kjobs']['cpu_us_per_msg']:.2f} | {r['raw']['cpu_us_per_msg']:.2f} | "
                     f"{r['cpu_ratio']:.2f}× | {fmt_rate(r['kjobs']['rate'])} | "
                     f"{fmt_rate(r['raw']['rate'])} | {r['ratio']:.1%} | "
                     f"{fmt_kb(r['kjobs']['hwm_kb'])} | {fmt_kb(r['raw']['hwm_kb'])} | "
                     f"{r.get('load1', '')} |")

        def mm(key, fmt):
            return (f"**{fmt(d[key])}** ({fmt(d[key + '_min'])}–{fmt(d[key + '_max'])})")
        us = lambda v: f"{v:.2f}"  # noqa: E731
        x = lambda v: f"{v:.2f}×"  # noqa: E731
        L.append(f"| **median (min–max)** | | {mm('kjobs_cpu_us', us)} | {mm('raw_cpu_us', us)} | "
                 f"{mm('cpu_ratio', x)} | {mm('kjobs_rate', fmt_rate)} | "
                 f"{mm('raw_rate', fmt_rate)} | {mm('ratio', lambda v: f'{v:.1%}')} | "
                 f"{fmt_kb(d['hwm_kb'])} | {fmt_kb(d['raw_hwm_kb'])} | |\n")
        goal = 0.95 if kafka else 0.9
        L.append(f"Targets (issue #18): CPU per job ≤ 1.2× raw: **{'met' if d['cpu_ratio'] <= 1.2 else 'NOT met'}** "
                 f"({sum(r['cpu_ratio'] <= 1.2 for r in d['rows'])} of {len(d['rows'])} runs); "
                 f"wall rate ≥ {goal:.0%} of raw: **{'met' if d['ratio'] >= goal else 'NOT met'}** "
                 f"({sum(r['ratio'] >= goal for r in d['rows'])} of {len(d['rows'])} runs). "
                 f"Broker VmHWM (largest) {fmt_kb(d['broker_hwm_kb'])}"
                 f"{' (the Kafka JVM, whole run so far)' if kafka else ''}.\n")
        extras = [r for r in d["rows"] if "kjobs_jemalloc" in r or r.get("kcat")]
        if extras:
            jm = d["jemalloc_rate"] == d["jemalloc_rate"]  # not NaN: the experiment ran
            L.append("Extras (--drain-extras; each on its own fresh broker too; medians): kcat -G "
                     f"{fmt_rate(d['kcat_rate'])} msgs/s"
                     + (f"; with LD_PRELOAD=libjemalloc.so.2 (an allocator experiment, not a "
                        f"shipped configuration) kjobs {fmt_rate(d['jemalloc_rate'])} jobs/s at "
                        f"{d['jemalloc_cpu_us']:.2f} µs/job, raw "
                        f"{fmt_rate(d['raw_jemalloc_rate'])} msgs/s at "
                        f"{d['raw_jemalloc_cpu_us']:.2f} µs/msg" if jm else "") + ".\n")

    lt = res.get("latency")
    if lt:
        L.append("## End-to-end latency (enqueue → handler start)\n")
        L.append(f"bench.lat jobs at a fixed {lt['rate']:,} jobs/s for {lt['seconds']} s, "
                 f"round-robin over {lt['partitions']} partitions, default settings; latency = "
                 f"handler-start CLOCK_REALTIME − the producer's stamp taken just before "
                 f"produce() (µs, meta bench_t_us). Includes the producer's linger.ms=5 (as "
                 f"`kjobs enqueue`) and acks=all.\n")
        if kafka:
            L.append("raw_consumer (`--latency`) reads the same stream at the same time in a "
                     "group of its own: its latency is the producer's stamp → "
                     "rd_kafka_consumer_poll returning the message, kjobs' is → handler start, "
                     "so the difference is what kjobs adds (its queueing; batch.max_wait_ms=0 by "
                     "default). Before the load both consumers handle one warm-up "
                     "job per partition (a fresh group resolves its start offsets after the "
                     "assignment); the load starts 1 s after that, and loadgen's clock starts "
                     "once its own warm-up job per partition was acknowledged (`rate --warmup`: "
                     "producer id and leader connections). CPU µs/job: user+system "
                     "seconds of the whole process (/proc; raw_consumer: getrusage) ÷ jobs.\n")

        def lat_table(rows, m, prefix=""):
            raw = kafka and rows and "raw_p99" in rows[0]
            L.append("| run | jobs | achieved rate | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | "
                     + ("raw p50 ms | raw p99 ms | raw max ms | **p99 − raw p99** | kjobs CPU "
                        "µs/job | raw CPU µs/job | " if raw else "") + "1-min load |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 6 if raw else "")
                     + "---:|")
            for i, r in enumerate(rows, 1):
                L.append(f"| {i} | {r['jobs']:,} | {fmt_rate(r['gen_rate'])}/s | {fmt_ms(r['p50'])} "
                         f"| {fmt_ms(r['p90'])} | {fmt_ms(r['p99'])} | {fmt_ms(r['p999'])} | "
                         f"{fmt_ms(r['max'])} | "
                         + (f"{fmt_ms(r['raw_p50'])} | {fmt_ms(r['raw_p99'])} | "
                            f"{fmt_ms(r['raw_max'])} | {fmt_ms(r['p99_minus_raw'])} | "
                            f"{fmt_ms(r['cpu_us_per_job'])} | {fmt_ms(r['raw_cpu_us_per_job'])} | "
                            if raw else "") + f"{r['load1']} |")
            L.append(f"| **median** | | | **{fmt_ms(m[prefix + 'p50'])}** | {fmt_ms(m[prefix + 'p90'])} | "
                     f"**{fmt_ms(m[prefix + 'p99'])}** | {fmt_ms(m[prefix + 'p999'])} | "
                     f"**{fmt_ms(m[prefix + 'max'])}** | "
                     + (f"{fmt_ms(m[prefix + 'raw_p50'])} | **{fmt_ms(m[prefix + 'raw_p99'])}** | "
                        f"{fmt_ms(m[prefix + 'raw_max'])} | **{fmt_ms(m[prefix + 'p99_minus_raw'])}** | "
                        f"{fmt_ms(m[prefix + 'cpu_us_per_job'])} | "
                        f"{fmt_ms(m[prefix + 'raw_cpu_us_per_job'])} | " if raw else "") + " |\n")
        lat_table(lt["rows"], lt)
        if kafka:
            d5 = lt["p99_minus_raw"]
            L.append(f"Target kjobs p99 within 5 ms of raw_consumer's p99 (same run): **"
                     f"{'met' if d5 <= 5 else 'NOT met'}** (median of the per-run differences "
                     f"{fmt_ms(d5)} ms; "
                     f"{sum(r['p99_minus_raw'] <= 5 for r in lt['rows'])} of {len(lt['rows'])} "
                     f"runs within 5 ms).\n")
        else:
            L.append(f"Target p99 ≤ 20 ms: **{'met' if lt['p99'] <= 20 else 'NOT met'}**.\n")
        nw = lt.get("variants", {}).get("no-waits")
        if nw:
            L.append("Same runs, interleaved, with the producer's wait removed too (linger.ms=0; "
                     "the worker's batch.max_wait_ms is 0 by default): what remains is transport, "
                     + ("the broker" if kafka else "the mock broker (an empty Fetch is held "
                        "fetch.wait.max.ms = 5 ms)") + " and kjobs itself. Not a recommended "
                     "setting — it shows where the default latency goes.\n")
            lat_table(nw, lt, "nowait_")
        w1 = lt.get("variants", {}).get("batch-wait-5ms")
        if w1:
            L.append("Same runs, interleaved, with the default before 2026-12-01: worker "
                     "KJOBS_BATCH_MAX_WAIT_MS=5 (a partition's first job waits up to 5 ms for "
                     "its batch to fill), producer as by default (linger.ms=5).\n")
            lat_table(w1, lt, "wait5_")

    rs = res.get("rss")
    if rs:
        L.append("## Worker peak RSS (VmHWM)\n")
        L.append(f"Default settings, {rs['partitions']} partitions per topic (the worker is "
                 f"assigned {rs['partitions']} main + {3 * rs['partitions']} ladder partitions). "
                 f"VmHWM read from /proc/PID/status after the last job ran.\n")
        L.append("| case | runs (MiB) | median |")
        L.append("|---|---|---:|")
        L.append(f"| 1 job | {', '.join(f'{v / 1024:.1f}' for v in rs['one'])} | "
                 f"**{fmt_kb(rs['one_kb'])}** |")
        L.append(f"| {rs['jobs'] // 2:,}-job backlog ({rs['jobs'] // 2 // rs['partitions']:,}/partition) | "
                 f"{', '.join('%.1f' % (r['hwm_kb'] / 1024) for r in rs['half'])} | "
                 f"**{fmt_kb(rs['half_kb'])}** |")
        L.append(f"| {rs['jobs']:,}-job backlog ({rs['jobs'] // rs['partitions']:,}/partition) | "
                 f"{', '.join('%.1f' % (r['hwm_kb'] / 1024) for r in rs['big'])} | "
                 f"**{fmt_kb(rs['big_kb'])}** |")
        L.append(f"| {2 * rs['jobs']:,}-job backlog ({2 * rs['jobs'] // rs['partitions']:,}/partition) | "
                 f"{', '.join('%.1f' % (r['hwm_kb'] / 1024) for r in rs['double'])} | "
                 f"**{fmt_kb(rs['double_kb'])}** |\n")
        L.append(f"Drain rate of the {rs['jobs']:,} backlog: {fmt_rate(rs['big_rate'])} jobs/s, of "
                 f"the {2 * rs['jobs']:,} backlog {fmt_rate(rs['double_rate'])} jobs/s (medians). "
                 f"Broker VmHWM {fmt_kb(rs['broker_hwm_kb'])}"
                 f"{' (the Kafka JVM)' if kafka else ''}. Bound by design: "
                 f"batch.max_pending (10,000) × partitions undispatched jobs, plus librdkafka's "
                 f"prefetch queue (queued.max.messages.kbytes, default 64 MiB).\n")

    mm = res.get("memory")
    if mm:
        L.append("## Worker peak RSS under backlog, payloads and retries (issue #18 item 3)\n")
        L.append("Default settings (batch.max_pending_bytes 4 MiB); each row a fresh broker or "
                 "fresh topics filled with N jobs of P payload bytes, every 10th failing once "
                 "(ladder step 1 s), one worker draining until every retry succeeded; VmHWM "
                 "from /proc/PID/status then.\n")
        L.append("| partitions | jobs | payload | VmHWM | first attempts jobs/s | CPU µs/job | "
                 "1-min load |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        for r in mm["rows"]:
            L.append(f"| {r['partitions']} | {r['jobs']:,} | {r['payload']:,} B | "
                     f"**{fmt_kb(r['hwm_kb'])}** | {fmt_rate(r['rate'])} | "
                     f"{fmt_ms(r['cpu_us'])} | {r['load1']} |")
        L.append("")

    rt = res.get("retry")
    if rt and "raw" not in rt["cases"]:
        L.append("## Retry cost\n\nOnly " + ", ".join(["ok"] + [c for c in rt["cases"]
                                                         if c != "ok"])
                 + " ran (BENCH_RETRY_CASES): the pairs are in the log.\n")
    elif rt:
        L.append("## Retry cost\n")
        L.append(f"{rt['jobs']:,} jobs over {rt['partitions']} partitions; all bench.lat (the "
                 f"bench plugin's handler: a clock read and a 16-byte store) vs "
                 f"every 10th job kjobs.flaky with payload 1 (fails once, {rt['flaky']:,} jobs, "
                 f"retry ladder 1 s). Each case on a fresh {'set of topics' if kafka else 'broker'}, "
                 f"paired per run. \"first "
                 f"attempts\" = main-topic drain rate (includes producing the retry copies); "
                 f"\"all done\" = until the last retry succeeded (includes the 1 s delay). CPU "
                 f"µs/job = the worker's user+system seconds until then (/proc) ÷ {rt['jobs']:,}; "
                 f"received B/job = what it read from its sockets until then (`ss -tinp` bytes_received)"
                 f" ÷ {rt['jobs']:,}; longest stall = the longest time no bench.lat job started "
                 f"during the main-topic drain. The floor: bench/raw_consumer on the main topic "
                 f"alone (no decode, no handler, positions committed every 200 ms), then the same "
                 f"also producing every 10th message back to the first ladder topic with nine "
                 f"kjobs-sized headers (`--copy-every 10`; its CPU includes flushing them), each on "
                 f"a fresh {'set of topics' if kafka else 'broker'} in the same pair: what writing "
                 f"a tenth of what it reads to Kafka costs any client on this machine.\n")
        L.append("| pair | all-ok jobs/s | 10% flaky jobs/s (first attempts) | flaky / ok | "
                 "all-ok done s | flaky all done s | all-ok CPU µs/job | flaky CPU µs/job | "
                 "CPU flaky / ok | all-ok received B/job | flaky received B/job | "
                 "all-ok longest stall ms | flaky longest stall ms | raw msgs/s | "
                 "raw writing 10% back msgs/s | **raw floor: writing / not** | "
                 "raw CPU µs/msg not / writing | broker CPU µs/job: all ok / flaky / raw / raw "
                 "writing | 1-min load |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                 "---:|---:|")
        for i, r in enumerate(rt["rows"], 1):
            L.append(f"| {i} | {fmt_rate(r['ok']['main_rate'])} | {fmt_rate(r['flaky']['main_rate'])}"
                     f" | {r['ratio_main']:.1%} | {r['ok']['done_s']:.2f} | "
                     f"{r['flaky']['done_s']:.2f} | {fmt_ms(r['ok'].get('cpu_us_per_job'))} | "
                     f"{fmt_ms(r['flaky'].get('cpu_us_per_job'))} | "
                     f"{fmt_ms(r['flaky'].get('cpu_us_per_job', 0) / r['ok']['cpu_us_per_job'] if r['ok'].get('cpu_us_per_job') else None)}× | "
                     f"{fmt_int(r['ok'].get('rx_bytes_per_job'))} | "
                     f"{fmt_int(r['flaky'].get('rx_bytes_per_job'))} | "
                     f"{fmt_int(r['ok'].get('stall_ms'))} | {fmt_int(r['flaky'].get('stall_ms'))} | "
                     f"{fmt_rate(r['raw_ok']['main_rate'])} | {fmt_rate(r['raw_copy']['main_rate'])}"
                     f" | {r['raw_ratio']:.1%} | {fmt_ms(r['raw_ok']['cpu_us_per_job'])} / "
                     f"{fmt_ms(r['raw_copy']['cpu_us_per_job'])} | "
                     + " / ".join(fmt_ms(r[k].get("broker_cpu_us_per_job"))
                                  for k in ("ok", "flaky", "raw_ok", "raw_copy"))
                     + f" | {r.get('load1', '')} |")
        L.append(f"| **median** | **{fmt_rate(rt['ok_rate'])}** | **{fmt_rate(rt['flaky_rate'])}**"
                 f" | **{rt['ratio']:.1%}** | {rt['ok_done_s']:.2f} | {rt['flaky_done_s']:.2f} | "
                 f"{fmt_ms(rt.get('ok_cpu_us'))} | {fmt_ms(rt.get('flaky_cpu_us'))} | "
                 f"**{fmt_ms(rt.get('cpu_ratio'))}×** | {fmt_int(rt.get('ok_rx'))} | "
                 f"{fmt_int(rt.get('flaky_rx'))} | {fmt_int(rt.get('ok_stall_ms'))} | "
                 f"{fmt_int(rt.get('flaky_stall_ms'))} | {fmt_rate(rt['raw_ok_rate'])} | "
                 f"{fmt_rate(rt['raw_copy_rate'])} | **{rt['raw_ratio']:.1%}** | "
                 f"{fmt_ms(rt['raw_ok_cpu_us'])} / {fmt_ms(rt['raw_copy_cpu_us'])} | "
                 + " / ".join(fmt_ms(med(r[k].get("broker_cpu_us_per_job") for r in rt["rows"]))
                              for k in ("ok", "flaky", "raw_ok", "raw_copy"))
                 + " | |\n")

    for key in ("scaleout", "scaleout-kip848"):
        so = res.get(key)
        if not so:
            continue
        kip848 = so.get("group_protocol") == "consumer"
        L.append("## Scale-out (a second worker joins under load)" +
                 (" — KIP-848 consumer group protocol\n" if kip848 else "\n"))
        L.append(f"bench.lat jobs at {so['rate']:,} jobs/s over {so['partitions']} partitions "
                 f"for {so['seconds']} s; worker A alone, worker B (same group) launched "
                 f"{so['join_at']} s into the load; group settings: "
                 f"`{so.get('group_args') or 'defaults'}`"
                 + (" (the mock completes a rebalance late, see README)" if not kafka else "")
                 + f". Assignment: "
                 f"{so['rows'][0].get('protocol', '?')} — with an eager protocol every "
                 f"partition is revoked and reassigned, so the partitions that stay on A stop "
                 f"too. \"stall\" = "
                 f"the longest time with no job handled on a partition that stayed on A, from "
                 f"B's launch to 1 s after B's first job (baseline: the same measure over the "
                 f"seconds before B's launch). \"handover\" = on a moved partition, B's first "
                 f"job − A's last job.\n")
        L.append("| run | B launch → assigned s | B launch → first job s | moved / stayed | "
                 "stayed stall ms | baseline gap ms | handover max ms | p99 / max latency in "
                 "window ms | duplicates |")
        L.append("|---|---:|---:|---|---:|---:|---:|---|---:|")
        for i, r in enumerate(so["rows"], 1):
            L.append(f"| {i} | {fmt_ms(r['join_to_assigned_s'])} | {fmt_ms(r['join_to_first_job_s'])}"
                     f" | {r['moved']} / {r['stayed']} | {r['stayed_stall_ms']:.0f} | "
                     f"{r['stayed_baseline_gap_ms']:.0f} | {fmt_ms(r['handover_max_ms'])} | "
                     f"{fmt_ms(r['window_p99_ms'])} / {fmt_ms(r['window_max_ms'])} | "
                     f"{r['duplicates']} |")
        L.append(f"| **median** | {fmt_ms(so['join_to_assigned_s'])} | "
                 f"**{fmt_ms(so['join_to_first_job_s'])}** | | **{so['stayed_stall_ms']:.0f}** | "
                 f"{so['stayed_baseline_gap_ms']:.0f} | {fmt_ms(so['handover_max_ms'])} | "
                 f"{fmt_ms(so['window_p99_ms'])} / {fmt_ms(so['window_max_ms'])} | |\n")
    for key in EXTRA:
        ss = res.get(key)
        if not ss:
            continue
        kip848 = ss.get("group_protocol") == "consumer"
        L.append("## Scale 1 → 4 workers and back under load — " +
                 ("KIP-848 consumer group protocol (`kafka.group_protocol=consumer`)\n" if kip848
                  else "classic group protocol (`kafka.group_protocol=classic`, eager "
                  "roundrobin)\n"))
        if ss.get("skipped"):
            L.append(f"Not run: {ss['skipped']}.\n")
            continue
        L.append(f"bench.lat jobs at {ss['rate']:,} jobs/s over {ss['partitions']} partitions, "
                 f"one steady load for the whole run; group settings: `{ss['group_args']}`. "
                 f"Worker A alone, then B, C, D launched one at a time, then D, C, B stopped "
                 f"with SIGTERM one at a time. The next step starts once the last one is flowing"
                 f" (an added worker: every main-topic partition it was assigned handled a job; "
                 f"a stop: every partition handled a job after the worker exited) plus "
                 f"{ss['settle_s']} s. A step's window runs from its action (launch / SIGTERM) "
                 f"to the next step's action. Per partition, the owner before and after the step "
                 f"= the worker that handled its last job before the window and in it; "
                 f"**stayed** = the same owner and no other worker handled it in the window. "
                 f"\"gap\" = the longest time with no job handled, on one partition, in the "
                 f"window (edges included); the stayed gap is the maximum over the stayed "
                 f"partitions, with the percentiles of their per-partition maxima. "
                 f"\"handover\" = on a moved partition, the new owner's first job − the old "
                 f"owner's last job. \"all flowing\" = an added worker's launch (a stop's "
                 f"SIGTERM) → the first job on the last of its (the moved) partitions. "
                 f"Duplicates = jobs handled more than once (a job is its partition and its "
                 f"producer stamp), counted in the step where the repeat ran; lost = produced − "
                 f"distinct jobs handled. \"revoked\" = partition revoked/lost log lines of the "
                 f"main topic on the members that stay (eager: every partition each step).\n")
        for n, row in enumerate(ss["rows"], 1):
            L.append(f"**Run {n}**: produced {row['produced']:,} in {row['load_seconds']:.0f} s, "
                     f"handled {row['handled']:,}, duplicates {row['duplicates']}, "
                     f"**lost {row['lost']}**; exit codes: A {row['exit_code_a']}, stopped "
                     f"workers {', '.join(str(s['exit_code']) for s in row['steps'] if 'exit_code' in s)}"
                     f"; 1-min load average {row['load_start'][0]} at the start, "
                     f"{row['load_end'][0]} at the end.\n")
            L.append("| step | window s | new member: launch → assigned / first job / all its "
                     "partitions flowing s | SIGTERM → exit s | moved / stayed | **stayed gap max"
                     " ms** | stayed per-partition maxima p50 / p90 ms | handover max (p50) ms | "
                     "latency p99 / max ms | revoked | duplicates |")
            L.append("|---|---:|---|---:|---|---:|---|---|---|---:|---:|")
            for s in row["steps"]:
                pc = s["stayed_gap_pcts"]
                if s.get("action") == "add":
                    new = (f"{s.get('partitions_of_new')} partitions: "
                           f"{fmt_ms(s.get('to_assigned_s'))} / {fmt_ms(s.get('to_first_job_s'))}"
                           f" / **{fmt_ms(s.get('to_all_flowing_s'))}**")
                elif s.get("action") == "stop":
                    new = f"moved partitions flowing after {fmt_ms(s.get('to_all_flowing_s'))}"
                else:
                    new = ""
                L.append(f"| {s['step']} | {s['window_s']:.1f} | {new} | "
                         f"{fmt_ms(s.get('shutdown_s')) if 'shutdown_s' in s else ''} | "
                         f"{s['moved']} / {s['stayed']} | **{fmt_ms(s['stayed_gap_max_ms'])}** | "
                         f"{fmt_ms(pc['p50'])} / {fmt_ms(pc['p90'])} | "
                         + (f"{fmt_ms(s.get('handover_max_ms'))} ({fmt_ms(s.get('handover_p50_ms'))})"
                            if s.get("handover_max_ms") is not None else "") + " | "
                         + (f"{fmt_ms(s.get('window_p99_ms'))} / {fmt_ms(s.get('window_max_ms'))}"
                            if "window_p99_ms" in s else "") + " | "
                         f"{s.get('revoked_on_staying', '')} | {s.get('duplicates', '')} |")
            L.append("")
        L.append("Per-partition maxima of the gap between two handled jobs, stayed partitions "
                 "only (partition: ms), and where each step's longest one started (its worker, "
                 "seconds into the window, UTC):\n")
        for n, row in enumerate(ss["rows"], 1):
            for s in row["steps"]:
                w = s.get("stayed_gap_worst")
                L.append(f"- run {n}, {s['step']}: " + ", ".join(
                    f"{p}: {v:.0f}" for p, v in s["stayed_gap_ms"].items())
                    + (f" — longest on partition {w['partition']} (worker {w['worker']}), from "
                       f"+{w['from_s']:.2f} s ({w['utc']} UTC)" if w else ""))
        L.append("")
    L.append("## Raw data\n")
    L.append("```json")
    L.append(json.dumps({k: v for k, v in res.items()}, indent=1, default=str))
    L.append("```")
    return "\n".join(L) + "\n"


def summary(res):
    out = []
    d = res.get("drain")
    if d:
        out.append(f"drain ({len(d['rows'])} runs, median (min-max)): CPU/msg kjobs "
                   f"{d['kjobs_cpu_us']:.2f} vs raw {d['raw_cpu_us']:.2f} µs, kjobs/raw "
                   f"{d['cpu_ratio']:.2f}× ({d['cpu_ratio_min']:.2f}-{d['cpu_ratio_max']:.2f}); "
                   f"wall kjobs {fmt_rate(d['kjobs_rate'])} jobs/s, raw {fmt_rate(d['raw_rate'])} "
                   f"msgs/s, kjobs/raw {d['ratio']:.1%} ({d['ratio_min']:.1%}-{d['ratio_max']:.1%})"
                   f", VmHWM {fmt_kb(d['hwm_kb'])}")
    lt = res.get("latency")
    if lt:
        out.append(f"latency: p50 {fmt_ms(lt['p50'])} ms, p99 {fmt_ms(lt['p99'])} ms, max "
                   f"{fmt_ms(lt['max'])} ms; no waits: p50 {fmt_ms(lt['nowait_p50'])} ms, p99 "
                   f"{fmt_ms(lt['nowait_p99'])} ms; batch wait 5 ms: p50 {fmt_ms(lt['wait5_p50'])} "
                   f"ms, p99 {fmt_ms(lt['wait5_p99'])} ms"
                   + (f"; raw_consumer same runs: p50 {fmt_ms(lt['raw_p50'])}, p99 "
                      f"{fmt_ms(lt['raw_p99'])}, max {fmt_ms(lt['raw_max'])} ms; kjobs p99 − raw "
                      f"p99 {fmt_ms(lt['p99_minus_raw'])} ms; CPU/job {fmt_ms(lt['cpu_us_per_job'])}"
                      f" vs {fmt_ms(lt['raw_cpu_us_per_job'])} µs" if lt["raw_p99"] == lt["raw_p99"] else ""))
    rs = res.get("rss")
    if rs:
        out.append(f"rss: 1 job {fmt_kb(rs['one_kb'])}, {rs['jobs'] // 2} backlog "
                   f"{fmt_kb(rs['half_kb'])}, {rs['jobs']} backlog {fmt_kb(rs['big_kb'])}, "
                   f"{2 * rs['jobs']} backlog {fmt_kb(rs['double_kb'])}")
    for r in (res.get("memory") or {}).get("rows", []):
        out.append(f"memory: {r['jobs']} x {r['payload']} B over {r['partitions']} partitions: "
                   f"VmHWM {fmt_kb(r['hwm_kb'])}, {fmt_rate(r['rate'])} jobs/s")
    rt = res.get("retry")
    if rt and "in_place" in rt["cases"]:
        out.append(f"retry in place: ok {fmt_rate(rt['ok_rate'])}/s, 10% retried in place "
                   f"{fmt_rate(rt['in_place_rate'])}/s (median of pair ratios "
                   f"{rt['ratio_in_place']:.1%}), CPU/job median ratio "
                   f"{rt['in_place_cpu_ratio']:.2f}x over {len(rt['rows'])} pairs")
    if rt and "mix" in rt["cases"]:
        out.append(f"retry vs the same mix none failing ({fmt_rate(rt['mix_rate'])}/s): in place "
                   f"{rt['ratio_in_place_mix']:.1%} (CPU/job {rt['cpu_ratio_in_place_mix']:.2f}x)"
                   f", ladder {rt['ratio_flaky_mix']:.1%} (CPU/job "
                   f"{rt['cpu_ratio_flaky_mix']:.2f}x), medians of pair ratios")
    if rt and "flaky" in rt["cases"]:
        out.append(f"retry: ok {fmt_rate(rt['ok_rate'])}/s, 10% flaky {fmt_rate(rt['flaky_rate'])}/s "
                   f"({rt['ratio']:.1%}), all done {rt['ok_done_s']:.2f}s vs {rt['flaky_done_s']:.2f}s,"
                   f" CPU/job {fmt_ms(rt['ok_cpu_us'])} vs {fmt_ms(rt['flaky_cpu_us'])} µs; raw floor "
                   f"{fmt_rate(rt['raw_ok_rate'])}/s vs writing 10% back "
                   f"{fmt_rate(rt['raw_copy_rate'])}/s ({rt['raw_ratio']:.1%})")
    so = res.get("scaleout")
    if so:
        out.append(f"scale-out: B first job {fmt_ms(so['join_to_first_job_s'])} s after launch, "
                   f"stayed stall {so['stayed_stall_ms']:.0f} ms (baseline "
                   f"{so['stayed_baseline_gap_ms']:.0f} ms)")
    for key in EXTRA:
        ss = res.get(key)
        if ss and not ss.get("skipped"):
            for n, row in enumerate(ss["rows"], 1):
                out.append(f"{key} run {n}: lost {row['lost']}, duplicates {row['duplicates']}; "
                           + "; ".join(f"{s['step']} stayed gap {fmt_ms(s['stayed_gap_max_ms'])} ms"
                                       + (f", all flowing {fmt_ms(s['to_all_flowing_s'])} s"
                                          if s.get("to_all_flowing_s") is not None else "")
                                       for s in row["steps"]))
        elif ss:
            out.append(f"{key}: {ss['skipped']}")
    return "\n".join(out)


FULL = {"runs": 3, "drain_runs": 5, "drain_partitions": 64, "drain_jobs": 1_600_000,
        "lat_rate": 5000, "lat_seconds": 20, "lat_partitions": 16,
        "rss_partitions": 64, "rss_jobs": 1_000_000,
        # (partitions, jobs, payload bytes); the mock keeps 5 MiB or 100,000 records per
        # partition, hence no 8-partition million-job rows here (they are in KAFKA's)
        "mem_runs": 1, "mem_cases": [(64, 1_000_000, 100), (64, 1_600_000, 100),
                                     (128, 1_000_000, 100), (128, 2_000_000, 100),
                                     (16, 640, 102_400)],
        "retry_partitions": 16, "retry_jobs": 400_000,
        "so_partitions": 16, "so_rate": 2000, "so_seconds": 24, "so_join_at": 8,
        "ss_partitions": 16, "ss_rate": 2000, "ss_settle": 5, "ss_workers": 4,
        "ss_flow_timeout": 60}
QUICK = {"runs": 1, "drain_runs": 1, "drain_partitions": 4, "drain_jobs": 20_000,
         "lat_rate": 500, "lat_seconds": 2, "lat_partitions": 4,
         "rss_partitions": 4, "rss_jobs": 20_000,
         "mem_runs": 1, "mem_cases": [(4, 20_000, 100), (4, 200, 102_400)],
         "retry_partitions": 4, "retry_jobs": 10_000,
         "so_partitions": 4, "so_rate": 200, "so_seconds": 16, "so_join_at": 2,
         "ss_partitions": 4, "ss_rate": 200, "ss_settle": 1, "ss_workers": 4,
         "ss_flow_timeout": 60}
ALL = ["drain", "latency", "rss", "retry", "scaleout", "scaleout-kip848"]
# Not in the default set (about 1.5 min per run and protocol; on the mock every step waits for
# session timeouts): scale 1 -> 4 workers and back, step by step (--only scale-steps,...)
EXTRA = ["scale-steps", "scale-steps-kip848"]
# On real Kafka: the benchmarks of issue #11 (scale-out there is the integration suite's
# business for now); the latency runs interleave defaults and no-waits, each with raw_consumer
# reading the same stream; no jemalloc experiment (an allocator finding, not a broker one).
KAFKA = {"lat_variants": ["default", "batch-wait-5ms"], "jemalloc": False,
         "mem_cases": [(8, 1_000_000, 100), (8, 2_000_000, 100), (128, 2_000_000, 100),
                       (8, 10_000, 102_400)]}
KAFKA_ALL = ["drain", "latency", "rss", "retry"]
KAFKA_SH = os.path.join(SRC, "scripts", "kafka.sh")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("--only", default=None,
                    help="comma-separated: " + ",".join(ALL + EXTRA) + " (default: "
                    + ",".join(ALL) + "; with --kafka "
                    + ",".join(KAFKA_ALL) + "); or profile (perf record of one kjobs drain, work "
                    "files kept)")
    ap.add_argument("--runs", type=int, help="runs per benchmark (default 3, --quick 1)")
    ap.add_argument("--drain-runs", type=int, help="runs of the drain (default 5, --quick 1; "
                    "overrides --runs for it)")
    ap.add_argument("--drain-jobs", type=int, help="drain backlog in jobs (default 1,600,000)")
    ap.add_argument("--drain-partitions", type=int, help="drain partitions (default 64)")
    ap.add_argument("--retry-partitions", type=int,
                    help="partitions of the retry pairs and profile-retry (default 16)")
    ap.add_argument("--mem-cases", help="memory: the rows to run instead of the defaults, "
                    "PARTITIONS:JOBS:PAYLOAD_BYTES,... (e.g. 128:2000000:100)")
    ap.add_argument("--drain-extras", action="store_true",
                    help="drain: also kcat and both consumers with jemalloc preloaded (each on "
                    "its own fresh broker too)")
    ap.add_argument("--kafka", action="store_true",
                    help="run on real Apache Kafka: a 1-broker cluster started with "
                    "scripts/kafka.sh in $KAFKA_LOCAL_DIR (default /tmp/kjobs-bench-kafka), first "
                    "port $KAFKA_LOCAL_PORT (default 29592), stopped at the end; results go to "
                    "bench/RESULTS-kafka.md")
    ap.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                    help="with --kafka: brokers of the cluster started (3: topics get replication "
                    "factor 3 and min.insync.replicas 2)")
    ap.add_argument("--bootstrap", help="run on this existing Kafka cluster instead (left "
                    "running; topics are created and deleted per case)")
    ap.add_argument("--out", default=None, help="results file (default bench/RESULTS.md, with "
                    "--kafka/--bootstrap bench/RESULTS-kafka.md)")
    ap.add_argument("--command", default=None, help="command line to record in the results")
    ap.add_argument("--keep", action="store_true", help="keep the work files (logs, records)")
    ap.add_argument("--append", action="store_true", help="append this run's report to --out "
                    "(its own machine, command and raw data) instead of replacing the file: "
                    "e.g. the same benchmark with a second build directory")
    args = ap.parse_args()
    # kjobs refuses KJOBS_* variables that are not its settings: kafka.sh's own are for it only
    kafka_env = {"KAFKA_LOCAL_DIR": os.environ.pop("KAFKA_LOCAL_DIR", "/tmp/kjobs-bench-kafka"),
                 "KAFKA_LOCAL_PORT": os.environ.pop("KAFKA_LOCAL_PORT", "29592")}
    kafka_env = dict(os.environ, **kafka_env)
    on_kafka = bool(args.kafka or args.bootstrap)
    if args.only is None:
        args.only = ",".join(KAFKA_ALL if on_kafka else ALL)
    if args.out is None:
        args.out = os.path.join(SRC, "bench", "RESULTS-kafka.md" if on_kafka else "RESULTS.md")
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the cluster is stopped below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_cluster = False
    try:
        bootstrap, pid = args.bootstrap, None
        if args.kafka and not args.bootstrap:
            started_cluster = True  # a half-started cluster is stopped as well
            log(f"starting a {args.brokers}-broker Apache Kafka in "
                f"{kafka_env['KAFKA_LOCAL_DIR']} (port {kafka_env['KAFKA_LOCAL_PORT']})")
            p = subprocess.run([KAFKA_SH, "start", "--brokers", str(args.brokers)], env=kafka_env,
                               capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                raise SystemExit(f"bench: scripts/kafka.sh start failed: {p.stderr[-2000:]}")
            bootstrap = p.stdout.split()[-1]
            with open(os.path.join(kafka_env["KAFKA_LOCAL_DIR"], "node-1", "pid")) as f:
                pid = int(f.read())
            # (kafka.sh's pid file names the broker's JVM itself)
        run(ap, args, bootstrap, pid)
    finally:
        if started_cluster:
            log("stopping the Kafka cluster")
            subprocess.run([KAFKA_SH, "stop"], env=kafka_env, timeout=120)


def run(ap, args, kafka, kafka_pid):
    cfg = dict(QUICK if args.quick else FULL)
    if kafka:
        cfg.update(KAFKA)
    if args.runs:
        cfg["runs"] = cfg["drain_runs"] = args.runs
    for key in ("drain_runs", "drain_jobs", "drain_partitions", "retry_partitions"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    cfg["drain_extras"] = args.drain_extras
    if args.mem_cases:
        try:
            cfg["mem_cases"] = [tuple(int(x) for x in c.split(":")) for c in
                                args.mem_cases.split(",")]
        except ValueError:
            ap.error("--mem-cases: PARTITIONS:JOBS:PAYLOAD_BYTES,...")
        if any(len(c) != 3 for c in cfg["mem_cases"]):
            ap.error("--mem-cases: PARTITIONS:JOBS:PAYLOAD_BYTES,...")
    only = [x for x in args.only.split(",") if x]
    if "profile" in only or "profile-retry" in only:
        args.keep = args.no_write = True  # the perf data lives in the work directory
    for x in only:
        if x not in ALL + EXTRA + ["profile", "profile-retry", "memory"]:
            ap.error(f"unknown benchmark {x}")
    work = tempfile.mkdtemp(prefix="kjobs-bench-")
    ctx = Ctx(os.path.abspath(args.build_dir), work, args.quick, kafka, kafka_pid)
    log(f"work files in {work}" + (f"; Apache Kafka at {kafka}" if kafka else ""))
    for exe in (os.path.join(ctx.build, "kjobs"), ctx.loadgen, ctx.raw, ctx.plugin):
        if not os.path.exists(exe):
            raise SystemExit(f"bench: missing {exe} (build first)")
    info = machine_info(ctx)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    res = {"config": cfg}
    funcs = {"drain": bench_drain, "latency": bench_latency, "rss": bench_rss,
             "memory": bench_memory,
             "retry": bench_retry, "scaleout": bench_scaleout, "profile": bench_profile,
             "profile-retry": bench_profile_retry,
             "scaleout-kip848": lambda c, f: bench_scaleout(c, f, "consumer"),
             "scale-steps": bench_scale_steps,
             "scale-steps-kip848": lambda c, f: bench_scale_steps(c, f, "consumer")}
    ok = True
    try:
        for name in only:
            try:
                res[name] = funcs[name](ctx, cfg)
            except BrokerDied as e:
                log(f"{e}; running {name} again")
                for b in list(LIVE_BROKERS):
                    b.stop()
                res[name] = funcs[name](ctx, cfg)
                res.setdefault("reruns", []).append(f"{name}: {e}")
    except HarnessError as e:
        log(f"harness error: {e} (work files kept in {work})")
        ok = False
    finally:
        for b in list(LIVE_BROKERS):  # an error or a signal: no broker or topics left behind
            b.stop()
    res["duration_s"] = time.monotonic() - t0
    load_end = open("/proc/loadavg").read().split()[:3]
    print(summary(res))
    if ok and not args.no_write:
        cmd = args.command or " ".join(sys.argv)
        text = report(ctx, cfg, info, res, cmd, started, load_end)
        if args.append and os.path.exists(args.out):
            text = open(args.out).read().rstrip("\n") + "\n\n---\n\n" + text
        with open(args.out, "w") as f:
            f.write(text)
        log(f"wrote {args.out}")
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
