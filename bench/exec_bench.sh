#!/usr/bin/env bash
# exec_bench.sh — the cost of the exec handler: jobs/s through handlers.exec (the Python example
# child, type email.send) against the in-process built-in kjobs.noop, on one `kjobs broker` in
# one run, so both numbers share the machine's state. For each handler: N jobs are enqueued
# first, then a worker starts; the clock runs from its first "partition assigned" log line to
# the moment /metrics shows N jobs finished ok (polled every 5 ms), so group join time is
# excluded. Both runs use the same consumer group, so the second starts after the first's
# committed offsets; an unmeasured kjobs.noop warm-up run goes first (the first run against a
# fresh broker is always slower). Prints both rates and their ratio. Timings only; nothing is
# asserted.
#
# Each handler is measured ROUNDS times, alternating which goes first; the median is reported.
#
# usage: bench/exec_bench.sh [-k KJOBS_BIN] [-n JOBS] [-w WORKERS] [-p PARTITIONS] [-r ROUNDS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KJOBS="${KJOBS_BIN:-$here/../build/kjobs}"
N=20000
WORKERS=2
PARTITIONS=4
ROUNDS=3
while getopts "k:n:w:p:r:h" opt; do
  case "$opt" in
    k) KJOBS="$OPTARG" ;;
    n) N="$OPTARG" ;;
    w) WORKERS="$OPTARG" ;;
    p) PARTITIONS="$OPTARG" ;;
    r) ROUNDS="$OPTARG" ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
[ -x "$KJOBS" ] || { echo "exec_bench: no kjobs binary at $KJOBS (use -k)" >&2; exit 2; }

exec python3 - "$KJOBS" "$N" "$WORKERS" "$PARTITIONS" "$here/../examples/exec/handler.py" "$ROUNDS" <<'PY'
import datetime, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

kjobs, n, workers, partitions, handler = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rounds = int(sys.argv[6])
tmp = tempfile.mkdtemp(prefix="kjobs-exec-bench-")
# run kjobs under a name of our own: on a shared host a name-based pkill of "kjobs" must not
# stop this benchmark's broker mid-run
os.symlink(os.path.abspath(kjobs), os.path.join(tmp, "kjxbench"))
kjobs = os.path.join(tmp, "kjxbench")
# the embedded broker completes a rebalance only after session.timeout.ms of a member that
# left: keep it short so consecutive runs of one group do not wait 45 s each
GROUP_TIMEOUTS = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300"]

broker = subprocess.Popen([kjobs, "broker", "--partitions", partitions], stdout=subprocess.PIPE,
                          stderr=open(os.path.join(tmp, "broker.log"), "w"), text=True)
bootstrap = broker.stdout.readline().strip()
assert bootstrap, "kjobs broker printed no bootstrap address"


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
    if not first_assign.wait(60):
        proc.kill()
        sys.exit(f"exec_bench: {name}: no partition assigned within 60 s (log: {log_path})")
    deadline = time.time() + 600
    while True:
        try:
            done = ok_total(port)
        except OSError:
            done = 0
        if done >= n:
            end = time.time()
            break
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit(f"exec_bench: {name}: only {done:.0f}/{n} jobs ok (log: {log_path})")
        time.sleep(0.005)
    proc.terminate()
    proc.wait(60)
    reader.join(10)
    secs = end - assigned_at[0]
    return secs, n / secs


runs = {"noop": [], "exec": []}
try:
    # unmeasured warm-up: the first run against a fresh broker and group is always slower
    measure("warmup", "kjobs.noop", {}, n=max(1000, n // 10))
    for r in range(rounds):  # alternate, so neither handler always runs on a warmer broker
        for name in (("noop", "exec") if r % 2 == 0 else ("exec", "noop")):
            if name == "noop":
                runs[name].append(measure(f"noop{r}", "kjobs.noop", {}))
            else:
                runs[name].append(measure(f"exec{r}", "email.send",
                                          {"KJOBS_HANDLERS_EXEC": f"{sys.executable} -u {handler}"}))
finally:
    broker.terminate()
    broker.wait(30)
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


noop_s, noop_rate = median(runs["noop"])
exec_s, exec_rate = median(runs["exec"])
print(f"jobs per run:          {n} (workers={workers}, partitions={partitions}, rounds={rounds};"
      " median run shown)")
for name in ("noop", "exec"):
    print(f"  {name} runs (jobs/s):  " + ", ".join(f"{r:.0f}" for _, r in runs[name]))
print(f"kjobs.noop (built-in): {noop_rate:10.0f} jobs/s  ({noop_s:.2f} s)")
print(f"email.send (exec, py): {exec_rate:10.0f} jobs/s  ({exec_s:.2f} s)")
print(f"ratio exec/noop:       {exec_rate / noop_rate:10.3f}")
print(f"logs:                  {tmp}")
PY
