/*
 * console_data.h — what the operator console (`kjobs ui`) shows, read from Kafka alone and
 * handed out as JSON: the workers' status records, the consumer group's members and lag, the
 * retry ladder's occupancy and next due time, and the dead letters. The HTTP side
 * (processor/console.h) only routes, authenticates and serialises; every Kafka read is here.
 *
 * DESIGN
 *   Workers. A background thread consumes <topics.main>.status from the beginning for as long
 *   as the console runs and keeps the latest record per key (a tombstone removes it), so a page
 *   load never re-reads the topic (Karafka Web's design). A record is "stale" when its
 *   reported_at is older than three of its interval_ms. Records of another consumer group
 *   (workers of a second group on the same main topic) are not shown; at most
 *   KJ_CONSOLE_MAX_WORKERS ids are kept, since any producer may write to the topic.
 *
 *   Group and lag. One consumer handle with the group's group.id, never subscribed (see
 *   processor/group_lag.h): lag per partition of the main and ladder topics, and members
 *   through the Admin API (DescribeConsumerGroups).
 *
 *   Retries and age. Per ladder step: jobs waiting = the group's lag on that topic; next due =
 *   the earliest kjobs-not-before among the head records (the first uncommitted record of each
 *   partition with lag), read with a short-lived assignment on a group-less reader. The same
 *   heads of the main topic give the age of the oldest waiting job (from its created_at).
 *
 *   Dead letters. processor/dlq_model.h on each request (a fresh snapshot): the list with the
 *   selection of `kjobs dlq list` plus error text and time filters, newest last, capped.
 *
 *   Controls. The operator's pauses and breaker resumes (processor/group_control.h): a follower
 *   of the control topic, loaded on first use and polled (without waiting) on each request; a
 *   write from this console is read back before it is answered, so the next page load shows it.
 *   Which workers hold a pause comes from their status records ("paused" in the assignment),
 *   the breakers that are open from their "breaker" field.
 *
 *   Everything returned is built from untrusted input (job data, headers, status records from
 *   any producer); it is JSON-escaped by jansson and the page renders it as text only.
 *
 * @locality any thread: Kafka reads are serialised by one mutex; the workers map has its own.
 */
#ifndef KJOBS_CONSOLE_DATA_H
#define KJOBS_CONSOLE_DATA_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "processor/config.h"
#include "processor/group_control.h"

typedef struct kj_console_data kj_console_data;

/** Broker requests of one page wait at most this long (milliseconds). */
#define KJ_CONSOLE_TIMEOUT_MS 10000
/** Most worker ids kept from the status topic (anyone may write to it). */
#define KJ_CONSOLE_MAX_WORKERS 4096
/** Most dead letters one list answer holds (the newest ones that match). */
#define KJ_CONSOLE_DLQ_LIMIT 500

/**
 * Clients and the status reader thread for `cfg` (borrowed until kj_console_data_free).
 * NULL with a message in err when the client settings are refused.
 */
kj_console_data *kj_console_data_new(const kj_config *cfg, char *err, size_t errsz);
void kj_console_data_free(kj_console_data *d);

/** Whether the status reader has reached the end of the status topic at least once. */
bool kj_console_data_status_loaded(kj_console_data *d);

/**
 * {"now", "group", "main_topic", "workers": [record + "stale"], "group_state", "members":
 * [{member_id, client_id, host, assignment:[{topic,partition}]}], "lag": [{topic, role, step,
 * partition, committed, log_end, lag}], "oldest_waiting_ms": {topic: age of the oldest job
 * waiting on a main-topic partition (now - the head job's created_at)}, "totals": {"lag_main",
 * "lag_ladder", "jobs": {outcome: sum over the workers' records}}, "errors": [text]} — a part that
 * could not be read is empty and says why in "errors". Never NULL.
 */
json_t *kj_console_overview(kj_console_data *d);

/** {"now", "steps": [{step, topic, delay_ms, waiting, next_due (epoch ms or null),
 *  partitions: [{partition, waiting, head_offset, head_not_before}]}], "errors"}. Never NULL. */
json_t *kj_console_retries(kj_console_data *d);

/** A dead-letter selection; every set field must match. */
typedef struct kj_console_dlq_query {
    const char *type;           /* job type, exact */
    const char *error_class;    /* kjobs-error-class, exact */
    const char *text;           /* substring of kjobs-error, case-insensitive */
    int64_t since_ms, until_ms; /* failed_at within [since, until]; 0 = open */
    long limit;                 /* <= 0 or above KJ_CONSOLE_DLQ_LIMIT: KJ_CONSOLE_DLQ_LIMIT */
} kj_console_dlq_query;

/** {"topic", "matched", "items": [summary], "truncated", "errors"}. Never NULL. */
json_t *kj_console_dlq_list(kj_console_data *d, const kj_console_dlq_query *q);

/**
 * The dead letter PARTITION:OFFSET (or the latest of a job id) as kj_dlq_json gives it.
 * Returns 0 with *out set; 404 when there is none; 400 for a malformed handle; 502 when the
 * DLQ could not be read (a reason in err).
 */
int kj_console_dlq_show(kj_console_data *d, const char *handle, json_t **out, char *err,
                        size_t errsz);

/** Most dead letters one replay or discard request may name. */
#define KJ_CONSOLE_REPLAY_MAX 1000

/**
 * Replay the dead letters named by `refs` (PARTITION:OFFSET each, validated by the caller) with
 * kj_dlq_replay and its loop guard: each one already replayed or refailed, or without an
 * origin, is skipped and counted, never replayed twice. Replays are serialised (one at a time
 * per console), so two requests cannot both pass the guard before the marker is committed.
 * *out (never NULL on return) is {"dry_run", "requested", "selected", "replayed", "failed",
 * "skipped": {replayed, refailed, no_origin, no_value, discarded}, "items": [{ref, original_topic,
 * acknowledged}], "error"}. Returns the kj_dlq_replay result (KJ_DLQ_OK, ...).
 */
int kj_console_dlq_replay(kj_console_data *d, const char *const *refs, size_t count, bool dry_run,
                          json_t **out);

/**
 * Discard the dead letters named by `refs` (as kj_console_dlq_replay) with kj_dlq_discard:
 * recorded as discarded, never replayed again; ones already discarded are skipped and counted.
 * Serialised with replays. *out (never NULL on return) is {"dry_run", "requested", "selected",
 * "discarded", "skipped": {discarded}, "items": [{ref, original_topic, acknowledged}],
 * "error"}. Returns the kj_dlq_discard result.
 */
int kj_console_dlq_discard(kj_console_data *d, const char *const *refs, size_t count, bool dry_run,
                           json_t **out);

/**
 * {"now", "control_topic", "pauses": [kj_ctl_pause_json + "applied_by": [worker ids]],
 * "topics": [{topic, role, step, paused}], "partitions": [{topic, role, partition, committed,
 * log_end, lag, paused ("partition", "topic" or null), applied_by: [worker ids]}], "breaker":
 * {"open": [{worker_id, host, state, age_ms, stale}], "last_resume_at"}, "errors"}. Never NULL.
 */
json_t *kj_console_controls(kj_console_data *d);

/**
 * Writes the control record of key `k` (value `v`, NULL: a pause's resume; kj_ctl_write), then
 * reads the control topic up to it so the next kj_console_controls shows it. Returns
 * kj_ctl_write's result (0, 1 topic missing, 2 no such target, -1) with err set unless 0.
 */
int kj_console_control(kj_console_data *d, const kj_ctl_key *k, const kj_ctl_value *v, char *err,
                       size_t errsz);

#endif /* KJOBS_CONSOLE_DATA_H */
