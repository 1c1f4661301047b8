"""test_group_control.py — the operator's controls (processor/group_control.h, docs/operations.md
"Operator controls") against real workers: `kjobs pause`, `kjobs resume`, `kjobs pauses` and
`kjobs resume --breaker`, through the control topic <main>.control.

Two workers share the group while jobs keep arriving on four partitions. Pausing one partition
stops its committed offset while the others move on and jobs pile up behind it; both workers
restarted, it is still paused (a new worker reads the control topic before it joins); resumed, it
drains. Pausing the whole topic stops every partition of it; resumed, they drain. A worker's open
circuit breaker closes on `kjobs resume --breaker`; a resume written while no breaker was open
does not close a later one; a paused partition stays held through breaker trips and resumes.
Malformed control records are ignored; without the control topic (real Kafka only) a worker runs
and says it obeys no controls. Everything is awaited as an
event (offsets moving, log lines, metrics), never slept for.

Runs on the embedded broker, and on a real Kafka with KJOBS_TEST_KAFKA (real_kafka.py creates the
control topic through `kjobs topics --create`). Run with /usr/bin/python3.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import LoggedWorker, kjobs_cmd, run, wait_until  # noqa: E402

FAST_GROUP = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
PARTITIONS = 4


class Worker(LoggedWorker):
    """A `kjobs run` with its JSON log in a file and its /metrics read over HTTP."""

    def __init__(self, bootstrap, env=None):
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            super().__init__(bootstrap, *FAST_GROUP)
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v
        line = wait_until("the worker's http listener", lambda: next(
            (l for l in self.logs() if l["msg"] == "http listening"), None), timeout=60)
        self.port = line["port"]

    def metric(self, name, **labels):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            m = re.match(r'^(\w+)(\{[^}]*\})? (\S+)$', line)
            if not m or m.group(1) != name:
                continue
            lbl = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(lbl.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def lines(self, msg):
        return [l for l in self.logs() if l["msg"] == msg]


class Feeder(threading.Thread):
    """A steady stream of keyless kjobs.noop jobs (spread over the partitions) through one
    long-lived `kjobs enqueue` reading JSON lines from its stdin."""

    def __init__(self, bootstrap, per_tick=8, tick_s=0.05):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen(kjobs_cmd("enqueue", "-b", bootstrap),
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, text=True)
        self.per_tick, self.tick_s = per_tick, tick_s
        self.stop_flag = threading.Event()
        self.start()

    def run(self):
        line = json.dumps({"type": "kjobs.noop"}) + "\n"
        while not self.stop_flag.is_set():
            self.proc.stdin.write(line * self.per_tick)
            self.proc.stdin.flush()
            self.stop_flag.wait(self.tick_s)  # the stream's pace, not a synchronisation

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=10)
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, "kjobs enqueue failed"


def offsets(bootstrap, topic="jobs", partitions=PARTITIONS):
    """{partition: (committed or -1, log end)} of the group on `topic`, from `kjobs lag --json`;
    None unless every one of its `partitions` is listed."""
    p = run(kjobs_cmd("lag", "-b", bootstrap, "--json"), check=False)
    out = {}
    for line in p.stdout.splitlines():
        r = json.loads(line)
        if r["topic"] == topic:
            c = r["current_offset"]
            out[r["partition"]] = (c if c is not None else -1, r["log_end_offset"])
    return out if len(out) == partitions else None


def committed(bootstrap):
    o = offsets(bootstrap)
    return {p: c for p, (c, _) in o.items()} if o else None


def wait_moved(bootstrap, base, parts, by, what, timeout=120):
    """Until every partition in `parts` committed at least `by` past `base`; returns offsets."""
    def moved():
        o = offsets(bootstrap)
        if o and all(o[p][0] >= base[p] + by for p in parts):
            return o
        return None
    return wait_until(what, moved, timeout=timeout)


def paused_gauge(workers):
    return sum(w.metric("kjobs_partitions_paused_by_operator") for w in workers)


def kjobs_ok(*args):
    return run(kjobs_cmd(*args)).stdout


def test_pause_partition_survives_restarts_then_drains():
    with harness.Broker(partitions=PARTITIONS) as broker:
        b = broker.bootstrap
        workers = [Worker(b), Worker(b)]
        feeder = Feeder(b)
        try:
            start = wait_until("committed offsets on every partition",
                               lambda: (lambda c: c if c and all(v >= 0 for v in c.values())
                                        else None)(committed(b)), timeout=120)
            wait_moved(b, start, range(PARTITIONS), 20, "every partition progressing")
            out = kjobs_ok("pause", "-b", b, "jobs:2", "--reason", "downstream <b>down</b>")
            assert out.strip() == "paused jobs:2", out
            wait_until("one worker holds jobs:2", lambda: any(
                l.get("topic") == "jobs" and l.get("partition") == 2
                for w in workers for l in w.lines("partition paused by operator")))
            wait_until("the gauge says one partition", lambda: paused_gauge(workers) == 1)
            others = [p for p in range(PARTITIONS) if p != 2]
            # the batches running when the pause arrived finish and commit: once the others
            # moved on, jobs:2's committed offset is where it stays
            o = wait_moved(b, committed(b), others, 20, "the others moving on")
            held = o[2][0]
            o = wait_moved(b, {p: c for p, (c, _) in o.items()}, others, 40,
                           "the others moving on again")
            assert o[2][0] == held, f"jobs:2 moved while paused: {held} -> {o[2][0]}"
            assert o[2][1] >= held + 20, f"no jobs wait on jobs:2: {o[2]}"

            listed = [json.loads(l) for l in kjobs_ok("pauses", "-b", b, "--json").splitlines()]
            assert len(listed) == 1 and listed[0]["topic"] == "jobs" and \
                listed[0]["partition"] == 2 and listed[0]["reason"] == "downstream <b>down</b>", listed
            table = kjobs_ok("pauses", "-b", b)
            assert re.search(r"^jobs\s+2\s+\d{4}-\d\d-\d\dT", table, re.M), table

            # both workers restart: the new ones read the control topic before they join
            for w in workers:
                assert w.stop() == 0, w.logs()[-5:]
            workers = [Worker(b), Worker(b)]
            for w in workers:
                wait_until("the controls read", lambda w=w: any(
                    l.get("pauses") == 1 for l in w.lines("operator controls read")))
            wait_until("jobs:2 held by a new worker", lambda: paused_gauge(workers) == 1,
                       timeout=120)
            o = wait_moved(b, committed(b), others, 40, "the others moving after the restart")
            assert o[2][0] == held, f"jobs:2 ran after the restart: {held} -> {o[2][0]}"

            # resume: it drains what piled up, and follows the stream again
            end = offsets(b)[2][1]
            assert kjobs_ok("resume", "-b", b, "jobs:2").strip() == "resumed jobs:2"
            wait_until("jobs:2 drained", lambda: committed(b)[2] >= end, timeout=120)
            wait_until("the gauge back to 0", lambda: paused_gauge(workers) == 0)
            assert kjobs_ok("pauses", "-b", b, "--json").strip() == ""
            assert any(w.lines("partition resumed by operator") for w in workers)
        finally:
            feeder.stop()
            codes = [w.stop() for w in workers]
        assert codes == [0, 0], codes
        # no partition was reported stuck while paused
        for w in workers:
            assert not w.lines("partition not progressing"), w.lines("partition not progressing")


def test_pause_whole_topic_then_resume():
    with harness.Broker(partitions=PARTITIONS) as broker:
        b = broker.bootstrap
        workers = [Worker(b), Worker(b)]
        feeder = Feeder(b)
        try:
            start = wait_until("committed offsets on every partition",
                               lambda: (lambda c: c if c and all(v >= 0 for v in c.values())
                                        else None)(committed(b)), timeout=120)
            wait_moved(b, start, range(PARTITIONS), 20, "every partition progressing")
            assert kjobs_ok("pause", "-b", b, "jobs").strip() == "paused jobs"
            wait_until("every main partition held", lambda: paused_gauge(workers) == PARTITIONS)
            # a partition resumed on its own stays paused while its topic is
            p = run(kjobs_cmd("resume", "-b", b, "jobs:1"))
            assert "whole topic jobs is paused" in p.stderr, p.stderr

            def log_ends():
                o = offsets(b)
                return sum(e for _, e in o.values()) if o else None
            # jobs keep arriving; what ran when the pause came has committed after 40 more
            first = log_ends()
            wait_until("40 more jobs written", lambda: log_ends() >= first + 40)
            held = committed(b)
            second = log_ends()
            wait_until("100 more jobs written", lambda: log_ends() >= second + 100)
            assert committed(b) == held, f"committed moved while paused: {held} -> {committed(b)}"
            ends = {p: e for p, (_, e) in offsets(b).items()}
            assert kjobs_ok("resume", "-b", b, "jobs").strip() == "resumed jobs"
            wait_until("every partition drained", lambda: all(
                c >= ends[p] for p, c in committed(b).items()), timeout=120)
            assert paused_gauge(workers) == 0
        finally:
            feeder.stop()
            codes = [w.stop() for w in workers]
        assert codes == [0, 0], codes


def test_breaker_resume_from_the_cli():
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_DLQ_BREAKER_CONSECUTIVE": "50", "KJOBS_DLQ_BREAKER_WINDOW": "0",
                       "KJOBS_BATCH_MAX_JOBS": "10", "KJOBS_DLQ_BREAKER_COOLDOWN": "0"})
        try:
            wait_until("the worker in its group", lambda: w.lines("partition assigned"))
            # a resume written while no breaker is open is read and ignored ...
            assert kjobs_ok("resume", "-b", b, "--breaker").strip() == "breaker resume requested"
            wait_until("the early resume ignored", lambda: w.lines(
                "control: breaker resume ignored (the circuit breaker is not open)"))
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.fail-permanent", "--count", "300"))
            wait_until("breaker open", lambda: w.metric("kjobs_circuit_breaker_open") == 1)
            dead = lambda: w.metric("kjobs_dlq_routed_total", **{"class": "permanent"})  # noqa
            wait_until("in-flight work settled", lambda: w.metric("kjobs_in_flight_jobs") == 0
                       and dead() == w.metric("kjobs_jobs_total", outcome="dead_lettered"))
            # ... and does not close the breaker that opened after it (no cool-down here)
            settled = dead()
            assert w.metric("kjobs_circuit_breaker_open") == 1 and settled < 300, settled
            assert not w.lines("circuit breaker closed: consumption resumed")
            for _ in range(20):  # each resume lets it run until it trips again, or to the end
                if dead() >= 300:
                    break
                before = dead()
                kjobs_ok("resume", "-b", b, "--breaker")
                wait_until("the breaker closed by the operator and jobs moving", lambda: dead() >= 300
                           or (dead() > before and any(l.get("by") == "operator" for l in w.lines(
                               "circuit breaker closed: consumption resumed"))), timeout=120)
            wait_until("every job dead-lettered", lambda: dead() == 300, timeout=120)
            assert w.lines("control: circuit breaker resume requested by operator")
        finally:
            rc = w.stop()
        assert rc == 0, w.logs()[-5:]
        ids = [r["id"] for r in harness.peek(b, "jobs.dlq", 300)]
        assert len(set(ids)) == 300, f"{300 - len(set(ids))} dead-lettered twice"


def test_a_paused_partition_stays_held_through_breaker_trips():
    """The breaker pauses, rewinds and resumes every partition — but one the operator paused stays
    held: jobs:1's committed offset and the gauge do not move through trips and operator resumes
    of the breaker while jobs:0's failures are dead-lettered; resumed, its jobs run."""
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        w = Worker(b, {"KJOBS_DLQ_BREAKER_CONSECUTIVE": "20", "KJOBS_DLQ_BREAKER_WINDOW": "0",
                       "KJOBS_BATCH_MAX_JOBS": "5", "KJOBS_DLQ_BREAKER_COOLDOWN": "0"})
        try:
            wait_until("the worker in its group", lambda: len(w.lines("partition assigned")) >= 2)
            kjobs_ok("pause", "-b", b, "jobs:1")
            wait_until("jobs:1 held", lambda: w.metric("kjobs_partitions_paused_by_operator") == 1)
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.fail-permanent", "--count", "120"))
            o = wait_until("jobs waiting on both partitions", lambda: (lambda o: o if o and all(
                e > 0 for _, e in o.values()) else None)(offsets(b, partitions=2)))
            start1 = o[1][0]
            for _ in range(30):  # jobs:0's failures trip the breaker; resume it until done
                o = offsets(b, partitions=2)
                if o[0][0] == o[0][1]:
                    break
                if w.metric("kjobs_circuit_breaker_open") == 1:
                    kjobs_ok("resume", "-b", b, "--breaker")
                    wait_until("the breaker closed", lambda: w.metric(
                        "kjobs_circuit_breaker_open") == 0 or offsets(b, partitions=2)[0][0] > o[0][0])
                else:
                    wait_until("jobs:0 moving or the breaker open", lambda: w.metric(
                        "kjobs_circuit_breaker_open") == 1 or offsets(b, partitions=2)[0][0] > o[0][0])
            o = offsets(b, partitions=2)
            assert o[0][0] == o[0][1], f"jobs:0 not done: {o}"
            assert any(l.get("by") == "operator" for l in w.lines(
                "circuit breaker closed: consumption resumed")), "the breaker never closed"
            assert o[1][0] == start1, f"jobs:1 ran while paused: {start1} -> {o[1][0]}"
            assert w.metric("kjobs_partitions_paused_by_operator") == 1
            kjobs_ok("resume", "-b", b, "jobs:1")
            if w.metric("kjobs_circuit_breaker_open") == 1:
                kjobs_ok("resume", "-b", b, "--breaker")
            wait_until("jobs:1 running again", lambda: offsets(b, partitions=2)[1][0] > start1)
        finally:
            assert w.stop() == 0, w.logs()[-5:]


def test_malformed_control_records_are_ignored():
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        forged = [(b"pause/jobs/1", b"not json"),
                  (b"pause/jobs/1", json.dumps({"v": 1, "paused": "yes", "at": 1}).encode()),
                  (b"pause/../0", json.dumps({"v": 1, "paused": True, "at": 1}).encode()),
                  (b"pause/jobs/01", json.dumps({"v": 1, "paused": True, "at": 1}).encode()),
                  (b"pause/jobs/0", json.dumps({"v": 1, "paused": True, "at": 1,
                                                 "pad": "x" * 5000}).encode()),
                  (b"other/key", b"{}"),
                  (b"pause/jobs/0", json.dumps({"v": 1, "paused": True, "at": 1,
                                                 "by": "forger", "extra": [1]}).encode())]
        for key, value in forged:
            prod.send("jobs.control", key=key, value=value)
        prod.flush(30)
        prod.close()
        listed = [json.loads(l) for l in kjobs_ok("pauses", "-b", b, "--json").splitlines()]
        # only the last record is a valid pause (unknown fields are ignored)
        assert [(p["topic"], p["partition"], p["by"]) for p in listed] == [("jobs", 0, "forger")], listed
        w = Worker(b)
        try:
            wait_until("jobs:0 held", lambda: w.metric("kjobs_partitions_paused_by_operator") == 1)
            assert len(w.lines("control record ignored: not a valid control, or a pause past the "
                               "most kept (logged once; the previous state of its key stays)")) == 1
            # resuming the topic leaves a partition paused by its own key paused, and says so
            kjobs_ok("pause", "-b", b, "jobs")
            p = run(kjobs_cmd("resume", "-b", b, "jobs"))
            assert "partition jobs:0 has a pause of its own" in p.stderr, p.stderr
            assert kjobs_ok("resume", "-b", b, "jobs:0")
            wait_until("released", lambda: w.metric("kjobs_partitions_paused_by_operator") == 0)
        finally:
            assert w.stop() == 0
        p = run(kjobs_cmd("pause", "-b", b, "jobs:9"), check=False)
        assert p.returncode == 2 and "no partition 9" in p.stderr, (p.returncode, p.stderr)
        p = run(kjobs_cmd("pause", "-b", b, "jobs.dlq"), check=False)
        assert p.returncode == 2, (p.returncode, p.stderr)
        p = run(kjobs_cmd("resume", "-b", b), check=False)
        assert p.returncode == 2, (p.returncode, p.stderr)
        p = run(kjobs_cmd("resume", "-b", b, "jobs:9"), check=False)  # no such partition
        assert p.returncode == 2 and "no partition 9" in p.stderr, (p.returncode, p.stderr)


def test_a_pause_past_the_most_kept_is_refused():
    """A worker keeps at most 4,096 pauses and ignores one more: `kjobs pause` then refuses to
    write one (exit 2) instead of reporting a pause nothing obeys (adversarial review)."""
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        prod = harness.python_producer(b)
        for i in range(4096):  # any client may write pauses, of topics that need not exist
            prod.send("jobs.control", key=b"pause/zz%d" % i,
                      value=json.dumps({"v": 1, "paused": True, "at": 1, "by": "t"}).encode())
        prod.flush(60)
        prod.close()
        p = run(kjobs_cmd("pause", "-b", b, "jobs"), check=False)
        assert p.returncode == 2 and "4096 pauses are in force" in p.stderr, (p.returncode,
                                                                              p.stderr)
        kjobs_ok("resume", "-b", b, "zz0")  # room again (a resume needs no room) ...
        kjobs_ok("pause", "-b", b, "jobs")  # ... so this one is kept
        listed = [json.loads(l) for l in kjobs_ok("pauses", "-b", b, "--json").splitlines()]
        assert ("jobs", None) in [(x["topic"], x["partition"]) for x in listed], len(listed)


def test_without_the_control_topic():
    """A cluster set up before the control topic existed: the worker says it obeys no controls
    and runs its jobs; `kjobs pause` and `kjobs pauses` fail (exit 1) naming `kjobs topics
    --create`, which then creates the topic (and only that one)."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("the embedded broker always has the control topic (kjobs broker "
                           "creates it) and cannot delete a topic")
    from kafka import KafkaAdminClient
    with harness.Broker(partitions=2) as broker:
        b = broker.bootstrap
        admin = KafkaAdminClient(bootstrap_servers=b.split(","), request_timeout_ms=30000)
        try:
            admin.delete_topics(["jobs.control"], timeout_ms=30000)
            wait_until("the control topic gone", lambda: "jobs.control" not in admin.list_topics())
        finally:
            admin.close()
        w = Worker(b)
        try:
            wait_until("the warning", lambda: w.lines(
                "control topic missing: operator pauses and breaker resumes are not obeyed by "
                "this worker (create it with `kjobs topics --create`)"))
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.noop", "--count", "20"))
            wait_until("the jobs run", lambda: w.metric("kjobs_jobs_total", outcome="ok") == 20)
            p = run(kjobs_cmd("pause", "-b", b, "jobs:0"), check=False)
            assert p.returncode == 1 and "kjobs topics --create" in p.stderr, (p.returncode, p.stderr)
            p = run(kjobs_cmd("pauses", "-b", b), check=False)
            assert p.returncode == 1 and "kjobs topics --create" in p.stderr, (p.returncode, p.stderr)
        finally:
            assert w.stop() == 0
        rf = str(min(3, harness.real_kafka.broker_count()))
        p = run(kjobs_cmd("topics", "-b", b, "--create"),
                env={"KJOBS_TOPICS_REPLICATION_FACTOR": rf})
        assert "created jobs.control" in p.stdout, p.stdout
        assert kjobs_ok("pauses", "-b", b, "--json").strip() == ""


if __name__ == "__main__":
    harness.main([test_pause_partition_survives_restarts_then_drains,
                  test_pause_whole_topic_then_resume,
                  test_breaker_resume_from_the_cli,
                  test_a_paused_partition_stays_held_through_breaker_trips,
                  test_malformed_control_records_are_ignored,
                  test_a_pause_past_the_most_kept_is_refused,
                  test_without_the_control_topic])
