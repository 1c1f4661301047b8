"""test_lag.py — `kjobs lag` against a real `kjobs broker` and `kjobs run` worker.
Run with /usr/bin/python3.

- before any worker ran: lag of the main topic = the number of enqueued jobs, CURRENT-OFFSET
  "-", ladder topics listed with lag 0, the DLQ not listed, a TOTAL line;
- while a worker of the same group runs, `kjobs lag` (many times) causes no rebalance: the
  worker logs no "partition revoked"/"partition lost" and no new "partition assigned";
- after the worker processed everything and stopped on SIGTERM (committing), lag = 0 and
  CURRENT-OFFSET = LOG-END-OFFSET on every main-topic partition; another group still lags;
- exit codes: 2 for usage errors, 1 when the broker cannot be reached;
- behind transaction markers and an aborted transaction, the committed offset reaches the log
  end (lag 0) and aborted jobs never run (needs a real Kafka: KJOBS_TEST_KAFKA=host:port).

Limit of the no-rebalance check on this broker: the embedded (librdkafka 2.0.2 mock) cluster was
observed never to complete a rebalance when a second member joins a group (two kcat members of
one group: the second waits forever), so a `kjobs lag` that did join would leave the worker's
assignment untouched here too. The check is still worth having on a real cluster; on this one
the evidence that lag never joins is the design (no subscribe/assign/commit on that handle) and
the group having no committed offsets after lag ran several times before the worker started.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import LoggedWorker, wait_until, kjobs_cmd, run  # noqa: E402

os.environ["KJOBS_HTTP_LISTEN"] = ""
LADDER = ["jobs.retry.1", "jobs.retry.2", "jobs.retry.3"]  # the default retry.delays





def lag_json(bootstrap, *extra):
    p = run(kjobs_cmd("lag", "-b", bootstrap, "--json", *extra))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def lag_table(bootstrap, *extra):
    p = run(kjobs_cmd("lag", "-b", bootstrap, *extra))
    lines = [l.split() for l in p.stdout.splitlines()]
    assert lines[0] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                        "LAG"], lines[0]
    assert lines[-1][1] == "TOTAL", lines[-1]
    return lines[1:-1], int(lines[-1][5])


def test_lag_before_during_and_after_a_worker():
    with harness.Broker(partitions=3) as broker:
        b = broker.bootstrap
        for key in ("a", "b", "c", "d", "e", "f", "g"):
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.noop", "--key", key))

        rows = lag_json(b)
        lag_table(b)
        rows = lag_json(b)  # lag commits nothing: still no committed offsets
        assert [(r["topic"], r["partition"]) for r in rows] == [
            (t, p) for t in ["jobs"] + LADDER for p in range(3)], rows
        main = [r for r in rows if r["topic"] == "jobs"]
        assert sum(r["lag"] for r in main) == 7 and sum(r["log_end_offset"] for r in main) == 7
        assert all(r["current_offset"] is None and r["group"] == "kjobs" for r in rows)
        assert all(r["lag"] == r["log_end_offset"] - r["log_start_offset"] for r in rows)
        assert all(r["lag"] == 0 for r in rows if r["topic"] != "jobs")
        table, total = lag_table(b)
        assert total == 7 and len(table) == 12
        assert all(r[0] == "kjobs" and r[3] == "-" for r in table), table
        assert [int(r[5]) for r in table if r[1] == "jobs"] == [r["lag"] for r in main]

        worker = LoggedWorker(b)
        try:
            wait_until("the worker's assignment", lambda: worker.count("partition assigned") == 12)
            wait_until("all 7 jobs done", lambda: any(
                l["msg"] == "progress" and l["ok"] == 7 for l in worker.logs()), timeout=60)
            # lag while the worker runs: it must not join the group or disturb it
            for _ in range(5):
                lag_json(b)
                lag_table(b)
            assert worker.proc.poll() is None
            assert worker.count("partition revoked", "partition lost") == 0, worker.logs()[-5:]
            assert worker.count("partition assigned") == 12
        finally:
            rc = worker.stop()
        assert rc == 0, f"kjobs run exited {rc} on SIGTERM"

        rows = lag_json(b)
        main = [r for r in rows if r["topic"] == "jobs"]
        assert all(r["current_offset"] == r["log_end_offset"] and r["lag"] == 0
                   for r in main), main
        assert sum(r["log_end_offset"] for r in main) == 7
        assert all(r["lag"] == 0 for r in rows)
        table, total = lag_table(b)
        assert total == 0
        assert all(r[3] == r[4] and r[5] == "0" for r in table if r[1] == "jobs"), table
        # another group has consumed nothing
        rows = lag_json(b, "-G", "someone-else")
        assert {r["group"] for r in rows} == {"someone-else"}
        assert sum(r["lag"] for r in rows) == 7


def test_lag_exit_codes():
    for args in (("--bogus",), ("extra",), ("--timeout", "0"), ("-c", "/nonexistent.cfg")):
        p = run(kjobs_cmd("lag", *args), check=False)
        assert p.returncode == 2 and p.stdout == "", (args, p)
    p = run(kjobs_cmd("lag", "--help"))
    assert "LOG-END-OFFSET" in p.stdout or "log end" in p.stdout
    p = run(kjobs_cmd("lag", "-b", "127.0.0.1:1", "--timeout", "2"), check=False, timeout=120)
    assert p.returncode == 1, p
    assert any(l["msg"] == "cannot read topic" for l in harness.log_lines(p.stderr))


def raw_values(bootstrap, topic, count):
    """The raw (encoded) values of the first `count` records of partition 0 of a topic."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{os.getpid()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + 60
    while len(out) < count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m.value())
    c.close()
    assert len(out) == count, f"read {len(out)} of {count} records from {topic}"
    return out


def test_lag_reaches_zero_behind_transaction_markers():
    """A transactional producer's 3 jobs and commit marker, an aborted transaction of 2
    permanent failures, and one more committed job: the worker runs the 4 committed jobs and
    none of the aborted ones (isolation.level=read_committed), and its committed offset reaches
    the log end (9, markers included) — lag 0, not 1. Needs transaction markers in the log: a
    real Kafka in KJOBS_TEST_KAFKA=host:port; on the embedded broker (librdkafka's mock writes
    no markers) it is skipped after checking that there are none."""
    import confluent_kafka  # noqa: F401 (python3-confluent-kafka)
    from confluent_kafka import Consumer, Producer, TopicPartition
    main = f"txn-{os.getpid()}-{int(time.time())}"
    env = {"KJOBS_TOPICS_MAIN": main, "KJOBS_TOPICS_PARTITIONS": "1",
           "KJOBS_RETRY_DELAYS": "1s", "KJOBS_KAFKA_GROUP": f"{main}-group",
           "KJOBS_LOG_LEVEL": "debug"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    real = os.environ.get("KJOBS_TEST_KAFKA")
    broker = None
    try:
        if real:
            b = real
            run(kjobs_cmd("topics", "-b", b, "--create"))
        else:
            broker = harness.Broker(partitions=1)
            b = broker.bootstrap
        # encoded jobs to copy, enqueued where no worker reads them (the DLQ topic)
        run(kjobs_cmd("enqueue", "-b", b, "--topic", f"{main}.dlq", "--type", "kjobs.noop",
                      "--count", "4"))
        run(kjobs_cmd("enqueue", "-b", b, "--topic", f"{main}.dlq", "--type",
                      "kjobs.fail-permanent", "--count", "2"))
        values = raw_values(b, f"{main}.dlq", 6)
        p = Producer({"bootstrap.servers": b, "transactional.id": f"{main}-txn"})
        p.init_transactions(30)
        for batch, commit in ((values[0:3], True), (values[4:6], False), (values[3:4], True)):
            p.begin_transaction()
            for v in batch:
                p.produce(main, v, partition=0)
            p.flush(30)
            (p.commit_transaction if commit else p.abort_transaction)(30)
        del p  # destroyed now, not after the broker stops
        c = Consumer({"bootstrap.servers": b, "group.id": f"{main}-wm"})

        def log_end():
            try:
                return c.get_watermark_offsets(TopicPartition(main, 0), timeout=10)[1]
            except confluent_kafka.KafkaException:
                return -1  # asked again (wait_until), or said by the assertion below
        if real:
            # the coordinator writes a commit's markers after commit_transaction returns (and
            # 3 brokers replicate them before the log end moves): await them
            try:
                wait_until("6 records and 3 transaction markers", lambda: log_end() >= 9,
                           timeout=30)
            except AssertionError:
                pass  # the assertion below says what the log end is
        hi = log_end()
        c.close()
        if not real:  # librdkafka 2.0.2's mock writes no markers (log end 6); 2.15.1's does,
            # but hands aborted records to read_committed consumers: only real Kafka can say
            raise harness.Skip(f"the embedded broker does not implement read_committed (log end "
                               f"{hi}); runs in the real-Kafka pass (KJOBS_TEST_KAFKA)")
        assert hi == 9, f"log end {hi}: expected 6 records and 3 transaction markers"
        worker = LoggedWorker(b)
        try:
            wait_until("the committed offset at the log end", lambda: [
                (r["current_offset"], r["lag"]) for r in lag_json(b)
                if r["topic"] == main] == [(9, 0)], timeout=90)
            done = [l for l in worker.logs() if l["msg"] == "job done"]
            assert len(done) == 4, done
            assert worker.count("job failed, dead-lettered") == 0, "an aborted job ran"
        finally:
            rc = worker.stop()
        assert rc == 0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if broker:
            broker.stop()


if __name__ == "__main__":
    harness.main([test_lag_before_during_and_after_a_worker, test_lag_exit_codes,
                  test_lag_reaches_zero_behind_transaction_markers])
