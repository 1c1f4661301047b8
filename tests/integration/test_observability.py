"""test_observability.py — what an operator sees of a real worker: /readyz goes 503 → 200 →
503 across start, assignment and drain; /livez and /healthz answer; /metrics, parsed by the
reference Prometheus parser (prom_parse.py with python3-prometheus-client), counts exactly what
was enqueued; logs are JSON lines; and no secret ever reaches the logs, even with librdkafka's
debug logging on. Run with /usr/bin/python3."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import kjobs_cmd, run  # noqa: E402

FAST_GROUP = ["-X", "fetch.wait.max.ms=5", "-X", "session.timeout.ms=6000",
              "-X", "heartbeat.interval.ms=500"]
PROM_PARSE = os.path.join(os.path.dirname(__file__), "prom_parse.py")


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_worker(bootstrap, env, extra=()):
    full = dict(os.environ, KJOBS_HTTP_LISTEN="127.0.0.1:0", **env)
    proc = subprocess.Popen(kjobs_cmd("run", "-b", bootstrap, *FAST_GROUP, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full)
    lines, port = [], None
    for line in proc.stderr:
        lines.append(line)
        obj = json.loads(line)
        if obj["msg"] == "http listening":
            port = obj["port"]
            break
    assert port, "".join(lines[-5:])
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, port, lines


def wait_until(what, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_readiness_follows_the_lifecycle_and_metrics_count_every_job():
    with harness.Broker(partitions=3) as broker:
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop", "--count", "500"))
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail-permanent",
                      "--count", "7"))
        proc, port, lines = start_worker(broker.bootstrap, {"KJOBS_BATCH_MAX_JOBS": "1"})
        try:
            # joining the group takes ~3 s on the embedded broker: not ready meanwhile
            status, body = http_get(port, "/readyz")
            assert status == 503 and "joining" in body, (status, body)
            for path in ("/livez", "/healthz"):
                assert http_get(port, path)[0] == 200, path
            wait_until("ready", lambda: http_get(port, "/readyz")[0] == 200)

            def counted():
                _, text = http_get(port, "/metrics")
                return text
            wait_until("all fast jobs counted", lambda: (
                'kjobs_jobs_total{topic="jobs",type="kjobs.noop",outcome="ok"} 500' in counted()
                and 'outcome="dead_lettered"} 7' in counted()
                and 'kjobs_dlq_routed_total{class="permanent"} 7' in counted()))
            text = counted()
            p = subprocess.run(
                ["/usr/bin/python3", PROM_PARSE, "--prefix", "kjobs_",
                 'kjobs_jobs_total{topic="jobs",type="kjobs.noop",outcome="ok"}=500',
                 'kjobs_jobs_total{topic="jobs",type="kjobs.fail-permanent",'
                 'outcome="dead_lettered"}=7',
                 'kjobs_dlq_routed_total{class="permanent"}=7',
                 "--type", "kjobs_job_duration_seconds=histogram",
                 "--type", "kjobs_batch_size=histogram",
                 "--type", "kjobs_consumer_lag=gauge",
                 "--type", "kjobs_rebalances_total=counter",
                 "kjobs_offset_resets_total=0"],
                input=text, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr + text[:3000]
            summary = json.loads(p.stdout)
            assert summary, "parser returned nothing"
            # a slow job keeps a batch in flight at shutdown, so the drain is observable
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.sleep",
                          "--payload", "3000"))
            wait_until("the sleep job in flight", lambda: any(
                "kjobs_in_flight_jobs 1" in l for l in counted().splitlines()))
            proc.send_signal(signal.SIGTERM)
            wait_until("draining", lambda: http_get(port, "/readyz")[0] == 503 and
                       http_get(port, "/readyz")[1].strip() == "draining",
                       timeout=10)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        assert rc == 0
        logs = harness.log_lines("".join(lines))
        stopped = [l for l in logs if l["msg"] == "worker stopped"]
        assert stopped and stopped[0]["ok"] >= 501, stopped  # 500 noop + the drained sleep job


def test_no_secret_in_logs_even_with_librdkafka_debug():
    secret_file, secret_env = "file-s3cr3t-Zq8", "env-s3cr3t-Wx4"
    cfg = harness.write_config(
        'kafka = { properties = [ "security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN", '
        '"sasl.username=kjobs", "sasl.password=%s" ]; };\n' % secret_file)
    with harness.Broker(partitions=1) as broker:
        env = dict(os.environ, KJOBS_RDKAFKA_SASL_PASSWORD=secret_env, KJOBS_HTTP_LISTEN="",
                   KJOBS_LOG_LEVEL="debug")
        # the mock speaks no SASL: the worker fails to connect and logs a lot; then we stop it
        proc = subprocess.Popen(kjobs_cmd("run", "-c", cfg, "-b", broker.bootstrap,
                                          "-X", "debug=conf,security,broker,generic"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        check = run(kjobs_cmd("run", "-c", cfg, "--check-config"), env={
            "KJOBS_RDKAFKA_SASL_PASSWORD": secret_env}, check=False)
    assert len(err) > 1000, "expected plenty of debug logging to search"
    for text, where in ((err, "worker stderr"), (out, "worker stdout"),
                        (check.stdout + check.stderr, "--check-config output")):
        assert secret_file not in text, f"file secret leaked into {where}"
        assert secret_env not in text, f"env secret leaked into {where}"
    harness.log_lines(err)  # and every line is a JSON object


if __name__ == "__main__":
    harness.main([test_readiness_follows_the_lifecycle_and_metrics_count_every_job,
                  test_no_secret_in_logs_even_with_librdkafka_debug])
