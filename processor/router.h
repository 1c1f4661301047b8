/*
 * router.h — hands failed jobs on: to the next retry-ladder topic or to the dead-letter topic,
 * as a copy that keeps the original key, the value byte for byte and the original headers, and
 * adds the contract's kjobs-* headers (header_contract.h writes them).
 *
 * Where a copy goes — ladder step N due at a time, or the DLQ — is the retry policy's decision
 * (retry_policy.h), taken once per failed job; the router writes the copy that decision names.
 *
 * The policy makes every record of a ladder step due at least that step's delay after it was
 * written; the worker releases it at most that step's delay (plus its grain) after it was written
 * (kj_control_hold_until), so a partition's release times follow its offsets. A record
 * released before its kjobs-not-before (a delay longer than its step's) hops: kj_router_hop
 * copies it unchanged to the step fitting the time left, and it is not run.
 *
 * Size: a copy is sized as librdkafka counts it against message.max.bytes (key + value +
 * headers, kjobs' own included). One that does not fit — or that the broker refuses as too
 * large on BROKER_SIZE_REFUSALS consecutive sends (one refusal may be its batch's size, not
 * its own) — can never be written as it is, so it goes to the DLQ reduced: first without the
 * original headers (only kjobs' own, kjobs-error shortened), then without its value, then
 * without its key; kjobs-truncated lists what was dropped and kjobs-error says why.
 *
 * No loss: the copy goes through an idempotent producer with acks=all. The source offset is
 * completed (becomes committable) only in the delivery report of an acknowledged copy: one the
 * broker answered for with the offset it stored the copy at (kj_copy_confirmed). A full
 * producer queue is back-pressure: the worker thread waits for space, and so it does while the
 * copies hold more memory than batch.max_pending_bytes (librdkafka counts only values against
 * its queue's size, and a small job's copy holds ten times its value: kj_router_held_bytes).
 * A copy that is refused or fails is produced again (with backoff) until it is acknowledged; while
 * it is not, its partition's commit cannot pass it, the failure is logged with librdkafka's error
 * and counted, and readiness reports it. A fatal producer error (idempotence broken) stops the
 * worker without committing.
 *
 * Exactly-once mode (retry.exactly_once): the producer is transactional; copies and the
 * consumed offsets are committed in one Kafka transaction (kj_router_commit_transaction), so a
 * crash can neither lose nor duplicate a routed copy for read_committed readers. Handler side
 * effects remain at-least-once.
 *
 * @locality kj_router_route, kj_router_hop: worker threads. kj_router_poll: the poll thread
 * (re-sends run there). Delivery reports, hence completions, run on the poll thread or on a
 * worker thread waiting for producer queue space: the done callback must be thread-safe.
 */
#ifndef KJOBS_ROUTER_H
#define KJOBS_ROUTER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "processor/config.h"
#include "processor/header_contract.h"
#include "processor/handlers.h"
#include "processor/metrics.h"
#include "processor/retry_policy.h"

typedef struct kj_router kj_router;

/**
 * Where a copy's source record was consumed: its topic and partition, and which assignment of
 * that partition (the caller's generation number) it was consumed under. The router keeps it by
 * value and hands it back with the acknowledgement, so the router never holds a pointer into its
 * caller's state: an acknowledgement that arrives after the partition was revoked (or revoked and
 * assigned again: another generation) is recognised as stale by the caller, and a revoked
 * partition's state can be freed at once. `topic` must stay valid for the router's life.
 */
typedef struct kj_route_source {
    const char *topic;
    int32_t partition;
    uint64_t generation;
} kj_route_source;

/** Called once the copy of (source, offset) is acknowledged (see @locality). */
typedef void(kj_route_done_fn)(const kj_route_source *source, int64_t offset, void *opaque);

/** Takes ownership of conf. */
kj_router *kj_router_new(const kj_config *cfg, rd_kafka_conf_t *conf, const char *worker_id,
                         kj_route_done_fn *done, void *done_opaque, char *errstr,
                         size_t errstr_size);
void kj_router_free(kj_router *router);

/**
 * Whether a delivery report confirms that the broker stored the copy. A success without an
 * offset does not: librdkafka's idempotent producer reports the records of a failed request as
 * delivered when a later request of the same partition succeeds ("implicitly acked by
 * subsequent batch success"), which holds only on a broker that refuses out-of-order
 * sequences. librdkafka's mock cluster — the embedded broker (`kjobs broker`, `run
 * --embedded`) — checks sequences for transactional producers only: after an injected Produce
 * error it stored the later request, and the earlier copies were reported delivered though
 * never written (their jobs were committed and lost). An unconfirmed copy is sent again: on a
 * broker that did store it, one duplicate copy; never a loss. `transactional`: the inference is
 * kept (the mock checks a transactional producer's sequences, and a second copy would break
 * exactly-once).
 */
bool kj_copy_confirmed(rd_kafka_resp_err_t err, int64_t offset, bool transactional);

/** Bytes librdkafka counts against message.max.bytes for a record with these parts. */
size_t kj_copy_wire_size(size_t key_len, size_t value_len, const rd_kafka_headers_t *hdrs);

/*
 * Every copy below is made of `msg` and `headers`: msg's header list as
 * rd_kafka_message_headers() returned it, NULL when it has none. The caller has read it
 * already; reading it again is not free (librdkafka parses a record without headers again,
 * with an allocation, on every call), and routing is a routine path (bench/README.md).
 */

/**
 * Produce the copy of `msg` that `decision` names (kj_retry_decide: the attempt that ended with
 * `result`, the ladder step and due time, or the DLQ). `source` (copied) is handed back to the
 * done callback. `origin`: the validated control headers of a ladder record (its
 * kjobs-original-* are carried on), or NULL for a main-topic record (they are this record's
 * coordinates, whatever its headers say). The copy is never dropped (see "No loss"). A retry
 * copy too large to write goes to the DLQ reduced (see "Size"): then `decision` is updated to
 * say so (to_dlq, reason KJ_DLQ_TOO_LARGE), so that it always names where the copy went.
 */
void kj_router_route(kj_router *router, const kj_route_source *source,
                     const rd_kafka_message_t *msg, const rd_kafka_headers_t *headers,
                     const kjobs_result_t *result, kj_retry_decision *decision,
                     const kj_control *origin);

/**
 * Hop: a ladder record released before its kjobs-not-before is copied unchanged (key, value,
 * every header) to the step for the time left (kj_retry_step_for_delay), not run. Completes
 * like a routed copy. Returns the step, or 0 when the copy was too large to write and went to
 * the DLQ reduced (see "Size").
 */
int kj_router_hop(kj_router *router, const kj_route_source *source, const rd_kafka_message_t *msg,
                  const rd_kafka_headers_t *headers, int64_t not_before_ms);

/** kjobs-error-class of a scheduled copy (a job not run yet, not a failure). */
#define KJ_SCHEDULED_CLASS "scheduled"

/**
 * Schedule: a main-topic job whose kjobs-run-at `due_ms` is after `now_ms` is copied (key,
 * value, every header) to the ladder step for the time left (kj_retry_step_for_delay; the
 * shortest step when less is left, which releases it at due_ms), with the control headers of a
 * ladder record: kjobs-attempt 0 (its first run there is attempt 1), kjobs-not-before due_ms,
 * kjobs-original-* this record, kjobs-error-class "scheduled". Not run here; completes like a
 * routed copy; hops on down the ladder until due. Needs a non-empty ladder. Returns the step,
 * or 0 when the copy was too large to write and went to the DLQ reduced (see "Size").
 */
int kj_router_schedule(kj_router *router, const kj_route_source *source,
                       const rd_kafka_message_t *msg, const rd_kafka_headers_t *headers,
                       int64_t due_ms, int64_t now_ms);

/**
 * Key-ordered retries (processor/key_order.h): copies of records from partitions numbered below
 * `partitions` (main or ladder alike) go to the ladder partition of their own number; others,
 * and all with 0 (the default), where the partitioner puts them. Any thread.
 */
void kj_router_key_partitions(kj_router *router, int32_t partitions);

/**
 * A ladder copy for step `step` (> 0), in ladder partition `partition` (RD_KAFKA_PARTITION_UA
 * when the partitioner chose), became a dead letter after it was queued: the broker refused it
 * as too large (see "Size"). `key` (may be NULL) and `headers` (the copy's, with its kjobs-*
 * control headers) are borrowed for the call. On the thread that found it (the poll thread, or
 * a worker thread queueing a copy): must be thread-safe.
 */
typedef void(kj_route_diverted_fn)(int32_t partition, const void *key, size_t key_len,
                                   const rd_kafka_headers_t *headers, int step, void *opaque);
/** Sets the callback above (before the first copy is routed). */
void kj_router_on_diverted(kj_router *router, kj_route_diverted_fn *fn, void *opaque);

/** kjobs-error-class of a parked copy (retry.ordering = "key": waiting behind an earlier job
 * of its key, not a failure). */
#define KJ_PARKED_CLASS "parked"

/**
 * Park: a job that must wait behind an earlier job of its key (retry.ordering = "key",
 * processor/key_order.h) is copied (key, value, every header) to ladder step `step`, in the
 * ladder partition of its own partition's number, with the control headers of a ladder
 * record: kjobs-attempt the attempts made so far (0 from the main topic), kjobs-not-before
 * `not_before_ms` (the earlier job's, so it comes due with it), kjobs-original-* from `origin`
 * (NULL on the main topic: this record), kjobs-error-class "parked", kjobs-parked-behind
 * `behind_offset`. Not run here; completes like a routed copy. Returns `step`, or 0 when the
 * copy was too large to write and went to the DLQ reduced (see "Size").
 */
int kj_router_park(kj_router *router, const kj_route_source *source, const rd_kafka_message_t *msg,
                   const rd_kafka_headers_t *headers, const kj_control *origin, int step,
                   int64_t not_before_ms, int64_t behind_offset);

/** Serve delivery reports (poll thread). Returns the number of copies still unacknowledged. */
long kj_router_poll(kj_router *router, int timeout_ms);

/** From now on a copy routed by a worker thread waits neither for room for its memory nor for
 * producer queue space: it is queued past the bound or put on the re-send list. For the end of
 * a shutdown, when no thread polls the router any more (until an acknowledgement, which only
 * kj_router_poll would serve). @locality the poll thread */
void kj_router_stop_waiting(kj_router *router);

/** Copies not yet acknowledged, and copies that failed at least once and are being re-sent. */
long kj_router_outstanding(const kj_router *router);
/** Bytes the copies not yet acknowledged hold in memory (key, value, headers and a per-copy
 * overhead, estimated when each is first queued); a worker thread routing a copy waits while
 * they are over batch.max_pending_bytes (see "No loss" above). */
long long kj_router_held_bytes(const kj_router *router);
long kj_router_failing(const kj_router *router);
/** True after a fatal producer error: the worker must stop without committing. */
bool kj_router_fatal(const kj_router *router, char *errstr, size_t errstr_size);

/** True in exactly-once mode (retry.exactly_once): copies are produced in transactions. */
bool kj_router_transactional(const kj_router *router);

/** Builds the offsets to commit (called under the transaction lock, after every copy of the
 *  transaction was acknowledged). Returns a new list (may be empty) or NULL. */
typedef rd_kafka_topic_partition_list_t *(kj_router_offsets_fn)(void *opaque);

/**
 * Exactly-once commit: hold off new copies, wait until every copy produced so far is
 * acknowledged (their source offsets complete), then send the consumer offsets built by
 * `collect` into the transaction and commit it, and begin the next one. On failure the
 * transaction is aborted and -1 returned: the worker must stop without any other commit, so a
 * restart resumes from the last committed transaction. @locality poll thread
 */
int kj_router_commit_transaction(kj_router *router, rd_kafka_t *consumer,
                                 kj_router_offsets_fn *collect, void *opaque, char *errstr,
                                 size_t errstr_size);

#endif /* KJOBS_ROUTER_H */
