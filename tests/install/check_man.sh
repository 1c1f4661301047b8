#!/usr/bin/env bash
# check_man.sh — the kjobs(1) man page renders without a single warning (man-db's `man -l
# --warnings` when man is installed, else groff -man -ww), and has an entry for every command
# `kjobs --help` lists, so a new command without a man entry fails here.
#
# Usage: check_man.sh MANPAGE KJOBS_BINARY
set -euo pipefail
page=${1:?usage: check_man.sh MANPAGE KJOBS_BINARY}
kjobs=${2:?kjobs binary required}
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if command -v man >/dev/null; then
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>"$err" >/dev/null
    tool="man --warnings -l"
else
    groff -man -Tutf8 -ww -z "$page" 2>"$err"
    tool="groff -man -ww"
fi
if [ -s "$err" ]; then cat "$err" >&2; echo "check_man: $tool warns about $page" >&2; exit 1; fi
commands=$("$kjobs" --help | sed -n '/^Commands:/,/^$/p' | awk 'NF && !/^Commands:/ {print $1}')
[ -n "$commands" ] || { echo "check_man: no commands in kjobs --help" >&2; exit 1; }
missing=""
for c in $commands; do
    grep -Eq "^\.B $c( |$)" "$page" || missing="$missing $c"
done
[ -z "$missing" ] || { echo "check_man: commands of kjobs --help without a man entry:$missing" >&2; exit 1; }
echo "check_man: $tool: no warnings; entries for:" $commands
