#!/usr/bin/env bash
# check_install.sh — `cmake --install` of a build into a throwaway prefix gives a plugin author
# what the docs promise: bin/kjobs (running, its librdkafka found), include/kjobs.h, kjobs.pc,
# the man page, the bash completion and the examples. The installed example plugin source is
# built with only `pkg-config --cflags --libs kjobs` from that prefix (no source tree on the
# include path), then the installed kjobs loads it and runs a job of its type on an embedded
# broker: the job's id must reach the plugin's record file.
#
# Usage: check_install.sh BUILD_DIR C_COMPILER
set -euo pipefail
build=${1:?usage: check_install.sh BUILD_DIR C_COMPILER}
cc=${2:?C compiler required}
tmp=$(mktemp -d)
worker=""
cleanup() {
    if [ -n "$worker" ] && kill -0 "$worker" 2>/dev/null; then kill -KILL "$worker"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "check_install: $*" >&2; exit 1; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install failed"; }
for f in bin/kjobs include/kjobs.h share/pkgconfig/kjobs.pc share/man/man1/kjobs.1 \
         share/bash-completion/completions/kjobs share/doc/kjobs/examples/kjobs.cfg.example \
         share/doc/kjobs/examples/recorder_plugin.c; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
done
kjobs=$prefix/bin/kjobs
if ldd "$kjobs" | grep -q "not found"; then ldd "$kjobs"; fail "installed kjobs has unresolved libraries"; fi

export PKG_CONFIG_PATH=$prefix/share/pkgconfig
version=$(pkg-config --modversion kjobs)
"$kjobs" version | grep -q "^kjobs $version " || fail "kjobs.pc says $version, kjobs version says: $("$kjobs" version)"
flags=$(pkg-config --cflags --libs kjobs)
echo "pkg-config --cflags --libs kjobs: $flags"

# Build the installed example where no kjobs source is in reach.
mkdir "$tmp/plugin"
cp "$prefix/share/doc/kjobs/examples/recorder_plugin.c" "$tmp/plugin/"
(cd "$tmp/plugin" && "$cc" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -shared -fPIC \
    -o librecorder.so recorder_plugin.c $flags) || fail "the example plugin does not build with pkg-config's flags"

# The installed kjobs loads it and runs a job through it.
export KJOBS_HANDLERS_PLUGIN=$tmp/plugin/librecorder.so KJOBS_RECORD_FILE=$tmp/records.tsv
export KJOBS_HTTP_LISTEN=127.0.0.1:0 KJOBS_CONFIG=""
cd "$tmp"
"$kjobs" run --check-config >"$tmp/check.out" 2>"$tmp/check.err" || { cat "$tmp/check.err"; fail "--check-config refused the plugin"; }
grep -q '"msg":"plugin loaded".*"handlers":2' "$tmp/check.err" || { cat "$tmp/check.err"; fail "the plugin did not register its 2 handlers"; }
"$kjobs" run --embedded --partitions 1 >"$tmp/worker.out" 2>"$tmp/worker.err" &
worker=$!
for _ in $(seq 150); do [ -s "$tmp/worker.out" ] && break; sleep 0.2; done
addr=$(head -n1 "$tmp/worker.out")
[ -n "$addr" ] || { cat "$tmp/worker.err"; fail "the installed kjobs printed no broker address"; }
id=$("$kjobs" enqueue -b "$addr" --type example.record --payload hello) || fail "enqueue failed"
for _ in $(seq 150); do grep -q "^$id	" "$tmp/records.tsv" 2>/dev/null && break; sleep 0.2; done
grep -q "^$id	" "$tmp/records.tsv" 2>/dev/null || { tail -5 "$tmp/worker.err"; fail "job $id was not run by the plugin"; }
kill -TERM "$worker"
rc=0; wait "$worker" || rc=$?
worker=""
[ "$rc" = 0 ] || fail "the installed kjobs exited $rc on SIGTERM"
echo "check_install: installed kjobs ran job $id through a plugin built with pkg-config"
