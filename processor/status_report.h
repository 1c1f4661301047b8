/*
 * status_report.h — a worker's status record: what `kjobs run` publishes every
 * ui.report_interval to the compacted topic <topics.main>.status so that `kjobs ui` sees every
 * replica from Kafka alone, without scraping pods (Karafka Web's design). The schema is
 * documented for users in docs/console.md; this file owns it.
 *
 * DESIGN
 *   The record is keyed by the worker id (kafka.group_instance_id when set, else
 *   "<hostname>-<pid>") so compaction keeps one record per worker; a clean exit writes a
 *   tombstone (null value) under the same key, and a crashed worker's last record stays, its
 *   reported_at growing old (the console calls it stale past three intervals).
 *
 *   Two halves: kj_status_render is pure (input values → bounded JSON text), so the schema and
 *   its size bound are unit-tested without Kafka; kj_status_reporter owns a small dedicated
 *   producer (the router's producer has its own delivery contract with the commit rule, and a
 *   status record must never share its queue or its back-pressure). Producing is non-blocking:
 *   a full queue or a broker outage drops that record (logged once per outage) and the next
 *   interval tries again. The poll thread calls kj_status_reporter_due/_publish from its tick,
 *   so the record sees the poll thread's own view of the assignment without a lock.
 *
 *   Recent errors: every warn/error log line is offered to a process-wide ring of the last
 *   KJ_STATUS_MAX_ERRORS (kj_log_set_observer). Only "ts", "level", "msg" and a few known context
 *   fields are kept, each cut to KJ_STATUS_MAX_ERROR_TEXT bytes on a UTF-8 boundary; log lines
 *   never carry secrets or payloads (processor/log.h), so neither does the record.
 *
 *   Size: the rendered record is at most max_bytes (KJ_STATUS_MAX_BYTES in the worker). Every
 *   field but the assignment list is bounded by construction; when the list would not fit, it
 *   is cut and "assignment.omitted" says how many partitions are not listed ("count" is always
 *   the full number).
 *
 * @locality kj_status_render: any thread; the reporter: the worker's poll thread (one thread)
 */
#ifndef KJOBS_STATUS_REPORT_H
#define KJOBS_STATUS_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"
#include "processor/log.h"
#include "processor/metrics.h"

/** The "schema" field: bumped only for a change a reader must know about (fields may be added). */
#define KJ_STATUS_SCHEMA_VERSION 1
/** Largest record a worker publishes (bytes of the JSON value). */
#define KJ_STATUS_MAX_BYTES 65536
/** Recent errors kept and published. */
#define KJ_STATUS_MAX_ERRORS 8
/** Longest text of one field of a recent error (bytes). */
#define KJ_STATUS_MAX_ERROR_TEXT 256

/** One assigned partition. */
typedef struct kj_status_part {
    const char *topic;
    int32_t partition;
    bool paused; /* held by an operator's pause (group_control.h): "paused": true */
} kj_status_part;

/** Everything a record says; strings are borrowed for the call. */
typedef struct kj_status_input {
    const char *worker_id, *host, *client_id, *group, *version;
    long pid;
    int64_t started_at_ms, reported_at_ms, interval_ms; /* epoch ms; interval in ms */
    const char *state; /* "joining", "running", "draining", "breaker_open" or "stalled" */
    const kj_status_part *parts;
    size_t part_count;
    kj_metrics_summary summary; /* counts since start, p50/p99, in-flight, breaker */
    const json_t *errors;       /* array from kj_status_errors_json(); NULL: [] */
} kj_status_input;

/**
 * The record as compact JSON text (malloc'd, NUL-terminated; *len its length without the NUL),
 * at most max_bytes long (max_bytes >= 4096). NULL only when out of memory.
 */
char *kj_status_render(const kj_status_input *in, size_t max_bytes, size_t *len);

/** The worker id a status record is keyed by, written to buf (always NUL-terminated). */
void kj_status_worker_id(const kj_config *cfg, char *buf, size_t size);

/** Offer one log line to the recent-errors ring (the kj_log observer; any thread). */
void kj_status_note_log(kj_log_level level, const json_t *line);
/** The ring as a new JSON array, oldest first (any thread). */
json_t *kj_status_errors_json(void);

typedef struct kj_status_reporter kj_status_reporter;

/**
 * A reporter publishing to kj_topic_status(cfg) every cfg->ui_report_interval_ms, and the
 * recent-errors observer installed. Returns NULL, having logged why, when reports are off
 * (interval 0), the topic is missing (a warning naming `kjobs topics --create`; the worker runs
 * on without reports) or the producer cannot be made (settings refused: errstr is set and the
 * worker should not start). `cfg` must outlive the reporter.
 */
kj_status_reporter *kj_status_reporter_new(const kj_config *cfg, char *errstr, size_t errstr_size,
                                           bool *failed);
/** The key its records use. */
const char *kj_status_reporter_id(const kj_status_reporter *r);
/** Whether a record is due at now_ms (epoch ms); also serves delivery reports. */
bool kj_status_reporter_due(kj_status_reporter *r, int64_t now_ms);
/**
 * Render `in` (pid, host, version, started_at, interval and worker id filled in here) and queue
 * it; never blocks. A record that cannot be queued is dropped (logged once until one is).
 */
void kj_status_reporter_publish(kj_status_reporter *r, kj_status_input *in, int64_t now_ms);
/**
 * On a clean exit: queue the tombstone and wait up to timeout_ms for it (and anything before it)
 * to be acknowledged. Then, or without it, kj_status_reporter_free.
 */
void kj_status_reporter_tombstone(kj_status_reporter *r, int timeout_ms);
/** Drop whatever is still queued and free; NULL is a no-op. */
void kj_status_reporter_free(kj_status_reporter *r);

#endif /* KJOBS_STATUS_REPORT_H */
