"""test_memcheck.py — valgrind memcheck on a real worker: it handles successes, a retry through
the ladder and an undecodable record, then drains on SIGTERM; memcheck must report no error and
no definitely/indirectly lost block. Not run in the ASan build (the two cannot be combined).
Run with /usr/bin/python3."""
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


def test_worker_shutdown_is_clean_under_memcheck():
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is not installed (scripts/install-deps.sh installs it)"
    with harness.Broker(partitions=2) as broker:
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.noop", "--count", "300"))
        run(kjobs_cmd("enqueue", "-b", broker.bootstrap, "--type", "kjobs.flaky", "--payload", "1",
                      "--count", "5"))
        run(["kcat", "-P", "-b", broker.bootstrap, "-t", "jobs", "-p", "0"], input="garbage\n")
        log = tempfile.NamedTemporaryFile(suffix=".vg", delete=False).name
        env = dict(os.environ, KJOBS_RETRY_DELAYS="1s", KJOBS_HTTP_LISTEN="",
                   KJOBS_LOG_LEVEL="debug")
        proc = subprocess.Popen(
            [valgrind, "--leak-check=full", "--show-leak-kinds=definite,indirect",
             "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
             f"--log-file={log}", *kjobs_cmd("run", "-b", broker.bootstrap, "-X",
                                              "fetch.wait.max.ms=5", "-X",
                                              "session.timeout.ms=6000")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        # the event: the five flaky jobs succeeded on their second attempt (from jobs.retry.1)
        done_on_ladder = 0
        for line in proc.stderr:
            if '"msg":"job done"' in line and '"topic":"jobs.retry.1"' in line:
                done_on_ladder += 1
                if done_on_ladder == 5:
                    break
        assert done_on_ladder == 5, "the retried jobs never ran"
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        rc = proc.wait(timeout=120)
        report = open(log).read()
        os.unlink(log)
    summary = re.findall(r"(definitely lost|indirectly lost|ERROR SUMMARY): ([\d,]+)", report)
    print("     memcheck:", ", ".join(f"{k} {v}" for k, v in summary))
    assert rc == 0, f"kjobs run exited {rc} under valgrind:\n{report[-3000:]}"
    assert "ERROR SUMMARY: 0 errors" in report, report[-3000:]


if __name__ == "__main__":
    harness.main([test_worker_shutdown_is_clean_under_memcheck])
