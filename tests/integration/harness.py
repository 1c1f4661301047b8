"""harness.py — shared plumbing for kjobs integration tests (run with /usr/bin/python3).

Starts real `kjobs` processes against a real `kjobs broker` (the embedded mock cluster) and
gives tests small helpers: run a command and capture its output, read JSON lines from peek,
wait for a condition with a deadline. Synchronisation is by events (a process's output line,
a process exit, data arriving), never by fixed sleeps.

Tests are plain functions named test_*; `main()` runs them and prints a closing line
"N passed, N failed" that CI reads.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import real_kafka

KJOBS = os.environ.get("KJOBS_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "kjobs")
SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
real_kafka.KJOBS = KJOBS
REAL_KAFKA = real_kafka.enabled()


def require_embedded(why):
    """Skip the calling test on a real cluster: it needs a mock-only facility (fault
    injection inside the broker, or a broker the test starts and stops itself)."""
    if REAL_KAFKA:
        raise Skip(f"embedded broker only: {why}")


def kjobs_cmd(*args):
    return [KJOBS, *args]


class _ClusterOutsideThisTest:
    """Stands in for a broker process on a real cluster: tests that check "did the broker
    die?" (proc.poll()) see it running; the cluster's own health is the cluster's script's."""
    returncode = None

    def poll(self):
        return None


class Broker:
    """A `kjobs broker` process; the bootstrap address is its first stdout line. With
    KJOBS_TEST_KAFKA set, a freshly reset real cluster instead (tests/integration/real_kafka.py)."""

    def __init__(self, partitions=4, config=None, extra=(), env=None):
        self.proc = None
        if REAL_KAFKA:
            self.bootstrap = real_kafka.reset(partitions, env=env, config=config)
            self.proc = _ClusterOutsideThisTest()
            return
        args = kjobs_cmd("broker", "--partitions", str(partitions), *extra)
        if config:
            args += ["-c", config]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().strip()
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"kjobs broker printed no bootstrap address: {err}")
        self.bootstrap = line

    def stop(self):
        if REAL_KAFKA:
            return  # the cluster outlives the test; the next test resets it
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("kjobs broker did not stop on SIGTERM")
            assert rc == 0, f"kjobs broker exited {rc} on SIGTERM"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def python_producer(bootstrap, **overrides):
    """A kafka-python producer configured as a careful user would: acks=all, and retries with
    one request in flight (kafka-python's default is no retry, so a NotLeaderForPartition
    while a fresh real cluster settles its leaders would fail the send instead of the test's
    subject). Keyword arguments override the defaults."""
    from kafka import KafkaProducer
    kw = dict(bootstrap_servers=bootstrap.split(",") if isinstance(bootstrap, str) else bootstrap,
              api_version=(2, 5, 0), acks="all", retries=20, retry_backoff_ms=250,
              max_in_flight_requests_per_connection=1)
    kw.update(overrides)
    return KafkaProducer(**kw)


def run(args, input=None, check=True, timeout=120, env=None):
    """Run a command; return CompletedProcess (text)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                       env=full_env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstderr:\n{p.stderr[-4000:]}")
    return p


def peek(bootstrap, topic, count, timeout=60):
    p = run(kjobs_cmd("peek", "-b", bootstrap, "--topic", topic, "--from-beginning",
                      "--count", str(count), "--timeout", str(timeout)))
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    assert len(lines) == count, f"peek returned {len(lines)} records, wanted {count}"
    return lines


class LoggedWorker:
    """A `kjobs run` process whose JSON log goes to a file, so it can be read while it runs.
    As a context manager it stops the worker on exit and requires a clean (0) exit."""

    def __init__(self, bootstrap, *extra):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        env = dict(os.environ)
        env.setdefault("KJOBS_HTTP_LISTEN", "127.0.0.1:0")  # never a fixed, shared port
        self.proc = subprocess.Popen(
            kjobs_cmd("run", "-b", bootstrap, "-X", "fetch.wait.max.ms=5", *extra),
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)

    def logs(self):
        with open(self.log.name) as f:
            text = f.read()
        return log_lines(text[:text.rfind("\n") + 1])  # skip a half-written last line

    def count(self, *msgs):
        return sum(1 for line in self.logs() if line["msg"] in msgs)

    def stop(self):
        """SIGTERM (if still running); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=60)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            rc = self.stop()
            assert rc == 0, f"kjobs run exited {rc} on SIGTERM"
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def hdrs(rec):
    """The "headers" of a peek/dlq JSON record (an ordered list of [name, value] pairs) as a
    dict, the last value winning for a repeated name; asserts the list shape."""
    pairs = rec["headers"]
    assert isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs), pairs
    return {name: value for name, value in pairs}


def read_topic(bootstrap, topic, count, timeout_s=60):
    """The first `count` records of every partition of `topic` together, read from the
    beginning with kafka-python (no group, no commits) — an independent reader. Fails unless
    exactly `count` arrive within timeout_s seconds of silence."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             api_version=(2, 5, 0), consumer_timeout_ms=timeout_s * 1000)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records = []
    for msg in consumer:
        records.append(msg)
        if len(records) == count:
            break
    consumer.close()
    assert len(records) == count, f"{topic}: kafka-python read {len(records)} records, wanted {count}"
    return records


def readyz(port):
    """The status of a worker's GET /readyz (0 while nothing answers on the port)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_until(what, fn, timeout=90):
    """Re-check fn() until it returns something true (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def log_lines(stderr_text):
    """Parse a kjobs stderr stream; every line must be a JSON object."""
    out = []
    for line in stderr_text.splitlines():
        if line.strip():
            obj = json.loads(line)
            assert isinstance(obj, dict) and {"ts", "level", "msg"} <= obj.keys(), line
            out.append(obj)
    return out


def write_config(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    f.write(text)
    f.close()
    return f.name


class Skip(Exception):
    """Raise to report a test that cannot run here (with the reason)."""


def main(tests):
    only = sys.argv[1:]
    passed = failed = skipped = 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        start = time.monotonic()
        try:
            t()
            passed += 1
            print(f"ok   {t.__name__} ({time.monotonic() - start:.1f}s)", flush=True)
        except Skip as why:
            skipped += 1
            print(f"skip {t.__name__}: {why}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""),
          flush=True)
    sys.exit(1 if failed or not (passed or skipped) else 0)
