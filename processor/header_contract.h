/*
 * header_contract.h — the kjobs-* record headers: their wire names, how kjobs writes them on
 * retry, dead-letter and replayed copies, and how it reads them back as untrusted input. The
 * one place that spells a header name, so a typo no longer compiles and a maintainer finds the
 * whole contract in one file (../shared/CONTRACT.md and docs/retries.md, docs/dlq.md describe
 * it for users; the names are fixed and must stay byte-identical).
 *
 * Values are UTF-8 text: decimal integers (no sign, ASCII digits), topic names, free text.
 *
 * Writing (kj_hdr_write_failure): a retry or DLQ copy keeps the original headers and gets, each
 * replaced when already there, in this order: kjobs-original-topic, -partition, -offset,
 * kjobs-attempt, kjobs-not-before, kjobs-error, kjobs-error-class, kjobs-failed-at,
 * kjobs-worker; a stale kjobs-truncated is removed (only a reduced dead letter carries one).
 * A replayed copy drops every kjobs-* header and gets kjobs-replayed-from and
 * kjobs-replayed-at (kj_hdr_write_replay).
 *
 * Reading: any producer can write these headers, so the ones kjobs acts on (the control
 * headers kjobs-attempt, kjobs-not-before and kjobs-original-topic/-partition/-offset) are
 * parsed strictly (ASCII digits only, no sign, no spaces, bounded) and never leniently:
 *   - on the MAIN topic they are ignored: a job's first run is attempt 1 and its original
 *     coordinates are where it was consumed, whatever the headers say;
 *   - on a LADDER topic every one of them must be present exactly once and valid, else the
 *     record is dead-lettered with class "invalid-header" and a reason naming the header;
 *     kjobs-attempt 0 (no attempt made yet) is valid only on a scheduled copy, one that also
 *     carries kjobs-run-at (or its deprecated alias kjobs-deliver-at) exactly once, or on a
 *     parked one (kjobs-parked-behind, at most once, strict decimal);
 *   - kjobs-run-at is read on the MAIN topic only (kj_run_at_parse): present at most once,
 *     strict decimal epoch ms, at most schedule.max_delay ahead. kjobs-deliver-at, its
 *     deprecated alias (the name kjobs wrote before it followed ../shared/CONTRACT.md), is read
 *     by the same rules; a record carrying both is valid only when they say the same time (a
 *     disagreement is ambiguous: dead-lettered, never guessed, so never run early). kjobs
 *     writes kjobs-run-at only;
 *   - kjobs-not-before further than KJ_RETRY_MAX_DELAY_MS (+ KJ_CLOCK_SKEW_MS) ahead is invalid,
 *     and a valid one is never trusted to hold a ladder partition for longer than that step's
 *     delay (plus its grain) after the record was written (kj_control_hold_until).
 *
 * @locality pure functions (no I/O, no global state); any thread. The writers modify only the
 * header list they are given.
 */
#ifndef KJOBS_HEADER_CONTRACT_H
#define KJOBS_HEADER_CONTRACT_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- wire names (fixed; string literals, so sizeof and concatenation work) --------------- */

/** What every kjobs header name starts with; a replay drops every header with it. */
#define KJ_HDR_PREFIX "kjobs-"
/** Attempts made so far (with retries in place, the end of the run's block: retry_policy.h),
 * decimal 0..KJ_ATTEMPT_MAX; 0 only on a scheduled or parked copy (the rules above). */
#define KJ_HDR_ATTEMPT "kjobs-attempt"
/** Epoch ms before which the job must not run; on a dead letter its failure time. */
#define KJ_HDR_NOT_BEFORE "kjobs-not-before"
/** The last error, UTF-8 text of at most 1 KiB (KJ_ERROR_MAX - 1 bytes). */
#define KJ_HDR_ERROR "kjobs-error"
/** retryable, permanent, decode, unknown-type, timeout, invalid-header, crash-loop
 * (kj_outcome_error_class); "scheduled" on a delayed job's ladder copy. */
#define KJ_HDR_ERROR_CLASS "kjobs-error-class"
/** Where the job was first consumed (main topic); unchanged down the ladder. */
#define KJ_HDR_ORIGINAL_TOPIC     "kjobs-original-topic"
#define KJ_HDR_ORIGINAL_PARTITION "kjobs-original-partition"
#define KJ_HDR_ORIGINAL_OFFSET    "kjobs-original-offset"
/** Epoch ms of the failure that made this copy. */
#define KJ_HDR_FAILED_AT "kjobs-failed-at"
/** The worker that made this copy: "<client id>@<hostname>". */
#define KJ_HDR_WORKER "kjobs-worker"
/** On a dead letter reduced to fit: what was dropped ("headers", "headers,value", ...). */
#define KJ_HDR_TRUNCATED "kjobs-truncated"
/** On a replayed copy: the dead letter it came from, "<dlq topic>:<partition>:<offset>". */
#define KJ_HDR_REPLAYED_FROM "kjobs-replayed-from"
/** On a replayed copy: epoch ms of the replay. */
#define KJ_HDR_REPLAYED_AT "kjobs-replayed-at"
/** Set by a producer on a MAIN-topic job: epoch ms before which it must not run (a delayed or
 * scheduled job, docs/scheduling.md; the name ../shared/CONTRACT.md fixes). Kept on its ladder
 * copies, where it is only a marker. The one scheduling header kjobs writes. */
#define KJ_HDR_RUN_AT "kjobs-run-at"
/** On a ladder copy parked behind an earlier job of its key (retry.ordering = "key",
 * docs/ordering.md): that job's kjobs-original-offset, decimal. Makes kjobs-attempt 0 valid
 * (a job parked before its first run); removed when the job fails and is copied on. */
#define KJ_HDR_PARKED_BEHIND "kjobs-parked-behind"
/** Deprecated alias of KJ_HDR_RUN_AT, the name kjobs wrote and documented before: still read
 * (kj_run_at_parse, the ladder's attempt-0 marker), never written. */
#define KJ_HDR_DELIVER_AT "kjobs-deliver-at"

/* --- bounds ---------------------------------------------------------------------------- */

/** Longest per-job retry delay (the longest retry.delays entry allowed): 30 days. */
#define KJ_RETRY_MAX_DELAY_MS (30LL * 24 * 3600 * 1000)
/** Clock difference between workers tolerated on kjobs-not-before. */
#define KJ_CLOCK_SKEW_MS (60LL * 1000)
/** Largest kjobs-attempt accepted (retry.max_attempts is at most 1000). */
#define KJ_ATTEMPT_MAX 1000
/** Longest Kafka topic name. */
#define KJ_TOPIC_NAME_MAX 249
/** Longest kjobs-replayed-from value kjobs writes, in bytes. */
#define KJ_HDR_REPLAYED_FROM_MAX 599
/** Most digits a strict decimal header value may have (19: every int64 >= 0 fits). */
#define KJ_HDR_UINT_DIGITS_MAX 19

/* --- names ------------------------------------------------------------------------------ */

/** Whether header @p name (NUL-terminated, not NULL) is one of kjobs' own (KJ_HDR_PREFIX). */
bool kj_hdr_is_kjobs(const char *name);

/* --- parsing (untrusted input) ----------------------------------------------------------- */

/**
 * Strict unsigned decimal: 1..KJ_HDR_UINT_DIGITS_MAX ASCII digits and nothing else (no sign,
 * space, NUL or other byte, hence no non-ASCII UTF-8), value <= max. @p val need not be
 * NUL-terminated; NULL or len 0 is invalid. Returns true and sets *out when valid; *out is
 * untouched otherwise.
 */
bool kj_hdr_parse_uint(const void *val, size_t len, int64_t max, int64_t *out);

/**
 * Whether the @p len bytes at @p val are a Kafka topic name: 1..KJ_TOPIC_NAME_MAX bytes of
 * [a-zA-Z0-9._-] (so never a NUL, control or non-ASCII byte). NULL is not.
 */
bool kj_hdr_topic_ok(const void *val, size_t len);

/** The control headers of a ladder record, validated. */
typedef struct kj_control {
    int attempt;           /* attempts already made (kjobs-attempt), 1..KJ_ATTEMPT_MAX */
    int64_t not_before_ms; /* kjobs-not-before, epoch ms */
    char original_topic[KJ_TOPIC_NAME_MAX + 1];
    int32_t original_partition;
    int64_t original_offset;
    bool parked;                /* kjobs-parked-behind present (and valid) */
    int64_t parked_behind;      /* its value when parked */
    const char *invalid_header; /* NULL when valid, else the first offending header's name
                                   (a KJ_HDR_* constant, static) */
    char reason[192];           /* when invalid: why, for kjobs-error and the log */
} kj_control;

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

/** The longest a ladder step rounds a release time up by (kj_ladder_grain_ms). */
#define KJ_LADDER_GRAIN_MAX_MS 1000

/**
 * The grain of a ladder step with delay `step_delay_ms`: a tenth of the delay, at least 1 ms and
 * at most KJ_LADDER_GRAIN_MAX_MS. Release times are rounded up to multiples of it (epoch ms), so
 * records coming due within one grain (each at its own millisecond otherwise) come due together:
 * one batch per lane and one wake-up for every lane of the step, instead of a handler call of
 * ~3 records and a worker wake-up per millisecond (1 s step, 10 % of 2 M jobs retried over 128
 * partitions on Kafka: 65 k ladder batches of 3.1 jobs vs 15 k of 13.2 with a 100 ms grain;
 * bench/RESULTS.md, "Ladder grain"). The same idea as Linux's timer slack.
 */
int64_t kj_ladder_grain_ms(int64_t step_delay_ms);

/**
 * The grain a ladder record's release time is rounded up to: 1 (none) for a record whose
 * kjobs-attempt is 0 (read as kj_control_parse_ladder reads it: present once, strict decimal) — a
 * scheduled copy (kjobs-run-at), kept to the millisecond, or a parked one — else
 * kj_ladder_grain_ms(step_delay_ms). `hdrs` may be NULL (a record without headers). Headers are
 * untrusted: a forged attempt 0 only turns the rounding off.
 */
int64_t kj_ladder_release_grain_ms(const rd_kafka_headers_t *hdrs, int64_t step_delay_ms);

/**
 * When a ladder step with delay `step_delay_ms` releases a record with kjobs-not-before
 * `not_before_ms`, written at `record_ts_ms` (the Kafka timestamp; <= 0 when unknown) and
 * fetched at `now_ms`: min(not_before, min(record_ts, now) + step_delay), rounded up to a
 * multiple of `grain_ms` (kj_ladder_release_grain_ms). A record is never held longer than
 * its step's delay plus one grain after it was written, and never released before the
 * unrounded time, so the hold times of a ladder partition follow its offsets (records are
 * written in time order; rounding up keeps the order; an unrounded scheduled copy held for its
 * step's whole delay waits less than one grain behind a rounded one, and one due sooner, the
 * last part of a schedule, may wait behind earlier records as docs/scheduling.md says) and its
 * head is always released first. A record released before its not-before is re-routed, not run.
 */
int64_t kj_control_hold_until(int64_t not_before_ms, int64_t record_ts_ms, int64_t now_ms,
                              int64_t step_delay_ms, int64_t grain_ms);

/** What kj_run_at_parse found. */
typedef enum kj_run_at_status {
    KJ_RUN_AT_NONE = 0,     /* neither kjobs-run-at nor kjobs-deliver-at: run now */
    KJ_RUN_AT_VALID = 1,    /* *due_ms set (it may be in the past: run now) */
    KJ_RUN_AT_INVALID = -1, /* malformed, repeated, or the two names disagree: reason says why */
    KJ_RUN_AT_TOO_FAR = -2, /* more than max_delay_ms ahead of now_ms: reason says so */
} kj_run_at_status;

/**
 * Reads the due time of a main-topic record (untrusted input) from kjobs-run-at and its
 * deprecated alias kjobs-deliver-at: each present at most once and, when present, strict
 * decimal epoch ms (kj_hdr_parse_uint); when both are present they must be equal; then
 * due - now_ms <= max_delay_ms. Fills *due_ms when valid, and @p reason (for kjobs-error and
 * the log; it names the header) when not. *header, when @p header is not NULL, is the name the
 * answer is about (a KJ_HDR_* constant: the one read when valid, the offending one when not,
 * kjobs-run-at when both; NULL for KJ_RUN_AT_NONE). @p hdrs may be NULL.
 */
kj_run_at_status kj_run_at_parse(const rd_kafka_headers_t *hdrs, int64_t now_ms,
                                 int64_t max_delay_ms, int64_t *due_ms, const char **header,
                                 char *reason, size_t reason_size);

/**
 * Parses an RFC 3339 date-time, "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" ('t', 'z'
 * and a space for 'T' accepted; fraction cut to ms), into epoch ms. Returns 0, or -1 when it is
 * not one (fields out of range included; a leap second :60 is refused).
 */
int kj_parse_rfc3339_ms(const char *s, int64_t *out_ms);

/* --- writing ----------------------------------------------------------------------------- */

/**
 * Replaces every value of header @p name in @p h by the one NUL-terminated @p value (added
 * last). Both strings are copied.
 */
void kj_hdr_set(rd_kafka_headers_t *h, const char *name, const char *value);

/** kj_hdr_set with @p value in decimal (a leading '-' only when negative). */
void kj_hdr_set_int(rd_kafka_headers_t *h, const char *name, int64_t value);

/** What a retry or dead-letter copy says about the failure (all strings borrowed). */
typedef struct kj_hdr_failure {
    const char *original_topic; /* not NULL */
    int32_t original_partition;
    int64_t original_offset;
    int attempt;           /* attempts made, including the one that failed */
    int64_t not_before_ms; /* epoch ms of the next attempt; on a dead letter the failure time */
    const char *error;     /* UTF-8, at most KJ_ERROR_MAX - 1 bytes (the caller bounds it) */
    const char *error_class;
    int64_t failed_at_ms;
    const char *worker;    /* client id */
    bool parked;           /* a copy parked behind an earlier job of its key, not a failure */
    int64_t parked_behind; /* then: that job's original offset (kjobs-parked-behind) */
} kj_hdr_failure;

/**
 * Writes the failure headers onto a copy's header list @p h (which holds the original
 * headers), each replacing any value already there, in the order the file comment gives, and
 * removes kjobs-truncated; kjobs-parked-behind is set on a parked copy, removed otherwise.
 */
void kj_hdr_write_failure(rd_kafka_headers_t *h, const kj_hdr_failure *f);

/**
 * Adds the lineage of a replayed copy to @p h: kjobs-replayed-from
 * "<dlq_topic>:<partition>:<offset>" (at most KJ_HDR_REPLAYED_FROM_MAX bytes, cut there; a
 * topic name has at most 249) and kjobs-replayed-at, @p now_ms in decimal. The caller has
 * dropped the kjobs-* headers already (kj_hdr_is_kjobs), so nothing is replaced.
 */
void kj_hdr_write_replay(rd_kafka_headers_t *h, const char *dlq_topic, int32_t partition,
                         int64_t offset, int64_t now_ms);

#endif /* KJOBS_HEADER_CONTRACT_H */
