"""test_runtime.py — the worker runtime's promises, checked on what really ran.

Every scenario runs real `kjobs run` processes against a real `kjobs broker` and loads the
example plugin (examples/recorder_plugin.c) through KJOBS_HANDLERS_PLUGIN. The plugin appends
one line per handled job to a shared file (one atomic write per line):

    id  key  partition  offset  attempt  thread-id  pid  topic  time-ms

so the tests count runs per job id instead of trusting the worker's own counters:

  - the plugin: both handler shapes, retry/permanent outcomes, load errors (exit 2);
  - 100k jobs over 8 partitions and 1000 keys: each handled exactly once, per key in enqueue order;
  - a group of three processes, a fourth joining and one leaving (SIGTERM) mid-stream: one owner
    per partition at a time, nothing lost, nothing run twice;
  - a rolling restart, each SIGTERM landing while the replacement joins: clean exits, nothing lost;
  - the same group over KIP-848 (group.protocol=consumer): join, leave, nothing lost;
  - kill -9 mid-stream and restart: nothing lost; re-runs only past the committed offsets;
  - SIGTERM mid-batch: in-flight batches finish, offsets commit, a restart re-runs none;
  - a partition fed only garbage: other partitions flow, garbage lands in jobs.dlq as `decode`;
  - and the tests' own job stream (Feeder): its end is reported as such, never as a stalled group.

Synchronisation is on events: log lines, the record file reaching a count (re-read until a
deadline), process exits. Run with /usr/bin/python3; env KJOBS_BIN (the kjobs binary) and
KJOBS_EXAMPLE_PLUGIN (the recorder .so) are set by CMake.
"""
import atexit
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import hdrs, kjobs_cmd, run  # noqa: E402

PLUGIN = os.environ.get("KJOBS_EXAMPLE_PLUGIN") or os.path.join(
    os.path.dirname(harness.KJOBS), "examples", "libkjobs_example_recorder.so")
# Run kjobs through a symlink with a name of our own: on a shared host a broker of this suite
# was once stopped mid-test by a signal from outside it (a neighbour's name-based pkill, most
# likely); a distinct process name keeps such sweeps off our processes.
_BIN_DIR = tempfile.mkdtemp(prefix="kjobs-rt-bin-")
atexit.register(shutil.rmtree, _BIN_DIR, True)
os.symlink(os.path.abspath(harness.KJOBS), os.path.join(_BIN_DIR, "kjrt"))
harness.KJOBS = os.path.join(_BIN_DIR, "kjrt")
# The embedded broker answers an empty fetch after fetch.wait.max.ms: keep it short.
FAST_FETCH = ("-X", "fetch.wait.max.ms=5")
POLL = 0.05  # seconds between re-reads while waiting for an event
# The embedded (mock) broker completes a rebalance only when session.timeout.ms expires for
# members that have not rejoined; with the 45 s default each join/leave/crash costs ~45 s.
GROUP_TIMEOUTS = ("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300")
# Knobs for the longer proof runs of bench/rebalance_proof.sh (CI uses the defaults): the
# mid-rebalance rolling restart's rounds, and its group protocol: classic, consumer (KIP-848,
# whose timeouts are the broker's), or unset = what kafka.group_protocol=auto picks.
MIDREBALANCE_ROUNDS = int(os.environ.get("KJOBS_TEST_MIDREBALANCE_ROUNDS", "6"))
PROOF_PROTOCOL = os.environ.get("KJOBS_TEST_GROUP_PROTOCOL", "")
if PROOF_PROTOCOL in ("classic", "consumer"):
    os.environ["KJOBS_KAFKA_GROUP_PROTOCOL"] = PROOF_PROTOCOL  # the workers inherit it


def librdkafka_version_str():
    return run(kjobs_cmd("version")).stdout.split("librdkafka")[-1].split()[0]


def librdkafka_version():
    return tuple(int(x) for x in librdkafka_version_str().split(".")[:2])


def proof_group_args():
    """Worker args of the proof scenarios: a classic member on the embedded broker needs a short
    session (GROUP_TIMEOUTS, which also make auto pick classic); KIP-848 takes none. Unset,
    auto decides: KIP-848 with librdkafka >= 2.12, classic before."""
    if PROOF_PROTOCOL == "consumer":
        return ()
    if PROOF_PROTOCOL == "classic" or librdkafka_version() < (2, 12):
        return GROUP_TIMEOUTS
    return ()


# ---- plumbing ---------------------------------------------------------------------------------

class Lines:
    """Incremental reader of a file other processes append to: complete lines only."""

    def __init__(self, path, parse):
        self.path, self.parse, self.pos, self.items, self._rest = path, parse, 0, [], b""

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self.items
        self.pos += len(data)
        data = self._rest + data
        *complete, self._rest = data.split(b"\n")
        self.items.extend(self.parse(l.decode()) for l in complete if l)
        return self.items


class RecordLines(Lines):
    """The record file; `ids` is the set of distinct job ids seen so far."""

    def __init__(self, path):
        super().__init__(path, parse_record)
        self.ids = set()

    def read(self):
        before = len(self.items)
        items = super().read()
        self.ids.update(r.id for r in items[before:])
        return items

    def distinct(self):
        self.read()
        return len(self.ids)


Record = collections.namedtuple("Record", "id key partition offset attempt tid pid topic ms")


def parse_record(line):
    f = line.split("\t")
    assert len(f) == 9, f"malformed record line {line!r}"
    return Record(f[0], f[1], int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]), f[7],
                  int(f[8]))


def parse_log(line):
    obj = json.loads(line)
    assert isinstance(obj, dict) and {"ts", "level", "msg"} <= obj.keys(), line
    return obj


def wait_until(cond, timeout, what, procs=(), feeder=None):
    """Re-check `cond` until it returns a truthy value; fail at the deadline, when one of
    `procs` (Workers expected to keep running) exits, or when `feeder` (a Feeder the wait
    depends on) has stopped feeding — with the feeder's own reason, at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if feeder is not None:
            feeder.check()
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{p.name} exited {p.proc.returncode} while waiting for "
                                     f"{what}; log tail:\n{p.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


class Worker:
    """A `kjobs run` process with the recorder plugin; JSON logs go to a file."""

    def __init__(self, bootstrap, workdir, name, record_file, env=None, args=()):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        full_env = dict(os.environ)
        full_env.update({"KJOBS_HTTP_LISTEN": "", "KJOBS_LOG_LEVEL": "info",
                         "KJOBS_HANDLERS_PLUGIN": PLUGIN, "KJOBS_RECORD_FILE": record_file,
                         "KJOBS_KAFKA_CLIENT_ID": name})
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(kjobs_cmd("run", "-b", bootstrap, *FAST_FETCH, *args),
                                         stdout=subprocess.DEVNULL, stderr=log, env=full_env)
        self.pid = self.proc.pid
        self.log = Lines(self.log_path, parse_log)

    def logs(self, msg=None):
        items = self.log.read()
        return [l for l in items if msg is None or l["msg"] == msg]

    def tail(self, n=15):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def assigned_main(self, topic="jobs"):
        """Main-topic partitions this worker holds now, from its assigned/revoked log lines."""
        held = set()
        for l in self.logs():
            if l.get("topic") != topic:
                continue
            if l["msg"] == "partition assigned":
                held.add(l["partition"])
            elif l["msg"] in ("partition revoked", "partition lost"):
                held.discard(l["partition"])
        return held

    def wait_assigned(self, timeout=60):
        return wait_until(lambda: self.assigned_main(), timeout,
                          f"{self.name} to be assigned a partition", procs=[self])

    def stop(self, timeout=60):
        """SIGTERM; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.tail()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stopped_summary(self):
        s = self.logs("worker stopped")
        assert len(s) == 1, f"{self.name}: no 'worker stopped' line:\n{self.tail()}"
        return s[0]


class Scene:
    """A broker, a work dir, a record file, and the workers of one test; tears all down."""

    def __init__(self, partitions, broker_args=()):
        self.dir = tempfile.mkdtemp(prefix="kjobs-rt-")
        self.record_file = os.path.join(self.dir, "records.tsv")
        self.records = RecordLines(self.record_file)
        self.broker = harness.Broker(partitions=partitions, extra=broker_args)
        self.bootstrap = self.broker.bootstrap
        self.workers = []

    def worker(self, name, env=None, args=()):
        w = Worker(self.bootstrap, self.dir, name, self.record_file, env=env, args=args)
        self.workers.append(w)
        return w

    def enqueue(self, jobs):
        """Enqueue dicts as JSON lines; every job must be acknowledged."""
        text = "".join(json.dumps(j) + "\n" for j in jobs)
        p = run(kjobs_cmd("enqueue", "-b", self.bootstrap), input=text, timeout=300)
        ids = p.stdout.split()
        assert len(ids) == len(jobs), f"enqueue acknowledged {len(ids)} of {len(jobs)}"
        return ids

    def wait_records(self, n, timeout, procs=(), what=None, feeder=None):
        """Wait until `n` distinct jobs have been recorded (see wait_until for `feeder`)."""
        return wait_until(lambda: self.records.distinct() >= n, timeout,
                          what or f"{n} distinct recorded jobs", procs=procs, feeder=feeder)

    def wait_all_ids(self, ids, timeout, procs=()):
        want = set(ids)

        def done():
            got = {r.id for r in self.records.read()}
            return want <= got
        wait_until(done, timeout, f"all {len(want)} jobs recorded", procs=procs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for w in self.workers:
            w.kill()
        self.broker.stop()
        if exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"   (logs and records kept in {self.dir})", flush=True)


class Feeder(threading.Thread):
    """An open-ended stream: enqueues keyed jobs chunk by chunk, keeping at most `backlog`
    jobs enqueued but not yet recorded, until stop(). So jobs are flowing whenever the test
    acts on the group, however long a rebalance takes.

    The stream counts as stalled when, while the feeder waits for the backlog to drain, no new
    job is recorded for `stall_timeout` seconds. `limit` (none by default) bounds the jobs fed;
    reaching it is an error, not a quiet end of the stream. Both once hid in the feeder as a
    300 s deadline counted from its start and a 200,000-job limit: the 50-round mid-rebalance
    rolling restart on the embedded broker (classic protocol: ~5,900 jobs and ~8 s a round)
    outran both, and the test then waited for records that were never enqueued and reported a
    stalled group — "stream stalled at 183000", "timed out after 120s waiting for 200300
    distinct recorded jobs" — while every enqueued job had run and been committed (lag 0).
    Waits that depend on the stream pass the feeder (wait_until), so such an end is reported
    at once and as what it is."""

    def __init__(self, scene, keys, chunk, backlog, payload, limit=None, stall_timeout=120):
        super().__init__(daemon=True)
        self.scene, self.keys, self.chunk, self.backlog = scene, keys, chunk, backlog
        self.payload, self.limit, self.stall_timeout = payload, limit, stall_timeout
        self.jobs, self.error = [], None
        self._stop_event = threading.Event()
        self.records = RecordLines(scene.record_file)  # own reader: thread-private

    def check(self):
        """Raise the reason the feeder stopped feeding, if it stopped by itself."""
        if self.error is not None:
            raise AssertionError(f"the feeder stopped: {self.error}") from self.error
        if self.ident is not None and not self.is_alive() and not self._stop_event.is_set():
            raise AssertionError("the feeder stopped without an error")

    def stop(self):
        self._stop_event.set()
        self.join()
        assert self.error is None, self.error
        return self.jobs

    def run(self):
        try:
            while not self._stop_event.is_set():
                if self.limit is not None and len(self.jobs) >= self.limit:
                    raise AssertionError(f"reached its limit of {self.limit} jobs before the "
                                         "test stopped it")
                seen, progress_at = self.records.distinct(), time.monotonic()
                while len(self.jobs) - seen > self.backlog - self.chunk:
                    if self._stop_event.is_set():
                        return
                    now = time.monotonic()
                    if now - progress_at > self.stall_timeout:
                        raise AssertionError(
                            f"stream stalled: no job recorded for {self.stall_timeout} s at "
                            f"{seen} recorded of {len(self.jobs)} enqueued")
                    time.sleep(POLL)
                    distinct = self.records.distinct()
                    if distinct > seen:
                        seen, progress_at = distinct, time.monotonic()
                first = len(self.jobs)
                batch = keyed_jobs(first + self.chunk, self.keys, "example.record-batch",
                                   self.payload, start=first)
                self.scene.enqueue(batch)
                self.jobs.extend(batch)
        except Exception as e:  # reported by check() and stop()
            self.error = e


def runs_per_id(records):
    return collections.Counter(r.id for r in records)


def check_key_order(records):
    """Ids are "<key>/<seq>" enqueued in seq order: in record-file order (which, per
    partition, is handling order), each key's sequence numbers and offsets must increase."""
    last = {}
    for r in records:
        key, seq = r.id.rsplit("/", 1)
        assert key == r.key, f"record {r} carries key {r.key!r}, id says {key!r}"
        seq = int(seq)
        if key in last:
            lseq, loff, lpart = last[key]
            assert r.partition == lpart, f"key {key} seen on partitions {lpart} and {r.partition}"
            assert seq > lseq and r.offset > loff, \
                f"key {key}: seq {seq} (offset {r.offset}) handled after seq {lseq} (offset {loff})"
        last[key] = (seq, r.offset, r.partition)
    return len(last)


def ownership_overlaps(workers):
    """Replay every worker's assigned/revoked/lost lines in time order; report any partition
    held by two processes at once (at equal timestamps a release counts first). A worker's
    "drained" line (shutting down, no job in flight, none will start) releases everything it
    holds: a leaver whose revocation is still waiting for a commit runs nothing any more, and
    the group may hand its partitions on meanwhile (seen on real Kafka)."""
    events = []
    for w in workers:
        for l in w.logs():
            if l["msg"] == "partition assigned":
                events.append((l["ts"], 1, w.name, l["topic"], l["partition"]))
            elif l["msg"] in ("partition revoked", "partition lost"):
                events.append((l["ts"], 0, w.name, l["topic"], l["partition"]))
            elif l["msg"] == "drained":
                events.append((l["ts"], 0, w.name, None, None))
    events.sort(key=lambda e: (e[0], e[1]))
    owner, overlaps = {}, []
    for ts, kind, name, topic, part in events:
        tp = (topic, part)
        if topic is None:  # drained: releases all
            for held in [k for k, v in owner.items() if v == name]:
                del owner[held]
            continue
        if kind == 1:
            if tp in owner and owner[tp] != name:
                overlaps.append(f"{topic}[{part}] assigned to {name} at {ts} while {owner[tp]} "
                                "held it")
            owner[tp] = name
        elif owner.get(tp) == name:
            del owner[tp]
    return overlaps, len(events)


def keyed_jobs(n, keys, job_type, payload=None, prefix="k", start=0):
    """Jobs start..n-1 over `keys` keys, ids "<key>/<seq>", seq counting per key in enqueue
    order."""
    jobs = []
    for i in range(start, n):
        key = f"{prefix}{i % keys:04d}"
        job = {"type": job_type(i) if callable(job_type) else job_type, "key": key,
               "id": f"{key}/{i // keys}"}
        if payload is not None:
            job["payload"] = payload
        jobs.append(job)
    return jobs


# ---- the plugin -------------------------------------------------------------------------------

def test_plugin_handlers_and_outcomes():
    """Both handler shapes record every run; "fail" retries then dead-letters, "fail-permanent"
    dead-letters at once; fields match where the record really is."""
    env = {"KJOBS_RETRY_DELAYS": "0s", "KJOBS_RETRY_MAX_ATTEMPTS": "2"}
    with Scene(partitions=2) as s:
        w = s.worker("w1", env=env)
        jobs = []
        for t in ("example.record", "example.record-batch"):
            jobs += [{"type": t, "key": f"{t}-{i % 5}", "id": f"{t}-ok-{i}"} for i in range(50)]
            jobs += [{"type": t, "id": f"{t}-retry-{i}", "payload": "fail"} for i in range(3)]
            jobs += [{"type": t, "id": f"{t}-perm-{i}", "payload": "fail-permanent"}
                     for i in range(2)]
            jobs.append({"type": t, "id": f"{t}-slow", "payload": "sleep:20"})
        s.enqueue(jobs)
        expected_runs = {j["id"]: 2 if j.get("payload") == "fail" else 1 for j in jobs}
        total = sum(expected_runs.values())
        wait_until(lambda: len(s.records.read()) >= total, 90, f"{total} recorded runs",
                   procs=[w])
        dlq = harness.peek(s.bootstrap, "jobs.dlq", 10)
        assert w.stop() == 0, w.tail()

        records = s.records.read()
        assert runs_per_id(records) == collections.Counter(expected_runs), \
            runs_per_id(records) - collections.Counter(expected_runs)
        main = {r["id"]: r for r in harness.peek(s.bootstrap, "jobs", len(jobs))}
        for r in records:
            assert r.pid == w.pid and r.tid > 0, r
            if r.attempt == 1:
                m = main[r.id]
                assert (r.topic, r.partition, r.offset) == ("jobs", m["partition"], m["offset"]), r
                assert r.key == (m["key"] or ""), r
            else:
                assert r.attempt == 2 and r.topic == "jobs.retry.1" and "-retry-" in r.id, r
        classes = {d["id"]: (hdrs(d)["kjobs-error-class"], hdrs(d)["kjobs-attempt"])
                   for d in dlq}
        for j in jobs:
            if j.get("payload") == "fail":
                assert classes.pop(j["id"]) == ("retryable", "2"), j
            elif j.get("payload") == "fail-permanent":
                assert classes.pop(j["id"]) == ("permanent", "1"), j
        assert not classes, classes
        summary = w.stopped_summary()
        assert (summary["ok"], summary["retried"], summary["dead_lettered"]) == (102, 6, 10), \
            summary


def _build_plugin(workdir, name, body):
    src = os.path.join(workdir, f"{name}.c")
    so = os.path.join(workdir, f"{name}.so")
    with open(src, "w") as f:
        f.write('#include "kjobs.h"\n' + body)
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    run([cc, "-shared", "-fPIC", "-I", os.path.join(harness.SOURCE_DIR, "include"), "-o", so,
         src])
    return so


def test_plugin_load_errors_exit_2():
    """A plugin that cannot be used stops `kjobs run` before it connects: exit 2, and the
    error names the plugin and what is wrong."""
    workdir = tempfile.mkdtemp(prefix="kjobs-rt-plugin-")
    env_base = {"KJOBS_HTTP_LISTEN": "", "KJOBS_RECORD_FILE": os.path.join(workdir, "r.tsv")}
    not_a_plugin = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/libm.so.6",
                                     "/lib64/libm.so.6") if os.path.exists(p)), None)
    missing_symbol = _build_plugin(workdir, "missing_symbol", """
int kjobs_no_such_function(void);
int kjobs_plugin_init(kjobs_registry_t *r, int abi, char *e, size_t n);
int kjobs_plugin_init(kjobs_registry_t *r, int abi, char *e, size_t n) {
    (void)r; (void)abi; (void)e; (void)n; return kjobs_no_such_function();
}
""")
    other_abi = _build_plugin(workdir, "other_abi", """
#include <stdio.h>
int kjobs_plugin_init(kjobs_registry_t *r, int abi, char *e, size_t n);
int kjobs_plugin_init(kjobs_registry_t *r, int abi, char *e, size_t n) {
    (void)r;
    if (abi != KJOBS_ABI_VERSION + 1) {
        snprintf(e, n, "built for kjobs ABI %d, this kjobs has ABI %d", KJOBS_ABI_VERSION + 1, abi);
        return -1;
    }
    return 0;
}
""")
    cases = [
        ("/nonexistent/plugin.so", {}, ["cannot load", "/nonexistent/plugin.so"]),
        (missing_symbol, {}, ["cannot load", "kjobs_no_such_function"]),
        (other_abi, {}, ["refused to load", "built for kjobs ABI 2, this kjobs has ABI 1"]),
        (PLUGIN, {"KJOBS_RECORD_FILE": ""}, ["refused to load", "KJOBS_RECORD_FILE is not set"]),
    ]
    if not_a_plugin:
        cases.append((not_a_plugin, {}, ["does not export kjobs_plugin_init"]))
    for path, extra, needles in cases:
        env = dict(env_base, KJOBS_HANDLERS_PLUGIN=path, **extra)
        p = run(kjobs_cmd("run", "-b", "127.0.0.1:1"), env=env, check=False, timeout=30)
        assert p.returncode == 2, (path, p.returncode, p.stderr[-2000:])
        for needle in needles:
            assert needle in p.stderr, (path, needle, p.stderr[-2000:])
    shutil.rmtree(workdir, ignore_errors=True)


# ---- scale, order, exactly once --------------------------------------------------------------

def test_100k_jobs_once_each_in_key_order():
    n, keys = 100_000, 1000
    with Scene(partitions=8) as s:
        w = s.worker("w1")
        w.wait_assigned()
        # both handler shapes, interleaved within a key (the runtime splits a batch by handler)
        jobs = keyed_jobs(n, keys, lambda i: "example.record" if i % 3 == 0
                          else "example.record-batch")
        t0 = time.monotonic()
        s.enqueue(jobs)
        t_enq = time.monotonic() - t0
        s.wait_records(n, 180, procs=[w])
        t_all = time.monotonic() - t0
        assert w.stop() == 0, w.tail()
        records = s.records.read()
        counts = runs_per_id(records)
        dup = {i: c for i, c in counts.items() if c != 1}
        assert not dup, f"{len(dup)} jobs not run exactly once, e.g. {list(dup.items())[:5]}"
        assert set(counts) == {j["id"] for j in jobs}
        assert len(records) == n
        assert check_key_order(records) == keys
        assert len({r.partition for r in records}) == 8
        assert w.stopped_summary()["ok"] == n
        print(f"   {n} jobs: enqueue {t_enq:.1f}s, enqueue+handled {t_all:.1f}s; "
              f"threads used {len({r.tid for r in records})}", flush=True)


# ---- the test's own stream --------------------------------------------------------------------

class _FakeGroup:
    """Stands in for a Scene and its workers where only the Feeder is under test: enqueued
    jobs are "handled" (appended to the record file) every 20 ms while `flowing` is set."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kjobs-rt-feeder-")
        self.record_file = os.path.join(self.dir, "records.tsv")
        self.records = RecordLines(self.record_file)
        self.flowing, self.done = threading.Event(), threading.Event()
        self._queue, self._lock = [], threading.Lock()
        self.flowing.set()
        self._thread = threading.Thread(target=self._handle, daemon=True)
        self._thread.start()

    def enqueue(self, jobs):
        with self._lock:
            self._queue.extend(jobs)

    def _handle(self):
        offset = 0
        while not self.done.wait(0.02):
            if not self.flowing.is_set():
                continue
            with self._lock:
                jobs, self._queue = self._queue, []
            with open(self.record_file, "a") as f:
                for j in jobs:
                    f.write(f"{j['id']}\t{j['key']}\t0\t{offset}\t1\t1\t1\tjobs\t0\n")
                    offset += 1

    def wait_records(self, n, timeout, feeder=None):
        return Scene.wait_records(self, n, timeout, feeder=feeder)

    def close(self):
        self.done.set()
        self._thread.join()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_feeder_reports_its_own_end():
    """The Feeder is the load of the group tests, so its own end must never pass for a stalled
    group (the 50-round mid-rebalance rolling restart failed so on the embedded broker: see
    Feeder). No broker: a fake group handles what is enqueued.
     1. a stream that keeps flowing for longer than 300 s is not "stalled" (the clock runs 100x);
     2. a feeder that reaches its limit fails the wait that needs more records, at once and
        saying so, instead of that wait timing out on records never enqueued;
     3. a stream that stops flowing is still reported stalled."""
    # 1. flowing for 400 (fast) seconds
    g = _FakeGroup()
    real_monotonic, t0 = time.monotonic, time.monotonic()
    time.monotonic = lambda: t0 + (real_monotonic() - t0) * 100
    try:
        feeder = Feeder(g, keys=10, chunk=100, backlog=300, payload=None)
        feeder.start()
        time.sleep(4.0)
        jobs = feeder.stop()
    finally:
        time.monotonic = real_monotonic
        g.close()
    assert len(jobs) > 1000, f"the fake stream fed only {len(jobs)} jobs"
    # 2. the limit
    g = _FakeGroup()
    try:
        feeder = Feeder(g, keys=10, chunk=100, backlog=300, payload=None, limit=1000)
        feeder.start()
        start = time.monotonic()
        try:
            g.wait_records(1300, 30, feeder=feeder)
            raise RuntimeError("waited for more records than the feeder may enqueue")
        except AssertionError as e:
            assert "limit of 1000 jobs" in str(e), e
        assert time.monotonic() - start < 10, "the feeder's end was reported only at the timeout"
        # the fake group may still be recording the last chunk: all of the limit, never more
        wait_until(lambda: g.records.distinct() >= 1000, 30, "the fake group to record 1000 jobs")
        assert g.records.distinct() == 1000, g.records.distinct()
    finally:
        g.close()
    # 3. a stall
    g = _FakeGroup()
    try:
        feeder = Feeder(g, keys=10, chunk=100, backlog=300, payload=None, stall_timeout=1)
        feeder.start()
        g.wait_records(500, 30, feeder=feeder)
        g.flowing.clear()
        try:
            wait_until(lambda: False, 30, "the feeder to see the stall", feeder=feeder)
        except AssertionError as e:
            assert "stream stalled: no job recorded for 1 s" in str(e), e
        try:
            feeder.stop()
            raise RuntimeError("stop() did not report the stall")
        except AssertionError as e:
            assert "stream stalled" in str(e), e
    finally:
        g.close()


# ---- a consumer group -------------------------------------------------------------------------

def test_group_join_and_leave_mid_stream():
    """Three workers, a fourth joins and one leaves (SIGTERM) mid-stream: one owner per
    partition at a time, every job handled, and — since partitions are committed before they
    are handed over — none handled twice."""
    keys, chunk = 600, 1000
    with Scene(partitions=8) as s:
        ws = [s.worker(f"w{i}", args=GROUP_TIMEOUTS) for i in (1, 2, 3)]

        def group_formed():
            held = [w.assigned_main() for w in ws]
            return all(held) and sum(len(h) for h in held) == 8 and len(set().union(*held)) == 8
        wait_until(group_formed, 90, "three workers sharing the 8 partitions", procs=ws)
        feeder = Feeder(s, keys, chunk, backlog=2 * chunk, payload="sleep:1")
        feeder.start()
        try:
            s.wait_records(3 * chunk, 120, procs=ws, feeder=feeder)
            w4 = s.worker("w4", args=GROUP_TIMEOUTS)
            everyone = ws + [w4]
            w4.wait_assigned(timeout=90)
            at_join = s.records.distinct()
            s.wait_records(at_join + 2 * chunk, 120, procs=everyone, feeder=feeder)
            # the leaver: whoever holds the most main-topic partitions now
            leaver = max(everyone, key=lambda w: len(w.assigned_main()))
            left_with = leaver.assigned_main()
            assert left_with
            at_leave, lines_at_leave = s.records.distinct(), len(s.records.read())
            assert leaver.stop() == 0, leaver.tail()
            stayers = [w for w in everyone if w is not leaver]
            s.wait_records(s.records.distinct() + 2 * chunk, 120, procs=stayers, feeder=feeder)
        finally:
            jobs = feeder.stop()
        s.wait_all_ids([j["id"] for j in jobs], 180, procs=stayers)
        for w in stayers:
            assert w.stop() == 0, w.tail()

        records = s.records.read()
        counts = runs_per_id(records)
        missing = {j["id"] for j in jobs} - set(counts)
        dups = sum(c - 1 for c in counts.values())
        by_pid = collections.Counter(r.pid for r in records)
        print(f"   jobs per process {dict((w.name, by_pid[w.pid]) for w in everyone)}, "
              f"duplicates {dups}; {leaver.name} left holding jobs{sorted(left_with)} after "
              f"{at_leave} jobs; w4 joined after {at_join}", flush=True)
        assert not missing, f"{len(missing)} jobs never ran"
        assert by_pid[w4.pid] > 0, "the joining worker handled nothing"
        after_leave = [r for r in records[lines_at_leave:] if r.partition in left_with
                       and r.pid != leaver.pid]
        assert after_leave, "nobody took over the leaver's partitions"
        overlaps, nevents = ownership_overlaps(everyone)
        assert not overlaps, overlaps[:5]
        assert nevents > 3 * 8 * 4
        # data-side ownership: within a partition, handling (file) order goes back in offsets
        # only where a job runs again
        last = {}
        for r in records:
            assert r.offset > last.get(r.partition, -1) or counts[r.id] > 1, \
                f"partition {r.partition} went back without a re-run: {r}"
            last[r.partition] = max(r.offset, last.get(r.partition, -1))
        check_key_order([r for r in records if counts[r.id] == 1])
        # Partitions are drained and committed before they are handed over, so on Apache Kafka
        # a join and a clean leave re-run nothing. No partition may be given up uncommitted
        # ("partition lost"). The embedded broker, though, rejects every OffsetCommit while its
        # group is JOINING (librdkafka 2.0.2 rdkafka_mock_cgrp.c, check_state: real brokers
        # accept commits from current-generation members then), so there the revoke-time
        # commit can fail and the next owner re-runs from the previous commit. Re-runs are
        # therefore allowed only together with a logged rejection of such a commit.
        lost = [(w.name, l["partition"]) for w in everyone for l in w.logs("partition lost")
                if l["topic"] == "jobs"]
        assert not lost, f"main-topic partitions given up uncommitted: {lost}"
        rejected = [l for w in everyone for l in w.logs("commit failed")
                    if "rebalance in progress" in l.get("error", "").lower()
                    or "unknown member" in l.get("error", "").lower()]
        print(f"   revoke-time commits rejected by the broker: {len(rejected)}", flush=True)
        if harness.REAL_KAFKA:  # no mock allowance: a join and a clean leave re-run nothing
            assert dups == 0, f"{dups} jobs ran twice across a join and a clean leave"
        assert dups == 0 or rejected, (
            f"{dups} jobs ran twice across a join and a clean leave, but no commit was rejected")


def test_rolling_restart_sigterm_while_a_worker_joins():
    """A rolling restart of three workers: each round starts a replacement and sends SIGTERM
    to the oldest worker while the replacement is still joining, so the leaver closes its
    consumer in the middle of a rebalance. Every leaver must exit 0 — this once aborted inside
    librdkafka's queue serving (the close queue was served with callbacks instead of events),
    and segfaulted on a NULL rebalance protocol — and every job must run. The exit is either
    the normal one ("worker stopped") or, when librdkafka's unassign blocks during the close
    (seen now and then on 2.15.1 and 2.0.2), the shutdown watchdog's, also with code 0."""
    # SIGTERM this long after the replacement starts
    delays = [[0.0, 0.1, 0.3, 0.6, 0.05, 0.2][r % 6] for r in range(MIDREBALANCE_ROUNDS)]
    args = proof_group_args()
    with Scene(partitions=8) as s:
        ws = [s.worker(f"w{i}", args=args) for i in (1, 2, 3)]

        def group_formed():
            held = [w.assigned_main() for w in ws]
            return all(held) and len(set().union(*held)) == 8
        wait_until(group_formed, 90, "three workers sharing the 8 partitions", procs=ws)
        feeder = Feeder(s, keys=200, chunk=1000, backlog=5000, payload=None)
        feeder.start()
        everyone = list(ws)
        watchdog_exits = 0
        try:
            for r, delay in enumerate(delays):
                s.wait_records(s.records.distinct() + 300, 120, procs=ws, feeder=feeder)
                new = s.worker(f"n{r}", args=args)
                everyone.append(new)
                wait_until(lambda: new.logs("worker started"), 30, f"{new.name} to start",
                           procs=[new])
                time.sleep(delay)
                old = ws.pop(0)
                code = old.stop()
                assert code == 0, f"round {r}: {old.name} exited {code}:\n{old.tail()}"
                if any(l["msg"].startswith("consumer close hung") for l in old.logs()):
                    watchdog_exits += 1
                else:
                    old.stopped_summary()
                ws.append(new)
                new.wait_assigned(timeout=90)
        finally:
            jobs = feeder.stop()
        s.wait_all_ids([j["id"] for j in jobs], 180, procs=ws)
        for w in ws:
            assert w.stop() == 0, w.tail()
        records = s.records.read()
        counts = runs_per_id(records)
        overlaps, _ = ownership_overlaps(everyone)
        print(f"   {len(delays)} rounds, {len(jobs)} jobs, "
              f"{sum(c - 1 for c in counts.values())} re-runs, {watchdog_exits} exits by the "
              "shutdown watchdog", flush=True)
        assert not overlaps, overlaps[:5]
        assert {j["id"] for j in jobs} <= set(counts)


def test_group_protocol_auto_uses_what_the_broker_offers():
    """kafka.group_protocol=auto (the default): KIP-848 where librdkafka (>= 2.12) and the broker
    have it, classic otherwise. The embedded broker here plays a broker without KIP-848
    (`kjobs broker --group-protocols classic`: no ConsumerGroupHeartbeat in ApiVersions), so
    the worker must fall back to classic by itself, say so, and run the jobs; on real Kafka
    4.x the worker must stay on KIP-848. On an older librdkafka auto is classic from the
    start and the reason names the version."""
    version = librdkafka_version_str()
    has_kip848 = librdkafka_version() >= (2, 12)
    with Scene(partitions=4, broker_args=("--group-protocols", "classic")) as s:
        w = s.worker("w1")
        w.wait_assigned()
        started = w.logs("worker started")[0]
        refused = w.logs("the broker does not offer the KIP-848 consumer group protocol; joining with "
                         "classic")
        if not has_kip848:
            assert started["group_protocol"] == "classic", w.tail()
            assert version in started["group_protocol_why"], started
            assert not refused
        elif harness.REAL_KAFKA:
            assert started["group_protocol"] == "consumer", w.tail()
            assert not refused, w.tail()
        else:
            assert started["group_protocol"] == "consumer", w.tail()  # what auto tried first
            assert len(refused) == 1, w.tail()
            assert refused[0]["code"] in ("_UNSUPPORTED_FEATURE", "UNSUPPORTED_VERSION",
                                         "NO_HEARTBEAT_ANSWER"), refused
            chosen = w.logs("group protocol")
            assert chosen and chosen[-1]["group_protocol"] == "classic", w.tail()
            assert not w.logs("fatal consumer error: stopping"), w.tail()
        ids = s.enqueue(keyed_jobs(200, 20, "example.record"))
        s.wait_all_ids(ids, 60, procs=[w])
        if has_kip848 and not harness.REAL_KAFKA:
            # kafka.group_protocol=consumer demands KIP-848: no fallback, a clear stop
            strict = s.worker("strict", env={"KJOBS_KAFKA_GROUP_PROTOCOL": "consumer"})
            wait_until(lambda: strict.proc.poll() is not None, 60, "the strict worker to stop",
                       procs=[w])
            assert strict.proc.returncode == 1, strict.tail()
            fatal = strict.logs("fatal consumer error: stopping")
            assert fatal and fatal[0]["code"] == "NO_HEARTBEAT_ANSWER", strict.tail()
            assert not strict.logs("group protocol"), strict.tail()
        assert w.stop() == 0, w.tail()


def test_kip848_consumer_protocol_join_and_leave():
    """group.protocol=consumer (KIP-848: the broker assigns, members heartbeat their way into
    incremental assignments served by the same rebalance callback). Two workers share the
    partitions, a third joins and the first leaves (SIGTERM) mid-stream: one owner per
    partition at a time, a clean exit, every job runs. Skipped on a librdkafka without it.
    On real Kafka the sharing wait also checks the assignor: with the broker's default
    `uniform` one member held the whole main topic (kjobs asks for `range`)."""
    if librdkafka_version() < (2, 12):
        raise harness.Skip(f"librdkafka {librdkafka_version_str()} has no KIP-848 (needs >= 2.12)")
    env = {"KJOBS_KAFKA_GROUP_PROTOCOL": "consumer"}
    with Scene(partitions=8) as s:
        w1 = s.worker("w1", env=env)
        wait_until(lambda: w1.logs("worker started") or w1.proc.poll() is not None, 30,
                   "w1 to start")
        assert w1.logs("worker started")[0]["group_protocol"] == "consumer", w1.tail()
        ws = [w1, s.worker("w2", env=env)]

        def shared():
            held = [w.assigned_main() for w in ws]
            return all(held) and len(set().union(*held)) == 8
        wait_until(shared, 90, "two workers sharing the 8 partitions", procs=ws)
        feeder = Feeder(s, keys=200, chunk=1000, backlog=3000, payload=None)
        feeder.start()
        try:
            s.wait_records(s.records.distinct() + 1000, 120, procs=ws, feeder=feeder)
            w3 = s.worker("w3", env=env)
            ws.append(w3)
            w3.wait_assigned(timeout=90)
            s.wait_records(s.records.distinct() + 1000, 120, procs=ws, feeder=feeder)
            held = {w.name: sorted(w.assigned_main()) for w in ws}
            assert w1.stop() == 0, w1.tail()
            w1.stopped_summary()
            stayers = ws[1:]
            s.wait_records(s.records.distinct() + 1000, 120, procs=stayers, feeder=feeder)
        finally:
            jobs = feeder.stop()
        s.wait_all_ids([j["id"] for j in jobs], 180, procs=stayers)
        for w in stayers:
            assert w.stop() == 0, w.tail()
        counts = runs_per_id(s.records.read())
        overlaps, _ = ownership_overlaps(ws)
        print(f"   {len(jobs)} jobs, {sum(c - 1 for c in counts.values())} re-runs; main "
              f"partitions when w1 left: {held}", flush=True)
        assert not overlaps, overlaps[:5]
        assert {j["id"] for j in jobs} <= set(counts)


def test_kip848_member_without_partitions_is_ready():
    """KIP-848 with more members than partitions: the members left without a partition are in
    the group (librdkafka calls no rebalance callback for an empty assignment) and must report
    ready — idle by design, as docs/operations.md says — or Kubernetes would never see the
    extra pods Ready."""
    if librdkafka_version() < (2, 12):
        raise harness.Skip(f"librdkafka {librdkafka_version_str()} has no KIP-848 (needs >= 2.12)")
    env = {"KJOBS_KAFKA_GROUP_PROTOCOL": "consumer", "KJOBS_HTTP_LISTEN": "127.0.0.1:0",
           "KJOBS_RETRY_DELAYS": '["1s"]'}
    with Scene(partitions=1) as s:  # 2 partitions: the main topic and one ladder step
        ws = [s.worker(f"w{i}", env=env) for i in (1, 2, 3)]

        def ports():
            found = [w.logs("http listening") for w in ws]
            return all(found) and [f[0]["port"] for f in found]
        http = wait_until(ports, 30, "every worker's HTTP port", procs=ws)
        wait_until(lambda: all(harness.readyz(p) == 200 for p in http), 60,
                   "all three workers ready (two of them without partitions)", procs=ws)
        # one member holds the main topic's partition
        wait_until(lambda: sum(len(w.assigned_main()) for w in ws) == 1, 60,
                   "the main topic's partition to be assigned", procs=ws)
        for w in ws:
            assert w.stop() == 0, w.tail()


def test_rolling_upgrade_from_classic_to_kip848():
    """A rolling upgrade from a classic-protocol deployment (an older kjobs, or
    kafka.group_protocol=classic) to the default: KIP-848 members join the classic members' group
    under load (Kafka 4 converts the group: group.consumer.migration.policy), then the classic
    member leaves. One owner per partition at a time, clean exits, every job runs. Real Kafka
    only: librdkafka's mock does not mix protocols in one group."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("the embedded broker does not mix group protocols")
    if librdkafka_version() < (2, 12):
        raise harness.Skip(f"librdkafka {librdkafka_version_str()} has no KIP-848 (needs >= 2.12)")
    with Scene(partitions=8) as s:
        old = s.worker("old", env={"KJOBS_KAFKA_GROUP_PROTOCOL": "classic"})
        old.wait_assigned()
        feeder = Feeder(s, keys=200, chunk=1000, backlog=3000, payload=None)
        feeder.start()
        try:
            s.wait_records(s.records.distinct() + 1000, 120, procs=[old])
            new = s.worker("new")
            ws = [old, new]
            new.wait_assigned(timeout=90)
            assert new.logs("worker started")[0]["group_protocol"] == "consumer", new.tail()
            s.wait_records(s.records.distinct() + 1000, 120, procs=ws)
            assert old.stop() == 0, old.tail()
            s.wait_records(s.records.distinct() + 1000, 120, procs=[new])
        finally:
            jobs = feeder.stop()
        s.wait_all_ids([j["id"] for j in jobs], 180, procs=[new])
        assert sorted(new.assigned_main()) == list(range(8)), new.assigned_main()
        assert new.stop() == 0, new.tail()
        counts = runs_per_id(s.records.read())
        overlaps, _ = ownership_overlaps(ws)
        print(f"   {len(jobs)} jobs, {sum(c - 1 for c in counts.values())} re-runs", flush=True)
        assert not overlaps, overlaps[:5]
        assert {j["id"] for j in jobs} <= set(counts)


def test_fenced_static_member_stops_with_a_clear_error():
    """Two processes given the same kafka.group_instance_id (a copy-pasted pod name). Whichever
    the broker turns away must stop at once with exit 1 and say why, not poll on holding
    nothing; the other keeps the partitions and runs the jobs. The protocols differ in which one
    goes: classic fences the first member (FENCED_INSTANCE_ID), KIP-848 refuses the newcomer
    while the first is alive (UNRELEASED_INSTANCE_ID). Both are run. The embedded broker does
    not fence static members, so this runs on real Kafka only."""
    if not harness.REAL_KAFKA:
        raise harness.Skip("the embedded broker does not fence static members")
    protocols = ["classic"] + (["consumer"] if librdkafka_version() >= (2, 12) else [])
    for protocol in protocols:
        env = {"KJOBS_KAFKA_GROUP_INSTANCE_ID": "pod-0", "KJOBS_KAFKA_GROUP_PROTOCOL": protocol}
        with Scene(partitions=8) as s:
            w1 = s.worker("w1", env=env)
            w1.wait_assigned()
            w2 = s.worker("w2", env=env)
            gone, stays, code = ((w1, w2, "FENCED_INSTANCE_ID") if protocol == "classic"
                                 else (w2, w1, "UNRELEASED_INSTANCE_ID"))
            wait_until(lambda: gone.proc.poll() is not None, 60,
                       f"{gone.name} to be turned away ({protocol})", procs=[stays])
            assert gone.proc.returncode == 1, gone.tail()
            fatal = gone.logs("fatal consumer error: stopping")
            assert fatal and fatal[0]["code"] == code, gone.tail()
            assert "group_instance_id" in fatal[0]["hint"], fatal
            stays.wait_assigned()
            ids = s.enqueue(keyed_jobs(200, 20, "example.record"))
            s.wait_all_ids(ids, 60, procs=[stays])
            assert stays.stop() == 0, stays.tail()


# ---- crashes and shutdown ---------------------------------------------------------------------

def test_kill_9_then_restart_reruns_only_uncommitted():
    n, keys, max_pending = 12_000, 400, 500
    env = {"KJOBS_BATCH_MAX_PENDING": str(max_pending)}
    with Scene(partitions=8) as s:
        w1 = s.worker("w1", env=env, args=GROUP_TIMEOUTS)
        w1.wait_assigned()
        jobs = keyed_jobs(n, keys, "example.record-batch", payload="sleep:1")
        s.enqueue(jobs)
        s.wait_records(n // 3, 120, procs=[w1])
        kill_ms = time.time() * 1000
        w1.kill()
        before = list(s.records.read())
        assert len(before) < n, "everything ran before the kill: nothing tested"
        t0 = time.monotonic()
        w2 = s.worker("w2", env=env, args=GROUP_TIMEOUTS)
        s.wait_all_ids([j["id"] for j in jobs], 180, procs=[w2])
        t_recover = time.monotonic() - t0
        assert w2.stop() == 0, w2.tail()

        records = s.records.read()
        counts = runs_per_id(records)
        assert set(counts) == {j["id"] for j in jobs}
        dups = [i for i, c in counts.items() if c > 1]
        assert all(counts[i] == 2 for i in dups), "a job ran more than twice"
        # The restart starts each partition at its committed offset: exactly the first
        # process's runs at or past that offset are re-run, nothing else.
        start = {l["partition"]: l["offset"] for l in w2.logs("partition assigned")
                 if l["topic"] == "jobs"}
        assert len(start) == 8, start
        expected = {r.id for r in before if r.offset >= start[r.partition]}
        assert set(dups) == expected, (len(dups), len(expected))
        first_run = {r.id: r.ms for r in before}
        oldest = min((first_run[i] for i in dups), default=kill_ms)
        bound = max_pending * 8
        print(f"   killed after {len(before)} of {n}; re-run {len(dups)} "
              f"(bound {bound} = max_pending x partitions); oldest re-run job first ran "
              f"{kill_ms - oldest:.0f} ms before the kill; recovery {t_recover:.1f}s", flush=True)
        assert len(dups) <= bound
        # commits happen every 200 ms: only recent work may run again
        assert kill_ms - oldest <= 2000, f"re-ran a job handled {kill_ms - oldest:.0f} ms " \
                                         "before the kill"
        check_key_order([r for r in records if counts[r.id] == 1])


def test_sigterm_mid_batch_finishes_commits_and_nothing_reruns():
    n, batch, sleep_ms = 80, 10, 100
    env = {"KJOBS_BATCH_MAX_JOBS": str(batch), "KJOBS_WORKERS": "2"}
    with Scene(partitions=4) as s:
        jobs = keyed_jobs(n, 8, "example.record-batch", payload=f"sleep:{sleep_ms}")
        s.enqueue(jobs)
        w1 = s.worker("w1", env=env, args=GROUP_TIMEOUTS)
        # a batch takes up to batch x sleep_ms = 1 s: at the first record batches are in flight
        s.wait_records(1, 90, procs=[w1])
        at_term = len(s.records.read())
        w1.proc.send_signal(signal.SIGTERM)
        rc = w1.stop()
        assert rc == 0, w1.tail()
        done = s.records.read()[:]
        summary = w1.stopped_summary()
        print(f"   records at SIGTERM {at_term}, after exit {len(done)}; "
              f"worker stopped ok={summary['ok']}", flush=True)
        assert len(done) > at_term, "in-flight batches were abandoned, not finished"
        # what ran by SIGTERM, plus at most one batch per worker thread in flight then (with
        # batch.max_wait_ms=0 a first batch can be short, so a third one may have started)
        assert len(done) <= at_term + 2 * batch, "new batches started after SIGTERM"
        assert summary["ok"] == len(done) and all(r.pid == w1.pid for r in done)
        committed = {l["partition"]: l["committed"] for l in w1.logs("partition revoked")
                     if l["topic"] == "jobs"}
        for p in range(4):
            offsets = sorted(r.offset for r in done if r.partition == p)
            assert offsets == list(range(len(offsets))), (p, offsets)
            if offsets:
                assert committed.get(p) == len(offsets), (p, committed, len(offsets))

        w2 = s.worker("w2", env=env, args=GROUP_TIMEOUTS)
        s.wait_all_ids([j["id"] for j in jobs], 90, procs=[w2])
        assert w2.stop() == 0, w2.tail()
        counts = runs_per_id(s.records.read())
        twice = [i for i, c in counts.items() if c > 1]
        assert not twice, f"re-ran after a clean SIGTERM: {twice}"
        starts = {l["partition"]: l["offset"] for l in w2.logs("partition assigned")
                  if l["topic"] == "jobs"}
        for p, c in committed.items():
            if c >= 0:
                assert starts.get(p) == c, (p, c, starts)


# ---- garbage ----------------------------------------------------------------------------------

def test_garbage_partition_goes_to_dlq_others_flow():
    from kafka.partitioner.default import murmur2

    parts, bad = 4, 0
    garbage = [b"", b"not avro at all", b"\xff" * 64, b'{"id":"json","type":"x"}',
               b"\xc3\x01" + b"\x00" * 8 + b"\x02a", b"\x02a\x02b\x00", b"\x80\x80\x80\x80\x80"]
    garbage = (garbage * 6)[:40]
    with Scene(partitions=parts) as s:
        # the breaker's ratio rule off: when the garbage happens to be read first, 80 of the
        # first 100 jobs are dead letters and the breaker (tested in test_breaker.py) would
        # rightly stop everything
        w = s.worker("w1", env={"KJOBS_DLQ_BREAKER_WINDOW": "0"})
        w.wait_assigned()
        producer = harness.python_producer(s.bootstrap)

        def send_garbage():
            for g in garbage:
                producer.send("jobs", value=g, partition=bad)
            producer.flush(timeout=60)
        # good jobs only on the other partitions (kjobs uses the Java murmur2 partitioner)
        good_keys = [k for k in (f"g{i}" for i in range(400))
                     if (murmur2(k.encode()) & 0x7fffffff) % parts != bad][:120]
        jobs = [{"type": "example.record", "key": good_keys[i % len(good_keys)],
                 "id": f"{good_keys[i % len(good_keys)]}/{i // len(good_keys)}"}
                for i in range(3000)]
        send_garbage()
        s.enqueue(jobs[:1500])
        send_garbage()
        s.enqueue(jobs[1500:])
        producer.close()
        s.wait_all_ids([j["id"] for j in jobs], 120, procs=[w])
        dlq = harness.peek(s.bootstrap, "jobs.dlq", 2 * len(garbage))
        assert w.proc.poll() is None, "the worker died"
        records = s.records.read()
        assert all(r.partition != bad for r in records)
        assert len(records) == len(jobs) and check_key_order(records) == len(good_keys)
        values = collections.Counter()
        for d in dlq:
            h = hdrs(d)
            assert h["kjobs-error-class"] == "decode", d
            assert h["kjobs-original-topic"] == "jobs" and h["kjobs-original-partition"] == str(bad)
            assert h.get("kjobs-error"), d
            values[d.get("value_b64")] += 1
        import base64
        assert values == collections.Counter(base64.b64encode(g).decode() for g in garbage * 2), \
            values
        assert w.stop() == 0, w.tail()
        committed = {l["partition"]: l["committed"] for l in w.logs("partition revoked")
                     if l["topic"] == "jobs"}
        assert committed.get(bad) == 2 * len(garbage), committed


if __name__ == "__main__":
    harness.main([test_feeder_reports_its_own_end,
                  test_plugin_handlers_and_outcomes, test_plugin_load_errors_exit_2,
                  test_100k_jobs_once_each_in_key_order, test_group_join_and_leave_mid_stream,
                  test_rolling_restart_sigterm_while_a_worker_joins,
                  test_group_protocol_auto_uses_what_the_broker_offers,
                  test_kip848_consumer_protocol_join_and_leave,
                  test_kip848_member_without_partitions_is_ready,
                  test_rolling_upgrade_from_classic_to_kip848,
                  test_fenced_static_member_stops_with_a_clear_error,
                  test_kill_9_then_restart_reruns_only_uncommitted,
                  test_sigterm_mid_batch_finishes_commits_and_nothing_reruns,
                  test_garbage_partition_goes_to_dlq_others_flow])
