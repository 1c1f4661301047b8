#!/usr/bin/env bash
# long_job_proof.sh — the issue #16 proof that a long job keeps group membership: one job of
# JOB_MS (default 10 minutes) in a worker whose max.poll.interval.ms is MAX_POLL_MS (default
# 60 s), while 64 jobs land on the other partition. It runs tests/integration/test_timeouts.py's
# test_long_job_keeps_group_membership with those values: it passes when the long job ran once,
# no partition was revoked or lost and no stall was detected while it ran, and every job of the
# other partition finished before it. Too slow for CI (CI runs the same test with a 25 s job and
# a 10 s interval); reported in bench/RESULTS-ordering.md.
#
# usage: bench/long_job_proof.sh [-k KJOBS_BIN] [-p RECORDER_PLUGIN] [-b BOOTSTRAP_OF_REAL_KAFKA]
#                                [-j JOB_MS] [-m MAX_POLL_MS]
# Without -b it runs on the embedded broker (`kjobs broker`); with -b on a real cluster started
# by scripts/kafka.sh (KAFKA_LOCAL_DIR/KAFKA_LOCAL_PORT as for the integration tests).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KJOBS="${KJOBS_BIN:-$here/../build/kjobs}"
PLUGIN="${KJOBS_EXAMPLE_PLUGIN:-$(dirname "$KJOBS")/examples/libkjobs_example_recorder.so}"
BOOTSTRAP=""
JOB_MS=600000
MAX_POLL_MS=60000
while getopts "k:p:b:j:m:h" opt; do
  case "$opt" in
    k) KJOBS="$OPTARG" ;;
    p) PLUGIN="$OPTARG" ;;
    b) BOOTSTRAP="$OPTARG" ;;
    j) JOB_MS="$OPTARG" ;;
    m) MAX_POLL_MS="$OPTARG" ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
export KJOBS_BIN="$KJOBS" KJOBS_EXAMPLE_PLUGIN="$PLUGIN"
export KJOBS_LONG_JOB_MS="$JOB_MS" KJOBS_LONG_JOB_MAX_POLL_MS="$MAX_POLL_MS"
if [ -n "$BOOTSTRAP" ]; then export KJOBS_TEST_KAFKA="$BOOTSTRAP"; fi
echo "long job ${JOB_MS} ms, max.poll.interval.ms ${MAX_POLL_MS}, broker: ${BOOTSTRAP:-embedded}"
start=$(date +%s)
/usr/bin/python3 -u "$here/../tests/integration/test_timeouts.py" test_long_job_keeps_group_membership
echo "wall: $(( $(date +%s) - start )) s"
