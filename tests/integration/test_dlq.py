"""test_dlq.py — `kjobs dlq list|show|replay` against a real `kjobs broker` and, where jobs must
really fail, a real `kjobs run` worker. Run with /usr/bin/python3.

- end to end: fail-permanent, unknown-type, undecodable (written by kcat with a key and a user
  header) and flaky (retryable, dead-lettered after retry.max_attempts = 2) jobs land in the DLQ
  with the right classes and original coordinates, and with exactly the kjobs-* headers the
  table in docs/dlq.md documents (kjobs-not-before = kjobs-failed-at); list (table and JSON), show by id and by
  PARTITION:OFFSET; replay --dry-run changes nothing; replay --type re-enqueues byte for byte
  with only kjobs-replayed-from/-at as kjobs headers; the replayed jobs fail again and a second
  plain replay leaves them (and the replayed originals) alone; the replayed flaky job starts
  again at attempt 1.
- the replay marker (group <kafka.group>.dlq-replay) read back with kafka-python: committed
  offset and ranges after filtered replays; --again; refailed dead letters.
- failures: a copy that cannot be produced makes replay exit 1 and stays replayable; records
  without kjobs-original-topic are listed but never replayed; usage errors exit 2.

Each worker runs for the whole of its test and is never restarted: on the embedded broker
(librdkafka 2.0.2's mock cluster) a second member of a group was observed never to get
partitions — also a `kjobs run` started after the previous one left — and a restart is not what
these tests are about.
"""
import base64
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs, LoggedWorker, wait_until, kjobs_cmd, run  # noqa: E402

import avro.io  # noqa: E402
import avro.schema  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

# One ladder step of 1 s and two attempts: a flaky job dead-letters after ~1 s. Every process of
# this file (broker, worker, CLI) sees the same configuration, so the topics agree.
os.environ.update({"KJOBS_RETRY_MAX_ATTEMPTS": "2", "KJOBS_RETRY_DELAYS": "1s",
                   "KJOBS_HTTP_LISTEN": ""})

JOB_SCHEMA = avro.schema.parse(open(os.path.join(harness.SOURCE_DIR, "schemas", "job.avsc")).read())
KCAT = shutil.which("kcat")


def avro_job(job_type, payload=b"", job_id=None):
    job_id = job_id or str(uuid.uuid4())
    buf = io.BytesIO()
    avro.io.DatumWriter(JOB_SCHEMA).write(
        {"id": job_id, "type": job_type, "payload": payload,
         "created_at": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc), "meta": {}}, avro.io.BinaryEncoder(buf))
    return job_id, buf.getvalue()





def dlq_list(bootstrap, *extra):
    p = run(kjobs_cmd("dlq", "list", "-b", bootstrap, "--json", *extra))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def dlq_table(bootstrap, *extra):
    p = run(kjobs_cmd("dlq", "list", "-b", bootstrap, *extra))
    lines = p.stdout.splitlines()
    head = lines[0].split()
    assert head == ["ID", "TYPE", "CLASS", "ATTEMPTS", "ORIGINAL", "FAILED-AT", "STATE",
                    "ERROR"], lines[0]
    # the first seven columns have no spaces; ERROR is the rest of the line
    return [dict(zip(head, l.split(None, 7))) for l in lines[1:]]


def replay(bootstrap, *extra, check=True):
    p = run(kjobs_cmd("dlq", "replay", "-b", bootstrap, *extra), check=check)
    return p, [l for l in p.stdout.splitlines() if l.strip()]


def main_topic(bootstrap):
    p = run(kjobs_cmd("peek", "-b", bootstrap, "--topic", "jobs", "--from-beginning",
                      "--timeout", "60"))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def coords(rec):
    return f"{rec['partition']}:{rec['offset']}"


def marker(bootstrap, partitions, group="kjobs.dlq-replay", topic="jobs.dlq"):
    """The replay marker as an independent client (kafka-python) reads it: {p: (offset, meta)}
    for the partitions that have a committed offset."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      api_version=(2, 5, 0))
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        got = c._coordinator.fetch_committed_offsets(tps)
        return {tp.partition: (om.offset, om.metadata) for tp, om in got.items()}
    finally:
        c.close(autocommit=False)


DLQ_MD = os.path.join(harness.SOURCE_DIR, "docs", "dlq.md")


def documented_dlq_headers():
    """The header table of docs/dlq.md: {header: value description}."""
    with open(DLQ_MD) as f:
        rows = [l.split("|") for l in f if l.startswith("| `kjobs-")]
    table = {r[1].strip().strip("`"): r[2].strip() for r in rows}
    assert "kjobs-attempt" in table and "kjobs-failed-at" in table, table
    return table


def check_documented_headers(headers):
    """A dead letter's kjobs-* headers are exactly the documented ones (a header documented
    "only on ..." may be absent), with the documented values where the doc pins them."""
    table = documented_dlq_headers()
    present = {h for h in headers if h.startswith("kjobs-")}
    assert present <= set(table), f"undocumented dead-letter headers: {present - set(table)}"
    always = {h for h, what in table.items()
              if not what.startswith("only") and not what.startswith("with `")}
    assert always <= present, f"documented headers missing on a dead letter: {always - present}"
    if "kjobs-not-before" in table:
        assert "equal to `kjobs-failed-at`" in table["kjobs-not-before"]
        assert headers["kjobs-not-before"] == headers["kjobs-failed-at"], headers


def test_dead_letters_end_to_end():
    assert KCAT, "kcat is not installed (scripts/install-deps.sh installs it)"
    with harness.Broker(partitions=3) as broker:
        b = broker.bootstrap
        perm = run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.fail-permanent", "--key",
                             "pk", "--payload", "perm", "--count", "2")).stdout.split()
        unknown = run(kjobs_cmd("enqueue", "-b", b, "--type", "no.such.type", "--payload",
                                "u")).stdout.split()
        flaky = run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.flaky", "--key", "fk",
                              "--payload", "2")).stdout.split()
        subprocess.run([KCAT, "-P", "-b", b, "-t", "jobs", "-k", "gkey", "-H", "trace=abc"],
                       input=b"this is not avro\n", check=True, timeout=60)
        originals = {r.get("id") or "garbage": r for r in main_topic(b)}
        assert len(originals) == 5, originals.keys()

        with LoggedWorker(b) as worker:
            dl = wait_until("5 dead letters", lambda: (lambda d: d if len(d) == 5 else None)(
                dlq_list(b)))
            by_class = {}
            for d in dl:
                by_class.setdefault(d["dead_letter"]["error_class"], []).append(d)
            assert sorted((k, len(v)) for k, v in by_class.items()) == [
                ("decode", 1), ("permanent", 2), ("retryable", 1), ("unknown-type", 1)], by_class
            assert sorted(d["id"] for d in by_class["permanent"]) == sorted(perm)
            assert by_class["unknown-type"][0]["id"] == unknown[0]
            fl = by_class["retryable"][0]
            assert fl["id"] == flaky[0] and fl["dead_letter"]["attempt"] == 2, fl
            garbage = by_class["decode"][0]
            assert "id" not in garbage and garbage["handle"] == coords(garbage), garbage
            for d in dl:
                o = originals[d.get("id") or "garbage"]
                dd = d["dead_letter"]
                assert (dd["original_topic"], dd["original_partition"], dd["original_offset"]) \
                    == ("jobs", o["partition"], o["offset"]), (d, o)
                assert d["state"] == "new" and d["topic"] == "jobs.dlq"
                assert dd["failed_at_iso"].endswith("Z") and dd["worker"], dd
                assert hdrs(d)["kjobs-error-class"] == dd["error_class"]
                check_documented_headers(hdrs(d))
            # the flaky job went down the ladder: its original coordinates are still the main
            # topic's (kjobs-original-* survive the ladder)
            assert fl["dead_letter"]["original_topic"] == "jobs"

            # table: same dead letters, classes, attempts and ORIGINAL column
            rows = {r["ID"]: r for r in dlq_table(b)}
            assert set(rows) == {d["handle"] for d in dl}, rows.keys()
            assert rows[garbage["handle"]]["CLASS"] == "decode"
            assert rows[garbage["handle"]]["TYPE"] == "-"
            assert rows[fl["id"]]["ATTEMPTS"] == "2" and rows[fl["id"]]["CLASS"] == "retryable"
            o = originals[perm[0]]
            assert rows[perm[0]]["ORIGINAL"] == f"jobs:{o['partition']}:{o['offset']}"
            assert rows[perm[0]]["FAILED-AT"].endswith("Z")
            assert rows[unknown[0]]["ERROR"].startswith("no handler"), rows[unknown[0]]
            # filters and an explicit --topic
            assert {d["id"] for d in dlq_list(b, "--type", "kjobs.fail-permanent")} == set(perm)
            assert [d["handle"] for d in dlq_list(b, "--class", "decode")] == [garbage["handle"]]
            assert len(dlq_list(b, "--topic", "jobs.dlq")) == 5

            # show: by id and by coordinates, the same shape as list --json, pretty printed
            p = run(kjobs_cmd("dlq", "show", "-b", b, unknown[0]))
            assert p.stdout.count("\n") > 10
            assert json.loads(p.stdout) == by_class["unknown-type"][0]
            p = run(kjobs_cmd("dlq", "show", "-b", b, garbage["handle"]))
            assert json.loads(p.stdout) == garbage
            assert garbage["value_b64"] == originals["garbage"]["value_b64"]
            p = run(kjobs_cmd("dlq", "show", "-b", b, "no-such-id"), check=False)
            assert p.returncode == 1 and p.stdout == "", p
            p = run(kjobs_cmd("dlq", "show", "-b", b, "0:99999"), check=False)
            assert p.returncode == 1 and p.stdout == "", p

            # --dry-run: prints all five, produces and records nothing
            before = len(main_topic(b))
            p, lines = replay(b, "--dry-run")
            assert sorted(l.split("\t")[0] for l in lines) == sorted(d["handle"] for d in dl)
            assert all(l.split("\t")[2] == "jobs" for l in lines), lines
            assert len(main_topic(b)) == before
            assert all(d["state"] == "new" for d in dlq_list(b))
            assert marker(b, 3) == {}, marker(b, 3)

            # replay the permanent failures: byte for byte, kjobs-* headers replaced
            p, lines = replay(b, "--type", "kjobs.fail-permanent")
            assert sorted(lines) == sorted(perm), lines
            replayed = [r for r in main_topic(b) if "kjobs-replayed-from" in hdrs(r)]
            assert len(replayed) == 2, replayed
            perm_dl = {d["id"]: d for d in by_class["permanent"]}
            for r in replayed:
                d = perm_dl[r["id"]]
                assert hdrs(r)["kjobs-replayed-from"] == f"jobs.dlq:{coords(d)}"
                assert int(hdrs(r)["kjobs-replayed-at"]) > 0
                assert set(hdrs(r)) == {"kjobs-replayed-from", "kjobs-replayed-at"}, r
                assert r["key"] == "pk" and r["payload_b64"] == d["payload_b64"]
                assert r["created_at"] == d["created_at"]
            # they fail again → two new dead letters carrying kjobs-replayed-from
            dl = wait_until("the replayed jobs to fail again",
                            lambda: (lambda d: d if len(d) == 7 else None)(dlq_list(b)))
            refailed = [d for d in dl if d["dead_letter"]["replayed_from"]]
            assert sorted(d["id"] for d in refailed) == sorted(perm)
            assert {d["dead_letter"]["replayed_from"] for d in refailed} == {
                f"jobs.dlq:{coords(d)}" for d in perm_dl.values()}
            assert all(d["state"] == "refailed" and d["dead_letter"]["attempt"] == 1
                       for d in refailed)
            assert [d["state"] for d in dl if d.get("id") in perm
                    and not d["dead_letter"]["replayed_from"]] == ["replayed"] * 2

            # a plain replay: neither the replayed originals nor their refailed copies again
            p, lines = replay(b)
            assert sorted(lines) == sorted([unknown[0], flaky[0], garbage["handle"]]), lines
            main = main_topic(b)
            g = [r for r in main
                 if hdrs(r).get("kjobs-replayed-from") == f"jobs.dlq:{garbage['handle']}"]
            assert len(g) == 1 and g[0]["value_b64"] == originals["garbage"]["value_b64"]
            assert g[0]["key"] == "gkey" and hdrs(g[0])["trace"] == "abc"
            assert set(hdrs(g[0])) == {"trace", "kjobs-replayed-from", "kjobs-replayed-at"}
            f = [r for r in main if r.get("id") == flaky[0] and hdrs(r)]
            assert len(f) == 1 and "kjobs-attempt" not in hdrs(f[0]), f
            assert f[0]["payload"] == "2"

            # the replayed flaky job starts again at attempt 1: its first failure goes to the
            # ladder as attempt 1 (with the old count it would have been attempt 3 → DLQ)
            p = run(kjobs_cmd("peek", "-b", b, "--topic", "jobs.retry.1", "--from-beginning",
                              "--count", "2", "--timeout", "60"))
            ladder = [json.loads(l) for l in p.stdout.splitlines()]
            again = [r for r in ladder if "kjobs-replayed-from" in hdrs(r)]
            assert len(again) == 1 and hdrs(again[0])["kjobs-attempt"] == "1", ladder
            dl = wait_until("10 dead letters",
                            lambda: (lambda d: d if len(d) == 10 else None)(dlq_list(b)))
            fl2 = [d for d in dl if d.get("id") == flaky[0] and d["dead_letter"]["replayed_from"]]
            assert len(fl2) == 1 and fl2[0]["dead_letter"]["attempt"] == 2, fl2
            assert fl2[0]["state"] == "refailed"

            # nothing left to replay; a refailed one only with --again (and by coordinates)
            p, lines = replay(b)
            assert lines == [], lines
            p, lines = replay(b, "--id", fl2[0]["handle"])
            assert lines == []
            h = coords(fl2[0])
            p, lines = replay(b, "--id", h, "--dry-run")
            assert lines == []
            p, lines = replay(b, "--again", "--id", h)
            assert lines == [flaky[0]], lines
            assert any(hdrs(r).get("kjobs-replayed-from") == f"jobs.dlq:{h}"
                       for r in main_topic(b))
            # `show ID` of a job dead-lettered more than once shows the latest failure
            p = run(kjobs_cmd("dlq", "show", "-b", b, perm[0]))
            assert json.loads(p.stdout)["dead_letter"]["replayed_from"], p.stdout
            assert worker.stop() == 0
            assert not [l for l in worker.logs() if l["level"] == "error"], \
                [l for l in worker.logs() if l["level"] == "error"][:3]


def test_replay_marker_with_filters():
    """Dead letters written directly (kafka-python): the marker's offset and ranges after
    filtered replays, read back with kafka-python; refailed ones need --again."""
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        ids = []
        for i in range(6):  # partition 0: types A B A B A B
            job_id, value = avro_job("A" if i % 2 == 0 else "B", b"x%d" % i)
            ids.append(job_id)
            headers = [("kjobs-original-topic", b"jobs"), ("kjobs-original-partition", b"0"),
                       ("kjobs-original-offset", str(i).encode()), ("kjobs-attempt", b"3"),
                       ("kjobs-error-class", b"retryable"), ("kjobs-error", b"boom"),
                       ("kjobs-failed-at", b"1700000000000"), ("user-h", b"u%d" % i)]
            if i == 5:  # a replayed job that failed again
                headers.append(("kjobs-replayed-from", b"jobs.dlq:0:0"))
            prod.send("jobs.dlq", key=b"k%d" % i, value=value, partition=0, headers=headers)
        prod.flush()
        prod.close()
        a_ids, b_ids = ids[0::2], ids[1::2]

        p, lines = replay(b, "--type", "A")
        assert lines == a_ids, lines
        # offsets 0, 2, 4 replayed; 1 (type B, still new) holds the committed offset back
        assert marker(b, 2)[0] == (1, "kjobs-replayed:v1:2,4"), marker(b, 2)
        assert 1 not in marker(b, 2)  # untouched partition: no commit
        states = {d["id"]: d["state"] for d in dlq_list(b)}
        assert [states[i] for i in ids] == ["replayed", "new"] * 2 + ["replayed", "refailed"]
        p, lines = replay(b, "--type", "A")
        assert lines == [], lines
        # plain: the B's except the refailed one; everything handled → no ranges left
        p, lines = replay(b)
        assert lines == b_ids[:2], lines
        assert marker(b, 2)[0] == (6, "kjobs-replayed:v1:"), marker(b, 2)
        p, lines = replay(b)
        assert lines == []
        # the copies: user headers kept, kjobs-* replaced, attempt gone
        copies = main_topic(b)
        assert len(copies) == 5
        for r in copies:
            i = ids.index(r["id"])
            assert hdrs(r) == {"user-h": f"u{i}", "kjobs-replayed-from": f"jobs.dlq:0:{i}",
                                    "kjobs-replayed-at": hdrs(r)["kjobs-replayed-at"]}, r
            assert r["key"] == f"k{i}"
        # --again: the refailed one and already replayed ones, selected by id
        p, lines = replay(b, "--again", "--id", ids[5])
        assert lines == [ids[5]]
        p, lines = replay(b, "--again", "--type", "A", "--dry-run")
        assert lines and [l.split("\t")[0] for l in lines] == a_ids
        assert len(main_topic(b)) == 6
        assert marker(b, 2)[0] == (6, "kjobs-replayed:v1:")


def discard(bootstrap, *extra, check=True):
    p = run(kjobs_cmd("dlq", "discard", "-b", bootstrap, *extra), check=check)
    return p, [l for l in p.stdout.splitlines() if l.strip()]


def test_discard_marker_and_replay_guard():
    """`kjobs dlq discard`: needs --yes; records the selection in the discard marker (same form
    as the replay marker, group kjobs.dlq-discard), read back with kafka-python; discarded dead
    letters are listed as such and never replayed, not even with --again."""
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        ids = []
        for i in range(5):  # types A B A B A
            job_id, value = avro_job("A" if i % 2 == 0 else "B", b"x%d" % i)
            ids.append(job_id)
            headers = [("kjobs-original-topic", b"jobs"), ("kjobs-original-partition", b"0"),
                       ("kjobs-original-offset", str(i).encode()), ("kjobs-attempt", b"3"),
                       ("kjobs-error-class", b"permanent"), ("kjobs-error", b"boom"),
                       ("kjobs-failed-at", b"1700000000000")]
            prod.send("jobs.dlq", key=b"k%d" % i, value=value, partition=0, headers=headers)
        prod.flush()
        prod.close()
        a_ids, b_ids = ids[0::2], ids[1::2]

        p, lines = discard(b, "--type", "B", check=False)
        assert p.returncode == 2 and "--yes" in p.stderr, (p.returncode, p.stderr)
        p, lines = discard(b, "--type", "B", "--dry-run")
        assert [l.split("\t")[0] for l in lines] == b_ids, lines
        assert marker(b, 1, group="kjobs.dlq-discard") == {}  # a dry run records nothing
        p, lines = discard(b, "--type", "B", "--yes")
        assert lines == b_ids, lines
        # offsets 1 and 3 discarded; 0 (type A, not selected) holds the committed offset back
        # (the ranges keep the replay marker's form, prefix included: one parser for both)
        assert marker(b, 1, group="kjobs.dlq-discard")[0] == (0, "kjobs-replayed:v1:1,3"), \
            marker(b, 1, group="kjobs.dlq-discard")
        states = {d["id"]: d["state"] for d in dlq_list(b)}
        assert [states[i] for i in ids] == ["new", "discarded"] * 2 + ["new"], states
        assert [r["STATE"] for r in dlq_table(b)] == ["new", "discarded"] * 2 + ["new"]
        p, lines = discard(b, "--type", "B", "--yes")
        assert lines == [], lines  # already discarded: nothing selected
        # replay: the discarded ones are skipped, with --again too
        p, lines = replay(b, "--again")
        assert lines == a_ids, lines
        copies = main_topic(b)
        assert sorted(r["id"] for r in copies) == sorted(a_ids), copies
        # discarding everything moves the discard marker to the end: all discarded
        p, lines = discard(b, "--yes")
        assert lines == a_ids, lines
        assert marker(b, 1, group="kjobs.dlq-discard")[0][0] == 5
        assert {d["state"] for d in dlq_list(b)} == {"discarded"}
        p, lines = replay(b, "--again")
        assert lines == []
        assert len(main_topic(b)) == 3


def test_a_replay_fences_an_earlier_one():
    """Replays and discards of one DLQ share one transactional.id (`<group>.dlq-replay:<dlq>`):
    a replay that starts while an earlier one is still in its transaction fences it — the
    broker aborts the earlier transaction (its copies never become visible) and its commit
    fails — so two replays at once cannot both replay the same dead letters. The earlier run is
    played by confluent-kafka with that transactional.id. Real Kafka only: the embedded broker
    gives every producer a new producer id, so it fences nothing."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("real Kafka only: the embedded broker does not fence producers")
    from confluent_kafka import KafkaException, Producer
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        ids = []
        for i in range(3):
            job_id, value = avro_job("F", b"x%d" % i)
            ids.append(job_id)
            prod.send("jobs.dlq", value=value, partition=0, headers=[
                ("kjobs-original-topic", b"jobs"), ("kjobs-original-partition", b"0"),
                ("kjobs-original-offset", str(i).encode()), ("kjobs-error-class", b"permanent")])
        prod.flush()
        prod.close()
        earlier = Producer({"bootstrap.servers": b, "transactional.id": "kjobs.dlq-replay:jobs.dlq"})
        earlier.init_transactions(60)
        earlier.begin_transaction()
        stray_id, stray = avro_job("F", b"from the earlier run")
        earlier.produce("jobs", value=stray)
        earlier.flush(30)
        p, lines = replay(b)  # fences the open transaction, then replays
        assert sorted(lines) == sorted(ids), lines
        try:
            earlier.commit_transaction(30)
            raise AssertionError("the earlier transaction committed after a later replay began")
        except KafkaException as e:
            assert e.args[0].fatal() or e.args[0].txn_requires_abort(), e
        copies = main_topic(b)  # kjobs peek reads committed records only
        assert sorted(r["id"] for r in copies) == sorted(ids), [r["id"] for r in copies]
        assert {d["state"] for d in dlq_list(b)} == {"replayed"}


def test_a_truncated_dead_letter_stays_new_until_discarded():
    """A dead letter reduced without its value (kjobs-truncated) cannot be replayed: a replay
    skips it, and the marker may not pass it — it stays `new` (found by the adversarial review:
    it used to show `replayed` after any replay), until a discard records it."""
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        origin = [("kjobs-original-topic", b"jobs"), ("kjobs-original-partition", b"0"),
                  ("kjobs-original-offset", b"0"), ("kjobs-error-class", b"permanent")]
        prod.send("jobs.dlq", key=b"k", value=None, partition=0,
                  headers=origin + [("kjobs-truncated", b"headers,value")])
        job_id, value = avro_job("T", b"x")
        prod.send("jobs.dlq", value=value, partition=0, headers=origin)
        prod.flush()
        prod.close()
        p, lines = replay(b)
        assert lines == [job_id], lines
        assert [d["state"] for d in dlq_list(b)] == ["new", "replayed"]
        assert marker(b, 1)[0] == (0, "kjobs-replayed:v1:1"), marker(b, 1)
        discard(b, "--id", "0:0", "--yes")
        assert [d["state"] for d in dlq_list(b)] == ["discarded", "replayed"]
        assert len(main_topic(b)) == 1


def test_replay_failures_and_foreign_records():
    assert KCAT, "kcat is not installed (scripts/install-deps.sh installs it)"
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        # no kjobs-original-topic: listed as no-origin, never replayed
        subprocess.run([KCAT, "-P", "-b", b, "-t", "jobs.dlq", "-p", "0"], input=b"foreign\n",
                       check=True, timeout=60)
        # too large for the producer below: cannot be queued
        big = os.path.join(tempfile.mkdtemp(), "big.bin")
        with open(big, "wb") as f:
            f.write(b"a" * 5000)
        subprocess.run([KCAT, "-P", "-b", b, "-t", "jobs.dlq", "-p", "0", "-H",
                        "kjobs-original-topic=jobs", "-H", "kjobs-error-class=permanent", big],
                       check=True, timeout=60)
        rows = dlq_table(b)
        assert [(r["ID"], r["STATE"], r["ORIGINAL"]) for r in rows] == [
            ("0:0", "no-origin", "-"), ("0:1", "new", "jobs:?:?")], rows
        p, lines = replay(b, "-X", "message.max.bytes=2000", check=False)
        assert p.returncode == 1 and lines == [], p
        logs = harness.log_lines(p.stderr)
        done = [l for l in logs if l["msg"] == "replay finished"]
        assert done and done[0]["failed"] == 1 and done[0]["skipped_no_origin"] == 1, logs
        assert [l["offset"] for l in logs if "no kjobs-original-topic" in l["msg"]] == [0]
        # not recorded as replayed: a later replay still picks it up
        assert [d["state"] for d in dlq_list(b)] == ["no-origin", "new"]
        p, lines = replay(b)
        assert lines == ["0:1"], lines
        assert [d["state"] for d in dlq_list(b)] == ["no-origin", "replayed"]
        assert len(main_topic(b)) == 1


def test_repeated_binary_and_invalid_utf8_headers():
    """Issue #10 items 6 and 7, tools side: a dead letter with two `x-tag` headers, a binary
    header value and a kjobs-error cut inside a character (as kjobs before the fix wrote it).
    peek, dlq list (table and --json) and dlq show list every header in order as [name, value]
    pairs, show values that are not UTF-8 as {"base64": ...} (the exact bytes), and show the
    error text (dead_letter.error, the ERROR column) with U+FFFD instead of "-" or dropping it."""
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        job_id, value = avro_job("T", b"x")
        bad_error = "é".encode() * 511 + b"\xc3"  # 1023 bytes, the last character cut
        headers = [("x-tag", b"tag1"), ("kjobs-original-topic", b"jobs"),
                   ("kjobs-original-partition", b"0"), ("kjobs-original-offset", b"0"),
                   ("kjobs-attempt", b"1"), ("kjobs-error-class", b"permanent"),
                   ("kjobs-error", bad_error), ("kjobs-failed-at", b"1700000000000"),
                   ("x-tag", b"tag2"), ("blob", b"\x00\xff\x01")]
        prod.send("jobs.dlq", key=b"k", value=value, partition=0, headers=headers)
        prod.flush()
        prod.close()
        want = [["x-tag", "tag1"], ["kjobs-original-topic", "jobs"],
                ["kjobs-original-partition", "0"], ["kjobs-original-offset", "0"],
                ["kjobs-attempt", "1"], ["kjobs-error-class", "permanent"],
                ["kjobs-error", {"base64": base64.b64encode(bad_error).decode()}],
                ["kjobs-failed-at", "1700000000000"],
                ["x-tag", "tag2"], ["blob", {"base64": "AP8B"}]]
        p = run(kjobs_cmd("peek", "-b", b, "--topic", "jobs.dlq", "--from-beginning",
                          "--count", "1", "--timeout", "60"))
        peeked = json.loads(p.stdout)
        assert peeked["headers"] == want, peeked["headers"]
        listed = dlq_list(b)
        assert len(listed) == 1 and listed[0]["headers"] == want, listed
        assert listed[0]["dead_letter"]["error"] == "é" * 511 + "\ufffd", listed[0]["dead_letter"]
        rows = dlq_table(b)
        # the table cuts at 60 characters (not bytes): 57 of them and "..."
        assert len(rows) == 1 and rows[0]["ERROR"] == "é" * 57 + "...", rows
        p = run(kjobs_cmd("dlq", "show", "-b", b, job_id))
        shown = json.loads(p.stdout)
        assert shown["headers"] == want
        assert shown["dead_letter"]["error"] == "é" * 511 + "\ufffd"


def test_usage_and_connection_errors():
    for args, code in [((), 2), (("frob",), 2), (("show",), 2), (("list", "--dry-run"), 2),
                       (("replay", "--json"), 2), (("list", "--bogus"), 2),
                       (("show", "a", "b"), 2), (("list", "--timeout", "0"), 2)]:
        p = run(kjobs_cmd("dlq", *args), check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    p = run(kjobs_cmd("dlq", "--help"))
    assert "replay" in p.stdout and "--again" in p.stdout
    p = run(kjobs_cmd("dlq", "list", "--help"))
    assert "--dry-run" in p.stdout
    p = run(kjobs_cmd("dlq", "list", "-b", "127.0.0.1:1", "--timeout", "3"), check=False,
            timeout=60)
    assert p.returncode == 1 and p.stdout == "", p
    harness.log_lines(p.stderr)


def test_table_rows_are_terminal_safe():
    """Ids and types are producer text: a newline, ESC or BEL in them (or in an error) never
    splits a `dlq list` row or reaches the terminal as a control sequence."""
    with harness.Broker(partitions=1) as broker:
        b = broker.bootstrap
        text = (json.dumps({"type": "kjobs.fail-permanent", "id": "evil\nid\u001b[2J\rX"}) +
                "\n" + json.dumps({"type": "evil\ntype\u001b]0;t\u0007\u0085", "id": "t2"}) +
                "\n")
        run(kjobs_cmd("enqueue", "-b", b), input=text)
        with harness.LoggedWorker(b) as w:
            try:
                harness.wait_until("2 dead letters", lambda: w.count(
                    "job failed, dead-lettered") == 2)
            except AssertionError:
                raise AssertionError(open(w.log.name).read()[-3000:])
        out = run(kjobs_cmd("dlq", "list", "-b", b)).stdout
        lines = out.splitlines()
        assert len(lines) == 3, lines  # header + one line per dead letter
        assert not any(ch in out for ch in "\x1b\x07\r\x85"), repr(out)
        rows = dlq_table(b)
        assert sorted(r["ID"] for r in rows) == ["evil?id?[2J?X", "t2"], rows


if __name__ == "__main__":
    harness.main([test_dead_letters_end_to_end, test_replay_marker_with_filters,
                  test_discard_marker_and_replay_guard, test_a_replay_fences_an_earlier_one,
                  test_a_truncated_dead_letter_stays_new_until_discarded,
                  test_replay_failures_and_foreign_records,
                  test_repeated_binary_and_invalid_utf8_headers, test_usage_and_connection_errors,
                  test_table_rows_are_terminal_safe])
