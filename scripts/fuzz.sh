#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer targets with clang (ASan+UBSan) and run each for a bounded
# time on its seed corpus (tests/fuzz/corpus/<name>). A crash, leak or timeout fails the run.
# KJOBS_FUZZ_SECONDS (default 60) per target. New corpus entries go to a scratch folder, so
# the checked-in seeds only change by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${KJOBS_FUZZ_SECONDS:-60}
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKJOBS_FUZZ=ON -DKJOBS_TESTS=ON >/dev/null
targets=()
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  if cmake --build build-fuzz --target "$name" -j"$(nproc)" >/dev/null 2>&1; then
    targets+=("$name")
  else
    echo "fuzz: target $name is not built by tests/fuzz/CMakeLists.txt" >&2
    exit 1
  fi
done
for name in "${targets[@]}"; do
  seeds=tests/fuzz/corpus/${name#fuzz_}
  scratch=$(mktemp -d)
  echo "fuzz: $name for ${SECONDS_PER_TARGET}s (seeds: $seeds)"
  status=0
  ./build-fuzz/tests/fuzz/"$name" "$scratch" "$seeds" -max_total_time="$SECONDS_PER_TARGET" \
    -max_len=4096 -timeout=10 -print_final_stats=1 >"$scratch.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)|ERROR|SUMMARY" "$scratch.log" || true
  [ "$status" = 0 ] || tail -50 "$scratch.log" >&2
  rm -f "$scratch.log"
  rm -rf "$scratch"
  if [ "$status" != 0 ]; then echo "fuzz: $name FAILED (exit $status)" >&2; exit 1; fi
done
echo "fuzz: ${#targets[@]} targets ran clean"
