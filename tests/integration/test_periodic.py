"""test_periodic.py — periodic (cron) jobs, schedule.periodic (docs/scheduling.md, "Periodic
jobs"), end to end: a real `kjobs broker` (or real Kafka with KJOBS_TEST_KAFKA: the state topic
is created by `kjobs topics --create` from the same config) and real `kjobs run` workers whose
jobs run in an exec handler (exec_recorder.py) that records each one. Run with /usr/bin/python3.

What is checked (ticks every 2 s; a job's id is "<name>@<tick epoch ms>"):
- two workers in one group: the main topic holds exactly one job per tick — ids unique,
  consecutive ticks with no gap — across the rebalance that may move partition 0 when the second
  worker joins; every enqueued job ran in the handler. The owner's /metrics count each enqueued tick
  (kjobs_periodic_enqueued_total) and show the next one (kjobs_periodic_next_tick_seconds).
- SIGKILL of the owner: the survivor takes partition 0, reads the state topic and enqueues every
  tick since the last recorded one (catch_up covers the takeover), so there is no gap; a
  duplicate may only be the one tick after the killed owner's last logged tick (the crash window
  between the job's and the state record's acknowledgement), with the same id.
- restart after downtime with catch_up 0: `skip` enqueues none of the missed ticks, `run_once`
  exactly one, for the latest tick before the restart; then both go on with the next tick.
- jitter: a jittered tick's job carries kjobs-run-at (not the deprecated kjobs-deliver-at) =
  the logged run_at, and the handler starts it at or after that time, from a ladder topic.
- `kjobs run --check-config` exits 2 naming FILE:LINE and schedule.periodic[i].field for a bad
  cron, a bad zone and a duplicate name, and shows the entries of a good config.
Every wait is on an event (a log line, records, a process exit) with a deadline; the one
deliberate wait is the downtime itself, measured on the clock.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fault"))
import harness  # noqa: E402
import procs  # noqa: E402
from procs import Worker, peek_all  # noqa: E402

RECORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exec_recorder.py")
TAKEOVER_S = 150  # real Kafka: the killed member's session (45 s) must expire first


class Broker(harness.Broker):
    """harness.Broker with the config (so the broker, or `kjobs topics --create` on real Kafka,
    makes the state topic) and its log in a file."""

    def __init__(self, config, partitions=4):
        self.log_file = tempfile.NamedTemporaryFile("w+b", prefix="kjobs-broker-", suffix=".log",
                                                    delete=False)
        if harness.REAL_KAFKA:
            harness.Broker.__init__(self, partitions, config=config)
            return
        self.proc = subprocess.Popen(
            harness.kjobs_cmd("broker", "--partitions", str(partitions), "-c", config),
            stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            raise RuntimeError("kjobs broker printed no bootstrap address")

    def stop(self):
        try:
            super().stop()
        finally:
            self.log_file.close()
            os.unlink(self.log_file.name)


def config(entries):
    """A config file with these schedule.periodic entries (dicts of strings)."""
    body = ",\n".join("    { " + " ".join(f'{k} = "{v}";' for k, v in e.items()) + " }"
                      for e in entries)
    return harness.write_config("schedule = {\n  periodic = (\n" + body + "\n  );\n};\n")


def tick_entry(name, **extra):
    e = {"name": name, "cron": "*/2 * * * * *", "type": "periodic.tick", "catch_up": "5m"}
    e.update(extra)
    return e


def start_worker(bootstrap, cfg, record_file, name, http=False, extra_env=None):
    env = {"KJOBS_HANDLERS_EXEC": f"/usr/bin/python3 -u {RECORDER} {record_file}",
           "KJOBS_KAFKA_CLIENT_ID": f"periodic-{name}", "KJOBS_LOG_LEVEL": "info"}
    env.update(extra_env or {})
    if http:
        env["KJOBS_HTTP_LISTEN"] = "127.0.0.1:0"
    return Worker(bootstrap, env=env, args=("-c", cfg), name=name)


def metric(port, family, **labels):
    """One sample of /metrics (None when the series is absent)."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = family + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def enqueued(worker, name=None):
    return [l for l in worker.msgs("periodic job enqueued") if name is None or l["name"] == name]


def main_topic_ticks(bootstrap, name):
    """The ticks of entry `name` on the main topic, in offset order per partition, as a list
    (duplicates kept), sorted."""
    ticks = []
    for rec in peek_all(bootstrap, "jobs"):
        job_id = rec.get("id") or rec.get("job", {}).get("id")
        if job_id and job_id.startswith(name + "@"):
            ticks.append(int(job_id.split("@", 1)[1]))
    return sorted(ticks)


def recorded_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l)["id"] for l in f if l.strip()]


def assert_consecutive(ticks, step_ms=2000, what="ticks"):
    gaps = [(a, b) for a, b in zip(ticks, ticks[1:]) if b - a != step_ms]
    assert not gaps, f"{what}: not consecutive every {step_ms} ms: {gaps[:5]} in {ticks}"


def test_one_job_per_tick_with_two_workers():
    cfg = config([tick_entry("every2s")])
    record_file = tempfile.mktemp(prefix="kjobs-periodic-", suffix=".jsonl")
    broker = Broker(cfg)
    a = b = None
    try:
        a = start_worker(broker.bootstrap, cfg, record_file, "a", http=True)
        a.wait_for(lambda l: l["msg"] == "periodic scheduler started", 60, "a's scheduler")
        a.wait_count("periodic job enqueued", 2, 30)
        # the owner's metrics: one count per logged tick, and the next tick (a 2 s boundary, ahead)
        port = a.http_port()
        before = len(enqueued(a))
        count = metric(port, "kjobs_periodic_enqueued_total", name="every2s")
        next_tick = metric(port, "kjobs_periodic_next_tick_seconds", name="every2s")
        after = len(enqueued(a))
        assert count is not None and before - 1 <= count <= after, (before, count, after)
        assert next_tick is not None and int(next_tick * 1000) % 2000 == 0, next_tick
        assert time.time() - 1 <= next_tick <= time.time() + 4, (next_tick, time.time())
        b = start_worker(broker.bootstrap, cfg, record_file, "b")
        b.wait_assigned(timeout=120)
        # ticks go on after the rebalance, on whichever member owns partition 0 now
        total = lambda: len(enqueued(a)) + len(enqueued(b))  # noqa: E731
        target = total() + 5
        procs.wait_until(lambda: total() >= target, 60, "5 more ticks after the join")
        owners = [w.name for w in (a, b) if w.msgs("periodic scheduler started")]
        logged = sorted(l["tick"] for w in (a, b) for l in enqueued(w))
        procs.wait_until(lambda: set(f"every2s@{t}" for t in logged) <= set(recorded_ids(record_file)),
                         60, "the handler to run every enqueued job")
    finally:
        for w in (a, b):
            if w:
                assert w.stop() == 0, f"{w.name} did not stop cleanly: {w.tail()}"
    try:
        ticks = main_topic_ticks(broker.bootstrap, "every2s")
        assert len(ticks) >= 7, ticks
        assert len(ticks) == len(set(ticks)), f"duplicate ticks on the main topic: {ticks}"
        assert_consecutive(ticks)
        assert set(logged) <= set(ticks)
        ran = recorded_ids(record_file)
        # every logged tick's job ran; a re-run of the same job is the worker's at-least-once
        # delivery across a rebalance (a commit refused mid-rebalance, seen with librdkafka
        # 2.0.2), not a second enqueue: the main topic above holds each tick once
        assert {f"every2s@{t}" for t in logged} <= set(ran) <= {f"every2s@{t}" for t in ticks}, \
            (sorted(set(ran)), ticks)
        # the exec handler sees the tick as created_at (docs/scheduling.md: dedupe by id or T)
        with open(record_file) as f:
            for job in (json.loads(l) for l in f if l.strip()):
                assert job["created_at"] == int(job["id"].split("@", 1)[1]), job
        print(f"   {len(ticks)} ticks, consecutive, unique; scheduler ran on {owners}; "
              f"handler runs {len(ran)} ({len(ran) - len(set(ran))} re-runs)", flush=True)
    finally:
        broker.stop()


def test_owner_killed_survivor_continues():
    cfg = config([tick_entry("every2s")])
    record_file = tempfile.mktemp(prefix="kjobs-periodic-", suffix=".jsonl")
    broker = Broker(cfg)
    a = b = None
    try:
        a = start_worker(broker.bootstrap, cfg, record_file, "a")
        b = start_worker(broker.bootstrap, cfg, record_file, "b")
        for w in (a, b):
            w.wait_assigned(timeout=120)
        # the owner: the one whose scheduler runs once the group is settled and ticks flow
        procs.wait_until(lambda: len(enqueued(a)) + len(enqueued(b)) >= 3, 90, "3 ticks")
        owner, survivor = (a, b) if enqueued(a) and (not enqueued(b) or
                                                    enqueued(a)[-1]["tick"] > enqueued(b)[-1]["tick"]) else (b, a)
        owner.wait_count("periodic job enqueued", len(enqueued(owner)) + 2, 30,
                         "2 more ticks on the owner")
        owner.kill9()
        killed_at = int(time.time() * 1000)
        last_logged = max(l["tick"] for l in enqueued(owner))
        before = len(survivor.msgs("periodic scheduler started"))
        survivor.wait_for(lambda l: len(survivor.msgs("periodic scheduler started")) > before,
                          TAKEOVER_S, "the survivor to take over the schedule")
        # caught up and then 3 regular ticks after the kill
        procs.wait_until(lambda: any(l["tick"] > killed_at + 6000 for l in enqueued(survivor)),
                         60, "regular ticks on the survivor")
    finally:
        for w in (a, b):
            if w and w.proc.poll() is None:
                assert w.stop() == 0, f"{w.name} did not stop cleanly: {w.tail()}"
    try:
        ticks = main_topic_ticks(broker.bootstrap, "every2s")
        dups = sorted({t for t in ticks if ticks.count(t) > 1})
        # the documented crash window: only the tick after the owner's last logged one
        assert set(dups) <= {last_logged + 2000}, \
            f"duplicates {dups} outside the crash window (last logged {last_logged})"
        assert_consecutive(sorted(set(ticks)), what="ticks across the kill")
        late = [l for l in enqueued(survivor) if l["why"] == "late"]
        print(f"   {len(set(ticks))} ticks, no gap; survivor caught up {len(late)} late ticks; "
              f"duplicates {dups}", flush=True)
    finally:
        broker.stop()



def test_frozen_owner_does_not_repeat_the_new_owners_ticks():
    """The owner is frozen (SIGSTOP) past its session: the other member takes the schedule
    over; when the frozen one wakes it must not enqueue the ticks the new owner already did,
    nor write its older tick over the newer state (which made the next owner repeat them)."""
    import signal
    cfg = config([tick_entry("every2s")])
    record_file = tempfile.mktemp(prefix="kjobs-periodic-", suffix=".jsonl")
    broker = Broker(cfg)
    a = b = None
    props = {"KJOBS_KAFKA_PROPERTIES": '["session.timeout.ms=6000", "heartbeat.interval.ms=500"]'}
    try:
        a = start_worker(broker.bootstrap, cfg, record_file, "a", extra_env=props)
        b = start_worker(broker.bootstrap, cfg, record_file, "b", extra_env=props)
        for w in (a, b):
            w.wait_assigned(timeout=120)
        procs.wait_until(lambda: len(enqueued(a)) + len(enqueued(b)) >= 3, 90, "3 ticks")
        owner, other = (a, b) if enqueued(a) and (not enqueued(b) or
                                                 enqueued(a)[-1]["tick"] > enqueued(b)[-1]["tick"]) else (b, a)
        owner.proc.send_signal(signal.SIGSTOP)
        before = len(other.msgs("periodic scheduler started"))
        other.wait_for(lambda l: len(other.msgs("periodic scheduler started")) > before, 60,
                       "the other member to take the schedule over")
        n = len(enqueued(other))
        other.wait_count("periodic job enqueued", n + 2, 30, "2 ticks on the new owner")
        owner.proc.send_signal(signal.SIGCONT)
        woke = int(time.time() * 1000)
        procs.wait_until(lambda: any(l["tick"] > woke + 8000
                                     for l in enqueued(a) + enqueued(b)), 90,
                         "ticks after the frozen member woke")
    finally:
        for w in (a, b):
            if w and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
                assert w.stop() == 0, f"{w.name} did not stop cleanly: {w.tail()}"
    try:
        ticks = main_topic_ticks(broker.bootstrap, "every2s")
        dups = sorted({t for t in ticks if ticks.count(t) > 1})
        assert len(dups) <= 1 and all(ticks.count(t) <= 2 for t in dups), \
            f"ticks enqueued again around the freeze: {dups}"
        assert_consecutive(sorted(set(ticks)), what="ticks across the freeze")
        print(f"   {len(set(ticks))} ticks, no gap; duplicates {dups}", flush=True)
    finally:
        broker.stop()


def test_missed_ticks_skip_and_run_once():
    cfg = config([tick_entry("skip2s", missed="skip", catch_up="0s"),
                  tick_entry("once2s", missed="run_once", catch_up="0s")])
    record_file = tempfile.mktemp(prefix="kjobs-periodic-", suffix=".jsonl")
    broker = Broker(cfg)
    try:
        w1 = start_worker(broker.bootstrap, cfg, record_file, "first")
        try:
            for name in ("skip2s", "once2s"):
                procs.wait_until(lambda: len(enqueued(w1, name)) >= 2, 60, f"2 ticks of {name}")
        finally:
            assert w1.stop() == 0, w1.tail()
        last = {n: max(l["tick"] for l in enqueued(w1, n)) for n in ("skip2s", "once2s")}
        # downtime: at least 4 ticks (8 s) go by with no worker
        down_until = max(last.values()) + 9000
        while time.time() * 1000 < down_until:
            time.sleep(down_until / 1000 - time.time())
        w2 = start_worker(broker.bootstrap, cfg, record_file, "second")
        try:
            started = w2.wait_for(lambda l: l["msg"] == "periodic scheduler started", 120,
                                  "the scheduler after the restart")
            now = started["now"]
            for name in ("skip2s", "once2s"):
                procs.wait_until(lambda: any(l["tick"] > now for l in enqueued(w2, name)), 30,
                                 f"a regular tick of {name} after the restart")
            catch_up = {l["name"]: l for l in w2.msgs("periodic catch-up")}
        finally:
            assert w2.stop() == 0, w2.tail()
        latest_before_now = now // 2000 * 2000
        for name, expect in (("skip2s", []), ("once2s", [latest_before_now])):
            ticks = main_topic_ticks(broker.bootstrap, name)
            assert len(ticks) == len(set(ticks)), f"{name}: duplicates {ticks}"
            in_downtime = [t for t in ticks if last[name] < t <= now]
            assert in_downtime == expect, \
                f"{name}: ticks in the downtime ({last[name]}, {now}]: {in_downtime}, want {expect}"
            missed = (latest_before_now - last[name]) // 2000
            assert catch_up[name]["missed"] == missed, (catch_up[name], missed)
            after = [t for t in ticks if t > now]
            assert after and after[0] == latest_before_now + 2000, (name, after[:3], now)
            assert_consecutive(after, what=f"{name} after the restart")
        print(f"   downtime {now - max(last.values())} ms: skip enqueued 0, run_once 1 "
              f"({latest_before_now}) of {missed} missed", flush=True)
    finally:
        broker.stop()


def test_jitter_writes_run_at_and_holds_the_job():
    cfg = config([tick_entry("jit2s", jitter="1900ms")])
    record_file = tempfile.mktemp(prefix="kjobs-periodic-", suffix=".jsonl")
    broker = Broker(cfg, partitions=1)
    try:
        w = start_worker(broker.bootstrap, cfg, record_file, "jitter",
                         extra_env={"KJOBS_HANDLERS_EXEC":
                                    f"/usr/bin/python3 -u {RECORDER} {record_file} --time",
                                    "KJOBS_RETRY_DELAYS": "1s,5s"})
        try:
            # offset = hash mod 1901 ms: 0 (no header) for about one tick in 1900. A job whose
            # run-at has passed by the time it is consumed runs at once, from the main topic;
            # one offset by a second or more is consumed before its run-at and must be held.
            procs.wait_until(lambda: len([l for l in enqueued(w)
                                          if l["run_at"] - l["tick"] >= 1000]) >= 3,
                             60, "3 ticks jittered by a second or more")
            jittered = {l["id"]: l["run_at"] for l in enqueued(w) if l["run_at"] > l["tick"]}
            held = {l["id"] for l in enqueued(w) if l["run_at"] - l["tick"] >= 1000}
            procs.wait_until(lambda: set(jittered) <= set(recorded_ids(record_file)), 30,
                             "the jittered jobs to run")
        finally:
            assert w.stop() == 0, w.tail()
        main = {r["id"]: harness.hdrs(r) for r in peek_all(broker.bootstrap, "jobs")}
        with open(record_file) as f:
            runs = {j["id"]: j for j in (json.loads(l) for l in f if l.strip())}
        for job_id, run_at in jittered.items():
            h = main[job_id]
            assert h.get("kjobs-run-at") == str(run_at) and "kjobs-deliver-at" not in h, h
            run = runs[job_id]
            assert run["started_at_ms"] >= run_at, (job_id, run["started_at_ms"], run_at)
            if job_id in held:
                assert run["topic"].startswith("jobs.retry."), run
        print(f"   {len(jittered)} jittered ticks: kjobs-run-at written, none started early, "
              f"{len(held)} held on the ladder", flush=True)
    finally:
        broker.stop()


def test_check_config_errors():
    cases = [
        ([tick_entry("a"), tick_entry("b", cron="*/2 * * 13 *")],
         ":4: schedule.periodic[1].cron: month field: \"13\" is out of range 1-12"),
        ([tick_entry("a", time_zone="Europe/Berlinn")],
         ":3: schedule.periodic[0].time_zone: unknown time zone \"Europe/Berlinn\""),
        ([tick_entry("a", cron="0 0 30 FEB *")],
         ":3: schedule.periodic[0].cron: \"0 0 30 FEB *\" never fires"),
        ([tick_entry("a", time_zone="")], ":3: schedule.periodic[0].time_zone: empty"),
        ([tick_entry("a"), tick_entry("a")],
         ":4: schedule.periodic[1].name: \"a\" is already the name of schedule.periodic[0] "
         "(line 3)"),
    ]
    for entries, want in cases:
        cfg = config(entries)
        p = harness.run(harness.kjobs_cmd("run", "-c", cfg, "--check-config"), check=False)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        assert f"{cfg}{want}" in p.stderr, f"want {cfg}{want!r} in: {p.stderr}"
        os.unlink(cfg)
    cfg = config([tick_entry("nightly", cron="0 30 3 * * *", time_zone="Europe/Berlin")])
    p = harness.run(harness.kjobs_cmd("run", "-c", cfg, "--check-config"))
    assert 'schedule.periodic[0] = { name = "nightly"; cron = "0 30 3 * * *"; ' \
           'time_zone = "Europe/Berlin";' in p.stdout, p.stdout
    p = harness.run(harness.kjobs_cmd("cron", "next", "0 30 3 * * *", "--tz", "Europe/Berlin",
                                      "--from", "2026-03-28T12:00:00Z", "-n", "2"))
    assert p.stdout.split() == ["2026-03-29T03:30:00+02:00", "2026-03-30T03:30:00+02:00"], p.stdout
    os.unlink(cfg)


if __name__ == "__main__":
    harness.main([test_check_config_errors, test_one_job_per_tick_with_two_workers,
                  test_owner_killed_survivor_continues,
                  test_frozen_owner_does_not_repeat_the_new_owners_ticks,
                  test_missed_ticks_skip_and_run_once,
                  test_jitter_writes_run_at_and_holds_the_job])
