/*
 * processor/dlq_model.h — the dead-letter model: a dead-letter topic read as it was when it was
 * opened, each dead letter's state under the replay-loop guard, its JSON form, the selection
 * filter, and replay of a selection to its original topic with the replay marker recorded
 * after. `kjobs dlq` (cli/cmd_dlq.c: options, table, JSON lines, exit codes) is one user;
 * a console is another: each asks here and reimplements no rule. docs/dlq.md tells users.
 *
 * A handle is one snapshot. kj_dlq_open reads the topic's partitions, their low and end
 * offsets, and the replay marker. Every read through the handle covers at most [low, end) of
 * each partition, never "until idle": a dead letter produced while it is open — a replayed job
 * failing again — is never seen through it. Its consumer uses assign() only and joins no group
 * (its group.id is the marker's group, so it can read and commit the marker). Reads may be
 * repeated; each reads the records again from the broker. A console opens one per request.
 *
 * States (kj_dlq_state), the first rule that applies:
 *   discarded  the discard marker records it (in its ranges or below its committed offset);
 *   replayed   its offset is in the marker's ranges;
 *   no-origin  no kjobs-original-topic: not written by kjobs, never replayed;
 *   refailed   it carries kjobs-replayed-from: a replayed job that failed again;
 *   replayed   its offset is below the marker's committed offset;
 *   new        otherwise.
 *
 * Replay-loop guard (kj_dlq_replay):
 *   1. Snapshot: only records below the end offsets taken at open are considered.
 *   2. Lineage: a replayed copy carries kjobs-replayed-from (processor/header_contract.h,
 *      kj_hdr_write_replay); the router keeps headers, so if it fails again its new dead letter
 *      carries it too. Refailed dead letters are skipped unless KJ_DLQ_REPLAY_AGAIN.
 *   3. Marker (processor/dlq_marker.h, group `<kafka.group>.dlq-replay`): replay reads from its
 *      committed offset (from the oldest with AGAIN), skips the offsets it records unless AGAIN,
 *      and commits the new marker after the copies' transaction committed. At-least-once: a
 *      crash between the two replays those again. After a successful commit the handle's
 *      marker is the new one (a later read through it shows them replayed).
 *   4. Fence: the copies are produced in one Kafka transaction, by a producer whose
 *      transactional.id is `<kafka.group>.dlq-replay:<dlq topic>`, shared by every replay and
 *      discard of that DLQ. Its init fences (the broker aborts) the transaction of a run that
 *      began earlier and has not committed yet, and only then are the markers read again, so
 *      two runs at once do not both replay (or both record) the same dead letters: the earlier
 *      one fails with nothing visible and nothing recorded. The marker is committed in the
 *      same transaction (send_offsets_to_transaction; it also keeps a discard's transaction
 *      from being empty, which librdkafka would end without asking the coordinator). All or
 *      nothing: a copy that fails aborts the transaction (nothing replayed,
 *      KJ_DLQ_ERR_NOT_ACKED). The embedded broker gives every producer a new producer id and
 *      does not store offsets committed in a transaction: there the fence holds nothing back
 *      and the marker is committed again after the transaction, plainly, where the group
 *      still holds the marker read after the fence.
 * A dead letter that was reduced to fit without its value (kjobs-truncated) is never replayed.
 *
 * Discard (kj_dlq_discard). Kafka cannot delete one record from the middle of a topic, so a
 * discard is recorded, not performed: the discard marker is a second marker of the same form
 * and rule (processor/dlq_marker.h) under the group `<kafka.group>.dlq-discard`. A discarded
 * dead letter is never replayed, not even with KJ_DLQ_REPLAY_AGAIN; it stays in the topic
 * (readable, listed with state "discarded") until retention removes it. There is no undo.
 *
 * Handles. A dead letter's handle is its job id, or PARTITION:OFFSET in the DLQ when the value
 * does not decode to a job with an id. A job dead-lettered more than once has several dead
 * letters with one id; PARTITION:OFFSET always names exactly one (what a console should use).
 *
 * Ownership. A record passed to a callback is borrowed for the call (message and JSON): keep
 * the JSON with json_incref. A json_t returned is a new reference. Strings in arguments are
 * borrowed for the call unless said.
 *
 * Errors. Calls return KJ_DLQ_OK (0) or a negative kj_dlq_err and put a one-line reason in the
 * caller's `err` (NULL/0 allowed). KJ_DLQ_ERR_CONFIG is not logged: the caller reports it (the
 * CLI as a usage error). Every other failure is logged with kj_log where it happens (broker
 * errors, a copy not acknowledged, the marker not recorded), as are skipped dead letters and a
 * replay's summary. Nothing here writes to stdout.
 *
 * @locality one thread at a time per handle; handles are independent.
 */
#ifndef KJOBS_DLQ_MODEL_H
#define KJOBS_DLQ_MODEL_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"

typedef enum kj_dlq_err {
    KJ_DLQ_OK = 0,
    KJ_DLQ_ERR_CONFIG = -1,    /* Kafka client settings refused (e.g. an unknown -X property) */
    KJ_DLQ_ERR_IO = -2,        /* the broker (topic, offsets, marker, consume) or the codec */
    KJ_DLQ_ERR_TIMEOUT = -3,   /* the deadline passed before a read reached the snapshot's end */
    KJ_DLQ_ERR_STOPPED = -4,   /* the stop flag was raised during a read */
    KJ_DLQ_ERR_NOT_FOUND = -5, /* kj_dlq_find: no dead letter has that handle */
    KJ_DLQ_ERR_NOT_ACKED = -6, /* kj_dlq_replay: some copies failed (they stay replayable) */
    KJ_DLQ_ERR_MARKER = -7     /* kj_dlq_replay: the marker was not recorded (whatever else) */
} kj_dlq_err;

typedef enum kj_dlq_state {
    KJ_DLQ_NEW,
    KJ_DLQ_REPLAYED,
    KJ_DLQ_REFAILED,
    KJ_DLQ_NO_ORIGIN,
    KJ_DLQ_DISCARDED
} kj_dlq_state;

/** "new", "replayed", "refailed", "no-origin", "discarded": the STATE column and the JSON
 *  "state". */
const char *kj_dlq_state_name(kj_dlq_state state);

/* --- a dead letter, without a handle (pure) ---------------------------------------------- */

/**
 * The JSON form of dead letter `msg` in state `state` (new object, never NULL): the record as
 * `kjobs peek` prints it (processor/job_json.h: topic, partition, offset, timestamp, key,
 * headers, the decoded job or the decode error), plus "handle", "state" and "dead_letter":
 * {attempt, error_class, error, original_topic, original_partition, original_offset, failed_at
 * (epoch ms), failed_at_iso (UTC, "...Z"), worker, replayed_from}, each null when its header is
 * missing; integers that do not parse stay strings; text that is not UTF-8 has U+FFFD.
 */
json_t *kj_dlq_json(const rd_kafka_message_t *msg, kj_dlq_state state);

/** Whether `text` is PARTITION:OFFSET (both decimal, >= 0, nothing else); sets both if so. */
bool kj_dlq_parse_handle(const char *text, int32_t *partition, int64_t *offset);

/** A selection: every field that is set must match. {0} selects everything. */
typedef struct kj_dlq_filter {
    const char *type;           /* job type ("type"); NULL: any */
    const char *error_class;    /* kjobs-error-class ("dead_letter.error_class"); NULL: any */
    const char *const *handles; /* job ids or PARTITION:OFFSET: matches when one of them does */
    size_t handle_count;        /* 0: any handle */
} kj_dlq_filter;

/** Whether the dead letter in JSON form (kj_dlq_json) passes `filter` (NULL passes all). */
bool kj_dlq_filter_match(const kj_dlq_filter *filter, json_t *dead_letter);

/* --- a dead-letter topic ----------------------------------------------------------------- */

typedef struct kj_dlq kj_dlq;

typedef struct kj_dlq_params {
    const kj_config *cfg;        /* client settings and kafka.group; borrowed until kj_dlq_close */
    const char *topic;           /* the DLQ topic (copied); NULL: cfg->dlq_topic */
    long long deadline_ms;       /* epoch ms (kj_now_ms): open and every read give up then */
    volatile sig_atomic_t *stop; /* raised: reads stop, a replay drops unsent copies; NULL */
} kj_dlq_params;

/**
 * Opens the snapshot (see above). On KJ_DLQ_OK *out is the handle (kj_dlq_close it); else
 * *out is NULL and the result is KJ_DLQ_ERR_CONFIG (settings refused) or KJ_DLQ_ERR_IO (the
 * codec, the topic's metadata, its offsets or the marker could not be read; logged).
 */
int kj_dlq_open(const kj_dlq_params *params, kj_dlq **out, char *err, size_t err_size);
/** Closes the consumer (committing nothing) and frees the handle; NULL is a no-op. */
void kj_dlq_close(kj_dlq *dlq);
/** The DLQ topic's name, valid until kj_dlq_close. */
const char *kj_dlq_topic(const kj_dlq *dlq);

/**
 * The snapshot's depth from its watermarks and markers alone (no record is read): *retained =
 * dead letters in [low, end) over every partition; *unresolved = those no marker settles (not
 * replayed, not discarded, not passed over by a replay's W — which also passes refailed and
 * no-origin ones: see dlq_marker.h, kj_dlq_marker_unsettled). Either pointer may be NULL.
 */
void kj_dlq_depth(const kj_dlq *dlq, int64_t *retained, int64_t *unresolved);

/** One dead letter as a read hands it over; everything is borrowed for the callback's call. */
typedef struct kj_dlq_record {
    const rd_kafka_message_t *msg; /* the record; partition/offset are its place in the DLQ */
    kj_dlq_state state;
    json_t *json; /* kj_dlq_json(msg, state) */
} kj_dlq_record;

/** Return true to go on, false to end the read early (it then returns KJ_DLQ_OK). */
typedef bool(kj_dlq_record_fn)(const kj_dlq_record *rec, void *opaque);

/**
 * Calls `fn` for every dead letter of the snapshot that passes `filter` (NULL: all), from each
 * partition's oldest retained record, in the order the consumer delivers them (offset order
 * within a partition). Returns KJ_DLQ_OK, or KJ_DLQ_ERR_TIMEOUT / _STOPPED / _IO with `fn`
 * called for part of them.
 */
int kj_dlq_list(kj_dlq *dlq, const kj_dlq_filter *filter, kj_dlq_record_fn *fn, void *opaque,
                char *err, size_t err_size);

/**
 * The dead letter `handle` names, in JSON form: for PARTITION:OFFSET that record alone (only it
 * is read); for a job id the latest failure of that job (highest failed_at; of equal ones the
 * last read). On KJ_DLQ_OK *out is a new reference; *matches (may be NULL) is how many dead
 * letters have that handle. KJ_DLQ_ERR_NOT_FOUND (not logged) when none; read errors as
 * kj_dlq_list. *out is NULL on every error.
 */
int kj_dlq_find(kj_dlq *dlq, const char *handle, json_t **out, long *matches, char *err,
                size_t err_size);

/** kj_dlq_replay flags. */
enum {
    KJ_DLQ_REPLAY_AGAIN = 1,  /* also replayed and refailed dead letters (not no-origin ones) */
    KJ_DLQ_REPLAY_DRY_RUN = 2 /* select and report only: produce and record nothing */
};

/** One selected dead letter, reported by kj_dlq_replay; borrowed for the callback's call. */
typedef struct kj_dlq_replay_item {
    const char *handle;         /* as kj_dlq_json's "handle" */
    int32_t partition;          /* its place in the DLQ */
    int64_t offset;             /* */
    const char *original_topic; /* where its copy goes (kjobs-original-topic) */
    bool acknowledged;          /* the broker acknowledged its copy; false in a dry run */
} kj_dlq_replay_item;

/**
 * Called once per selected dead letter, in the order read: in a dry run before the summary is
 * logged; otherwise once the transaction and the marker are committed (or not).
 */
typedef void(kj_dlq_replay_fn)(const kj_dlq_replay_item *item, void *opaque);

/** What a replay did, for a report; the summary log line carries the same numbers. */
typedef struct kj_dlq_replay_counts {
    long selected;          /* matched the filter and replayable (a dry run's "would_replay") */
    long replayed, failed;  /* copies acknowledged / not (0 in a dry run) */
    long skipped_replayed;  /* matched but already replayed (without AGAIN) */
    long skipped_refailed;  /* matched but refailed (without AGAIN) */
    long skipped_no_origin; /* matched but no kjobs-original-topic */
    long skipped_no_value;  /* matched but reduced without its value (kjobs-truncated) */
    long skipped_discarded; /* matched but discarded (replay and discard alike) */
    long discarded;         /* kj_dlq_discard: recorded as discarded (0 in a dry run) */
} kj_dlq_replay_counts;

/**
 * Replays the dead letters that pass `filter` (NULL: all) and the guard (see above): each is
 * produced to its kjobs-original-topic with the same key and value, its non-kjobs headers kept
 * and its kjobs-* headers replaced by kjobs-replayed-from/-at, so its attempt count starts
 * again at 1. Then the marker records what was acknowledged (also when some copies failed).
 * `flags`: KJ_DLQ_REPLAY_AGAIN, KJ_DLQ_REPLAY_DRY_RUN. `each` (may be NULL) sees each selected
 * dead letter; `counts` (may be NULL) gets the totals.
 *
 * Returns KJ_DLQ_OK; read errors as kj_dlq_list (nothing produced); KJ_DLQ_ERR_CONFIG when the
 * producer's settings are refused (nothing produced); KJ_DLQ_ERR_IO when the transaction could
 * not start; KJ_DLQ_ERR_NOT_ACKED when a copy failed (the transaction is aborted: nothing
 * replayed, nothing recorded); KJ_DLQ_ERR_MARKER when the transaction did not commit (fenced
 * by a later run, or failed: nothing replayed; `acknowledged` false) or when it committed but
 * the marker did not (the copies are replayed, `acknowledged` true, and a later replay would
 * replay them again).
 */
int kj_dlq_replay(kj_dlq *dlq, const kj_dlq_filter *filter, unsigned flags, kj_dlq_replay_fn *each,
                  void *opaque, kj_dlq_replay_counts *counts, char *err, size_t err_size);

/**
 * Discards the dead letters that pass `filter` (NULL: all) and are not discarded yet, whatever
 * their other state: records them in the discard marker (see "Discard" above); nothing is
 * produced and nothing leaves the topic. `flags`: KJ_DLQ_REPLAY_DRY_RUN only (select and
 * report, record nothing). `each` sees each selected dead letter (`acknowledged` = recorded);
 * `counts` gets `selected`, `discarded`, `skipped_discarded`.
 *
 * Returns KJ_DLQ_OK; read errors as kj_dlq_list (nothing recorded); KJ_DLQ_ERR_MARKER when
 * the marker could not be committed (nothing discarded).
 */
int kj_dlq_discard(kj_dlq *dlq, const kj_dlq_filter *filter, unsigned flags, kj_dlq_replay_fn *each,
                   void *opaque, kj_dlq_replay_counts *counts, char *err, size_t err_size);

#endif /* KJOBS_DLQ_MODEL_H */
