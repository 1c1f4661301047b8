/*
 * control_headers.h — reading the kjobs control headers of a consumed record as untrusted
 * input: kjobs-attempt, kjobs-not-before and kjobs-original-topic/-partition/-offset.
 *
 * Any producer can write these headers, so they are parsed strictly (ASCII digits only, no
 * sign, no spaces, bounded) and never leniently:
 *   - on the MAIN topic they are ignored: a job's first run is attempt 1 and its original
 *     coordinates are where it was consumed, whatever the headers say;
 *   - on a LADDER topic every one of them must be present exactly once and valid, else the
 *     record is dead-lettered with class "invalid-header" and a reason naming the header;
 *   - kjobs-not-before further than KJ_RETRY_MAX_DELAY_MS (+ KJ_CLOCK_SKEW_MS) ahead is invalid,
 *     and a valid one is never trusted to hold a ladder partition for longer than that step's
 *     delay after the record was written (kj_control_hold_until).
 *
 * @locality pure functions (no I/O, no global state); any thread.
 */
#ifndef KJOBS_CONTROL_HEADERS_H
#define KJOBS_CONTROL_HEADERS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

/** Longest per-job retry delay (the longest retry.delays entry allowed): 30 days. */
#define KJ_RETRY_MAX_DELAY_MS (30LL * 24 * 3600 * 1000)
/** Clock difference between workers tolerated on kjobs-not-before. */
#define KJ_CLOCK_SKEW_MS (60LL * 1000)
/** Largest kjobs-attempt accepted (retry.max_attempts is at most 1000). */
#define KJ_ATTEMPT_MAX 1000
/** Longest Kafka topic name. */
#define KJ_TOPIC_NAME_MAX 249

/** The control headers of a ladder record, validated. */
typedef struct kj_control {
    int attempt;           /* attempts already made (kjobs-attempt), 1..KJ_ATTEMPT_MAX */
    int64_t not_before_ms; /* kjobs-not-before, epoch ms */
    char original_topic[KJ_TOPIC_NAME_MAX + 1];
    int32_t original_partition;
    int64_t original_offset;
    const char *invalid_header; /* NULL when valid, else the first offending header's name */
    char reason[192];           /* when invalid: why, for kjobs-error and the log */
} kj_control;

/**
 * Strict unsigned decimal: 1..19 ASCII digits and nothing else, value <= max.
 * Returns true and sets *out when valid.
 */
bool kj_control_parse_uint(const void *val, size_t len, int64_t max, int64_t *out);

/**
 * Validates the control headers of a record consumed from a ladder topic. `now_ms` is the
 * consumer's clock. Returns 0 (all valid, *out filled) or -1 (out->invalid_header and
 * out->reason say why). @p hdrs may be NULL (no headers: invalid).
 */
int kj_control_parse_ladder(const rd_kafka_headers_t *hdrs, int64_t now_ms, kj_control *out);

/**
 * Just kjobs-not-before of a ladder record, validated the same way (for scheduling on the
 * poll thread). Returns 0 and sets *out, or -1 when missing or invalid.
 */
int kj_control_not_before(const rd_kafka_headers_t *hdrs, int64_t now_ms, int64_t *out);

/**
 * When a ladder step with delay `step_delay_ms` releases a record with kjobs-not-before
 * `not_before_ms`, written at `record_ts_ms` (the Kafka timestamp; <= 0 when unknown) and
 * fetched at `now_ms`: min(not_before, min(record_ts, now) + step_delay). A record is never
 * held longer than its step's delay after it was written, so the hold times of a ladder
 * partition follow its offsets (records are written in time order) and its head is always
 * released first. A record released before its not-before is re-routed, not run.
 */
int64_t kj_control_hold_until(int64_t not_before_ms, int64_t record_ts_ms, int64_t now_ms,
                              int64_t step_delay_ms);

#endif /* KJOBS_CONTROL_HEADERS_H */
