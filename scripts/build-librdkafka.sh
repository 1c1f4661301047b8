#!/usr/bin/env bash
# build-librdkafka.sh — builds the librdkafka kjobs links against, instead of the distribution's
# (Debian 12 ships 2.0.2: eager assignor only, aborts on a shutdown during a rebalance, no
# KIP-848). Only Debian and npm are reachable, so the source comes from an npm package that
# bundles it: `npm pack NAME@VERSION` (npm checks the registry's integrity hash; we check it
# against the one pinned below as well), of which only deps/librdkafka is extracted. It is
# configured against system libraries only (OpenSSL, Cyrus SASL, zstd, lz4, zlib, libcurl from
# apt: see APT_PACKAGES in install-deps.sh) — no --install-deps, no mklove downloads — and
# installed under .deps/librdkafka-<version>/ (C library only, no C++ binding).
#
# Idempotent and cached: does nothing when .deps/librdkafka-<version>/lib/pkgconfig/rdkafka.pc
# exists. Prints the install prefix on stdout (the last line), everything else on stderr.
# Usage: scripts/build-librdkafka.sh [--print-prefix]   (--print-prefix: print it, build nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

# The pin. @confluentinc/kafka-javascript 1.10.1 bundles librdkafka 2.15.1 (RD_KAFKA_VERSION
# 0x020f01ff in src/rdkafka.h, checked below). node-rdkafka@3.6.1 bundles 2.12.0, the fallback.
NPM_PACKAGE=@confluentinc/kafka-javascript
NPM_VERSION=1.10.1
NPM_INTEGRITY=sha512-KVePUBn21EqCVP9mfxzEuM3SYJHHEF7X+iiC2e43QQgDSyEaksInmCGooT3w5q+cNAdkSCrK71j0ICfqoSqZLw==
RDKAFKA_VERSION=2.15.1
RDKAFKA_VERSION_HEX=0x020f01ff

# .deps may be a symlink to a cache shared by several work trees: the prefix baked into the
# .pc file and the RPATHs is its real path.
mkdir -p .deps
PREFIX="$(realpath .deps)/librdkafka-$RDKAFKA_VERSION"
if [ "${1:-}" = --print-prefix ]; then
  echo "$PREFIX"
  exit 0
fi
if [ -f "$PREFIX/lib/pkgconfig/rdkafka.pc" ]; then
  echo "build-librdkafka: $RDKAFKA_VERSION already in $PREFIX" >&2
  echo "$PREFIX"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kjobs-librdkafka.XXXXXX")
# staged beside the prefix, so the final move is a rename on one file system
stage=$(mktemp -d "$(dirname "$PREFIX")/.librdkafka-stage.XXXXXX")
trap 'rm -rf "$work" "$stage"' EXIT
start=$(date +%s)

echo "build-librdkafka: npm pack $NPM_PACKAGE@$NPM_VERSION" >&2
(cd "$work" && npm pack --silent --json "$NPM_PACKAGE@$NPM_VERSION" >pack.json)
# npm brings node: it reads npm's JSON (no python needed, e.g. in the Dockerfile's build stage)
pack_field() { node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[0][process.argv[2]])' "$work/pack.json" "$1"; }
integrity=$(pack_field integrity)
if [ "$integrity" != "$NPM_INTEGRITY" ]; then
  echo "build-librdkafka: $NPM_PACKAGE@$NPM_VERSION integrity $integrity, pinned $NPM_INTEGRITY" >&2
  exit 1
fi
tarball=$(pack_field filename)
tar -xzf "$work/$tarball" -C "$work" package/deps/librdkafka
src="$work/package/deps/librdkafka"
if ! grep -q "^#define RD_KAFKA_VERSION *$RDKAFKA_VERSION_HEX\$" "$src/src/rdkafka.h"; then
  echo "build-librdkafka: $NPM_PACKAGE@$NPM_VERSION does not bundle librdkafka $RDKAFKA_VERSION" >&2
  grep '^#define RD_KAFKA_VERSION ' "$src/src/rdkafka.h" >&2 || true
  exit 1
fi

# Every feature kjobs may be configured to use is required (a missing -dev package fails the
# build here rather than a deployment later); --no-download keeps mklove offline.
echo "build-librdkafka: configure + build librdkafka $RDKAFKA_VERSION (a few minutes)" >&2
(
  cd "$src"
  ./configure --prefix="$PREFIX" --no-download --no-cache --enable-ssl --enable-gssapi \
    --enable-zstd --enable-zlib --enable-lz4-ext --enable-curl >"$work/configure.log" 2>&1 ||
    { tail -40 "$work/configure.log" >&2; exit 1; }
  # src only: kjobs is C, the C++ binding (src-cpp) is not built.
  nice make -j2 -C src >"$work/make.log" 2>&1 || { tail -40 "$work/make.log" >&2; exit 1; }
  # Install into a staging directory and rename it in place, so a half-done install never
  # looks cached (the .pc file is the marker).
  make -C src install DESTDIR="$stage" >"$work/install.log" 2>&1 ||
    { tail -40 "$work/install.log" >&2; exit 1; }
)
rm -rf "$PREFIX"
mv "$stage$PREFIX" "$PREFIX"
echo "build-librdkafka: librdkafka $RDKAFKA_VERSION in $PREFIX ($(($(date +%s) - start)) s)" >&2
echo "$PREFIX"
