#!/usr/bin/env bash
# format.sh — format every tracked C source and header with the repository's .clang-format,
# using the one pinned clang-format that scripts/install-deps.sh installs from npm
# (clang-format@1.8.0 = clang-format 15.0.0), so Debian 12 and 13 agree byte for byte.
# Usage: scripts/format.sh            rewrite files in place
#        scripts/format.sh --check    list unformatted files and exit 1 if any (ctest lint.clang_format)
set -euo pipefail
cd "$(dirname "$0")/.."
CF=.deps/node/node_modules/clang-format/bin/linux_x64/clang-format
if [ ! -x "$CF" ]; then
  echo "format.sh: $CF not found: run scripts/install-deps.sh" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find . -path ./.deps -prune -o \( -name '*.c' -o -name '*.h' \) -print)
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$CF" --style=file "$f" | cmp -s - "$f"; then
      echo "not formatted: $f (run scripts/format.sh)"
      bad=1
    fi
  done
  exit $bad
fi
"$CF" --style=file -i "${files[@]}"
