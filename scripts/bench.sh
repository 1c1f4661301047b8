#!/usr/bin/env bash
# bench.sh — the one entry command for kjobs' benchmarks: builds (RelWithDebInfo) and runs every
# benchmark of bench/ on the embedded broker (`kjobs broker`, a separate process), then writes
# bench/RESULTS.md (machine, versions, this command, medians of >= 3 runs, same-run ratios);
# with --kafka the same benchmarks on real Apache Kafka, written to bench/RESULTS-kafka.md.
# The driver is bench/bench.py; what each number means is in bench/README.md.
#
# Usage: scripts/bench.sh [--quick] [--no-write] [--no-build] [--build-dir DIR]
#                         [--only drain,latency,rss,retry,scaleout,scaleout-kip848,scale-steps,scale-steps-kip848]
#                         [--runs N] [--keep] [--drain-runs N] [--drain-jobs N]
#                         [--drain-partitions N] [--drain-extras]
#                         [--kafka [--brokers 1|3] | --bootstrap HOST:PORT,...] [--out FILE]
#                         [--append]
#   --kafka      start a 1-broker Apache Kafka (scripts/kafka.sh; $KAFKA_LOCAL_DIR, default
#                /tmp/kjobs-bench-kafka, port $KAFKA_LOCAL_PORT, default 29592), run drain,
#                latency, rss, retry on it with fresh topics and groups per case, stop it
#   --brokers 3  with --kafka: a 3-broker cluster (topics with RF 3, min.insync.replicas 2)
#   --bootstrap  the same on an existing cluster (left running)
#   --quick      a tiny size of each benchmark, 1 run (seconds; what ctest's bench.smoke runs)
#   --no-write   print the summary only, leave bench/RESULTS.md alone
#   --out        write the results there instead (e.g. one benchmark on its own:
#                --kafka --only scaleout,scaleout-kip848 --out bench/RESULTS-kafka-scaleout.md)
#   --append     add this run's report to --out instead of replacing it (e.g. a second build:
#                --build-dir build-system --no-build, the distribution's librdkafka)
#   --no-build   use the build in --build-dir as it is
#   --build-dir  default build-bench
#   --keep       keep the work directory (worker logs, per-job records)
#   --only profile  one kjobs drain under `perf record` (perf.data kept in the work directory)
#   --only profile-retry  the retry benchmark's flaky drain under `perf record`, worker and broker
#   --only memory  worker VmHWM over 1-2 M jobs of 100 B (and 100 KiB), 8-128 partitions, 10 %
#                retried: the per-process bound of issue #18 item 3 (not in the default set)
#   --drain-runs, --drain-jobs, --drain-partitions  the drain's size (default 5 runs of 1.6 M
#                jobs over 64 partitions; every consumer of every run gets its own fresh broker)
#   --drain-extras  drain: also kcat and both consumers with jemalloc preloaded
# Needs the build dependencies (scripts/install-deps.sh), python3, and kcat (optional).
# Exits non-zero only when the harness breaks; it never judges performance.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-bench
BUILD=1
ARGS=()
ORIG=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --quick|--no-write|--keep|--drain-extras) ARGS+=("$1"); shift ;;
    --kafka|--append) ARGS+=("$1"); shift ;;
    --only|--runs|--bootstrap|--out|--brokers|--drain-runs|--drain-jobs|--drain-partitions)
      ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ $BUILD = 1 ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target kjobs loadgen raw_consumer kjobs_bench_plugin >/dev/null
fi
exec /usr/bin/python3 bench/bench.py --build-dir "$BUILD_DIR" \
  --command "scripts/bench.sh${ORIG[*]:+ ${ORIG[*]}}" ${ARGS[@]+"${ARGS[@]}"}
