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

/**
 * Build a librdkafka configuration: bootstrap.servers, client.id, the logger, then the
 * passthrough properties in order. `kafka.bootstrap = "embedded"` is refused here (only
 * `kjobs run --embedded` / `kjobs broker` create an embedded broker) with a hint.
 * Returns NULL with errstr set.
 */
rd_kafka_conf_t *kj_kafka_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** Like kj_kafka_conf_new, for consumers, with kjobs' floor sizes unless kafka.properties sets
 *  them: a 1 MiB prefetch queue (queued.max.messages.kbytes, with librdkafka 2.2 or later, and
 *  fetch.queue.backoff.ms 1) and 256 KiB Fetch responses (fetch.max.bytes, or a larger
 *  message.max.bytes the user set); the worker's group consumer then gets sizes from the bound
 *  (kj_kafka_worker_sizes). message.max.bytes comes down to fetch.max.bytes when the user did
 *  not set it (librdkafka refuses a consumer whose fetch.max.bytes is below message.max.bytes,
 *  and a consumer's message.max.bytes bounds only the requests it sends); a fetch.max.bytes
 *  below 1000, the least message.max.bytes, is an error. session.timeout.ms comes down to a
 *  smaller max.poll.interval.ms the user set without it. Returns NULL with errstr. */
rd_kafka_conf_t *kj_kafka_consumer_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** kj_kafka_consumer_conf_new for the worker's group consumer: with @p kip848
 *  (group.protocol=consumer) session.timeout.ms is never set (librdkafka refuses it there). */
rd_kafka_conf_t *kj_kafka_group_consumer_conf_new(const kj_config *cfg, bool kip848, char *errstr,
                                                  size_t errstr_size);

/** The worker's group consumer's sizes over kj_kafka_consumer_conf_new's floor, unless
 *  kafka.properties sets them: the prefetch queue a quarter of batch.max_pending_bytes (at
 *  least 1 MiB), Fetch responses a sixteenth (at least 256 KiB, or a larger message.max.bytes
 *  the user set). Returns 0, or -1 with errstr. */
int kj_kafka_worker_sizes(const kj_config *cfg, rd_kafka_conf_t *conf, char *errstr,
                          size_t errstr_size);

/** The value conf holds for the integer property `name`, as librdkafka parsed it (hex, and its
 *  default when unset, included), or `fallback` when conf has no such property. */
long long kj_kafka_conf_get_ll(const rd_kafka_conf_t *conf, const char *name, long long fallback);

/** A consumer's message.max.bytes (the largest request it sends; it sends no records) may not
 *  exceed its fetch.max.bytes (librdkafka refuses the consumer): lowers message.max.bytes to
 *  conf's fetch.max.bytes when that is smaller and the user did not set message.max.bytes in
 *  cfg (their own contradicting pair is left to librdkafka's refusal, as is a fetch.max.bytes
 *  below 1000). Returns 0, or -1 with errstr. */
int kj_kafka_fit_message_max_bytes(const kj_config *cfg, rd_kafka_conf_t *conf, char *errstr,
                                   size_t errstr_size);

/** Like kj_kafka_conf_new, for producers of jobs: unkeyed jobs are spread one by one over the
 *  partitions (sticky.partitioning.linger.ms=0 unless the user set it). */
rd_kafka_conf_t *kj_kafka_producer_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** Set one property, with an error naming it (never its value). 0 ok, -1 error. */
int kj_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size);

/**
 * A producer for jobs and routed copies: acks=all, idempotence on, librdkafka's
 * murmur2_random partitioner (Java's DefaultPartitioner for keyed messages, random for
 * unkeyed). Takes ownership of `conf`
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

/** The consumer group protocol a worker joins with (kj_kafka_group_protocol). */
typedef struct kj_group_protocol {
    bool kip848;        /* group.protocol=consumer (KIP-848), else classic */
    bool may_fall_back; /* kafka.group_protocol=auto chose KIP-848: if the broker refuses it
                         * before the first assignment, join again with classic */
    char why[200];      /* how it was chosen, for the log: "kafka.group_protocol=classic",
                         * "auto: librdkafka 2.0.2 has no KIP-848", ... */
} kj_group_protocol;

/**
 * Resolves kafka.group_protocol (auto, consumer, classic) into the protocol the worker's
 * consumer starts with. KIP-848 (brokers >= 4.0, librdkafka >= 2.12) computes the assignment
 * on the broker (group.remote.assignor) and keeps session and heartbeat timing broker-side:
 * librdkafka refuses partition.assignment.strategy, session.timeout.ms, heartbeat.interval.ms
 * and group.protocol.type with it, so `auto` picks classic when a passthrough property sets one
 * of them, and when this librdkafka predates KIP-848. Returns 0, or -1 with errstr when
 * `consumer` is demanded of a librdkafka that lacks it.
 */
int kj_kafka_group_protocol(const kj_config *cfg, kj_group_protocol *out, char *errstr,
                            size_t errstr_size);

/**
 * True when err, a fatal consumer error, is how a broker refuses the KIP-848 protocol: it lacks
 * ConsumerGroupHeartbeat (Kafka < 4.0, or the protocol disabled: UNSUPPORTED_VERSION,
 * _UNSUPPORTED_FEATURE), or it offers no remote assignor of that name (UNSUPPORTED_ASSIGNOR).
 */
bool kj_kafka_kip848_refused(rd_kafka_resp_err_t err);

/** Header value as a NUL-terminated copy in buf (truncated); returns buf or NULL if absent. */
const char *kj_kafka_header_str(rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size);

#endif /* KJOBS_KAFKA_H */
