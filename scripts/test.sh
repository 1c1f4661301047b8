#!/usr/bin/env bash
# test.sh — set up, build and run the whole kjobs test suite (unit + integration) with ctest.
# Usage: scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit
# KJOBS_BUILD_DIR (default build) and KJOBS_SANITIZE=ON (ASan+UBSan) select the build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${KJOBS_BUILD_DIR:-build}
SANITIZE=${KJOBS_SANITIZE:-OFF}
BUILD_TYPE=RelWithDebInfo
[ "$SANITIZE" = ON ] && BUILD_TYPE=Debug
# librdkafka from scripts/build-librdkafka.sh (install-deps.sh built it): its pkg-config file
# first, and CMake gives every binary an RPATH to its lib/ (tests/unit/test_rdkafka_build checks).
RDKAFKA_PREFIX=$(bash scripts/build-librdkafka.sh --print-prefix)
export PKG_CONFIG_PATH="$RDKAFKA_PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=$BUILD_TYPE -DKJOBS_SANITIZE=$SANITIZE \
  -DKJOBS_RDKAFKA_PREFIX="$RDKAFKA_PREFIX" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD_DIR"
# A failing test is run once more (--repeat until-pass:2). It was added for librdkafka 2.0.2's
# rebalance bugs (a shutdown during a rebalance could abort inside librdkafka); with the
# librdkafka built by build-librdkafka.sh it stays until the group-membership scenarios on the
# embedded broker have shown they pass without it. A test that fails twice fails the run; no
# assertion is relaxed.
ctest --output-on-failure -j2 --repeat until-pass:2 "$@"
