#!/usr/bin/env bash
# exec_bench.sh — the cost of the exec handler: jobs/s through handlers.exec (the example
# children, type email.send) against the in-process built-in kjobs.noop, in one run, so all
# numbers share the machine's state. Modes (-m, comma-separated; default all):
#   noop         the built-in kjobs.noop, in process (the reference)
#   json-py      handlers.exec_protocol = json-lines, examples/exec/handler.py
#   binary-py    handlers.exec_protocol = binary, examples/exec/handler_binary.py (kjobs_exec.py)
#   json-node    json-lines, examples/exec/handler.js
#   binary-node  binary, examples/exec/handler_binary.js (kjobs_exec.js)
# Every measured run gets a fresh `kjobs broker` (as the drain of scripts/bench.sh): N jobs are
# enqueued, then a worker starts in a fresh group; the clock runs from its first "partition
# assigned" log line to the moment /metrics shows N jobs finished ok (polled every 5 ms), so
# group join time is excluded. An unmeasured kjobs.noop warm-up run goes first. Timings only;
# nothing is asserted.
#
# Each mode is measured ROUNDS times, the order rotating every round; per mode the median and
# min-max rate, and its ratio to noop taken within each round (median, min-max), are reported,
# with CPU seconds per job of kjobs (user+sys of the worker process, /proc/PID/stat) and of its
# exec children (read when the last job is counted), and their sum against noop's CPU per job:
# the CPU figures move far less than wall time on a shared machine.
#
# usage: bench/exec_bench.sh [-k KJOBS_BIN] [-n JOBS] [-w WORKERS] [-p PARTITIONS] [-r ROUNDS]
#                            [-m MODES]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KJOBS="${KJOBS_BIN:-$here/../build/kjobs}"
N=20000
WORKERS=2
PARTITIONS=4
ROUNDS=3
MODES=noop,json-py,binary-py,json-node,binary-node
while getopts "k:n:w:p:r:m:h" opt; do
  case "$opt" in
    k) KJOBS="$OPTARG" ;;
    n) N="$OPTARG" ;;
    w) WORKERS="$OPTARG" ;;
    p) PARTITIONS="$OPTARG" ;;
    r) ROUNDS="$OPTARG" ;;
    m) MODES="$OPTARG" ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
  esac
done
[ -x "$KJOBS" ] || { echo "exec_bench: no kjobs binary at $KJOBS (use -k)" >&2; exit 2; }

exec python3 - "$KJOBS" "$N" "$WORKERS" "$PARTITIONS" "$here/../examples/exec" "$ROUNDS" "$MODES" <<'PY'
import datetime, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request

kjobs, n, workers, partitions, examples = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rounds = int(sys.argv[6])
modes = [m for m in sys.argv[7].split(",") if m]
node = shutil.which("node") or "node"
MODES = {  # mode -> (job type, extra environment)
    "noop": ("kjobs.noop", {}),
    "json-py": ("email.send", {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {examples}/handler.py"}),
    "binary-py": ("email.send", {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {examples}/handler_binary.py",
                                 "KJOBS_HANDLERS_EXEC_PROTOCOL": "binary"}),
    "json-node": ("email.send", {"KJOBS_HANDLERS_EXEC": f"{node} {examples}/handler.js"}),
    "binary-node": ("email.send", {"KJOBS_HANDLERS_EXEC": f"{node} {examples}/handler_binary.js",
                                   "KJOBS_HANDLERS_EXEC_PROTOCOL": "binary"}),
}
for m in modes:
    if m not in MODES:
        sys.exit(f"exec_bench: unknown mode {m} (known: {', '.join(MODES)})")
if "noop" not in modes:
    modes.insert(0, "noop")  # the reference every ratio is taken against
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid):
    """utime + stime of the processes whose parent is `pid` (a worker's exec children), now."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total
tmp = tempfile.mkdtemp(prefix="kjobs-exec-bench-")
# run kjobs under a name of our own: on a shared host a name-based pkill of "kjobs" must not
# stop this benchmark's broker mid-run
os.symlink(os.path.abspath(kjobs), os.path.join(tmp, "kjxbench"))
kjobs = os.path.join(tmp, "kjxbench")
# the embedded broker completes a rebalance only after session.timeout.ms of a member that
# left: keep it short so consecutive runs of one group do not wait 45 s each
GROUP_TIMEOUTS = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300"]

def start_broker(name):
    broker = subprocess.Popen([kjobs, "broker", "--partitions", partitions],
                              stdout=subprocess.PIPE, text=True,
                              stderr=open(os.path.join(tmp, f"{name}.broker.log"), "w"))
    bootstrap = broker.stdout.readline().strip()
    assert bootstrap, "kjobs broker printed no bootstrap address"
    return broker, bootstrap


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ok_total(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("kjobs_jobs_total{") and 'outcome="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(name, jtype, extra_env, n=n):
    broker, bootstrap = start_broker(name)
    try:
        return measure_on(bootstrap, name, jtype, extra_env, n)
    finally:
        broker.terminate()
        broker.wait(30)


def measure_on(bootstrap, name, jtype, extra_env, n):
    subprocess.run([kjobs, "enqueue", "-b", bootstrap, "--type", jtype, "--count", str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    env = dict(os.environ, KJOBS_HTTP_LISTEN=f"127.0.0.1:{port}", KJOBS_WORKERS=workers,
               KJOBS_KAFKA_GROUP="kjobs-exec-bench", KJOBS_LOG_LEVEL="info", **extra_env)
    log_path = os.path.join(tmp, f"{name}.log")
    proc = subprocess.Popen([kjobs, "run", "-b", bootstrap, "-X", "fetch.wait.max.ms=5",
                             *GROUP_TIMEOUTS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    first_assign = threading.Event()
    assigned_at = []

    def read_logs():
        with open(log_path, "w") as out:
            for line in proc.stderr:
                out.write(line)
                if not first_assign.is_set() and '"partition assigned"' in line:
                    ts = json.loads(line)["ts"].replace("Z", "+00:00")
                    assigned_at.append(datetime.datetime.fromisoformat(ts).timestamp())
                    first_assign.set()

    reader = threading.Thread(target=read_logs, daemon=True)
    reader.start()
    join_deadline = time.time() + 60
    while not first_assign.wait(0.2):
        if proc.poll() is not None or time.time() > join_deadline:
            proc.kill()
            reader.join(10)
            sys.exit(f"exec_bench: {name}: no partition assigned (exit {proc.returncode}; "
                     f"log: {log_path})")
    deadline = time.time() + 600
    while True:
        try:
            done = ok_total(port)
        except OSError:
            done = 0
        if done >= n:
            end = time.time()
            cpu = cpu_seconds(proc.pid)
            child_cpu = children_cpu_seconds(proc.pid)
            break
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit(f"exec_bench: {name}: only {done:.0f}/{n} jobs ok (log: {log_path})")
        time.sleep(0.005)
    proc.terminate()
    proc.wait(60)
    reader.join(10)
    secs = end - assigned_at[0]
    return {"s": secs, "rate": n / secs, "cpu_us": cpu * 1e6 / n,
            "child_cpu_us": child_cpu * 1e6 / n}


runs = {m: [] for m in modes}
# unmeasured warm-up: the first run after a while is slower (page cache, CPU frequency)
measure("warmup", "kjobs.noop", {}, n=max(1000, n // 10))
for r in range(rounds):  # rotate the order, so no mode always runs first or last
    k = r % len(modes)
    for name in modes[k:] + modes[:k]:
        jtype, env = MODES[name]
        runs[name].append(measure(f"{name}{r}", jtype, env))
import statistics


def mm(xs, fmt):
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})"


print(f"jobs per run: {n} (workers={workers}, partitions={partitions}, rounds={rounds}); "
      "median (min-max) over the rounds; ratios to noop taken within each round")
print(f"{'mode':12} {'jobs/s':>28} {'/ noop':>22} {'kjobs CPU us/job':>22} "
      f"{'child CPU us/job':>22} {'total CPU / noop':>22}  runs (jobs/s)")
for name in modes:
    rates = [x["rate"] for x in runs[name]]
    ratios = [x["rate"] / y["rate"] for x, y in zip(runs[name], runs["noop"])]
    cpus = [x["cpu_us"] for x in runs[name]]
    kids = [x["child_cpu_us"] for x in runs[name]]
    cpu_ratios = [(x["cpu_us"] + x["child_cpu_us"]) / y["cpu_us"]
                  for x, y in zip(runs[name], runs["noop"])]
    us = lambda v: f"{v:.2f}"  # noqa: E731
    print(f"{name:12} {mm(rates, lambda v: f'{v:,.0f}'):>28} {mm(ratios, lambda v: f'{v:.3f}'):>22} "
          f"{mm(cpus, us):>22} {mm(kids, us):>22} {mm(cpu_ratios, us):>22}  "
          + ", ".join(f"{v:.0f}" for v in rates))
print(f"logs: {tmp}")
PY
