/*
 * kafka.h — the one place that turns a kj_config into librdkafka handles, so every command
 * (worker, enqueue, peek, dlq, lag, topics) connects the same way: same bootstrap rules, same
 * passthrough properties (file, then KJOBS_RDKAFKA_* env, then -X flags), same logger, and the
 * same Java-compatible key partitioner for everything kjobs produces.
 *
 * Errors name the property that librdkafka rejected but never echo its value (it may be a secret).
 */
#ifndef KJOBS_KAFKA_H
#define KJOBS_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "processor/config.h"

typedef enum { KJ_CLIENT_PRODUCER, KJ_CLIENT_CONSUMER } kj_client_kind;

/**
 * Build a librdkafka configuration: bootstrap.servers, client.id, the logger, then the
 * passthrough properties in order. `kafka.bootstrap = "embedded"` is refused here (only
 * `kjobs run --embedded` / `kjobs broker` create an embedded broker) with a hint.
 * Returns NULL with errstr set.
 */
rd_kafka_conf_t *kj_kafka_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** Like kj_kafka_conf_new, for producers of jobs: unkeyed jobs are spread one by one over the
 *  partitions (sticky.partitioning.linger.ms=0 unless the user set it). */
rd_kafka_conf_t *kj_kafka_producer_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** Set one property, with an error naming it (never its value). 0 ok, -1 error. */
int kj_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size);

/**
 * A producer for jobs and routed copies: acks=all, idempotence on, kjobs' murmur2 partitioner
 * (partitions/partitioner.c) for keyed messages, random for unkeyed. Takes ownership of `conf`
 * on success and on failure. Set a delivery-report callback on conf before calling.
 */
rd_kafka_t *kj_kafka_producer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);

/** Route librdkafka's logs through kj_log (installed by kj_kafka_conf_new). */
void kj_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Copies the last error-level line any client of this process logged through kj_kafka_log_cb
 * into buf (NUL-terminated, cut to size); false when there was none. Thread-safe. */
bool kj_kafka_last_error(char *buf, size_t size);

/** Number of partitions of `topic`, or -1 with errstr (topic missing, broker down). */
int kj_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, char *errstr,
                             size_t errstr_size);

/**
 * The value the passthrough properties finally give `name` (the last "name=value" wins, as
 * librdkafka applies them in order), or NULL when none sets it.
 */
const char *kj_kafka_prop_value(const kj_config *cfg, const char *name);

/**
 * True when the consumer group uses the KIP-848 protocol (group.protocol=consumer; brokers
 * >= 4.0, librdkafka >= 2.12). The assignment is then computed by the broker
 * (group.remote.assignor) and session/heartbeat timing is broker-side: librdkafka refuses
 * partition.assignment.strategy, session.timeout.ms and heartbeat.interval.ms with it, so
 * kjobs sets none of them.
 */
bool kj_kafka_consumer_protocol(const kj_config *cfg);

/** Header value as a NUL-terminated copy in buf (truncated); returns buf or NULL if absent. */
const char *kj_kafka_header_str(rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size);

#endif /* KJOBS_KAFKA_H */
