/*
 * partitions/engine.h — the partition engine: per-partition FIFOs ("lanes")
 * drained in batches by a pool of worker threads.
 *
 * No Kafka, Avro or config in here: a lane is an ordered queue of opaque item
 * pointers, a batch is a callback. The processor maps one assigned partition
 * to one lane and one job to one item — or, with batch.ordering = "key", one
 * main-topic partition to several lanes, each job to the lane of its key
 * (processor/worker_internal.h, "Key lanes"): the engine does not know the difference.
 *
 * DESIGN
 * ------
 *
 * Threads. kj_engine_new() starts `workers` threads. Items are pushed by ONE
 * producer thread (the Kafka poll thread) in offset order; the same thread
 * adds, flushes and removes lanes. Workers take batches from lanes and call
 * the batch callback outside every engine lock.
 *
 * Ordering. Items of a lane are handed to the batch callback in push order:
 * a batch is a run of consecutive items taken from the head of the lane, and
 * a lane is handled by at most one worker thread at a time — its next batch
 * is not started before the callback for its previous batch has returned. So
 * for every lane, batches never overlap and never reorder, and everything a
 * callback did is visible to the lane's next callback (on whatever thread).
 * Different lanes run in parallel, up to `workers` at once. There is no
 * ordering between lanes.
 *
 * The poll thread never blocks on a handler. kj_engine_push() takes the
 * engine mutex (held by workers only for O(log lanes) bookkeeping, never
 * across a callback), appends, and signals ONE sleeping worker only when the
 * push makes the lane eligible or brings the earliest timer forward. Pushes to
 * a lane that is already queued for, or busy in, a batch don't signal at all.
 *
 * Batches. A batch holds 1..max_batch items. A lane is eligible when its head
 * item is due (now >= its not_before_ms; 0 means "now") and at least one of:
 *   - pending >= max_batch,
 *   - now >= the head's push time + max_wait_ms,
 *   - the head was pushed before the last kj_engine_lane_flush() of the lane.
 * In other words a not-yet-due head is dispatched as soon as it is due if the
 * lane is full or flushed, and otherwise once it is due AND has waited
 * max_wait_ms since it was pushed (a delayed item pushed long ago runs at its
 * not_before). A batch takes the consecutive due items at the head, up to
 * max_batch; a not-yet-due item stops the batch and holds back every item
 * behind it (in order), so "due" only ever lets items through in push order.
 *
 * Scheduling. Eligible lanes wait in a FIFO ready list; a worker takes the
 * lane at its head, runs one batch, and puts the lane back at the tail if it
 * is still eligible: round-robin across lanes, one batch per turn. Lanes with
 * items that are not yet eligible sit in a min-heap keyed by the time they
 * become eligible. Idle workers sleep on a condition variable with a timed wait
 * until the heap's earliest deadline (CLOCK_MONOTONIC timed wait of the
 * remaining delta), or untimed when there is nothing to wait for: no polling.
 *
 * Giving back. A callback that may not run part of its batch yet (a rate
 * limit, a concurrency cap: partitions/flow_control.h) hands that tail back with
 * kj_engine_lane_requeue(): it returns to the head of the lane, in order, due at
 * a time or parked until kj_engine_lane_wake(). The lane then waits like any
 * lane with a not-yet-due head — in the timer heap, holding no worker — and
 * per-lane order is as if the tail had never left.
 *
 * Back-pressure. kj_engine_lane_pending() is a lock-free read of the number of
 * undispatched items of a lane, so the poll thread can pause the Kafka
 * partition above a bound and resume it below a low mark.
 * kj_engine_lane_head_not_before() tells when a lane's head becomes due, so
 * the poll thread can pause a retry-ladder partition whose head is not yet due
 * and resume it then, instead of sleeping.
 *
 * Removal. kj_engine_lane_remove() (partition revoked) stops dispatching the
 * lane, WAITS for its in-flight batch (if any) to return, hands every
 * undispatched item to the discard callback (on the calling thread, in push
 * order, exactly once) and frees the lane. After it returns no callback will
 * ever see the lane again. kj_engine_lanes_remove() does that for a set of
 * lanes (one partition's key lanes): all stop dispatching (kj_engine_lane_stop)
 * before any is waited for. kj_engine_lane_remove_wait() bounds the wait; a
 * caller that cannot wait any longer (a Kafka rebalance has a deadline) gives
 * the lane up with kj_engine_lane_abandon(): it leaves the engine at once, and
 * the worker running its last batch frees it (and discards whatever that batch
 * requeued) when the callback returns. kj_engine_lane_idle() tells the producer
 * when everything it pushed to a lane has been handled (the processor's switch
 * from one lane to key lanes).
 *
 * Shutdown. kj_engine_stop_dispatch() starts no new batch (pushes are still
 * accepted and just queue); kj_engine_wait_idle() waits, bounded, until no
 * batch is in flight; kj_engine_destroy() joins the workers (after their
 * current batch returns) and frees lanes not removed, WITHOUT touching their
 * items — remove lanes first to get the items back.
 *
 * Time. Deadlines use epoch milliseconds from CLOCK_REALTIME by default
 * (not_before values come from Kafka headers written by other processes).
 * Tests can inject a clock; with an injected clock workers never sleep on a
 * timer (the engine cannot know how the clock moves): after advancing it, call
 * kj_engine_kick() so sleeping workers re-read it. kj_engine_wait_idle()'s
 * timeout is always real (monotonic) time.
 *
 * Memory. A lane's queue is a growable ring (it never shrinks while the lane
 * lives); the poll thread's pause bound is what bounds it.
 */
#ifndef KJ_PARTITIONS_ENGINE_H
#define KJ_PARTITIONS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kj_engine kj_engine;
typedef struct kj_lane kj_lane;

/**
 * Batch callback: @p count (1..max_batch) consecutive items of @p lane in push
 * order. The callee owns the items; the @p items array itself belongs to the
 * engine and is valid only during the call.
 *
 * @locality a worker thread; never two at once for the same lane.
 * @locks_required none are held (the callback may push, flush, or read pending,
 * but must not kj_engine_lane_remove() its own lane, nor destroy the engine).
 */
typedef void(kj_batch_fn)(kj_lane *lane, void *lane_opaque, void **items, size_t count,
                          void *engine_opaque);

/** Clock: epoch milliseconds (or any monotone ms scale used consistently). */
typedef int64_t(kj_clock_fn)(void *clock_opaque);

/** Receives an undispatched item when its lane is removed; owns it afterwards. */
typedef void(kj_discard_fn)(void *item, void *opaque);

typedef struct kj_engine_config {
    int workers;         /**< worker threads, >= 1 */
    size_t max_batch;    /**< items per batch, >= 1 */
    int64_t max_wait_ms; /**< how long a head item may wait for a fuller batch, >= 0 */
    kj_clock_fn *now_ms; /**< NULL: CLOCK_REALTIME epoch ms. Else see "Time" above. */
    void *clock_opaque;  /**< passed to now_ms */
} kj_engine_config;

/**
 * Starts the engine and its workers. @p fn is called with @p opaque for every
 * batch. Returns NULL with errno EINVAL on a bad config, or ENOMEM/EAGAIN if
 * memory or threads are short.
 *
 * @locality any thread (the poll thread in kjobs)
 */
kj_engine *kj_engine_new(const kj_engine_config *cfg, kj_batch_fn *fn, void *opaque);

/**
 * New empty lane (one per assigned partition); @p lane_opaque is passed to
 * every batch of it. Returns NULL with errno ENOMEM.
 *
 * @locality the producer (poll) thread
 */
kj_lane *kj_engine_lane_add(kj_engine *e, void *lane_opaque);

/** The lane_opaque given to kj_engine_lane_add(). @locality any thread */
void *kj_engine_lane_opaque(const kj_lane *lane);

/**
 * Appends @p item to @p lane, not to be dispatched before @p not_before_ms
 * (engine clock; 0 = now). Never waits for a worker. Returns the lane's pending
 * count after the push (>= 1), or 0 with errno ENOMEM if the queue could not
 * grow (the item was not queued and still belongs to the caller).
 *
 * @locality the producer (poll) thread; a batch callback may also push, but
 * ordering across threads pushing to one lane is then the caller's problem.
 */
size_t kj_engine_push(kj_lane *lane, void *item, int64_t not_before_ms);

/**
 * Everything pushed to @p lane so far is dispatched as soon as it is due,
 * without waiting for max_wait_ms or a full batch.
 *
 * @locality the producer (poll) thread
 */
void kj_engine_lane_flush(kj_lane *lane);

/** Undispatched items of @p lane (not counting its in-flight batch); 0 as soon as
 * kj_engine_lane_remove() has begun. Lock-free. @locality any thread */
size_t kj_engine_lane_pending(const kj_lane *lane);

/** Items of @p lane inside a running batch callback (0 when none). Lock-free.
 * @locality any thread */
size_t kj_engine_lane_in_flight(const kj_lane *lane);

/**
 * The not_before_ms of the lane's head item if it is not yet due; 0 when the
 * lane is empty or its head is due.
 *
 * @locality any thread (takes the engine lock briefly)
 */
int64_t kj_engine_lane_head_not_before(kj_lane *lane);

/**
 * Removes @p lane: stops its dispatch, waits until its in-flight batch (if any)
 * has returned, calls @p discard (if not NULL) for every undispatched item in
 * push order, and frees the lane. @p lane is invalid afterwards.
 *
 * @locality the producer (poll) thread; never from a batch callback of this lane
 * (that would wait for itself; the engine aborts instead).
 * @locks_required none; calls @p discard with no engine lock held.
 */
void kj_engine_lane_remove(kj_lane *lane, kj_discard_fn *discard, void *opaque);

/**
 * kj_engine_lane_remove() with a bound: waits at most @p wait_ms (< 0: for ever) for
 * the in-flight batch. Returns 0 when the lane was removed (as kj_engine_lane_remove;
 * @p lane is invalid afterwards), or -1 when its batch still runs: the lane then stays,
 * dispatching nothing (its pending count reads 0), and the caller calls this again or
 * kj_engine_lane_abandon(). @locality and @locks_required as kj_engine_lane_remove.
 */
int kj_engine_lane_remove_wait(kj_lane *lane, kj_discard_fn *discard, void *opaque,
                               int64_t wait_ms);

/** Told that an abandoned lane's last batch returned (kj_engine_lane_abandon). */
typedef void(kj_released_fn)(kj_lane *lane, void *released_opaque);

/**
 * Gives up a lane without waiting for its in-flight batch: the lane leaves the engine
 * (never dispatched again, not counted), its undispatched items go to @p discard now
 * (in push order, on this thread), and the worker thread running its batch frees it
 * when the callback returns: it hands anything the callback requeued to @p discard, calls
 * @p released (if not NULL) while the lane's memory is still allocated (so its address is
 * not yet reusable), then frees it — all on that thread, before the batch counts as done for
 * kj_engine_wait_idle(). The callback still running keeps using its lane_opaque: the caller
 * must keep that alive until @p released was called. Returns true in that case; false when
 * no batch was in flight: the lane was removed at once (kj_engine_lane_remove()) and
 * @p released is never called. @p lane is invalid for the caller afterwards.
 * @locality the producer (poll) thread, as kj_engine_lane_remove
 */
bool kj_engine_lane_abandon(kj_lane *lane, kj_discard_fn *discard, void *opaque,
                            kj_released_fn *released, void *released_opaque);

/** Stops dispatching @p lane: the first step of kj_engine_lane_remove(), taken for several
 * lanes before any is waited for. Idempotent. @locality the producer (poll) thread */
void kj_engine_lane_stop(kj_lane *lane);

/**
 * kj_engine_lane_remove() for @p n lanes at once (e.g. every lane of one partition): all of
 * them stop dispatching first, then each one's in-flight batch is waited for, so no lane of the
 * set starts a batch while another's is awaited. Then @p discard gets the undispatched items,
 * lane by lane in array order, each lane's in push order, and the lanes are freed. Every lane
 * must belong to the same engine; @p n == 0 does nothing.
 *
 * @locality the producer (poll) thread; never from a batch callback of one of @p lanes
 * @locks_required none; calls @p discard with no engine lock held.
 */
void kj_engine_lanes_remove(kj_lane *const *lanes, size_t n, kj_discard_fn *discard, void *opaque);

/**
 * True when @p lane holds no undispatched item and no batch of it is running: everything ever
 * pushed to it has been handed to a callback that returned (or discarded). Read under the
 * engine lock, so unlike kj_engine_lane_pending() + kj_engine_lane_in_flight() it never sees the
 * moment between a batch being taken and being marked in flight. A callback that returned
 * happens-before a true answer. Since only the producer thread pushes, a true answer stays true
 * on that thread until it pushes again.
 *
 * @locality the producer (poll) thread (any thread may ask; only the producer can rely on the
 * answer staying true)
 */
bool kj_engine_lane_idle(kj_lane *lane);

/** No new batch starts from now on (running ones finish). Not reversible.
 * @locality any thread */
void kj_engine_stop_dispatch(kj_engine *e);

/**
 * Waits until no batch is in flight. @p timeout_ms < 0 waits forever.
 * Returns 0 when idle, -1 on timeout. Without kj_engine_stop_dispatch() new
 * batches may start right after it returns.
 *
 * @locality any thread but a worker
 */
int kj_engine_wait_idle(kj_engine *e, int64_t timeout_ms);

/** Items inside running batch callbacks, engine-wide. Lock-free. @locality any thread */
size_t kj_engine_in_flight_items(const kj_engine *e);

/** The engine's clock (the injected one, if any). @locality any thread */
int64_t kj_engine_now_ms(const kj_engine *e);

/**
 * Hands every undispatched item of @p lane to @p discard (in push order, with the engine lock
 * held: @p discard must not call into the engine) and leaves the lane empty; a batch in flight
 * is not touched. For a caller that will re-fetch them anyway (kjobs' circuit breaker and stall
 * guard rewind the partition), so it need not wait for each one to be dispatched and skipped —
 * which, for items not due for a long time, could take that long. Returns how many.
 *
 * @locality any thread; not from a batch callback of @p lane
 */
size_t kj_engine_lane_discard_pending(kj_lane *lane, kj_discard_fn *discard, void *opaque);

/** not_before_ms of requeued items that wait for kj_engine_lane_wake() instead of a time. */
#define KJ_ENGINE_PARKED INT64_MAX

/**
 * From @p lane's own batch callback: gives items[0..count) of the running batch
 * back, unrun. They go back to the head of the lane in the same order, ahead of
 * everything pushed since, so per-lane order is as if they had never left; they
 * count as pending again and are dispatched as if flushed (no max_wait_ms) once
 * due: at @p not_before_ms (engine clock; 0 = now), or, with KJ_ENGINE_PARKED,
 * when kj_engine_lane_wake() is called. This is how a callback that may not run
 * a job yet (a rate limit, a concurrency cap) waits without holding a worker.
 *
 * Ownership of the items returns to the engine on success (kj_engine_lane_remove
 * hands them to the discard callback like any pending item). Returns 0, or -1
 * with errno EINVAL (not called from this lane's own callback, or count 0) or
 * ENOMEM (the queue could not grow; the items still belong to the caller).
 *
 * @locality a worker thread, inside the batch callback of @p lane
 */
int kj_engine_lane_requeue(kj_lane *lane, void *const *items, size_t count, int64_t not_before_ms);

/**
 * Makes the requeued items at the head of @p lane due now, parked or waiting for
 * a time (a caller whose wait ended early — a slot freed — or that wants them
 * re-examined at once). When the lane's callback is running and has not
 * requeued yet, its next requeue is due at once instead, so a wake-up that
 * races the requeue is never lost. Items pushed with a not_before of their own
 * keep it; a lane without requeued items is left alone.
 *
 * @locality any thread; @p lane must not have been removed (callers that wake
 * lanes from another module forget a lane before kj_engine_lane_remove())
 */
void kj_engine_lane_wake(kj_lane *lane);

/** Wakes every sleeping worker to re-read the clock (needed after an injected
 * clock moves). @locality any thread */
void kj_engine_kick(kj_engine *e);

/**
 * Stops the workers (each finishes its running batch), joins them, frees
 * every remaining lane without touching its items, and frees @p e.
 *
 * @locality any thread but a worker
 */
void kj_engine_destroy(kj_engine *e);

#endif
