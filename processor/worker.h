/*
 * worker.h — the kjobs worker runtime behind `kjobs run`.
 *
 * DESIGN
 * ------
 * Threads. One poll thread (the caller of kj_worker_run) owns the Kafka consumer: it polls,
 * handles rebalances, pushes each record into its partition's lane of the partition engine
 * (partitions/engine.h), pauses and resumes partitions, serves the router's delivery reports,
 * and commits. `workers` engine threads decode jobs and run handlers, one partition batch at a
 * time. The poll thread never runs a handler and never waits for one, except at the two points
 * where the contract requires it: when partitions are revoked and at shutdown.
 *
 * Ordering. A partition's records enter its lane in offset order; the engine runs a lane on
 * one thread at a time, in order (engine.h). So jobs with one key run in enqueue order, except
 * that a failed job moves to the retry ladder and its successors do not wait for it. With
 * batch.ordering = "key" a main-topic partition has several lanes and each record enters the
 * lane of its key: jobs of one key still run in offset order, one batch at a time; different
 * keys of one partition run at once (worker_internal.h, "Key lanes"; docs/ordering.md).
 *
 * Commits (at-least-once). Every record's offset enters its partition's offset tracker when it
 * is pushed. It is completed when its job succeeded, or when its retry/DLQ copy was
 * acknowledged (router.h). The committable offset is the first offset not completed, so a
 * commit never passes a job that is neither finished nor safely handed on. When nothing of a
 * partition is pending, the commit is the consumer's position (rd_kafka_position), which is past
 * records never delivered to us (transaction markers, aborted records under the default
 * isolation.level=read_committed, compaction gaps): lag reaches 0 behind them. Commits are
 * asynchronous every KJ_COMMIT_INTERVAL_MS, synchronous for partitions being revoked and at
 * shutdown. After a crash only uncommitted jobs run again.
 *
 * Back-pressure. A partition with more than batch.max_pending undispatched jobs is paused
 * and resumed below half of that. The whole process holds at most batch.max_pending_bytes of
 * records (w->pending_bytes: value + key + 256 per record, charged when queued, refunded when
 * destroyed): a partition receiving a record at that bound while it holds its fair share (the
 * bound over the partitions assigned) is paused, and resumed once the total is down to half or
 * it holds less than its share, so memory is bounded per process (below twice the bound, plus
 * what librdkafka still hands out before a pause takes effect: a pause is asynchronous)
 * whatever the backlog or the payload size, and no partition starves. With
 * key lanes the count is every job past the committed offset (undispatched, running, or finished
 * out of order: kj_offset_tracker_held), which also bounds what a restart runs again. A
 * retry-ladder partition reads ahead the records released within an eighth of its step's delay
 * (at most 5 s) and is paused at the first one released later, until it is; the engine holds
 * records back until released, and other partitions keep flowing. A ladder record is released at
 * min(kjobs-not-before, written + step delay), rounded up to the step's grain unless it is a
 * scheduled copy (kj_control_hold_until), so release times follow
 * offsets and nothing waits behind a later-due record; one released before its not-before hops
 * (kj_router_hop) instead of running. Control headers are validated first (header_contract.h):
 * ignored on the main topic, invalid ones on the ladder dead-lettered. A full producer queue
 * blocks the routing worker thread (back-pressure on its partition). Pause state is tracked
 * here, and newly assigned partitions are explicitly resumed, because librdkafka 2.0.2 keeps a
 * partition paused across a rebalance.
 *
 * Rebalances. The rebalance callback handles both protocols: incremental assign/unassign for
 * cooperative-sticky, assign/unassign for eager ones. The default assignor is roundrobin on
 * every librdkafka version (see KJ_DEFAULT_ASSIGNOR in worker.c for why); cooperative-sticky is
 * opt-in, and the KIP-848 protocol uses the broker's assignor (KJ_DEFAULT_REMOTE_ASSIGNOR).
 * Revoked partitions are drained (in-flight batches finish, routed copies are acknowledged)
 * and committed synchronously before they are given up, unless librdkafka says they are lost.
 *
 * Offset resets. Assigned partitions start at their committed offset, or at the beginning
 * when the group has none (its log start offset, looked up at assignment for all of them at
 * once: left to librdkafka, a partition whose leader it had not reached yet waited 500 ms
 * before asking). auto.offset.reset is "error", so a reset can only mean the
 * committed position is gone (retention deleted jobs before they ran): it is logged as an
 * error, counted (kjobs_offset_resets_total), and consumption restarts at the earliest offset
 * (librdkafka stops fetching a partition after such an error and refuses a seek, so the
 * partition is assigned again at the beginning).
 *
 * Circuit breaker (dlq.breaker_*, breaker.h). When dead-lettering passes the configured rate,
 * the worker stops consuming instead of dead-lettering the backlog: every partition is paused,
 * /readyz answers 503, kjobs_circuit_breaker_open is 1, and jobs already fetched are skipped
 * (not run, not committed). It closes on SIGUSR1 or after dlq.breaker_cooldown; partitions that
 * skipped jobs are first sought back to their first uncompleted offset, so nothing is lost.
 *
 * Shutdown. On stop: pause everything (stop fetching), start no new batch, wait up to
 * shutdown.grace_ms for in-flight batches and unacknowledged copies, commit synchronously,
 * leave the group. Jobs fetched but never started are not committed and run again elsewhere.
 */
#ifndef KJOBS_WORKER_H
#define KJOBS_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "processor/config.h"
#include "processor/handlers.h"
#include "processor/http.h"

#define KJ_COMMIT_INTERVAL_MS 200

typedef struct kj_worker kj_worker;

/**
 * Build a worker: consumer, router producer, engine. `handlers` must outlive it.
 * Checks that the main, ladder and DLQ topics exist (error names the missing ones and the
 * command that creates them). Returns NULL with errstr.
 */
/**
 * The group consumer's configuration as the worker builds it: the common client settings and
 * kafka.properties (kj_kafka_consumer_conf_new), kjobs' consumer settings (no auto commit,
 * read_committed, the assignor for @p kip848 or classic, the embedded broker's group timing,
 * fetch.wait.max.ms, the prefetch queue and Fetch response sizes from
 * batch.max_pending_bytes), then the passthrough properties a user may override applied again.
 * No callbacks or opaque. `run --check-config` creates a client from it (connecting nowhere) so
 * librdkafka's own consumer checks (e.g. fetch.max.bytes >= message.max.bytes) run there too.
 * Returns a conf the caller owns, or NULL with @p errstr.
 */
rd_kafka_conf_t *kj_worker_consumer_conf(const kj_config *cfg, bool kip848, char *errstr,
                                         size_t errstr_size);

kj_worker *kj_worker_new(const kj_config *cfg, kj_handler_registry *handlers, char *errstr,
                         size_t errstr_size);

/** Run until *stop becomes non-zero, beating `heartbeat` (may be NULL) every loop; returns the
 *  process exit code (0 clean drain). */
int kj_worker_run(kj_worker *worker, volatile sig_atomic_t *stop, kj_heartbeat *heartbeat);

/** Readiness for /readyz: in the group with an assignment (or idle by design), not draining,
 *  no routed copy failing. Any thread. */
bool kj_worker_ready(void *worker, char *reason, size_t reason_size);

/** Close an open DLQ circuit breaker (operator action; async-signal-safe: one atomic store). */
void kj_worker_request_breaker_reset(kj_worker *worker);

/** Whether handler calls may still run: the shutdown grace ran out with batches in flight. Then
 *  kj_worker_free() frees nothing, and the caller must keep what handlers read (the handler
 *  table, the configuration) until the process ends. Poll thread, after kj_worker_run
 *  returned; false for NULL. */
bool kj_worker_handlers_running(const kj_worker *worker);

/** Free the worker and everything it owns, unless kj_worker_handlers_running() (then nothing:
 *  left to the process's end). A consumer that could not leave its group is not destroyed
 *  either (its close still waits for the coordinator). NULL is a no-op. */
void kj_worker_free(kj_worker *worker);

#endif /* KJOBS_WORKER_H */
