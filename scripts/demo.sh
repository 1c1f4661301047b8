#!/usr/bin/env bash
# demo.sh — the README's first command: install, build, and run kjobs on its embedded broker.
#  1. starts `kjobs run --embedded` (worker + in-process broker; the first stdout line is the
#     broker's address),
#  2. enqueues sample jobs of the built-in types, from flags and from JSON lines,
#  3. waits until the worker's /metrics shows every job finished,
#  4. prints what happened (per-type outcomes, the dead-letter topic) and stops the worker
#     with SIGTERM (it drains, commits, and exits 0).
# `scripts/demo.sh --kafka` does the same on a real Apache Kafka broker (scripts/kafka.sh,
# from Maven Central) started for the demo and removed after it; topics are created with
# `kjobs topics --create`, as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
REAL_KAFKA=0
[ "${1:-}" = --kafka ] && REAL_KAFKA=1
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
KJOBS=$PWD/build/kjobs
PORT=${DEMO_HTTP_PORT:-18080}
WORK=$(mktemp -d)
export KJOBS_RETRY_DELAYS=1s,2s KJOBS_RETRY_MAX_ATTEMPTS=3 KJOBS_TOPICS_PARTITIONS=4
cleanup() {
  kill "${WORKER:-}" 2>/dev/null || true
  [ $REAL_KAFKA = 1 ] && KAFKA_LOCAL_DIR=$WORK/kafka bash scripts/kafka.sh stop
  rm -rf "$WORK"
}
trap cleanup EXIT

mkfifo "$WORK/out"
if [ $REAL_KAFKA = 1 ]; then
  echo "== starting Apache Kafka (1 broker, KRaft) with scripts/kafka.sh"
  BOOTSTRAP=$(KAFKA_LOCAL_DIR=$WORK/kafka KAFKA_LOCAL_PORT=${DEMO_KAFKA_PORT:-29392} \
    bash scripts/kafka.sh start --brokers 1)
  "$KJOBS" topics -b "$BOOTSTRAP" --create | sed 's/^/   /'
  echo "== starting: kjobs run -b $BOOTSTRAP (retry ladder 1s -> 2s, max 3 attempts)"
  KJOBS_HTTP_LISTEN=127.0.0.1:$PORT "$KJOBS" run -b "$BOOTSTRAP" >"$WORK/stdout" 2>"$WORK/worker.log" &
  WORKER=$!
else
  echo "== starting: kjobs run --embedded (retry ladder 1s -> 2s, max 3 attempts)"
  KJOBS_HTTP_LISTEN=127.0.0.1:$PORT "$KJOBS" run --embedded --partitions 4 >"$WORK/out" 2>"$WORK/worker.log" &
  WORKER=$!
  exec 3<"$WORK/out"
  read -r BOOTSTRAP <&3
  echo "   embedded broker at $BOOTSTRAP"
fi
echo "   worker pid $WORKER, metrics on http://127.0.0.1:$PORT/metrics"

echo "== enqueue: 2000 x kjobs.noop, 20 x kjobs.sleep(50ms), 5 x kjobs.flaky(fails once), 3 x kjobs.fail-permanent"
"$KJOBS" enqueue -b "$BOOTSTRAP" --type kjobs.noop --count 2000 >/dev/null 2>"$WORK/enqueue.log"
"$KJOBS" enqueue -b "$BOOTSTRAP" --type kjobs.sleep --payload 50 --count 20 >/dev/null 2>>"$WORK/enqueue.log"
printf '{"type":"kjobs.flaky","key":"order-%d","payload":"1","meta":{"traceparent":"demo"}}\n' 1 2 3 4 5 |
  "$KJOBS" enqueue -b "$BOOTSTRAP" >/dev/null 2>>"$WORK/enqueue.log"
"$KJOBS" enqueue -b "$BOOTSTRAP" --type kjobs.fail-permanent --count 3 >/dev/null 2>>"$WORK/enqueue.log"
echo '{"type":"resize.image","payload":"no handler for this type"}' |
  "$KJOBS" enqueue -b "$BOOTSTRAP" >/dev/null 2>>"$WORK/enqueue.log"
EXPECTED=2029   # 2000 + 20 + 5 + 3 + 1 first attempts

echo "== waiting for the worker to finish them (the first group join takes a few seconds)"
finished() {  # first attempts finished = ok + retried + dead-lettered on the main topic
  curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^kjobs_jobs_total\{topic="jobs",/ {n += $2} END {print n+0}'
}
retried_ok() {
  curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^kjobs_jobs_total\{topic="jobs.retry.1",type="kjobs.flaky",outcome="ok"/ {n += $2} END {print n+0}'
}
for _ in $(seq 1 120); do
  if [ "$(finished)" -ge $EXPECTED ] && [ "$(retried_ok)" -ge 5 ]; then break; fi
  sleep 0.5
done

echo "== outcomes (kjobs_jobs_total from /metrics)"
curl -fs "http://127.0.0.1:$PORT/metrics" | grep '^kjobs_jobs_total' | sed 's/^/   /'
echo "== dead-letter topic (kjobs peek --topic jobs.dlq)"
"$KJOBS" peek -b "$BOOTSTRAP" --topic jobs.dlq --from-beginning --count 4 --timeout 20 |
  /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    h = dict(r["headers"])
    print("   %-22s class=%-13s attempt=%s error=%s" % (r["type"], h["kjobs-error-class"], h["kjobs-attempt"], h["kjobs-error"]))'
echo "== stopping the worker (SIGTERM: drain, commit, leave the group)"
kill -TERM $WORKER
wait $WORKER && echo "   worker exited 0"
grep -c '"msg":"partition revoked"' "$WORK/worker.log" | sed 's/^/   partitions revoked with a final commit: /'
