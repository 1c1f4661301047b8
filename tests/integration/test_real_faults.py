"""test_real_faults.py — at-least-once under faults on a real 3-broker Apache Kafka cluster
(scripts/kafka.sh: KRaft, RF 3, min.insync.replicas 2): brokers killed, shut down, frozen and
restarted; the whole cluster down and back; retention deleting jobs that never ran; rolling
restarts of workers; a worker frozen past its session. Runs only in the real-Kafka pass
(KJOBS_TEST_KAFKA set and KAFKA_LOCAL_DIR naming the cluster scripts/kafka.sh started).

Accounting and the duplicate bound are test_fault.py's (its module docstring): enqueued,
handled, duplicated, lost, dead-lettered, and process aborts (a worker that died of a signal,
e.g. a librdkafka assertion's SIGABRT, when it was asked to stop). lost = 0 everywhere;
duplicated <= the in-flight bound at hand-overs. Run with /usr/bin/python3.

Two knobs for the longer proof runs of bench/ (CI uses the defaults):
KJOBS_TEST_GROUP_PROTOCOL=consumer runs every worker with the KIP-848 group protocol (its
timeouts are the brokers', which scripts/kafka.sh sets to a 10 s session);
KJOBS_TEST_ROLLING_ROUNDS=N makes the rolling restart N rounds instead of 10.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
from test_fault import RETRY_ENV, Enqueuer, Scenario  # noqa: E402

KAFKA_SH = os.path.join(harness.SOURCE_DIR, "scripts", "kafka.sh")
WORKER_ARGS = ("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=1000")
if os.environ.get("KJOBS_TEST_GROUP_PROTOCOL") == "consumer":
    # KIP-848 takes its timing from the broker; the workers inherit the setting
    WORKER_ARGS = ()
    os.environ["KJOBS_KAFKA_GROUP_PROTOCOL"] = "consumer"
ROLLING_ROUNDS = int(os.environ.get("KJOBS_TEST_ROLLING_ROUNDS", "10"))
PARTITIONS = 6


def kafka_sh(*args):
    p = subprocess.run(["bash", KAFKA_SH, *args], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"kafka.sh {' '.join(args)}: {p.stderr}"
    return p.stdout


def node_state(node):
    """running | paused | down, as scripts/kafka.sh sees the broker's own process."""
    for line in kafka_sh("status").splitlines():
        n, _, _, state = line.split()
        if n == str(node):
            return state
    raise AssertionError(f"no node {node}")


def fault(command, node, expect):
    """Apply a broker fault and check it took: the broker process is really down/paused."""
    kafka_sh(command, str(node))
    state = node_state(node)
    assert state == expect, f"kafka.sh {command} {node}: broker is {state}, not {expect}"


def leaders(bootstrap, topic="jobs"):
    """partition -> leader broker id, from the cluster's metadata."""
    p = subprocess.run(["kcat", "-b", bootstrap, "-L", "-J", "-t", topic], capture_output=True,
                       text=True, timeout=30)
    meta = json.loads(p.stdout)
    return {q["partition"]: q["leader"] for t in meta["topics"] for q in t["partitions"]}


def all_led(bootstrap):
    try:
        led = leaders(bootstrap)
    except (ValueError, KeyError, subprocess.TimeoutExpired):
        return False  # no metadata yet
    return len(led) == PARTITIONS and all(l >= 0 for l in led.values())


def restart_all_down():
    """Start every broker that is down, together (one alone has no controller quorum), and
    resume paused ones; wait until each serves."""
    starts = []
    for status in kafka_sh("status").splitlines():
        node, _, _, state = status.split()
        if state == "paused":
            kafka_sh("resume", node)
        elif state == "down":
            starts.append(subprocess.Popen(["bash", KAFKA_SH, "restart", node],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True))
    for p in starts:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"kafka.sh restart: {err}"


def busiest_broker(bootstrap):
    counts = {}
    for leader in leaders(bootstrap).values():
        counts[leader] = counts.get(leader, 0) + 1
    return max(counts, key=counts.get)


class RealScenario(Scenario):
    def __init__(self, name, broker):
        super().__init__(name, broker)
        self.aborts = 0

    def start_worker(self, env=None, args=WORKER_ARGS):
        return super().start_worker(env=env, args=args)

    def stop_worker(self, w):
        """SIGTERM; a worker killed by a signal instead of exiting is a process abort."""
        rc = w.stop()
        if rc < 0:
            self.aborts += 1
        return rc

    def finish(self, dead_lettered=0):
        codes = [self.stop_worker(w) for w in self.live()]
        self.tally()
        stats = self.report_and_check()
        print(f"  [{self.name}] dead-lettered={dead_lettered} process aborts={self.aborts} "
              f"exit codes at the end={codes}", flush=True)
        assert all(c == 0 for c in codes), f"workers exited {codes} on SIGTERM"
        return stats


def real_scenario(fn):
    def wrapper():
        if not harness.REAL_KAFKA or not os.environ.get("KAFKA_LOCAL_DIR"):
            raise harness.Skip("needs the real cluster of scripts/kafka.sh (KJOBS_TEST_KAFKA "
                               "and KAFKA_LOCAL_DIR; scripts/test.sh sets both)")
        with harness.Broker(partitions=PARTITIONS, env=RETRY_ENV) as broker:
            sc = RealScenario(fn.__name__.replace("test_", ""), broker)
            try:
                fn(sc, broker)
            finally:
                sc.close()
                restart_all_down()  # leave every broker serving
    wrapper.__name__ = fn.__name__
    return wrapper


def start_group(sc, n=2):
    workers = [sc.start_worker() for _ in range(n)]
    for w in workers:
        w.wait_assigned(60)
    return workers


@real_scenario
def test_leader_of_busy_partitions_killed_under_load(sc, broker):
    # kill -9 of the broker leading the most main-topic partitions while jobs stream in and
    # some fail into the ladder; acks=all with min ISR 2 keeps producing through the loss.
    start_group(sc)
    load = Enqueuer(sc, chunk=300)
    load.start()
    flaky = Enqueuer(sc, type_="kjobs.flaky", payload="1", chunk=50, chunks=10)
    flaky.start()
    sc.wait_handled(2000, 60)
    victim = busiest_broker(broker.bootstrap)
    fault("kill", victim, "down")
    before = sc.handled_count()
    sc.hold(8)
    print(f"  [{sc.name}] killed broker {victim}; handled while it was down: "
          f"{sc.handled_count() - before}", flush=True)
    kafka_sh("restart", str(victim))
    sc.wait_handled(sc.handled_count() + 1000, 60)
    load.finish()
    flaky.finish()
    sc.wait_all_handled(120)
    sc.finish()


@real_scenario
def test_broker_controlled_shutdown_and_restart(sc, broker):
    start_group(sc)
    load = Enqueuer(sc, chunk=300)
    load.start()
    sc.wait_handled(2000, 60)
    fault("shutdown", 2, "down")
    sc.hold(5)
    kafka_sh("restart", "2")
    sc.wait_handled(sc.handled_count() + 1000, 60)
    load.finish()
    sc.wait_all_handled(120)
    sc.finish()


@real_scenario
def test_broker_frozen_past_its_session(sc, broker):
    # SIGSTOP a broker for longer than broker.session.timeout.ms (9 s): the controller fences
    # it and moves its leaderships; SIGCONT brings a broker back that must catch up.
    start_group(sc)
    load = Enqueuer(sc, chunk=300)
    load.start()
    sc.wait_handled(2000, 60)
    victim = busiest_broker(broker.bootstrap)
    fault("pause", victim, "paused")
    sc.hold(14)
    kafka_sh("resume", str(victim))
    sc.wait_handled(sc.handled_count() + 1000, 90)
    load.finish()
    sc.wait_all_handled(120)
    sc.finish()


@real_scenario
def test_whole_cluster_down_20s_and_back(sc, broker):
    # Every broker dies for 20 s while workers run with a backlog; then the
    # cluster comes back on its data. Sessions expire during the outage: hand-overs without
    # a commit are possible, so duplicates within the bound.
    start_group(sc)
    sc.enqueue("kjobs.noop", 5000)
    sc.enqueue("kjobs.sleep", 500, payload="20")
    sc.wait_handled(3000, 60)
    # (SIGKILL: the last broker's controlled shutdown waits for a controller quorum that is
    # already gone, so an outage of the whole cluster is a crash of every broker)
    for node in (1, 2, 3):
        fault("kill", node, "down")
    sc.hold(20)
    restart_all_down()
    procs.wait_until(lambda: all_led(broker.bootstrap), 120, "every partition led again")
    sc.enqueue("kjobs.noop", 2000)
    sc.wait_all_handled(180)
    sc.finish()


@real_scenario
def test_retention_deletes_jobs_that_never_ran(sc, broker):
    # A worker commits, stops; more jobs arrive; the log start moves past the committed
    # offset (what retention does: here with the Admin API's DeleteRecords, so it happens now
    # and not after a segment roll). The next worker must detect the reset: log it, count
    # it, and restart at the earliest offset — the jobs that survived run, none is skipped.
    w = sc.start_worker(env={"KJOBS_HTTP_LISTEN": "127.0.0.1:0"})
    w.wait_assigned(60)
    sc.enqueue("kjobs.noop", 600)
    sc.wait_all_handled(60)
    sc.stop_worker(w)
    doomed = set(sc.enqueue("kjobs.noop", 600))
    ends = {p: e for p, e in log_ends(broker.bootstrap).items()}
    delete_to = {p: max(0, e - 20) for p, e in ends.items()}  # 20 survivors per partition
    delete_records(broker.bootstrap, "jobs", delete_to)
    w2 = sc.start_worker(env={"KJOBS_HTTP_LISTEN": "127.0.0.1:0"})
    port = w2.http_port()
    w2.wait_for(lambda l: l["msg"].startswith("offset reset:"), 60, "the offset reset to be logged")
    procs.wait_until(lambda: w2.metric_sum(port, "kjobs_offset_resets_total") >= 1, 30,
                     "kjobs_offset_resets_total to move")
    survivors = 20 * len(ends)
    procs.wait_until(lambda: sc.handled_count() >= 600 + survivors, 60, "the survivors to run")
    sc.enqueued -= doomed  # deleted before they ran: the loss the reset reports
    sc.enqueued |= {i for i in doomed if sc.done[i]}
    resets = sum(1 for l in w2.lines if l["msg"].startswith("offset reset:"))
    assert 1 <= resets <= PARTITIONS, f"{resets} offset resets logged for {PARTITIONS} partitions"
    print(f"  [{sc.name}] offset resets logged: {resets}; jobs deleted by 'retention' "
          f"before they ran: {len(doomed) - sum(1 for i in doomed if sc.done[i])}", flush=True)
    sc.finish()


@real_scenario
def test_rolling_restart_of_three_workers_10_rounds(sc, broker):
    # A rolling deploy, ten times over: start a new worker, wait until it serves (/readyz
    # 200), SIGTERM the oldest; jobs stream in all along. Every SIGTERM must exit 0.
    env = {"KJOBS_HTTP_LISTEN": "127.0.0.1:0"}
    group = [sc.start_worker(env=env) for _ in range(3)]
    for w in group:
        w.wait_assigned(60)
    load = Enqueuer(sc, chunk=300)
    load.start()
    sc.wait_handled(1000, 60)
    codes = []
    for _ in range(ROLLING_ROUNDS):
        new = sc.start_worker(env=env)
        port = new.http_port()
        procs.wait_until(lambda: harness.readyz(port) == 200, 90, "the new worker ready")
        old = group.pop(0)
        codes.append(sc.stop_worker(old))
        group.append(new)
        sc.wait_handled(sc.handled_count() + 300, 60)
    load.finish()
    sc.wait_all_handled(120)
    print(f"  [{sc.name}] SIGTERM exit codes over {ROLLING_ROUNDS} rounds: {codes}", flush=True)
    sc.finish()
    assert all(c == 0 for c in codes), f"rolling restarts ended with {codes}"


@real_scenario
def test_worker_frozen_past_session_timeout(sc, broker):
    # One of two workers is frozen (SIGSTOP) past session.timeout.ms: the group gives its
    # partitions to the other. Resumed, it must not run or commit jobs of partitions it lost.
    a, b = start_group(sc)
    load = Enqueuer(sc, chunk=300)
    load.start()
    sc.wait_handled(2000, 60)
    a.proc.send_signal(signal.SIGSTOP)
    frozen_at = int(time.time() * 1000)
    procs.wait_until(lambda: sc.owned_by(b) >= {("jobs", p) for p in range(PARTITIONS)}, 60,
                     "the other worker to own every main partition")
    a.proc.send_signal(signal.SIGCONT)
    resumed_at = int(time.time() * 1000)
    sc.wait_handled(sc.handled_count() + 1000, 60)
    load.finish()
    sc.wait_all_handled(120)
    a.poll_lines()
    stale = [l for l in a.lines if l["msg"] == "job done"
             and procs.log_ts_ms(l) >= frozen_at and l["topic"] == "jobs"
             and not owned_at(a, (l["topic"], l["partition"]), procs.log_ts_ms(l))]
    print(f"  [{sc.name}] frozen for {resumed_at - frozen_at} ms; jobs the frozen worker ran "
          f"on partitions it no longer owned: {len(stale)}", flush=True)
    sc.finish()
    assert not stale, f"ran jobs of lost partitions after resuming: {stale[:3]}"


def owned_at(w, tp, ts):
    """Did w's log say it owned tp at ts (last assign/revoke/lost event before ts)?"""
    state = False
    for line in w.lines:
        if procs.log_ts_ms(line) > ts:
            break
        if (line.get("topic"), line.get("partition")) == tp:
            if line["msg"] == "partition assigned":
                state = True
            elif line["msg"] in ("partition revoked", "partition lost"):
                state = False
    return state


def log_ends(bootstrap):
    p = harness.run(harness.kjobs_cmd("lag", "-b", bootstrap, "--json"), env=RETRY_ENV)
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    return {r["partition"]: r["log_end_offset"] for r in rows if r["topic"] == "jobs"}


def delete_records(bootstrap, topic, offsets):
    """Advance each partition's log start to offsets[p] (Kafka's kafka-delete-records tool)."""
    spec = {"version": 1, "partitions": [{"topic": topic, "partition": p, "offset": o}
                                         for p, o in offsets.items()]}
    path = harness.write_config(json.dumps(spec))
    libs = kafka_libs()
    p = subprocess.run(["java", "-cp", os.path.join(libs, "*"),
                        "org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server",
                        bootstrap, "--offset-json-file", path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"DeleteRecords failed: {p.stdout}{p.stderr}"


def kafka_libs():
    deps = os.path.join(harness.SOURCE_DIR, ".deps")
    found = sorted(d for d in os.listdir(deps) if d.startswith("kafka-"))
    assert found, "no .deps/kafka-* (scripts/kafka.sh fetch)"
    return os.path.join(deps, found[-1], "libs")


if __name__ == "__main__":
    harness.main([test_leader_of_busy_partitions_killed_under_load,
                  test_broker_controlled_shutdown_and_restart,
                  test_broker_frozen_past_its_session,
                  test_whole_cluster_down_20s_and_back,
                  test_retention_deletes_jobs_that_never_ran,
                  test_rolling_restart_of_three_workers_10_rounds,
                  test_worker_frozen_past_session_timeout])
