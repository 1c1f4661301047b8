"""test_console_api.py — `kjobs ui` (docs/console.md) over HTTP with urllib, against a real worker
on the embedded broker: the embedded page, /api/config, the overview (workers from their status
records, counts moving, lag), retries, the dead-letter list with filters and a detail with its
headers in order, and the guards (token, loopback-only without a token, Host check, read-only).

Run with /usr/bin/python3; the binary from KJOBS_BIN.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import Broker, LoggedWorker, kjobs_cmd, run, wait_until  # noqa: E402


class Console:
    """A `kjobs ui` process; its URL is the first stdout line."""

    def __init__(self, bootstrap, env=None, extra=()):
        full = dict(os.environ)
        full.update(env or {})
        self.proc = subprocess.Popen(kjobs_cmd("ui", "-b", bootstrap, "--listen", "127.0.0.1:0",
                                               *extra),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), (self.url, self.proc.stderr.read())

    def get(self, path, headers=None, method="GET", data=None):
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {},
                                     method=method, data=data)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def api(self, path, headers=None):
        status, _, body = self.get(path, headers)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=30)
        assert rc == 0, (rc, self.proc.stderr.read()[-3000:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()


def with_worker(broker, fn, env=None):
    env = dict(env or {}, KJOBS_UI_REPORT_INTERVAL="300ms")
    os.environ.update(env)
    try:
        worker = LoggedWorker(broker.bootstrap)
    finally:
        for k in env:
            del os.environ[k]
    with worker:
        fn(worker)


HANDLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console_handler.py")


def gated_env(gate):
    """A worker whose exec handler dead-letters "console.gated" jobs until `gate` exists."""
    return {"KJOBS_HANDLERS_EXEC": json.dumps(["/usr/bin/python3", "-u", HANDLER, gate])}


def post(ui, path, body, headers=None):
    h = {"Content-Type": "application/json", "X-Kjobs-Console": "1"}
    h.update(headers or {})
    status, _, out = ui.get(path, h, method="POST", data=json.dumps(body).encode())
    return status, json.loads(out)


def test_replay_action():
    import tempfile
    gate = tempfile.mktemp(prefix="kjobs-console-gate-")
    with Broker(partitions=2) as broker, \
            Console(broker.bootstrap, env={"KJOBS_UI_ALLOW_ACTIONS": "true"}) as ui:
        assert ui.api("/api/config")["allow_actions"] is True

        def scenario(worker):
            ids = run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "console.gated",
                                "--count", "3")).stdout.split()
            d = wait_until("3 dead letters", lambda: (lambda d: d if d["matched"] == 3 else None)(
                ui.api("/api/dlq?type=console.gated")), timeout=60)
            refs = [it["ref"] for it in d["items"]]
            # the CSRF guard: each missing piece is refused (and counted)
            assert post(ui, "/api/dlq/replay", {"refs": refs[:1]},
                        {"X-Kjobs-Console": "0"})[0] == 403
            assert ui.get("/api/dlq/replay", {"Content-Type": "text/plain", "X-Kjobs-Console": "1"},
                          method="POST", data=b"refs=0:0")[0] == 403
            assert post(ui, "/api/dlq/replay", {"refs": refs[:1]},
                        {"Origin": "http://attacker.example"})[0] == 403
            assert post(ui, "/api/dlq/replay", {"refs": refs[:1]},
                        {"Sec-Fetch-Site": "cross-site"})[0] == 403
            assert post(ui, "/api/dlq/replay", {"refs": ["x"]})[0] == 400
            # a dry run selects and sends nothing
            status, dry = post(ui, "/api/dlq/replay", {"refs": refs[:2], "dry_run": True})
            assert status == 200 and dry["selected"] == 2 and dry["replayed"] == 0, dry
            # open the gate, replay two: they run again and succeed; the third stays
            open(gate, "w").close()
            status, r = post(ui, "/api/dlq/replay", {"refs": refs[:2]},
                             {"Origin": ui.url.rstrip("/")})
            assert status == 200 and r["replayed"] == 2 and r["failed"] == 0, r
            assert {i["ref"] for i in r["items"]} == set(refs[:2]), r
            wait_until("2 replayed jobs succeeded", lambda: os.path.exists(gate + ".ok") and
                       len(set(open(gate + ".ok").read().split()) & set(ids)) == 2, timeout=60)
            # the loop guard: replaying the same two again replays nothing (they are behind the
            # replay marker now, so not even selected)
            status, again = post(ui, "/api/dlq/replay", {"refs": refs[:2]})
            assert status == 200 and again["replayed"] == 0 and again["selected"] == 0, again
            states = {it["ref"]: it["state"] for it in ui.api("/api/dlq?type=console.gated")["items"]}
            assert [states[r] for r in refs[:2]] == ["replayed", "replayed"], states
            assert states[refs[2]] == "new", states
            # discard the third: the same guard, then listed as discarded, never replayed
            assert post(ui, "/api/dlq/discard", {"refs": refs[2:]},
                        {"X-Kjobs-Console": "0"})[0] == 403
            status, dis = post(ui, "/api/dlq/discard", {"refs": refs[2:]})
            assert status == 200 and dis["discarded"] == 1 and dis["selected"] == 1, dis
            status, dis = post(ui, "/api/dlq/discard", {"refs": refs[2:]})
            assert status == 200 and dis["discarded"] == 0, dis  # not selected twice
            state = {it["ref"]: it["state"] for it in ui.api("/api/dlq?type=console.gated")["items"]}
            assert state[refs[2]] == "discarded", state
            status, r = post(ui, "/api/dlq/replay", {"refs": refs[2:]})
            assert status == 200 and r["replayed"] == 0 and r["skipped"]["discarded"] == 1, r

        with_worker(broker, scenario, gated_env(gate))
        # every action, refusals included, is counted on the console's /metrics and logged
        status, _, text = ui.get("/metrics")
        counts = {}
        for line in text.decode().splitlines():
            if line.startswith("kjobs_console_actions_total{"):
                labels, value = line.rsplit(" ", 1)
                counts[labels] = float(value)
        assert counts.get('kjobs_console_actions_total{action="replay",result="ok"}') == 4, counts
        assert counts.get('kjobs_console_actions_total{action="replay",result="refused"}') == 5, counts
        assert counts.get('kjobs_console_actions_total{action="discard",result="ok"}') == 2, counts
        assert counts.get('kjobs_console_actions_total{action="discard",result="refused"}') == 1, counts
        ui.stop()
        actions = [l for l in harness.log_lines(ui.proc.stderr.read()) if l["msg"] == "console action"]
        assert len(actions) == 12, actions
        assert all(isinstance(a["detail"], str) or a["result"] == "refused" for a in actions)
    for f in (gate, gate + ".ok"):
        if os.path.exists(f):
            os.unlink(f)


def test_pages_and_api():
    with Broker(partitions=2) as broker, Console(broker.bootstrap) as ui:
        status, headers, body = ui.get("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html"), status
        assert b'src="/console.js"' in body
        assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'self'
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        status, _, js = ui.get("/console.js")
        assert status == 200 and b"innerHTML" not in js and b"textContent" in js
        assert ui.get("/console.css")[0] == 200
        assert ui.get("/nope.html")[0] == 404

        config = ui.api("/api/config")
        assert config["allow_actions"] is False and config["token_required"] is False, config
        assert config["main_topic"] == "jobs" and config["dlq_topic"] == "jobs.dlq"

        def scenario(worker):
            def live():
                o = ui.api("/api/overview")
                ws = [w for w in o["workers"] if w["pid"] == worker.proc.pid and not w["stale"]]
                return (o, ws[0]) if ws and ws[0]["state"] == "running" else None
            o, w = wait_until("the worker in the overview", live, timeout=60)
            base = o["totals"]["jobs"]["ok"]
            # a console for another group does not show this group's workers
            with Console(broker.bootstrap, extra=("-G", "another-group")) as other:
                wait_until("the other console read the status topic",
                           lambda: other.api("/api/overview")["status_loaded"])
                assert other.api("/api/overview")["workers"] == []
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop",
                          "--count", "30"))
            moved = wait_until("the succeeded count +30", lambda: (lambda o: o if o["totals"]["jobs"]["ok"] >= base + 30 else None)(ui.api("/api/overview")), timeout=60)
            assert moved["totals"]["jobs"]["ok"] == base + 30, moved["totals"]
            assert {r["topic"] for r in moved["lag"]} >= {"jobs", "jobs.retry.1"}, moved["lag"]
            wait_until("main lag 0", lambda: ui.api("/api/overview")["totals"]["lag_main"] == 0)
            assert ui.api("/api/overview")["oldest_waiting_ms"] == {}, "nothing waits"

            # dead letters of two classes; a payload with markup stays data
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail-permanent",
                          "--payload", '{"x":"<script>alert(1)</script>"}', "--count", "3"))
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "nosuch.type",
                          "--count", "2"))
            full = wait_until("5 dead letters", lambda: (lambda d: d if d["matched"] == 5 else None)(ui.api("/api/dlq")), timeout=60)
            assert all(":" in it["ref"] for it in full["items"]), full
            perm = ui.api("/api/dlq?class=permanent")
            assert perm["matched"] == 3 and {i["type"] for i in perm["items"]} == {"kjobs.fail-permanent"}
            unknown = ui.api("/api/dlq?type=nosuch.type")
            assert unknown["matched"] == 2 and {i["error_class"] for i in unknown["items"]} == {"unknown-type"}
            text = ui.api("/api/dlq?q=PERMANENT%20FAILURE")  # case-insensitive error text
            assert text["matched"] == 3, text
            assert ui.api("/api/dlq?since=99999999999999")["matched"] == 0
            assert ui.api("/api/dlq?limit=2")["items"].__len__() == 2

            ref = perm["items"][0]["ref"]
            rec = ui.api("/api/dlq/" + ref)
            names = [h[0] for h in rec["headers"]]
            assert names[:3] == ["kjobs-original-topic", "kjobs-original-partition",
                                 "kjobs-original-offset"], names
            assert rec["payload"] == '{"x":"<script>alert(1)</script>"}', rec["payload"]
            assert ui.get("/api/dlq/99:99")[0] == 404
            assert ui.get("/api/dlq/not-a-ref")[0] == 400

            retries = ui.api("/api/retries")
            assert [s["step"] for s in retries["steps"]] == [1, 2, 3], retries
            assert all(s["waiting"] == 0 and s["next_due"] is None for s in retries["steps"])

        with_worker(broker, scenario)


def test_retries_waiting_and_next_due():
    with Broker(partitions=1) as broker, Console(broker.bootstrap) as ui:
        def scenario(worker):
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail",
                          "--count", "2"))
            r = wait_until("2 jobs waiting on step 1", lambda: (lambda r: r if r["steps"][0]["waiting"] == 2 and r["steps"][0]["next_due"] else None)(ui.api("/api/retries")), timeout=60)
            due = r["steps"][0]["next_due"]
            # due about one step delay (10 s) after the failure
            assert 0 < due - r["now"] <= 10000 + 1000, (due, r["now"])
        with_worker(broker, scenario)


def test_oldest_waiting_job():
    with Broker(partitions=2) as broker, Console(broker.bootstrap) as ui:
        assert ui.api("/api/overview")["oldest_waiting_ms"] == {}
        enqueued = int(time.time() * 1000)
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop", "--count", "4"))
        o = wait_until("an oldest waiting job", lambda: (lambda o: o if "jobs" in o["oldest_waiting_ms"] else None)(ui.api("/api/overview")))
        assert o["totals"]["lag_main"] == 4, o["totals"]
        # no worker runs: the age is the time since enqueue, as seen by the console
        assert 0 <= o["oldest_waiting_ms"]["jobs"] <= o["now"] - enqueued + 1000, o


def gauges(ui):
    """The console's /metrics as {(name, frozenset(labels)): value}, parsed by the reference
    Prometheus parser (python3-prometheus-client)."""
    from prometheus_client.parser import text_string_to_metric_families
    status, _, text = ui.get("/metrics")
    assert status == 200, status
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for smp in fam.samples:
            out[(smp.name, frozenset(smp.labels.items()))] = smp.value
    return out


def gauge(ui, name, **labels):
    return gauges(ui).get((name, frozenset(labels.items())))


def test_console_gauges_move():
    """kjobs_oldest_waiting_job_age_seconds, kjobs_retry_waiting_jobs and the DLQ depth gauges
    on the console's /metrics follow the cluster: refreshed every ui.report_interval."""
    env = {"KJOBS_UI_REPORT_INTERVAL": "300ms"}
    with Broker(partitions=2) as broker, Console(broker.bootstrap, env=env) as ui:
        b = broker.bootstrap
        # nothing waits: every gauge is there, at 0
        wait_until("gauges at 0", lambda: gauge(ui, "kjobs_oldest_waiting_job_age_seconds",
                                                topic="jobs") == 0 and
                   gauge(ui, "kjobs_retry_waiting_jobs", step="1", topic="jobs.retry.1") == 0 and
                   gauge(ui, "kjobs_dlq_dead_letters", topic="jobs.dlq") == 0)
        # jobs wait with no worker: the oldest one's age appears and grows
        run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.noop", "--count", "3"))
        first = wait_until("an oldest waiting job", lambda: (lambda v: v if v and v > 0 else None)(
            gauge(ui, "kjobs_oldest_waiting_job_age_seconds", topic="jobs")))
        wait_until("the age grows", lambda: gauge(
            ui, "kjobs_oldest_waiting_job_age_seconds", topic="jobs") > first + 0.5)

        def scenario(worker):
            # the worker runs them: nothing waits any more
            wait_until("age back to 0", lambda: gauge(
                ui, "kjobs_oldest_waiting_job_age_seconds", topic="jobs") == 0)
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.fail", "--count", "2"))
            wait_until("2 on the ladder", lambda: gauge(
                ui, "kjobs_retry_waiting_jobs", step="1", topic="jobs.retry.1") == 2, timeout=60)
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.fail-permanent", "--count", "3"))
            wait_until("3 dead letters, 3 unresolved", lambda: gauge(
                ui, "kjobs_dlq_dead_letters", topic="jobs.dlq") == 3 and gauge(
                ui, "kjobs_dlq_unresolved_dead_letters", topic="jobs.dlq") == 3, timeout=60)
        with_worker(broker, scenario)
        # discarding one resolves it; it is still retained
        handle = json.loads(run(kjobs_cmd("dlq", "list", "-b", b, "--json")).stdout.splitlines()[0])["handle"]
        run(kjobs_cmd("dlq", "discard", "-b", b, "--id", handle, "--yes"))
        wait_until("2 unresolved", lambda: gauge(
            ui, "kjobs_dlq_unresolved_dead_letters", topic="jobs.dlq") == 2 and gauge(
            ui, "kjobs_dlq_dead_letters", topic="jobs.dlq") == 3)


def test_console_on_a_worker_listener():
    """ui.on_worker: the worker's own listener serves the page and the API beside its probes
    and /metrics; on a non-loopback listener without ui.token the worker refuses to start."""
    with Broker(partitions=2) as broker:
        b = broker.bootstrap
        p = run(kjobs_cmd("run", "-b", b), check=False,
                env=dict(os.environ, KJOBS_UI_ON_WORKER="true", KJOBS_HTTP_LISTEN="0.0.0.0:0"))
        assert p.returncode == 2 and "ui.on_worker" in p.stderr and "ui.token" in p.stderr, p
        token = "worker-console-token-0123"
        env = {"KJOBS_UI_ON_WORKER": "true", "KJOBS_UI_TOKEN": token,
               "KJOBS_UI_REPORT_INTERVAL": "300ms", "KJOBS_HTTP_LISTEN": "0.0.0.0:0"}
        os.environ.update(env)
        try:
            worker = LoggedWorker(b)
        finally:
            for k in env:
                del os.environ[k]
        with worker:
            port = wait_until("the listener's port", lambda: next(
                (l["port"] for l in worker.logs() if l["msg"] == "http listening"), None))
            url = f"http://127.0.0.1:{port}"

            def get(path, headers=None):
                req = urllib.request.Request(url + path, headers=headers or {})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        return r.status, r.read()
                except urllib.error.HTTPError as e:
                    return e.code, e.read()
            auth = {"Authorization": "Bearer " + token}
            status, page = get("/")
            assert status == 200 and b"console.js" in page, (status, page[:200])
            assert get("/api/overview")[0] == 401  # the token guards the API here too
            assert get("/readyz")[0] in (200, 503) and get("/metrics")[0] == 200  # probes as before
            run(kjobs_cmd("enqueue", "-b", b, "--type", "kjobs.noop", "--count", "5"))
            # the worker's own status record reaches the console it serves: its counts move
            wait_until("the worker's 5 jobs on its own console", lambda: (lambda o: (
                o["totals"]["jobs"].get("ok", 0) >= 5))(json.loads(get("/api/overview", auth)[1])),
                timeout=60)


def test_guards():
    with Broker(partitions=1) as broker:
        # a token: every /api/ call needs it; the page itself carries no data
        with Console(broker.bootstrap, env={"KJOBS_UI_TOKEN": "s3cret-token-0123456789"}) as ui:
            assert ui.get("/api/overview")[0] == 401
            assert ui.get("/api/overview", {"Authorization": "Bearer wrong"})[0] == 401
            assert ui.get("/api/dlq/discard", {"Content-Type": "application/json",
                                               "X-Kjobs-Console": "1"},
                          method="POST", data=b'{"refs":["0:0"]}')[0] == 401
            assert gauge(ui, "kjobs_console_actions_total", action="discard",
                         result="refused") == 1
            assert ui.get("/api/config", {"Authorization": "Bearer s3cret-token-0123456789"})[0] == 200
            assert ui.get("/")[0] == 200
            # the listener's own probes answer without the token (Kubernetes probes them)
            assert ui.get("/livez")[0] == 200 and ui.get("/readyz")[0] == 200
        assert "s3cret-token-0123456789" not in ui.proc.stderr.read()  # never logged
        # no token: loopback only, and a Host that is not loopback is refused (DNS rebinding)
        with Console(broker.bootstrap) as ui:
            assert ui.get("/api/config", {"Host": "attacker.example"})[0] == 403
            assert ui.get("/api/config", {"Host": "localhost:1234"})[0] == 200
            # read-only: no method but GET on the API
            status, headers, _ = ui.get("/api/dlq/replay", {"Content-Type": "application/json",
                                                            "X-Kjobs-Console": "1"},
                                        method="POST", data=b'{"refs":["0:0"]}')
            assert status == 405 and headers["Allow"] == "GET, HEAD", status
            # a refusal is counted whatever refused it (here: the console is read-only)
            assert gauge(ui, "kjobs_console_actions_total", action="replay",
                         result="refused") == 1
        p = run(kjobs_cmd("ui", "-b", broker.bootstrap, "--listen", "0.0.0.0:0"), check=False)
        assert p.returncode == 2 and "ui.token" in p.stderr, (p.returncode, p.stderr)
        # a guessable token is refused, and the refusal does not show it
        p = run(kjobs_cmd("ui", "-b", broker.bootstrap), check=False,
                env=dict(os.environ, KJOBS_UI_TOKEN="pass word"))
        assert p.returncode == 2 and "KJOBS_UI_TOKEN" in p.stderr, (p.returncode, p.stderr)
        assert "pass word" not in p.stderr, p.stderr


def forge_status(bootstrap, records):
    """Write (key, value-bytes-or-None) records to jobs.status as any Kafka client could."""
    prod = harness.python_producer(bootstrap)
    for key, value in records:
        prod.send("jobs.status", key=key.encode(), value=value)
    prod.flush(30)
    prod.close()


def test_forged_status_records_cannot_break_the_overview():
    # Anyone who can produce to Kafka can write to the status topic: a record of the wrong
    # types, one too large, one of another group and values near overflow. The real worker's
    # row stays, the forged fields of the wrong type are not served, totals stay sane.
    with Broker(partitions=1) as broker, Console(broker.bootstrap) as ui:
        def scenario(worker):
            def live():
                ws = [w for w in ui.api("/api/overview")["workers"]
                      if w.get("pid") == worker.proc.pid and not w["stale"]]
                return ws[0] if ws else None
            wait_until("the worker in the overview", live, timeout=60)
            now = int(time.time() * 1000)
            big = 2 ** 62
            forged = {"schema": 1, "worker_id": "forged", "group": "kjobs", "reported_at": now,
                      "interval_ms": 10 ** 12, "state": "<b>running</b>",
                      "handler": {"p50_seconds": "x", "p99_seconds": {"a": 1}},
                      "jobs": {"ok": big, "retry": "7", "evil": 5},
                      "counters": {"retries_in_place": big, "rebalances": -5},
                      "assignment": {"count": "many", "partitions": [{"topic": 1}] * 500},
                      "errors": ["not an object", {"msg": "m" * 5000, "secret": "s",
                                                   "class": "timeout", "topic": "jobs",
                                                   "partition": 3, "offset": "7x"}],
                      "extra": "x" * 1000}
            forge_status(broker.bootstrap, [
                ("forged", json.dumps(forged).encode()),
                ("huge", json.dumps(dict(forged, worker_id="huge",
                                         pad="y" * 70000)).encode()),
                ("other-group", json.dumps(dict(forged, worker_id="other",
                                                group="someone-else")).encode()),
                ("not-json", b"\xff\xfe{"),
            ])

            def forged_seen():
                o = ui.api("/api/overview")
                ids = {w.get("worker_id") for w in o["workers"]}
                return o if "forged" in ids else None
            o = wait_until("the forged record read", forged_seen, timeout=60)
            ids = {w.get("worker_id") for w in o["workers"]}
            assert "huge" not in ids and "other" not in ids, ids  # too large; another group
            assert any(w.get("pid") == worker.proc.pid for w in o["workers"]), o["workers"]
            f = next(w for w in o["workers"] if w.get("worker_id") == "forged")
            assert "extra" not in f and "evil" not in f["jobs"] and "retry" not in f["jobs"], f
            assert "p50_seconds" not in f["handler"] and "p99_seconds" not in f["handler"], f
            assert "count" not in f["assignment"] and f["assignment"]["partitions"] == [], f
            assert f["jobs"]["ok"] == 2 ** 53, f["jobs"]  # clamped to what JSON numbers hold
            assert len(f["errors"]) == 1 and len(f["errors"][0]["msg"]) == 256, f["errors"]
            assert "secret" not in f["errors"][0]
            # the schema's context fields are kept, each only with its type
            assert f["errors"][0]["class"] == "timeout" and f["errors"][0]["topic"] == "jobs"
            assert f["errors"][0]["partition"] == 3 and "offset" not in f["errors"][0], f["errors"]
            assert 0 <= o["totals"]["jobs"]["ok"] <= 2 ** 53 + 10 ** 6, o["totals"]
            assert f["counters"]["retries_in_place"] == 2 ** 53, f["counters"]

            # 1,100 records at 2^53 (and one below 0): 64-bit sums would overflow (UBSan
            # aborts); the totals saturate at 2^53 and a negative counter adds nothing
            many = [(f"many-{i}", json.dumps({
                "schema": 1, "worker_id": f"many-{i}", "group": "kjobs", "reported_at": now,
                "interval_ms": 10 ** 12, "jobs": {"ok": -big if i == 0 else big},
                "counters": {"retries_in_place": -big if i == 0 else big}}).encode())
                for i in range(1100)]
            forge_status(broker.bootstrap, many)
            o = wait_until("the 1,100 forged records read",
                           lambda: (lambda o: o if sum(str(w.get("worker_id")).startswith("many-")
                                                       for w in o["workers"]) == 1100 else None)(
                               ui.api("/api/overview")), timeout=60)
            assert o["totals"]["jobs"]["ok"] == 2 ** 53, o["totals"]
            assert o["totals"]["retries_in_place"] == 2 ** 53, o["totals"]

        with_worker(broker, scenario)


def test_one_client_cannot_take_every_connection():
    # 70 idle connections from 127.0.0.2, one client address (more than the 64 the listener
    # takes in all), cannot lock out another address:
    # at most 8 per address are accepted (processor/http.c, KJ_HTTP_PER_IP_LIMIT)
    import socket
    with Broker(partitions=1) as broker, Console(broker.bootstrap) as ui:
        host, port = ui.url.split("//")[1].rstrip("/").split(":")
        held = []
        try:
            for _ in range(70):
                c = socket.socket()
                c.bind(("127.0.0.2", 0))
                c.settimeout(5)
                try:
                    c.connect((host, int(port)))
                    c.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
                except OSError:
                    pass
                held.append(c)
            status, _, body = ui.get("/livez")
            assert status == 200, (status, body)
        finally:
            for c in held:
                c.close()


def stop_signal_takers(pid):
    """The threads of process @p pid, other than its main thread, that would take a SIGTERM or
    SIGINT sent to it: those that do not block it (SigBlk in /proc/PID/task/TID/status, bit N-1
    for signal N), as "name tid". (The main thread leaves them unblocked only while it waits, in
    sigsuspend.)"""
    takers = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        stop = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
        if int(tid) != pid and int(status["SigBlk"], 16) & stop != stop:
            takers.append(f"{status['Name']} {tid}")
    return takers


def test_stop_signal_reaches_the_thread_that_waits_for_it():
    # `kjobs ui` and `kjobs broker` wait for SIGTERM on their main thread while other threads
    # (the HTTP server's, the console's readers) run: a SIGTERM the kernel hands to one of those
    # ran the handler there and the main thread slept on (`kjobs ui` ignored a SIGTERM in CI).
    # Only the waiting thread may leave it unblocked (cli/cli.h, kj_cli_install_stop_wait).
    with Broker(partitions=1) as broker, Console(broker.bootstrap) as ui:
        assert ui.get("/livez")[0] == 200  # the HTTP server and the console's readers run
        assert len(os.listdir(f"/proc/{ui.proc.pid}/task")) > 3
        assert stop_signal_takers(ui.proc.pid) == []
        if isinstance(broker.proc, subprocess.Popen):  # the embedded broker is `kjobs broker`
            assert stop_signal_takers(broker.proc.pid) == []
        ui.stop()  # and the SIGTERM is taken: exit 0 within its 30 s


def test_control_actions():
    """Pauses and the breaker's resume from the console (docs/console.md, "Controls"): the
    guards refuse what they must, a pause is shown at once and then as held by the worker that
    owns the partition (its status record), resumed it is gone; an open breaker is listed from
    the status records and closed by the console."""
    with Broker(partitions=2) as broker, \
            Console(broker.bootstrap, env={"KJOBS_UI_ALLOW_ACTIONS": "true"}) as ui:
        c = ui.api("/api/controls")
        assert c["pauses"] == [] and c["breaker"]["open"] == [], c
        assert [t["topic"] for t in c["topics"]] == ["jobs", "jobs.retry.1", "jobs.retry.2",
                                                    "jobs.retry.3"], c["topics"]
        assert c["control_topic"] == "jobs.control" and c["errors"] == [], c

        def scenario(worker):
            def part(c, topic, p):
                return next(x for x in c["partitions"] if x["topic"] == topic and x["partition"] == p)
            wait_until("the worker holds partitions", lambda: any(
                w.get("pid") == worker.proc.pid and w["assignment"]["count"] > 0
                for w in ui.api("/api/overview")["workers"]))
            # the guards: CSRF, then the body
            assert post(ui, "/api/controls/pause", {"topic": "jobs", "partition": 1},
                        {"X-Kjobs-Console": "0"})[0] == 403
            assert post(ui, "/api/controls/pause", {"topic": "jobs", "partition": 1},
                        {"Origin": "http://attacker.example"})[0] == 403
            assert post(ui, "/api/controls/breaker-resume", {},
                        {"Sec-Fetch-Site": "cross-site"})[0] == 403
            for bad in ({"topic": "nosuch"}, {"topic": "jobs.dlq"}, {"topic": "../x"},
                        {"topic": "jobs", "partition": -1}, {"topic": "jobs", "partition": "1"},
                        {"topic": "jobs", "partition": 9}, {"topic": "jobs", "reason": 5}):
                status, out = post(ui, "/api/controls/pause", bad)
                assert status == 400 and "error" in out, (bad, status, out)
            assert ui.get("/api/controls/pause", {"Content-Type": "application/json",
                                                  "X-Kjobs-Console": "1"},
                          method="POST", data=b"[1]")[0] == 400
            # pause jobs:1: shown at once, then held by the worker (its status record)
            status, out = post(ui, "/api/controls/pause",
                               {"topic": "jobs", "partition": 1, "reason": "<i>maintenance</i>"},
                               {"Origin": ui.url.rstrip("/")})
            assert status == 200 and out["ok"] is True, (status, out)
            c = ui.api("/api/controls")
            assert [(p["topic"], p["partition"], p["reason"]) for p in c["pauses"]] == \
                [("jobs", 1, "<i>maintenance</i>")], c["pauses"]
            assert c["pauses"][0]["by"].startswith("console "), c["pauses"]
            assert part(c, "jobs", 1)["paused"] == "partition" and part(c, "jobs", 0)["paused"] is None
            c = wait_until("jobs:1 held by the worker", lambda: (lambda c: c if part(
                c, "jobs", 1)["applied_by"] else None)(ui.api("/api/controls")), timeout=60)
            wait_until("the worker's gauge", lambda: worker.count("partition paused by operator") == 1)
            # its jobs wait, the other partition's run
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop", "--count", "40"))
            c = wait_until("jobs:0 drained, jobs:1 waiting", lambda: (lambda c: c if part(
                c, "jobs", 0)["lag"] == 0 and part(c, "jobs", 0)["log_end"] > 0 and
                part(c, "jobs", 1)["lag"] > 0 and part(c, "jobs", 1)["log_end"] + part(
                    c, "jobs", 0)["log_end"] >= 40 else None)(ui.api("/api/controls")), timeout=60)
            # resume: gone at once, released by the worker, drained
            status, out = post(ui, "/api/controls/resume", {"topic": "jobs", "partition": 1})
            assert status == 200, out
            assert ui.api("/api/controls")["pauses"] == []
            wait_until("jobs:1 drained", lambda: part(ui.api("/api/controls"), "jobs", 1)["lag"] == 0)
            wait_until("released by the worker", lambda: not part(
                ui.api("/api/controls"), "jobs", 1)["applied_by"])
            # a whole topic
            assert post(ui, "/api/controls/pause", {"topic": "jobs.retry.1"})[0] == 200
            c = ui.api("/api/controls")
            assert [t["paused"] for t in c["topics"]] == [False, True, False, False], c["topics"]
            assert part(c, "jobs.retry.1", 0)["paused"] == "topic"
            assert post(ui, "/api/controls/resume", {"topic": "jobs.retry.1", "partition": None})[0] == 200
            assert ui.api("/api/controls")["pauses"] == []
            # the breaker: tripped by ten dead letters in a row, listed, closed from here
            run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.fail-permanent",
                          "--count", "10"))
            c = wait_until("an open breaker listed", lambda: (lambda c: c if c["breaker"]["open"]
                                                              else None)(ui.api("/api/controls")))
            assert c["breaker"]["open"][0]["state"] == "breaker_open", c["breaker"]
            status, out = post(ui, "/api/controls/breaker-resume", {})
            assert status == 200, out
            assert ui.api("/api/controls")["breaker"]["last_resume_at"] is not None
            wait_until("the breaker closed", lambda: not ui.api("/api/controls")["breaker"]["open"])
            assert worker.count("control: circuit breaker resume requested by operator") == 1

        with_worker(broker, scenario, {"KJOBS_DLQ_BREAKER_CONSECUTIVE": "10",
                                       "KJOBS_DLQ_BREAKER_WINDOW": "0"})
        status, _, text = ui.get("/metrics")
        counts = {}
        for line in text.decode().splitlines():
            if line.startswith("kjobs_console_actions_total{"):
                labels, value = line.rsplit(" ", 1)
                counts[labels] = float(value)
        def n(action, result):
            return counts.get(f'kjobs_console_actions_total{{action="{action}",result="{result}"}}')
        assert n("pause", "ok") == 2 and n("resume", "ok") == 2, counts
        assert n("breaker-resume", "ok") == 1 and n("breaker-resume", "refused") == 1, counts
        assert n("pause", "refused") == 10, counts  # 2 CSRF + 8 bodies (one of them not JSON)
        ui.stop()
        actions = [l for l in harness.log_lines(ui.proc.stderr.read())
                   if l["msg"] == "console action" and l["action"] != "replay"]
        assert len(actions) == 16, actions
    # a read-only console takes no action
    with Broker(partitions=1) as broker, Console(broker.bootstrap) as ui:
        status, headers, _ = ui.get("/api/controls/pause", {"Content-Type": "application/json",
                                                            "X-Kjobs-Console": "1"},
                                    method="POST", data=b'{"topic":"jobs"}')
        assert status == 405, status
        assert ui.api("/api/controls")["pauses"] == []


if __name__ == "__main__":
    harness.main([test_pages_and_api, test_retries_waiting_and_next_due, test_oldest_waiting_job,
                  test_guards, test_forged_status_records_cannot_break_the_overview,
                  test_one_client_cannot_take_every_connection,
                  test_stop_signal_reaches_the_thread_that_waits_for_it,
                  test_replay_action, test_console_gauges_move,
                  test_console_on_a_worker_listener, test_control_actions])
