"""test_status.py — worker status reports (docs/console.md): a `kjobs run` worker publishes its
status record to the compacted topic <topics.main>.status every ui.report_interval, read here
with kafka-python as an independent client: the schema, the counts moving as jobs run, the
assignment, the state, a recent error, and the tombstone on a clean SIGTERM.

Run with /usr/bin/python3 (kafka-python); the binary from KJOBS_BIN.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import Broker, LoggedWorker, kjobs_cmd, run, wait_until  # noqa: E402

STATUS_TOPIC = "jobs.status"


class StatusReader:
    """Reads <main>.status from the beginning and keeps the latest value per key (None for a
    tombstone), like a compacted topic's reader does."""

    def __init__(self, bootstrap):
        from kafka import KafkaConsumer, TopicPartition
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","),
                                      enable_auto_commit=False, api_version=(2, 5, 0))
        parts = [TopicPartition(STATUS_TOPIC, p)
                 for p in self.consumer.partitions_for_topic(STATUS_TOPIC)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.latest = {}
        self.records = []

    def poll(self):
        for batch in self.consumer.poll(timeout_ms=500).values():
            for msg in batch:
                key = msg.key.decode()
                value = None if msg.value is None else json.loads(msg.value)
                if value is not None:
                    assert len(msg.value) <= 65536, len(msg.value)
                self.records.append((key, value))
                self.latest[key] = value
        return self.latest

    def close(self):
        self.consumer.close()


def test_reports_move_and_tombstone():
    with Broker(partitions=2) as broker:
        reader = StatusReader(broker.bootstrap)
        env = {"KJOBS_UI_REPORT_INTERVAL": "300ms", "KJOBS_KAFKA_GROUP_INSTANCE_ID": "status-w1",
               "KJOBS_RETRY_IN_PLACE_ATTEMPTS": "1"}
        os.environ.update(env)
        try:
            worker = LoggedWorker(broker.bootstrap)
        finally:
            for k in env:
                del os.environ[k]
        with worker:
            first = wait_until("a status record",
                               lambda: reader.poll().get("status-w1"), timeout=60)
            assert first["schema"] == 1, first
            assert first["worker_id"] == "status-w1", first
            assert first["pid"] == worker.proc.pid, first
            for field in ("host", "version", "started_at", "reported_at", "state", "breaker",
                          "assignment", "jobs", "handler", "in_flight", "errors"):
                assert field in first, (field, first)
            assert set(first["jobs"]) == {"ok", "retry", "dead_lettered", "scheduled",
                                          "parked"}, first
            # running with its partitions
            running = wait_until(
                "state running with 2 main partitions",
                lambda: (lambda r: r if r and r["state"] == "running" and
                         sorted(p["partition"] for p in r["assignment"]["partitions"]
                                if p["topic"] == "jobs") == [0, 1] else None)(
                    reader.poll().get("status-w1")), timeout=60)
            assert running["assignment"]["count"] >= 2 and running["assignment"]["omitted"] == 0
            assert running["breaker"] == {"open": False}, running
            base_ok = running["jobs"]["ok"]

            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop",
                          "--count", "25"))
            moved = wait_until("ok count +25",
                               lambda: (lambda r: r if r["jobs"]["ok"] >= base_ok + 25 else None)(
                                   reader.poll()["status-w1"]), timeout=60)
            assert moved["jobs"]["ok"] == base_ok + 25, moved
            assert moved["handler"]["count"] >= 25, moved
            assert moved["handler"]["p50_seconds"] is not None, moved
            assert moved["handler"]["p50_seconds"] <= moved["handler"]["p99_seconds"], moved
            assert moved["reported_at"] > first["reported_at"], moved

            # a job failing once, retried in place: the tries counter moves, the outcome is ok
            assert moved["counters"]["retries_in_place"] == 0, moved
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.flaky",
                          "--payload", "1"))
            tried = wait_until("ok count +1 after a try in place",
                               lambda: (lambda r: r if r["jobs"]["ok"] >= base_ok + 26 else None)(
                                   reader.poll()["status-w1"]), timeout=60)
            assert tried["counters"]["retries_in_place"] == 1, tried
            assert tried["jobs"]["retry"] == moved["jobs"]["retry"] == 0, tried

            # a permanent failure: dead-lettered, logged at warn, so a recent error
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail-permanent"))
            dead = wait_until("a dead letter and its error",
                              lambda: (lambda r: r if r["jobs"]["dead_lettered"] >= 1 and
                                       r["errors"] else None)(reader.poll()["status-w1"]),
                              timeout=60)
            err = dead["errors"][-1]
            assert err["level"] in ("warn", "error") and err["msg"], err
            assert all(len(v.encode()) <= 256 for v in err.values() if isinstance(v, str)), err

            rc = worker.stop()
            assert rc == 0, rc
        # the last record of the key is the tombstone, after a "draining" one
        wait_until("the tombstone", lambda: reader.poll() and
                   "status-w1" in reader.latest and reader.latest["status-w1"] is None,
                   timeout=30)
        states = [v["state"] for k, v in reader.records if k == "status-w1" and v]
        assert states[-1] == "draining", states
        assert any(line["msg"] == "status tombstone written" for line in worker.logs())
        reader.close()


def test_topics_lists_the_status_topic():
    p = run(kjobs_cmd("topics"))
    assert any(line.split()[:2] == [STATUS_TOPIC, "status"] for line in p.stdout.splitlines()), \
        p.stdout


def test_reports_off():
    with Broker(partitions=1) as broker:
        os.environ["KJOBS_UI_REPORT_INTERVAL"] = "0"
        try:
            worker = LoggedWorker(broker.bootstrap)
        finally:
            del os.environ["KJOBS_UI_REPORT_INTERVAL"]
        with worker:
            wait_until("worker started", lambda: worker.count("worker started"), timeout=60)
            assert worker.count("status reports on") == 0
        reader = StatusReader(broker.bootstrap)
        for _ in range(3):
            reader.poll()
        assert reader.records == [], reader.records
        reader.close()


if __name__ == "__main__":
    harness.main([test_reports_move_and_tombstone, test_topics_lists_the_status_topic,
                  test_reports_off])
