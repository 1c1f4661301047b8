/*
 * partitions/flow_control.h — flow control per job type: a rate limit (token bucket) and a
 * concurrency cap, for one worker process, enforced where batches run.
 *
 * Shape. A kj_flow holds one limit per listed job type (an immutable table after
 * kj_flow_new(), so kj_flow_find() needs no lock) and, under one mutex, each limit's bucket,
 * running count and waiting lanes. A batch callback asks kj_flow_admit() before it runs a job
 * of a limited type. The answer is "go" (a token and, if asked, a slot were taken) or "wait":
 * the callback then gives the job and everything behind it back to its lane with
 * kj_engine_lane_requeue() — due when the next token is (rate), or parked until a slot frees
 * (concurrency): kj_flow_release() wakes the lane with kj_engine_lane_wake(). Nothing sleeps,
 * nothing polls, and per-lane order is untouched: a waiting job holds back only the jobs
 * behind it in its own partition (that is the order rule), never another partition and never
 * a worker thread.
 *
 * Token bucket: `rate` tokens per second refill a bucket of `burst` tokens, one token per job
 * (the classic algorithm, e.g. Tanenbaum, Computer Networks, §5.4 "traffic shaping"); a full
 * bucket at start. A job that finds no token is due when one will have refilled.
 *
 * Fairness of the cap. Waiting lanes queue FIFO per limit. A freed slot is promised to the
 * longest-waiting lane (woken), and a lane that did not wait may take a slot only when more are
 * free than promised, so a busy lane cannot starve a parked one. A promise whose lane goes
 * away (kj_flow_forget_lane: revoked, or its batch skipped) passes to the next waiter.
 *
 * Share. kj_flow_set_share() scales the rate and burst of limits with group scope by this
 * process's share of the consumer group's partitions, so the group as a whole keeps to the
 * configured rate (docs/flow-control.md says when that approximation is loose).
 *
 * @locality kj_flow_new/free: one thread, when no batch runs. Everything else: any thread.
 */
#ifndef KJ_PARTITIONS_FLOW_CONTROL_H
#define KJ_PARTITIONS_FLOW_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "partitions/engine.h"

typedef struct kj_flow kj_flow;

/** One job type's limits. At least one of rate > 0 and concurrency > 0. */
typedef struct kj_flow_limit {
    const char *type; /**< job type, matched exactly; copied by kj_flow_new() */
    double rate;      /**< tokens (jobs) per second; 0 = no rate limit */
    double burst;     /**< bucket capacity in jobs, >= 1 when rate > 0 */
    int concurrency;  /**< jobs of this type running at once in this process; 0 = no cap */
    bool group_scope; /**< rate and burst are for the whole group: scaled by the share */
} kj_flow_limit;

/** Why a job must wait. */
typedef enum { KJ_FLOW_RATE = 0, KJ_FLOW_CONCURRENCY = 1 } kj_flow_reason;

/** kj_flow_admit()'s answer when the job must wait. */
typedef struct kj_flow_wait {
    kj_flow_reason reason;
    int64_t until_ms; /**< RATE: when the next token is due (the clock given to admit);
                           CONCURRENCY: KJ_ENGINE_PARKED (the lane is woken) */
} kj_flow_wait;

/**
 * A flow controller for @p n limits (types must differ; n may be 0). Copies everything.
 * Returns NULL with errno EINVAL (a bad or duplicated limit) or ENOMEM.
 */
kj_flow *kj_flow_new(const kj_flow_limit *limits, size_t n);

/** Frees @p f (NULL is fine). No lane may be waiting any more (forget lanes first). */
void kj_flow_free(kj_flow *f);

/** Index of @p type's limit, or -1 when the type is not limited. Lock-free. */
int kj_flow_find(const kj_flow *f, const char *type);

/** Whether limit @p idx has a concurrency cap (the caller must release what it takes). */
bool kj_flow_has_cap(const kj_flow *f, int idx);

/**
 * Asks to run one job of limit @p idx now (engine clock @p now_ms, epoch ms). @p take_slot:
 * also take a concurrency slot (ignored without a cap; a caller running several jobs of the
 * type in one go takes one slot for them all). Returns true when the job may run (a token,
 * and the slot if asked, were taken; release the slot with kj_flow_release()). Returns false
 * with *wait filled when it must wait: nothing was taken; for CONCURRENCY @p lane is queued
 * and will be woken with kj_engine_lane_wake() — the caller must then requeue with
 * KJ_ENGINE_PARKED (a wake that comes first is kept by the engine).
 */
bool kj_flow_admit(kj_flow *f, int idx, bool take_slot, kj_lane *lane, int64_t now_ms,
                   kj_flow_wait *wait);

/** Gives back a slot of limit @p idx taken by kj_flow_admit(); wakes the next waiting lane. */
void kj_flow_release(kj_flow *f, int idx);

/**
 * Forgets @p lane everywhere: out of every wait queue, and a slot promised to it passes to the
 * next waiter. Call whenever the lane's waiting jobs are dropped unrun (a skipped batch), and
 * with @p closing before kj_engine_lane_remove(): from then on the lane is never queued again
 * (a batch of it still running may ask; it is told to wait, unqueued), so the removed lane can
 * never be woken. After the removal call kj_flow_lane_removed() (the address may be reused).
 */
void kj_flow_forget_lane(kj_flow *f, kj_lane *lane, bool closing);

/** @p lane, closed by kj_flow_forget_lane(.., true), has been removed from its engine. */
void kj_flow_lane_removed(kj_flow *f, kj_lane *lane);

/**
 * This process's share (0 < share <= 1) of the group's partitions; scales rate and burst of
 * group-scoped limits (burst never below 1). Buckets keep their tokens, clamped to the new burst.
 */
void kj_flow_set_share(kj_flow *f, double share);

/** Slots of limit @p idx in use now (for tests and gauges). */
int kj_flow_running(kj_flow *f, int idx);

#endif
