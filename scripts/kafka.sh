#!/usr/bin/env bash
# kafka.sh — a local Apache Kafka cluster (KRaft, real brokers, data on disk) for development,
# the real-Kafka test pass and benchmarks. The broker comes from Maven Central by name: the
# release pinned in tests/kafka/pom.xml is resolved with mvn into .deps/kafka-<version>/ (cached,
# never committed). Every node is a combined broker + controller on loopback; everything a
# cluster writes lives under one directory ($KAFKA_LOCAL_DIR, default /tmp/kjobs-kafka), removed
# by `stop`.
#
# Usage: scripts/kafka.sh <command> [args]
#   start [--brokers 1|3] [--auth MODE[,MODE]]
#                           format and start the cluster (3: RF 3, min.insync.replicas 2,
#                           transactions with RF 3 / min ISR 2); prints the bootstrap list.
#                           --auth replaces the PLAINTEXT client listener with authenticated ones:
#                           `scram` (SASL_SSL, SCRAM-SHA-512 user `kjobs`, created at format time)
#                           and/or `mtls` (SSL, client certificate required); the first mode listens
#                           on the usual port, a second one on port + 200. A throwaway CA, broker
#                           and client certificates and random passwords are made under
#                           $KAFKA_LOCAL_DIR/tls; each mode's librdkafka client properties are in
#                           $KAFKA_LOCAL_DIR/client-MODE.properties (`client-config MODE`)
#   stop                    stop every node (SIGTERM, then SIGKILL after 30 s) and remove the dir
#   bootstrap [MODE]        print the bootstrap list of the running cluster (of MODE's listener)
#   client-config MODE      print the path of MODE's librdkafka client properties (kcat -F)
#   status                  one line per node: id, port, pid, running|paused|down
#   kill ID                 SIGKILL node ID (a crash)
#   shutdown ID             SIGTERM node ID and wait for it to exit (a controlled shutdown)
#   pause ID | resume ID    SIGSTOP / SIGCONT node ID (a frozen broker)
#   restart ID              start node ID again on its existing data; waits until it serves
#   fetch                   only resolve the broker jars (what install-deps.sh calls)
# Environment: KAFKA_LOCAL_DIR, KAFKA_LOCAL_PORT (first broker port, default 19092; controller
# ports are +100; keep them below 32768, the kernel's ephemeral range, or a client's outgoing
# connection can take the port of a broker that is down and its restart fails to bind),
# KAFKA_HEAP_OPTS (default -Xms256m -Xmx1g), JAVA_HOME, KAFKA_EXTRA_CONFIG (more server.properties
# lines for every node, e.g. group.coordinator.rebalance.protocols=classic). (Not KJOBS_KAFKA_*: kjobs reads KJOBS_<GROUP>_<NAME> as its settings and refuses unknown names in its groups.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
POM=$ROOT/tests/kafka/pom.xml
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
LIBS=$ROOT/.deps/kafka-$VERSION/libs
DIR=${KAFKA_LOCAL_DIR:-/tmp/kjobs-kafka}
BASE_PORT=${KAFKA_LOCAL_PORT:-19092}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "mvn not found (scripts/install-deps.sh installs maven)"
  echo "kafka.sh: resolving Apache Kafka $VERSION from Maven Central" >&2
  rm -rf "$LIBS"
  mvn -q -B -ntp -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIBS" >&2 || die "mvn could not resolve Apache Kafka $VERSION"
  touch "$LIBS/.complete"
}

nodes() { cat "$DIR/brokers" 2>/dev/null || die "no cluster in $DIR (scripts/kafka.sh start)"; }
modes() { cat "$DIR/auth" 2>/dev/null || true; }   # auth modes, comma-separated; empty: PLAINTEXT
first_mode() { modes | cut -d, -f1; }
port() { echo $((BASE_PORT + $1 - 1)); }
# the client port of node $1 for auth mode $2 (the k-th mode listens on port + 200 k)
mode_port() {
  local k=0 m
  for m in $(modes | tr , ' '); do
    [ "$m" = "$2" ] && { echo $(($(port "$1") + 200 * k)); return; }
    k=$((k + 1))
  done
  die "the cluster in $DIR has no $2 listener"
}
cport() { echo $((BASE_PORT + 100 + $1 - 1)); }
pid_of() { cat "$DIR/node-$1/pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
check_id() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$(nodes)" ] || die "no node $1"; }

bootstrap() { # [mode]
  local n list="" i p
  n=$(nodes)
  for i in $(seq 1 "$n"); do
    if [ -n "${1:-}" ]; then p=$(mode_port "$i" "$1"); else p=$(port "$i"); fi
    list+="${list:+,}127.0.0.1:$p"
  done
  echo "$list"
}

# --- authentication (start --auth) -----------------------------------------------------------
# A throwaway CA signs the broker's certificate (SAN 127.0.0.1 and localhost) and the client's
# (CN=kjobs; its key encrypted with a password, as a production client key may be). The broker
# reads a PKCS#12 keystore and the CA as a PEM truststore. All of it is made fresh per cluster,
# with random passwords, and removed with the cluster.
make_tls() {
  local d=$DIR/tls
  mkdir -p "$d" && chmod 700 "$d"
  local f
  for f in store client-key admin kjobs; do openssl rand -hex 16 >"$d/$f.pass"; done
  { openssl req -x509 -newkey rsa:2048 -noenc -days 2 -subj /CN=kjobs-test-ca \
      -keyout "$d/ca.key" -out "$d/ca.crt" &&
    openssl req -newkey rsa:2048 -noenc -subj /CN=localhost -keyout "$d/broker.key" -out "$d/broker.csr" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/broker.ext" &&
    openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
      -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/broker.ext" -out "$d/broker.crt" &&
    openssl pkcs12 -export -in "$d/broker.crt" -inkey "$d/broker.key" -certfile "$d/ca.crt" -name broker \
      -out "$d/broker.p12" -passout "file:$d/store.pass" &&
    openssl req -newkey rsa:2048 -subj /CN=kjobs -keyout "$d/client.key" -passout "file:$d/client-key.pass" \
      -out "$d/client.csr" &&
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext" &&
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
      -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/client.ext" -out "$d/client.crt"
  } >"$d/openssl.log" 2>&1 || die "could not make the test certificates: $(tail -3 "$d/openssl.log")"
}

# librdkafka properties of a client of auth mode $1 (kcat -F FILE; kjobs -X name=value each)
write_client_config() {
  local d=$DIR/tls f=$DIR/client-$1.properties
  (
    umask 077
    case $1 in
      scram) printf '%s\n' security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512 sasl.username=kjobs \
               "sasl.password=$(cat "$d/kjobs.pass")" "ssl.ca.location=$d/ca.crt" >"$f" ;;
      mtls) printf '%s\n' security.protocol=SSL "ssl.ca.location=$d/ca.crt" \
              "ssl.certificate.location=$d/client.crt" "ssl.key.location=$d/client.key" \
              "ssl.key.password=$(cat "$d/client-key.pass")" >"$f" ;;
    esac
  )
}

# server.properties lines for the authenticated listeners of node $1: listener SCRAM (SASL_SSL)
# and/or MTLS (SSL, ssl.client.auth=required); the first mode also carries inter-broker traffic
auth_listener_config() {
  local id=$1 d=$DIR/tls m name proto listeners="" map="CONTROLLER:PLAINTEXT"
  for m in $(modes | tr , ' '); do
    case $m in scram) name=SCRAM proto=SASL_SSL ;; mtls) name=MTLS proto=SSL ;; esac
    listeners+="${listeners:+,}$name://127.0.0.1:$(mode_port "$id" "$m")"
    map+=",$name:$proto"
  done
  cat <<CONF
listeners=$listeners,CONTROLLER://127.0.0.1:$(cport "$id")
advertised.listeners=$listeners
inter.broker.listener.name=$(first_mode | tr '[:lower:]' '[:upper:]')
listener.security.protocol.map=$map
ssl.keystore.type=PKCS12
ssl.keystore.location=$d/broker.p12
ssl.keystore.password=$(cat "$d/store.pass")
ssl.key.password=$(cat "$d/store.pass")
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.crt
listener.name.mtls.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$d/admin.pass")";
CONF
}

java_run() { # node id, main class, args...
  local id=$1; shift
  "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$DIR/node-$id" -Dlog4j2.configurationFile="$ROOT/tests/kafka/log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

# The broker itself: started in the background as `java_exec … &`, the subshell bash forks for
# the function *becomes* the JVM (exec), so $! is the broker's pid and signals reach it.
java_exec() {
  local id=$1; shift
  exec "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$DIR/node-$id" -Dlog4j2.configurationFile="$ROOT/tests/kafka/log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

write_config() { # node id, broker count
  local id=$1 n=$2 voters="" i rf=1 isr=1
  for i in $(seq 1 "$n"); do voters+="${voters:+,}$i@127.0.0.1:$(cport "$i")"; done
  if [ "$n" -ge 3 ]; then rf=3; isr=2; fi
  mkdir -p "$DIR/node-$id/data"
  if [ -n "$(modes)" ]; then
    (umask 077 && auth_listener_config "$id" >"$DIR/node-$id/server.properties")
  else
    cat >"$DIR/node-$id/server.properties" <<EOF
listeners=PLAINTEXT://127.0.0.1:$(port "$id"),CONTROLLER://127.0.0.1:$(cport "$id")
advertised.listeners=PLAINTEXT://127.0.0.1:$(port "$id")
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
  fi
  cat >>"$DIR/node-$id/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
log.dirs=$DIR/node-$id/data
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
log.retention.check.interval.ms=5000
EOF
  # KAFKA_EXTRA_CONFIG: more server.properties lines, e.g. a broker without KIP-848:
  # KAFKA_EXTRA_CONFIG=group.coordinator.rebalance.protocols=classic
  if [ -n "${KAFKA_EXTRA_CONFIG:-}" ]; then
    printf '%s\n' "$KAFKA_EXTRA_CONFIG" >>"$DIR/node-$id/server.properties"
  fi
}

start_node() {
  local id=$1
  alive "$id" && return 0
  java_exec "$id" kafka.Kafka "$DIR/node-$id/server.properties" \
    >>"$DIR/node-$id/stdout.log" 2>&1 </dev/null &
  echo $! >"$DIR/node-$id/pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# After a kill or shutdown: the process is gone and nothing listens on its port any more.
wait_down() {
  local id=$1 deadline=$((SECONDS + 60))
  while alive "$id" || port_open "$(port "$id")"; do
    [ $SECONDS -lt $deadline ] || die "node $id still up 60 s after it was stopped"
    sleep 0.1
  done
}

# Whether node $1 answers a metadata request (authenticated, in an --auth cluster) and lists
# itself. Authenticated clusters are asked through kafka-python: kcat links Debian's librdkafka,
# and Debian 12's 2.0.2 failed SCRAM-SHA-512 against this broker where librdkafka 2.15.1 and
# kafka-python succeed with the same credentials.
node_listed() {
  local m
  m=$(first_mode)
  if [ -z "$m" ]; then
    kcat -b "127.0.0.1:$(port "$1")" -L -m 2 2>/dev/null | grep -q "broker $1 at"
    return
  fi
  /usr/bin/python3 - "$DIR/client-$m.properties" "127.0.0.1:$(port "$1")" "$1" 2>/dev/null <<'PY'
import sys
from kafka import KafkaAdminClient
p = dict(line.rstrip("\n").split("=", 1) for line in open(sys.argv[1]) if "=" in line)
kw = {"security_protocol": p["security.protocol"], "ssl_cafile": p["ssl.ca.location"],
      "request_timeout_ms": 5000}
if "sasl.mechanism" in p:
    kw.update(sasl_mechanism=p["sasl.mechanism"], sasl_plain_username=p["sasl.username"],
              sasl_plain_password=p["sasl.password"])
if "ssl.certificate.location" in p:
    kw.update(ssl_certfile=p["ssl.certificate.location"], ssl_keyfile=p["ssl.key.location"],
              ssl_password=p["ssl.key.password"])
admin = KafkaAdminClient(bootstrap_servers=sys.argv[2], **kw)
sys.exit(0 if any(b["node_id"] == int(sys.argv[3]) for b in admin.describe_cluster()["brokers"]) else 1)
PY
}

# A node serves once it accepts connections and the cluster's metadata lists it.
wait_node() {
  local id=$1 deadline=$((SECONDS + 90))
  until node_listed "$id"; do
    alive "$id" || die "node $id exited; see $DIR/node-$id/server.log"
    [ $SECONDS -lt $deadline ] || die "node $id did not serve within 90 s; see $DIR/node-$id/server.log"
    sleep 0.3
  done
  alive "$id" || die "node $id exited; see $DIR/node-$id/server.log"
}

cmd_start() {
  local n=1 auth="" m
  while [ $# -gt 0 ]; do
    case $1 in
      --brokers) n=$2; shift 2 ;;
      --auth) auth=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ "$n" =~ ^[13]$ ]] || die "start: --brokers is 1 or 3"
  case $auth in "" | scram | mtls | scram,mtls | mtls,scram) ;;
    *) die "start: --auth is scram, mtls, scram,mtls or mtls,scram" ;; esac
  if [ -f "$DIR/brokers" ]; then
    for i in $(seq 1 "$(nodes)"); do alive "$i" && die "a cluster is already running in $DIR"; done
    rm -rf "$DIR"
  fi
  command -v kcat >/dev/null || die "kcat not found (scripts/install-deps.sh installs it)"
  # every port this cluster will listen on must be free: otherwise another cluster's node of
  # the same id answers the readiness check, and start would hand out its address
  local p k
  for i in $(seq 1 "$n"); do
    port_open "$(port "$i")" &&
      die "broker port $(port "$i") is in use (another cluster? set KAFKA_LOCAL_PORT)"
    port_open "$(cport "$i")" &&
      die "controller port $(cport "$i") (broker port + 100) is in use (another cluster? set KAFKA_LOCAL_PORT)"
    for k in 1 2; do
      [ -n "$auth" ] && port_open $(($(port "$i") + 200 * k)) &&
        die "auth listener port $(($(port "$i") + 200 * k)) (broker port + $((200 * k))) is in use (another cluster? set KAFKA_LOCAL_PORT)"
    done
  done
  fetch
  mkdir -p "$DIR"
  echo "$n" >"$DIR/brokers"
  local scram=()
  if [ -n "$auth" ]; then
    command -v openssl >/dev/null || die "openssl not found"
    echo "$auth" >"$DIR/auth"
    make_tls
    for m in ${auth//,/ }; do write_client_config "$m"; done
    # SCRAM credentials live in KRaft's metadata log: created at format time (the brokers' own
    # user for inter-broker traffic, and the client's)
    if [[ ",$auth," == *,scram,* ]]; then
      scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$DIR/tls/admin.pass")]"
             --add-scram "SCRAM-SHA-512=[name=kjobs,password=$(cat "$DIR/tls/kjobs.pass")]")
    fi
  fi
  local cluster_id i
  cluster_id=$(java_run 1 kafka.tools.StorageTool random-uuid 2>/dev/null)
  for i in $(seq 1 "$n"); do
    write_config "$i" "$n"
    java_run "$i" kafka.tools.StorageTool format -t "$cluster_id" "${scram[@]}" \
      -c "$DIR/node-$i/server.properties" >"$DIR/node-$i/format.log" 2>&1 ||
      die "formatting node $i failed: $(tail -3 "$DIR/node-$i/format.log")"
  done
  for i in $(seq 1 "$n"); do start_node "$i"; done
  for i in $(seq 1 "$n"); do wait_node "$i"; done
  bootstrap
}

cmd_stop() {
  [ -f "$DIR/brokers" ] || return 0
  local i deadline
  for i in $(seq 1 "$(nodes)"); do
    alive "$i" && { kill -CONT "$(pid_of "$i")"; kill -TERM "$(pid_of "$i")"; } 2>/dev/null || true
  done
  deadline=$((SECONDS + 30))
  for i in $(seq 1 "$(nodes)"); do
    while alive "$i" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    alive "$i" && kill -KILL "$(pid_of "$i")" 2>/dev/null || true
  done
  for i in $(seq 1 "$(nodes)"); do wait_down "$i"; done
  rm -rf "$DIR"
}

cmd_status() {
  local i state p
  for i in $(seq 1 "$(nodes)"); do
    p=$(pid_of "$i")
    if ! alive "$i"; then state=down
    elif grep -q '^State:.*T' "/proc/$p/status" 2>/dev/null; then state=paused
    else state=running; fi
    echo "$i 127.0.0.1:$(port "$i") ${p:--} $state"
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  start) cmd_start "$@" ;;
  stop) cmd_stop ;;
  bootstrap) bootstrap "${1:-}" ;;
  client-config) [ -f "$DIR/client-${1:-}.properties" ] || die "no client config for auth mode '${1:-}' in $DIR"
                 echo "$DIR/client-$1.properties" ;;
  status) cmd_status ;;
  fetch) fetch ;;
  kill) check_id "${1:-}"; kill -KILL "$(pid_of "$1")" 2>/dev/null || true; wait_down "$1" ;;
  shutdown) check_id "${1:-}"; kill -TERM "$(pid_of "$1")" 2>/dev/null || true; wait_down "$1" ;;
  pause) check_id "${1:-}"; kill -STOP "$(pid_of "$1")" ;;
  resume) check_id "${1:-}"; kill -CONT "$(pid_of "$1")" ;;
  restart) check_id "${1:-}"; port_open "$(port "$1")" && ! alive "$1" &&
             die "port $(port "$1") is taken by a process that is not node $1"
           start_node "$1"; wait_node "$1" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
