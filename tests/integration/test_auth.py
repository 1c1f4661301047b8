#!/usr/bin/python3
"""test_auth.py — a real `kjobs run` authenticating to a real Apache Kafka broker, configured the
way the Helm chart configures the pods: credentials only through KJOBS_RDKAFKA_* environment
variables (docs/kubernetes.md, "Credentials").

The test starts its own one-node cluster (scripts/kafka.sh start --auth scram,mtls) in its own
directory and on its own ports: a SASL_SSL listener with SCRAM-SHA-512 and an SSL listener that
requires a client certificate, both signed by a throwaway CA. For each mode a worker with the
right credentials runs every enqueued job (counted on its /metrics), and a worker with wrong or
missing credentials is refused by the broker, logs why and exits 1 without joining the group —
and no output carries a password. It runs in scripts/test.sh's real-Kafka pass (KJOBS_TEST_KAFKA set; that pass builds
with the current librdkafka and has the broker's jars), or anywhere with KJOBS_TEST_AUTH=1.
Ports: KJOBS_AUTH_KAFKA_PORT (default 21392; the controller is +100, the mTLS listener +200).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import harness
from harness import kjobs_cmd, run

KAFKA_SH = os.path.join(harness.SOURCE_DIR, "scripts", "kafka.sh")
PORT = int(os.environ.get("KJOBS_AUTH_KAFKA_PORT", "21392"))
JOBS = 200
# the chart's env names for each mode's librdkafka properties (helm/kjobs/templates/_helpers.tpl)
ENV_NAME = {p: "KJOBS_RDKAFKA_" + p.upper().replace(".", "_") for p in (
    "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location",
    "ssl.certificate.location", "ssl.key.location", "ssl.key.password")}


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kjobs-test-auth.")
        self.env = dict(os.environ, KAFKA_LOCAL_DIR=self.dir, KAFKA_LOCAL_PORT=str(PORT))

    def kafka_sh(self, *args):
        p = subprocess.run(["bash", KAFKA_SH, *args], env=self.env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, f"kafka.sh {' '.join(args)}: {p.stderr[-3000:]}"
        return p.stdout.strip()

    def start(self):
        for port in (PORT, PORT + 100, PORT + 200):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, \
                    f"port {port} is in use: set KJOBS_AUTH_KAFKA_PORT to a free range"
        self.kafka_sh("start", "--brokers", "1", "--auth", "scram,mtls")

    def stop(self):
        subprocess.run(["bash", KAFKA_SH, "stop"], env=self.env, capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, mode):
        """(bootstrap, {librdkafka property: value}) of the listener of `mode`."""
        with open(self.kafka_sh("client-config", mode)) as f:
            props = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return self.kafka_sh("bootstrap", mode), props


def as_env(props):
    return {ENV_NAME[k]: v for k, v in props.items()}


class Worker:
    """`kjobs run` with the given environment; its JSON log is collected as it arrives."""

    def __init__(self, bootstrap, env):
        full = dict(os.environ, KJOBS_HTTP_LISTEN="127.0.0.1:0", KJOBS_TOPICS_PARTITIONS="2", **env)
        self.lines = []
        self.proc = subprocess.Popen(
            kjobs_cmd("run", "-b", bootstrap, "-X", "fetch.wait.max.ms=5"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full)
        self.port = None
        for line in self.proc.stderr:
            self.lines.append(line)
            if json.loads(line)["msg"] == "http listening":
                self.port = json.loads(line)["port"]
                break
        assert self.port, "".join(self.lines[-5:])
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def jobs_ok(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("kjobs_jobs_total{") and 'outcome="ok"' in line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def text(self):
        return "".join(self.lines)


def secrets_of(props):
    return [v for k, v in props.items() if "password" in k]


def assert_no_secret(text, secrets, where):
    for s in secrets:
        assert s not in text, f"a password appears in {where}"


def prepare(bootstrap, props):
    """Topics and JOBS noop jobs, written with the same credentials (kjobs topics/enqueue)."""
    env = dict(as_env(props), KJOBS_TOPICS_PARTITIONS="2", KJOBS_TOPICS_REPLICATION_FACTOR="1")
    run(kjobs_cmd("topics", "--create", "-b", bootstrap), env=env)
    p = run(kjobs_cmd("enqueue", "-b", bootstrap, "--type", "kjobs.noop", "--count", str(JOBS)), env=env)
    assert len(p.stdout.split()) == JOBS, p.stdout[-500:]
    assert_no_secret(p.stdout + p.stderr, secrets_of(props), "kjobs enqueue's output")


def authenticated_worker_runs_every_job(bootstrap, props):
    w = Worker(bootstrap, as_env(props))
    try:
        harness.wait_until(f"{JOBS} jobs ok", lambda: w.jobs_ok() >= JOBS, timeout=90)
        assert w.jobs_ok() == JOBS, w.jobs_ok()
    finally:
        rc = w.stop()
    assert rc == 0, f"worker exited {rc}:\n{w.text()[-3000:]}"
    harness.log_lines(w.text())
    assert_no_secret(w.text(), secrets_of(props), "the worker's log")


def refused_worker_runs_nothing(bootstrap, props, *needles):
    """A worker the broker refuses: it logs the refusal (JSON lines, one with `needles`), reports
    that it failed to start and exits 1 without having joined the group; no password in its
    output."""
    p = run(kjobs_cmd("run", "-b", bootstrap), env=dict(as_env(props), KJOBS_HTTP_LISTEN=""),
            check=False, timeout=120)
    logs = harness.log_lines(p.stderr)
    assert p.returncode == 1, f"exit {p.returncode}:\n{p.stderr[-3000:]}"
    assert any(all(n in line["msg"] for n in needles) for line in logs), p.stderr[-3000:]
    assert any(line["msg"] == "worker failed to start" for line in logs), p.stderr[-3000:]
    assert not any(line["msg"] == "worker started" for line in logs), p.stderr[-3000:]
    assert_no_secret(p.stdout + p.stderr, secrets_of(props), "the refused worker's output")


CLUSTER = None


def test_scram_sha512_over_tls():
    bootstrap, props = CLUSTER.client("scram")
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    prepare(bootstrap, props)
    authenticated_worker_runs_every_job(bootstrap, props)
    wrong = dict(props, **{"sasl.password": "not-" + props["sasl.password"]})
    refused_worker_runs_nothing(bootstrap, wrong, "SASL authentication error", "invalid credentials")


def test_mtls_client_certificate_with_encrypted_key():
    bootstrap, props = CLUSTER.client("mtls")
    assert props["security.protocol"] == "SSL" and props["ssl.key.password"]
    prepare(bootstrap, props)
    authenticated_worker_runs_every_job(bootstrap, props)
    # the same TLS settings without a client certificate: the broker requires one
    anonymous = {k: v for k, v in props.items() if k in ("security.protocol", "ssl.ca.location")}
    refused_worker_runs_nothing(bootstrap, anonymous, "alert bad certificate")
    # a wrong key password is a configuration error: the worker refuses to start (exit 2)
    bad = dict(props, **{"ssl.key.password": "not-" + props["ssl.key.password"]})
    p = run(kjobs_cmd("run", "-b", bootstrap), env=as_env(bad), check=False, timeout=60)
    assert p.returncode == 2, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert_no_secret(p.stdout + p.stderr, secrets_of(bad) + secrets_of(props), "kjobs run's output")


def main():
    global CLUSTER
    if not (harness.REAL_KAFKA or os.environ.get("KJOBS_TEST_AUTH") == "1"):
        print("skip: runs in the real-Kafka pass (KJOBS_TEST_KAFKA) or with KJOBS_TEST_AUTH=1")
        print("0 passed, 0 failed, 2 skipped")
        return
    CLUSTER = Cluster()
    start = time.monotonic()
    try:
        CLUSTER.start()
        print(f"broker with SCRAM and mTLS listeners up in {time.monotonic() - start:.1f}s", flush=True)
        harness.main([test_scram_sha512_over_tls, test_mtls_client_certificate_with_encrypted_key])
    finally:
        CLUSTER.stop()


if __name__ == "__main__":
    main()
