#!/usr/bin/env bash
# build-java.sh — compile the Java producer of docs/producers.md once and print the classpath
# to run it with (its classes, then kafka-clients, Avro and their dependencies), e.g.
#   java -cp "$(bash tests/producers/build-java.sh)" JobProducer BOOTSTRAP KEY...
# mvn (tests/producers/pom.xml) resolves the jars from Maven Central into ~/.m2; the build goes
# to .deps/producers-java/<hash of pom.xml and JobProducer.java>/, so an edited source is
# rebuilt, an unchanged one never is, and worktrees sharing .deps never overwrite each other's
# build (each is built in a temporary directory and renamed into place).
# scripts/install-deps.sh runs this once (online); later runs need no network.
# Progress goes to stderr, the classpath alone to stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
POM=$ROOT/tests/producers/pom.xml
SRC=$ROOT/docs/producers/JobProducer.java
HASH=$(cat "$POM" "$SRC" | sha256sum | cut -c1-16)
OUT=$ROOT/.deps/producers-java/$HASH
if [ ! -f "$OUT/classpath.txt" ]; then
  if ! command -v mvn >/dev/null; then
    echo "build-java.sh: mvn not found (scripts/install-deps.sh installs maven)" >&2
    exit 1
  fi
  mkdir -p "$ROOT/.deps/producers-java"
  TMP=$(mktemp -d "$ROOT/.deps/producers-java/.build.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  echo "build-java.sh: building JobProducer with mvn into $OUT" >&2
  mvn -q -B -ntp -Dstyle.color=never -f "$POM" -Dproducers.out="$TMP" compile \
    dependency:build-classpath -Dmdep.outputFile="$TMP/deps.txt" >&2
  touch "$TMP/classpath.txt" # marks a complete build (kept for caches made before)
  # classes/ moves with the rename
  mv -T "$TMP" "$OUT" 2>/dev/null || [ -f "$OUT/classpath.txt" ]
  trap - EXIT
  rm -rf "$TMP"
fi
# the classes' path from this checkout, not the one that built the cache (.deps may be shared)
echo "$OUT/classes:$(cat "$OUT/deps.txt")"
