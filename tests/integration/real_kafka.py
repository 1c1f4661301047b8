"""real_kafka.py — the integration suite's second broker kind: a real Apache Kafka cluster.

With KJOBS_TEST_KAFKA=host:port[,host:port…] set (scripts/kafka.sh start --brokers 3 prints
such a list; scripts/test.sh sets it for the real-Kafka pass), every test that would start an
embedded broker instead gets a *fresh* real cluster: all non-internal topics and consumer
groups are deleted, then the topic layout of the test's configuration is created through
`kjobs topics --create` (the Admin API, as in production) with the partition count the test
asked for and replication factor min(3, brokers). Tests on one real cluster therefore run one
at a time (ctest -j1 in that pass). Run with Debian's /usr/bin/python3 (kafka-python).
"""
import json
import os
import subprocess
import time

BOOTSTRAP = os.environ.get("KJOBS_TEST_KAFKA", "")
KJOBS = None  # set by harness (avoids an import cycle)


def enabled():
    return bool(BOOTSTRAP)


def _admin():
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP.split(","), client_id="kjobs-test-reset",
                            request_timeout_ms=30000)


def broker_count():
    admin = _admin()
    try:
        return len(admin.describe_cluster()["brokers"])
    finally:
        admin.close()


def _user_topics(admin):
    return [t for t in admin.list_topics() if not t.startswith("__")]


def reset(partitions, env=None, config=None, deadline_s=120):
    """Delete every user topic and consumer group, then create the configured layout.
    Returns the bootstrap list. Raises AssertionError with the reason when the cluster does not
    come back clean within deadline_s."""
    from kafka.errors import KafkaError
    deadline = time.monotonic() + deadline_s
    group_deadline = time.monotonic() + 30
    admin = _admin()
    try:
        # Groups first: a group left with members by an earlier test (kill -9) cannot be
        # deleted until its session times out; retry until then.
        while True:
            try:  # a coordinator still loading (a broker just restarted) answers with a
                # retriable error such as GroupLoadInProgress: ask again
                groups = [g for g, _ in admin.list_consumer_groups()]
            except KafkaError as e:
                if not getattr(e, "retriable", False) or time.monotonic() > group_deadline:
                    raise
                time.sleep(0.5)
                continue
            if not groups:
                break
            try:
                results = admin.delete_consumer_groups(groups)
                if all(err is None or getattr(err, "errno", 0) == 0 for _, err in results):
                    break
            except KafkaError:
                pass
            if time.monotonic() > group_deadline:
                # live members: a process an earlier test left behind. Go on (its partitions
                # move once it is gone) and say so, rather than fail every later test.
                print(f"   real Kafka: groups {groups} still have members; not deleted",
                      flush=True)
                break
            time.sleep(0.5)
        topics = _user_topics(admin)
        if topics:
            admin.delete_topics(topics, timeout_ms=30000)
        while _user_topics(admin):
            if time.monotonic() > deadline:
                raise AssertionError(f"real Kafka: topics {_user_topics(admin)} not deleted")
            time.sleep(0.2)
        rf = min(3, len(admin.describe_cluster()["brokers"]))
    finally:
        admin.close()
    full_env = dict(os.environ, KJOBS_TOPICS_PARTITIONS=str(partitions),
                    KJOBS_TOPICS_REPLICATION_FACTOR=str(rf), **(env or {}))
    args = [KJOBS, "topics", "--create", "-b", BOOTSTRAP]
    if config:
        args += ["-c", config]
    while True:  # a deleted topic's name can be refused for a moment after the delete
        p = subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=120)
        if p.returncode == 0 and "exists" not in p.stdout:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"real Kafka: kjobs topics --create: {p.stdout}{p.stderr}")
        time.sleep(0.5)
    _wait_leaders(partitions, deadline)
    return BOOTSTRAP


def _wait_leaders(partitions, deadline):
    """Every partition of every user topic has a leader in every broker's metadata (a client
    that asks a broker which has not caught up yet is told the partition is unknown)."""
    while True:
        ready = True
        for broker in BOOTSTRAP.split(","):
            p = subprocess.run(["kcat", "-b", broker, "-L", "-J", "-m", "5"],
                               capture_output=True, text=True, timeout=30)
            try:
                meta = json.loads(p.stdout)
            except ValueError:
                ready = False
                break
            for t in meta.get("topics", []):
                if t["topic"].startswith("__"):
                    continue
                parts = t.get("partitions", [])
                if t.get("error") or not parts or any(
                        q.get("leader", -1) < 0 or q.get("error") for q in parts):
                    ready = False
        if ready:
            return
        if time.monotonic() > deadline:
            raise AssertionError("real Kafka: partitions without a leader after reset")
        time.sleep(0.2)


if __name__ == "__main__":  # for clients in other languages: real_kafka.py KJOBS_BIN PARTITIONS
    import sys
    KJOBS = sys.argv[1]
    print(reset(int(sys.argv[2])), flush=True)
