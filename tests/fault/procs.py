"""procs.py — process plumbing shared by test_ladder.py and test_fault.py (run with
/usr/bin/python3).

Owns what those tests need beyond harness.py: a `kjobs run` worker whose JSON log goes to a
file (a debug log of 50k "job done" lines would fill a pipe and stall the worker), read
incrementally so a test can wait for a log line with a deadline, SIGKILL the worker, or stop
it with SIGTERM; the fault broker (tests/fault/fault_broker.c) driven by stdin commands
acknowledged with "ok"; and small helpers over the log (who handled what, when).

Every wait is a deadline-bounded loop on an event (a log line, an answer line, a process
exit); the short sleeps inside those loops are poll intervals, never synchronisation.
"""
import collections
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402

POLL_S = 0.05


def log_ts_ms(line):
    """Epoch ms of a kjobs log line's "ts" (ISO-8601 UTC with milliseconds)."""
    ts = line["ts"].rstrip("Z")
    dt = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)
    return int(round(dt.timestamp() * 1000))


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S)


class Worker:
    """One `kjobs run` process; stderr (the JSON log) goes to a file read incrementally.
    fast_fetch: an empty Fetch is held 5 ms (-X fetch.wait.max.ms=5, as `kjobs run --embedded`
    does), so a test waits on the mock's hold as little as possible; False keeps kjobs' own
    setting."""

    def __init__(self, bootstrap, env=None, args=(), name="worker", fast_fetch=True):
        self.name = name
        self.log_file = tempfile.NamedTemporaryFile("wb", prefix=f"kjobs-{name}-",
                                                    suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update({"KJOBS_HTTP_LISTEN": "", "KJOBS_LOG_LEVEL": "debug"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            harness.kjobs_cmd("run", "-b", bootstrap,
                              *(("-X", "fetch.wait.max.ms=5") if fast_fetch else ()), *args),
            stdout=subprocess.DEVNULL, stderr=self.log_file, env=full_env)
        self._reader = open(self.log_file.name, "rb")
        self._partial = b""
        self.lines = []
        self.counts = collections.Counter()  # log lines seen, by "msg"

    def poll_lines(self):
        """Read what the worker wrote since the last call; return the new parsed lines."""
        data = self._partial + self._reader.read()
        parts = data.split(b"\n")
        self._partial = parts.pop()
        new = []
        for raw in parts:
            if not raw.strip():
                continue
            try:
                new.append(json.loads(raw))
            except ValueError:
                new.append({"ts": "1970-01-01T00:00:00.000Z", "level": "raw",
                            "msg": raw.decode(errors="replace")})
        self.lines.extend(new)
        self.counts.update(l["msg"] for l in new)
        return new

    def wait_for(self, pred, timeout, what):
        """Wait until pred(line) holds for some log line (old or new); return that line."""
        for line in self.lines:
            if pred(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            for line in self.poll_lines():
                if pred(line):
                    return line
            if self.proc.poll() is not None:
                for line in self.poll_lines():
                    if pred(line):
                        return line
                raise AssertionError(f"{self.name} exited {self.proc.returncode} while waiting "
                                     f"for {what}; log tail: {self.tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for "
                                     f"{what}; log tail: {self.tail()}")
            time.sleep(POLL_S)

    def wait_count(self, msg, n, timeout, what=None):
        """Wait until at least n log lines with this "msg" were written."""
        self.poll_lines()
        if self.counts[msg] >= n:
            return
        self.wait_for(lambda l: self.counts[msg] >= n, timeout, what or f"{n} x {msg!r}")

    def wait_assigned(self, timeout=30):
        return self.wait_for(lambda l: l["msg"] == "partition assigned", timeout,
                             "a partition assignment")

    def msgs(self, msg):
        self.poll_lines()
        return [l for l in self.lines if l["msg"] == msg]

    def tail(self, n=8):
        return "\n".join(json.dumps(l) for l in self.lines[-n:])

    def http_port(self, timeout=30):
        """The /metrics port (needs KJOBS_HTTP_LISTEN=127.0.0.1:0 in env)."""
        return self.wait_for(lambda l: l["msg"] == "http listening", timeout,
                             "the HTTP listener")["port"]

    def metric_sum(self, port, name):
        """Sum of every sample of one metric family from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.poll_lines()

    def stop(self, timeout=60):
        """SIGTERM and wait; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM")
        self.poll_lines()
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.close()
        self.log_file.close()
        keep = os.environ.get("KJOBS_TEST_KEEP_LOGS")  # a directory: worker logs are kept there
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(self.log_file.name, os.path.join(keep, f"{self.name}.log"))
        os.unlink(self.log_file.name)


class Broker(harness.Broker):
    """harness.Broker with its log in a file (a pipe nobody reads could fill and stall it),
    and a check that it is still alive (a dead broker explains refused connections)."""

    def __init__(self, partitions=4, env=None):
        self.log_file = tempfile.NamedTemporaryFile("w+b", prefix="kjobs-broker-", suffix=".log",
                                                    delete=False)
        if harness.REAL_KAFKA:
            harness.Broker.__init__(self, partitions, env=env)
            return
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(harness.kjobs_cmd("broker", "--partitions", str(partitions)),
                                     stdout=subprocess.PIPE, stderr=self.log_file, text=True,
                                     env=full_env)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            raise RuntimeError(f"kjobs broker printed no bootstrap address: {self.log()}")

    def log(self):
        with open(self.log_file.name, "rb") as f:
            return f.read().decode(errors="replace")

    def check_alive(self):
        rc = self.proc.poll()
        assert rc is None, f"kjobs broker exited {rc}; its log:\n{self.log()[-2000:]}"

    def stop(self):
        try:
            super().stop()
        finally:
            self.log_file.close()
            os.unlink(self.log_file.name)


FAULT_BROKER = os.environ.get("KJOBS_FAULT_BROKER") or os.path.join(
    os.path.dirname(os.path.abspath(harness.KJOBS)), "tests", "integration", "kjobs_fault_broker")


class FaultBroker:
    """tests/fault/fault_broker.c: the mock cluster in-process, faults applied on command."""

    def __init__(self, brokers=3, partitions=4, env=None):
        harness.require_embedded("faults are injected inside the mock cluster "
                                 "(tests/integration/test_real_faults.py covers real Kafka)")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [FAULT_BROKER, "--brokers", str(brokers), "--partitions", str(partitions)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=full_env, bufsize=1)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            self.stderr.seek(0)
            raise RuntimeError(f"fault broker printed no bootstrap: {self.stderr.read()!r}")
        self.brokers = brokers

    def cmd(self, text):
        """Send one command; return its answer (an "ok" line) or raise on "error"."""
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise AssertionError(f"fault broker: {text!r} -> {answer!r}")
        return answer

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def enqueue(bootstrap, type_, count=1, payload=None, key=None):
    args = ["enqueue", "-b", bootstrap, "--type", type_, "--count", str(count)]
    if payload is not None:
        args += ["--payload", payload]
    if key is not None:
        args += ["--key", key]
    ids = harness.run(harness.kjobs_cmd(*args)).stdout.split()
    assert len(ids) == count, f"enqueue printed {len(ids)} ids, wanted {count}"
    return ids


def peek_all(bootstrap, topic, timeout=30):
    """Every record of a topic (peek --from-beginning stops at the end of every partition)."""
    p = harness.run(harness.kjobs_cmd("peek", "-b", bootstrap, "--topic", topic,
                                      "--from-beginning", "--timeout", str(timeout)))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
