/*
 * processor/key_order.h — key-ordered retries (retry.ordering = "key"): while a job is on the
 * retry ladder, later jobs of its key wait behind it; other keys flow (docs/ordering.md,
 * "Key-ordered retries").
 *
 * Where the state lives. Every ladder copy of a job first consumed from main partition p is
 * written to the ladder partitions numbered p (processor/router.c, ladder_partition), and the
 * range assignor gives one member main partition p and ladder partitions p of every step
 * together. So the jobs that can hold back a key of partition p are all in partitions this
 * member owns, and the ladder itself is the durable state: on assignment the member reads
 * partitions p of every step from the group's committed offset to the end (a scan, on its own
 * thread, with its own consumer) into a partitions/key_chain.h chain. Until that scan is done
 * (and while any of the set is not assigned here) no job of the set runs: the worker parks them
 * (kj_key_order_gen() == 0).
 *
 * The rule, per job of a key (the job's origin is its main-topic offset): it runs only when no
 * copy of its key with an earlier origin is on the ladder. Otherwise it is parked: copied to the
 * step where that earlier job's copy is, due when that copy is, and marked kjobs-parked-behind.
 * There it comes up right after it: if the earlier job succeeded or was dead-lettered it runs;
 * if it failed again it follows it down to its next step. The chain is updated by each finished
 * job (kj_key_order_move: the copy it was, the copy it became), adding before removing, under
 * one lock, so another lane never sees the key free while its job is only moving.
 *
 * Not ordered: jobs without a key; a job scheduled with kjobs-run-at, until it first runs (it
 * never holds back its key while it waits, but once due it waits behind earlier jobs of its key);
 * copies whose kjobs-original-partition is not their ladder partition's number (written before
 * retry.ordering was "key"). A copy written by a member that lost the partition after the scan
 * read the end is not in the chain (its job may run out of order once — at-least-once already
 * runs it twice); a chain never blocks a key for a copy it cannot see.
 *
 * @locality kj_key_order_assigned/_revoked/_tick/_new/_free: the poll thread. _gen, _blocker,
 * _move: worker threads (each slot has its lock). The scan runs on its own thread.
 */
#ifndef KJOBS_KEY_ORDER_H
#define KJOBS_KEY_ORDER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "partitions/key_chain.h"
#include "processor/config.h"
#include "processor/header_contract.h"

typedef struct kj_key_order kj_key_order;

/**
 * For `partitions` main partitions and the cfg's ladder (borrowed; outlives the object).
 * Returns NULL on allocation failure.
 */
kj_key_order *kj_key_order_new(const kj_config *cfg, int32_t partitions);
/** Stops and joins a running scan, frees everything (NULL is a no-op). */
void kj_key_order_free(kj_key_order *ko);

/** Partition `partition` of step `step` (0 the main topic, 1..N the ladder) is now ours. */
void kj_key_order_assigned(kj_key_order *ko, int step, int32_t partition);
/** ... is no longer ours: its set's chain is dropped and its jobs wait again (revoke, loss). */
void kj_key_order_revoked(kj_key_order *ko, int step, int32_t partition);

/** Called by kj_key_order_tick for each partition number whose jobs may run now. */
typedef void(kj_key_order_ready_fn)(int32_t partition, void *opaque);
/**
 * Poll-thread upkeep: collects a finished scan (installing its chains and calling `ready` for
 * each set now ready) and starts a scan of every complete set that waits for one.
 */
void kj_key_order_tick(kj_key_order *ko, kj_key_order_ready_fn *ready, void *opaque);

/** Whether partition number `partition` is covered (< the main topic's partition count). */
bool kj_key_order_covers(const kj_key_order *ko, int32_t partition);

/**
 * The generation of `partition`'s chain: nonzero while its jobs may run; 0 while they wait
 * (set incomplete here, or scanning). A batch takes it once and passes it to _blocker and _move,
 * which do nothing for a stale one (the chain was dropped and read again meanwhile).
 */
unsigned kj_key_order_gen(kj_key_order *ko, int32_t partition);

/** kj_key_order_blocker's answers. */
typedef enum {
    KJ_KEY_FREE = 0, /* it may run */
    KJ_KEY_BLOCKED,  /* it must wait behind *out */
    KJ_KEY_STALE,    /* `gen` is stale (the set changed since the batch began): do not run it
                      * now; it runs once the set is read again */
} kj_key_verdict;

/**
 * Whether a job of key `key` (`key_len` bytes, maybe 0: an empty key is a key; NULL is none)
 * with origin `origin` must wait; *out (when KJ_KEY_BLOCKED) is the copy to wait behind
 * (partitions/key_chain.h).
 */
kj_key_verdict kj_key_order_blocker(kj_key_order *ko, int32_t partition, unsigned gen,
                                    const void *key, size_t key_len, int64_t origin,
                                    kj_chain_copy *out);

/**
 * A finished job of `key` and `origin`: its copy on step `from_step` (0: none, it was on the
 * main topic or not counted) is gone, and a copy on step `to_step` due `not_before_ms` (0:
 * none; it succeeded or was dead-lettered) now exists, a parked copy when `to_parked`. Atomic
 * for other threads.
 */
void kj_key_order_move(kj_key_order *ko, int32_t partition, unsigned gen, const void *key,
                       size_t key_len, int64_t origin, int from_step, int to_step,
                       int64_t not_before_ms, bool to_parked);

/**
 * A copy this member counted (origin `origin`, step `step`) will never be on the ladder: the
 * broker refused it and it became a dead letter (processor/router.h, kj_route_diverted_fn).
 * Forgets it whatever the generation (a chain read since could not have seen it either).
 * Any thread.
 */
void kj_key_order_forget(kj_key_order *ko, int32_t partition, const void *key, size_t key_len,
                         int64_t origin, int step);

/**
 * The ladder partitions of `partition`'s set lost records (an offset reset: retention or a
 * delete-records went past the committed offset): copies the chain counts may be gone. Drops
 * the chain; the set is read again and its jobs wait until then. @locality poll thread
 */
void kj_key_order_reload(kj_key_order *ko, int32_t partition);

/**
 * Whether a ladder record with validated control headers `ctl`, consumed from ladder partition
 * `partition`, is one of the chain's copies: keyed, first consumed from the main partition of
 * that number, and not a scheduled copy waiting for its first run.
 */
bool kj_key_order_counted(const rd_kafka_message_t *msg, const kj_control *ctl, int32_t partition);

#endif /* KJOBS_KEY_ORDER_H */
