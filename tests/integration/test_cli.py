"""test_cli.py — the `kjobs` command's user-visible behaviour: help, exit codes (0 ok,
1 runtime error, 2 usage/config error), config errors naming file and line, JSON logs on
stderr, enqueue refusing to report success for jobs the broker never acknowledged, topics
layout, and kcat (an independent librdkafka-based client) reading what kjobs wrote.
Run with /usr/bin/python3."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import kjobs_cmd, run  # noqa: E402


def test_help_and_unknown_command():
    p = run(kjobs_cmd("help"))
    for name in ("run", "enqueue", "peek", "dlq", "lag", "topics", "broker", "schema"):
        assert f"  {name} " in p.stdout, name
    p = run(kjobs_cmd("frobnicate"), check=False)
    assert p.returncode == 2 and "unknown command" in p.stderr
    p = run(kjobs_cmd("enqueue", "--help"))
    assert "--encoding" in p.stdout
    p = run(kjobs_cmd("enqueue", "--no-such-flag"), check=False)
    assert p.returncode == 2


def test_config_error_names_file_line_and_setting():
    path = harness.write_config('batch = { max_jobs = 100; };\nbatch2 = 1;\n')
    p = run(kjobs_cmd("topics", "-c", path), check=False)
    assert p.returncode == 2, p
    assert f"{path}:2" in p.stderr and "batch2" in p.stderr, p.stderr
    path = harness.write_config('\nbatch = {\n  max_jobs = 0;\n};\n')
    p = run(kjobs_cmd("topics", "-c", path), check=False)
    assert p.returncode == 2 and f"{path}:3" in p.stderr and "batch.max_jobs" in p.stderr, p.stderr
    p = run(kjobs_cmd("topics", "-c", "/nonexistent/kjobs.cfg"), check=False)
    assert p.returncode == 2 and "/nonexistent/kjobs.cfg" in p.stderr


def test_topics_layout_follows_config():
    path = harness.write_config('topics = { main = "emails"; partitions = 6; };\n'
                                'retry = { delays = ["5s", "2m"]; };\n')
    p = run(kjobs_cmd("topics", "-c", path))
    rows = [l.split() for l in p.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["emails", "emails.retry.1", "emails.retry.2", "emails.dlq",
                                    "emails.status", "emails.control"]
    assert rows[1][3] == "5s" and rows[2][3] == "2m" and all(r[-1] == "6" for r in rows[:4])
    assert rows[4][1:] == ["status", "-", "-", "1"], rows[4]  # compacted, one partition
    assert rows[5][1:] == ["ctl", "-", "-", "1"], rows[5]  # the operator's controls, the same


def test_embedded_bootstrap_needs_a_broker_address():
    p = run(kjobs_cmd("enqueue", "--type", "kjobs.noop"), check=False,
            env={"KJOBS_KAFKA_BOOTSTRAP": "embedded"})
    assert p.returncode == 2 and "kjobs broker" in p.stderr, p.stderr


def embedded_run_logs(tmp, *extra, env=None):
    """Runs `kjobs run --embedded --partitions 1 *extra` in @p tmp until its main partition is
    assigned, stops it with SIGTERM (exit 0 required) and returns its JSON log lines."""
    env = dict(os.environ, KJOBS_HTTP_LISTEN="127.0.0.1:0", KJOBS_LOG_LEVEL="debug", **(env or {}))
    log = open(os.path.join(tmp, "worker.log"), "w+")
    proc = subprocess.Popen(kjobs_cmd("run", "--embedded", "--partitions", "1", *extra),
                            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=tmp)

    def logs():
        text = open(log.name).read()
        return harness.log_lines(text[:text.rfind("\n") + 1])
    try:
        harness.wait_until("the worker's main partition assigned", lambda: any(
            l["msg"] == "partition assigned" and l.get("topic") == "jobs" for l in logs()))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return logs()


def librdkafka_version(lines):
    """(major, minor) of the librdkafka a worker logged in its "worker started" line."""
    [started] = [l for l in lines if l["msg"] == "worker started"]
    return tuple(int(x) for x in started["librdkafka"].split(".")[:2])


def test_embedded_run_starts_and_stops_without_a_warning():
    """A newcomer's first command, `kjobs run --embedded` (which hands its producers the
    consumer-only fetch.wait.max.ms=5 through kafka.properties), logs nothing at warn or error
    from start to a clean SIGTERM: librdkafka's notes that a property does not apply to a
    producer, and the mock cluster's own handle having no bootstrap.servers, are debug lines."""
    harness.require_embedded("starts `kjobs run --embedded` itself")
    with tempfile.TemporaryDirectory() as tmp:  # no ./kjobs.cfg of the caller's
        lines = embedded_run_logs(tmp)
    # librdkafka before 2.2 (Debian 12's 2.0.2, the supported minimum) has its mock cluster
    # report a pre-0.11 broker, and warns that allow.auto.create.topics is not supported there
    old = librdkafka_version(lines) < (2, 2)
    loud = [l for l in lines if l["level"] in ("warn", "error", "fatal")
            and not (old and l.get("facility") == "AUTOCREATE")]
    assert not loud, loud
    notes = {l["msg"]: l["level"] for l in lines if l.get("facility") == "CONFWARN"}
    assert [lvl for m, lvl in notes.items() if "No `bootstrap.servers` configured" in m] == ["debug"], notes
    ignored = [lvl for m, lvl in notes.items() if "fetch.wait.max.ms is a consumer property" in m]
    assert ignored and set(ignored) == {"debug"}, notes


def test_every_consumer_gets_the_prefetch_and_response_sizes():
    """Every consumer a worker makes (its group consumer, the control follower, the status
    reader, the key-order ladder scan) gets a bounded prefetch queue and Fetch response, not
    librdkafka's 64 MiB and 50 MiB: the group consumer's from batch.max_pending_bytes (64 MiB
    here: 16384 KiB and 4 MiB), the others the floor (1024 KiB, 256 KiB); a property the user
    sets wins for all (librdkafka's own configuration dump, debug=conf)."""
    harness.require_embedded("starts `kjobs run --embedded` itself")
    floor = {"queued.max.messages.kbytes": "1024", "fetch.max.bytes": "262144"}
    for extra, group, others in (
            ((), {"queued.max.messages.kbytes": "16384", "fetch.max.bytes": "4194304"}, floor),
            (("-X", "queued.max.messages.kbytes=2048"),
             {"queued.max.messages.kbytes": "2048", "fetch.max.bytes": "4194304"},
             {"queued.max.messages.kbytes": "2048", "fetch.max.bytes": "262144"})):
        with tempfile.TemporaryDirectory() as tmp:
            lines = embedded_run_logs(tmp, "-X", "debug=conf", *extra,
                                      env={"KJOBS_RETRY_ORDERING": "key",
                                           "KJOBS_BATCH_MAX_PENDING_BYTES": "67108864"})
        sizes = {}
        for l in lines:
            m = re.search(r"\b(queued\.max\.messages\.kbytes|fetch\.max\.bytes) = ([0-9]+)", l["msg"])
            if m and "consumer" in l.get("client", ""):
                sizes.setdefault(l["client"], {})[m.group(1)] = m.group(2)
        assert len(sizes) >= 4 and any("key-order" in c for c in sizes), sizes
        if librdkafka_version(lines) < (2, 2) and not extra:
            # no prefetch size before librdkafka 2.2 (its queue is per partition there)
            group, others = ({k: v for k, v in d.items() if k == "fetch.max.bytes"}
                             for d in (group, others))
        # the group consumer (made twice when group_protocol "auto" falls back to classic)
        scaled = [c for c, d in sizes.items() if d == group]
        assert scaled and not any("key-order" in c for c in scaled), (extra, sizes)
        assert all(d == others for c, d in sizes.items() if c not in scaled), (extra, sizes)
        assert len(sizes) - len(scaled) >= 3, (extra, sizes)


def test_enqueue_fails_when_broker_never_acknowledges():
    # Nothing listens on this port: every job times out, none may be reported as enqueued.
    p = run(kjobs_cmd("enqueue", "-b", "127.0.0.1:1", "-X", "message.timeout.ms=1500",
                      "--type", "kjobs.noop", "--count", "3"), check=False)
    assert p.returncode == 1, p
    assert p.stdout.strip() == "", "ids printed for jobs that were never acknowledged"
    logs = harness.log_lines(p.stderr)
    summary = [l for l in logs if l["msg"] == "some jobs were not enqueued"]
    assert summary and summary[0]["failed"] == 3, logs[-3:]


def test_enqueue_rejects_bad_lines_and_keeps_good_ones():
    with harness.Broker(partitions=2) as broker:
        lines = ('{"type":"ok.one"}\nnot json\n{"payload":"no type"}\n'
                 '{"type":"ok.two","meta":{"a":1}}\n{"type":"ok.three","key":"k"}\n')
        p = run(kjobs_cmd("enqueue", "-b", broker.bootstrap), input=lines, check=False)
        assert p.returncode == 1
        assert len(p.stdout.split()) == 2, p.stdout
        rejected = [l for l in harness.log_lines(p.stderr) if l["msg"] == "input line rejected"]
        assert sorted(l["line"] for l in rejected) == [2, 3, 4], rejected
        records = harness.peek(broker.bootstrap, "jobs", 2)
        assert sorted(r["type"] for r in records) == ["ok.one", "ok.three"]


def test_kcat_reads_what_kjobs_wrote_and_peek_reads_what_kcat_wrote():
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (scripts/install-deps.sh installs it)"
    with harness.Broker(partitions=2) as broker:
        ids = run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "t", "--count", "25",
                            "--key", "same-key")).stdout.split()
        p = run([kcat, "-C", "-b", broker.bootstrap, "-t", "jobs", "-e", "-q", "-f",
                 "%p %k %S\\n"])
        rows = [l.split() for l in p.stdout.splitlines() if l.strip()]
        assert len(rows) == 25 and len({r[0] for r in rows}) == 1, rows[:3]
        assert all(r[1] == "same-key" for r in rows)
        # kcat writes raw garbage and a tombstone-free empty string; peek reports, never dies
        subprocess.run([kcat, "-P", "-b", broker.bootstrap, "-t", "jobs", "-p", "0"],
                       input=b"this is not avro\n", check=True, timeout=60)
        out = harness.peek(broker.bootstrap, "jobs", 26)
        errors = [r for r in out if "error" in r]
        assert len(errors) == 1 and "value_b64" in errors[0]
        assert {r["id"] for r in out if "id" in r} == set(ids)


def test_broker_writes_bootstrap_file_and_exits_cleanly():
    path = harness.write_config("") + ".bootstrap"
    proc = subprocess.Popen(kjobs_cmd("broker", "--bootstrap-file", path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline().strip()
    assert first.startswith("127.0.0.1:"), first
    # kjobs broker writes the file before it prints the line
    with open(path) as f:
        assert f.read().strip() == first
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    assert not os.path.exists(path), "bootstrap file left behind"
    logs = harness.log_lines(proc.stderr.read())
    created = [l["topic"] for l in logs if l["msg"] == "topic created"]
    assert created == ["jobs", "jobs.retry.1", "jobs.retry.2", "jobs.retry.3", "jobs.dlq",
                       "jobs.status", "jobs.control"], created


def test_check_config_agrees_with_run_on_client_settings():
    """Settings librdkafka checks only when a client is created (a SASL mechanism it does not
    have, a TLS file that does not exist) are config errors for --check-config and run alike:
    exit 2, naming the setting's problem. So are the consumer's own checks (a fetch.max.bytes
    below the least message.max.bytes, or below a message.max.bytes set with it) and an
    integer property given a unit, which librdkafka would read as its leading digits."""
    for props, says in ((("security.protocol=sasl_plaintext", "sasl.mechanisms=BOGUS"),
                         "BOGUS"),
                        (("security.protocol=ssl", "ssl.ca.location=/nonexistent/ca.pem"),
                         "ssl.ca.location"),
                        (("fetch.max.bytes=512",), "fetch.max.bytes: 512 is below 1000"),
                        (("fetch.max.bytes=100000", "message.max.bytes=200000"),
                         "`fetch.max.bytes` must be >= `message.max.bytes`"),
                        (("fetch.max.bytes=64Ki",), '"fetch.max.bytes" takes a number, with no unit'),
                        (("max.poll.interval.ms=30000", "session.timeout.ms=45000"),
                         "max.poll.interval.ms`must be >= `session.timeout.ms`")):
        xs = [a for p in props for a in ("-X", p)]
        for args in (("run", "--check-config", *xs), ("run", "-b", "127.0.0.1:1", *xs)):
            p = run(kjobs_cmd(*args), check=False, timeout=60,
                    env={"KJOBS_HTTP_LISTEN": ""})
            assert p.returncode == 2 and says in p.stderr, (args, p.returncode, p.stderr[-500:])


def test_check_config_agrees_with_run_and_hides_exec_arguments():
    """Issue #10 item 14: --check-config runs run's own checks (a handlers.exec program that
    does not exist is refused by both, exit 2, naming file:line: handlers.exec and never the
    arguments); the effective-config dump hides exec arguments; a DLQ named like a ladder step
    blames topics.dlq; -c naming a directory says so."""
    secret = "--token=s3cr3t-value"
    path = harness.write_config(
        'topics = { main = "x"; };\nhandlers = {\n  exec = [ "/nonexistent/kjobs-handler", "%s" ];\n};\n'
        % secret)
    for args in (("run", "-c", path, "--check-config"), ("run", "-c", path, "-b", "127.0.0.1:1")):
        p = run(kjobs_cmd(*args), check=False, timeout=60)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert f"{path}:3: handlers.exec:" in p.stderr, p.stderr
        assert "s3cr3t" not in p.stderr + p.stdout and "nonexistent" not in p.stderr, p.stderr
    path = harness.write_config('handlers = {\n  exec = [ "/bin/cat", "%s" ];\n};\n' % secret)
    p = run(kjobs_cmd("run", "-c", path, "--check-config"))
    assert "s3cr3t" not in p.stdout + p.stderr, p.stdout
    line = [l for l in p.stdout.splitlines() if l.startswith("handlers.exec =")]
    assert line and line[0].startswith('handlers.exec = [ "/bin/cat", "<hidden>" ];'), line
    path = harness.write_config('topics = {\n  main = "x";\n  dlq = "x.retry.1";\n};\n')
    p = run(kjobs_cmd("run", "-c", path, "--check-config"), check=False)
    assert p.returncode == 2 and f"{path}:3: topics.dlq:" in p.stderr, p.stderr
    d = os.path.dirname(path)
    p = run(kjobs_cmd("run", "-c", d, "--check-config"), check=False)
    assert p.returncode == 2 and d in p.stderr and "directory" in p.stderr, p.stderr
    assert "flex" not in p.stderr, p.stderr


def test_version():
    """Issue #10 item 12: `kjobs --version`, `-V` and `kjobs version` print one line with the
    kjobs version, the git revision (recorded at build time) and the running librdkafka
    version, and exit 0; `kjobs help` lists it. Outside a git checkout the revision is
    "unknown" (the build step run on a directory without .git)."""
    lines = set()
    for args in (("--version",), ("-V",), ("version",)):
        p = run(kjobs_cmd(*args))
        assert p.returncode == 0 and p.stderr == "", (args, p.returncode, p.stderr)
        assert re.fullmatch(r"kjobs \d+\.\d+\.\d+ \(git ([0-9a-f]{7,40}(-dirty)?|unknown)\) "
                            r"librdkafka \d+\.\d+\.\d+\S* allocator (glibc|jemalloc "
                            r"\d+\.\d+\.\d+ \(narenas \d+\))\n", p.stdout), p.stdout
        lines.add(p.stdout)
    assert len(lines) == 1, lines
    assert "  version " in run(kjobs_cmd("help")).stdout
    assert run(kjobs_cmd("version", "extra"), check=False).returncode == 2
    cmake = shutil.which("cmake")
    if cmake:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "rev.h")
            subprocess.run([cmake, f"-DSRC={d}", f"-DOUT={out}", "-P",
                            os.path.join(harness.SOURCE_DIR, "processor", "git_revision.cmake")],
                           check=True, capture_output=True, timeout=60)
            assert '#define KJOBS_GIT_REVISION "unknown"' in open(out).read()


def test_allocator_is_the_one_linked_with_its_tuning():
    """Issue #18: the default build links jemalloc (cli/malloc_conf.c) and tunes it with two
    arenas; MALLOC_CONF overrides the tuning option by option (jemalloc's documented order);
    sanitizer builds link none and report glibc. What `kjobs version` reports is read from the
    running allocator, so it follows the binary's ELF NEEDED entries, not the build's claims."""
    kjobs = harness.kjobs_cmd()[0]
    dynamic = subprocess.run(["readelf", "-d", kjobs], capture_output=True, text=True,
                             check=True).stdout
    linked = "libjemalloc.so" in dynamic

    def allocator(**env):
        out = run(kjobs_cmd("version"), env=dict(os.environ, **env)).stdout
        return out.split(" allocator ", 1)[1].strip()
    if linked:
        assert re.fullmatch(r"jemalloc \d+\.\d+\.\d+ \(narenas 2\)", allocator()), allocator()
        assert allocator(MALLOC_CONF="narenas:3").endswith("(narenas 3)")
    else:
        assert allocator() == "glibc", allocator()


if __name__ == "__main__":
    harness.main([test_check_config_agrees_with_run_on_client_settings, test_help_and_unknown_command, test_config_error_names_file_line_and_setting,
                  test_check_config_agrees_with_run_and_hides_exec_arguments, test_version,
                  test_allocator_is_the_one_linked_with_its_tuning,
                  test_topics_layout_follows_config, test_embedded_bootstrap_needs_a_broker_address,
                  test_embedded_run_starts_and_stops_without_a_warning,
                  test_every_consumer_gets_the_prefetch_and_response_sizes,
                  test_enqueue_fails_when_broker_never_acknowledges,
                  test_enqueue_rejects_bad_lines_and_keeps_good_ones,
                  test_kcat_reads_what_kjobs_wrote_and_peek_reads_what_kcat_wrote,
                  test_broker_writes_bootstrap_file_and_exits_cleanly])
