#!/usr/bin/env bash
# kafka.sh — a local Apache Kafka cluster (KRaft, real brokers, data on disk) for development,
# the real-Kafka test pass and benchmarks. The broker comes from Maven Central by name: the
# release pinned in tests/kafka/pom.xml is resolved with mvn into .deps/kafka-<version>/ (cached,
# never committed). Every node is a combined broker + controller on loopback; everything a
# cluster writes lives under one directory ($KAFKA_LOCAL_DIR, default /tmp/kjobs-kafka), removed
# by `stop`.
#
# Usage: scripts/kafka.sh <command> [args]
#   start [--brokers 1|3]   format and start the cluster (3: RF 3, min.insync.replicas 2,
#                           transactions with RF 3 / min ISR 2); prints the bootstrap list
#   stop                    stop every node (SIGTERM, then SIGKILL after 30 s) and remove the dir
#   bootstrap               print the bootstrap list of the running cluster
#   status                  one line per node: id, port, pid, running|paused|down
#   kill ID                 SIGKILL node ID (a crash)
#   shutdown ID             SIGTERM node ID and wait for it to exit (a controlled shutdown)
#   pause ID | resume ID    SIGSTOP / SIGCONT node ID (a frozen broker)
#   restart ID              start node ID again on its existing data; waits until it serves
#   fetch                   only resolve the broker jars (what install-deps.sh calls)
# Environment: KAFKA_LOCAL_DIR, KAFKA_LOCAL_PORT (first broker port, default 19092; controller
# ports are +100; keep them below 32768, the kernel's ephemeral range, or a client's outgoing
# connection can take the port of a broker that is down and its restart fails to bind),
# KAFKA_HEAP_OPTS (default -Xms256m -Xmx1g), JAVA_HOME. (Not KJOBS_KAFKA_*: kjobs reads KJOBS_<GROUP>_<NAME> as its settings and refuses unknown names in its groups.)
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
port() { echo $((BASE_PORT + $1 - 1)); }
cport() { echo $((BASE_PORT + 100 + $1 - 1)); }
pid_of() { cat "$DIR/node-$1/pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
check_id() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$(nodes)" ] || die "no node $1"; }

bootstrap() {
  local n list="" i
  n=$(nodes)
  for i in $(seq 1 "$n"); do list+="${list:+,}127.0.0.1:$(port "$i")"; done
  echo "$list"
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
  cat >"$DIR/node-$id/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(port "$id"),CONTROLLER://127.0.0.1:$(cport "$id")
advertised.listeners=PLAINTEXT://127.0.0.1:$(port "$id")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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

# A node serves once it accepts connections and the cluster's metadata lists it.
wait_node() {
  local id=$1 deadline=$((SECONDS + 90))
  until kcat -b "127.0.0.1:$(port "$id")" -L -m 2 2>/dev/null | grep -q "broker $id at"; do
    alive "$id" || die "node $id exited; see $DIR/node-$id/server.log"
    [ $SECONDS -lt $deadline ] || die "node $id did not serve within 90 s; see $DIR/node-$id/server.log"
    sleep 0.3
  done
}

cmd_start() {
  local n=1
  while [ $# -gt 0 ]; do
    case $1 in
      --brokers) n=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ "$n" =~ ^[13]$ ]] || die "start: --brokers is 1 or 3"
  if [ -f "$DIR/brokers" ]; then
    for i in $(seq 1 "$(nodes)"); do alive "$i" && die "a cluster is already running in $DIR"; done
    rm -rf "$DIR"
  fi
  command -v kcat >/dev/null || die "kcat not found (scripts/install-deps.sh installs it)"
  fetch
  mkdir -p "$DIR"
  echo "$n" >"$DIR/brokers"
  local cluster_id i
  cluster_id=$(java_run 1 kafka.tools.StorageTool random-uuid 2>/dev/null)
  for i in $(seq 1 "$n"); do
    write_config "$i" "$n"
    java_run "$i" kafka.tools.StorageTool format -t "$cluster_id" \
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
  bootstrap) bootstrap ;;
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
