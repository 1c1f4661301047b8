/*
 * partitions/offset_tracker.h — the contiguous-completion watermark of one partition.
 *
 * Jobs of a partition are consumed in offset order but may finish in any order
 * (a batch fails and goes to the retry ladder while the next one succeeds, a
 * later batch's acks=all produce completes first...). Kafka commits one number
 * per partition, "everything below this is done", so the committed offset may
 * only move up to the first job that is neither finished nor safely handed off.
 * This tracker answers that question.
 *
 * Model: offsets are added in strictly increasing order as they are consumed
 * (gaps are normal: compaction, transaction markers, aborted batches). Each
 * added offset is later completed exactly once, in any order. committable() is
 *   - the lowest added offset not yet completed, or
 *   - last added + 1 when every added offset is completed, or
 *   - -1 when nothing was ever added (since creation / clear()).
 * That is the value to pass to a Kafka offset commit (the next offset to read).
 *
 * Shape: a growable power-of-two ring of (offset, done) entries in offset
 * order. add() appends (O(1) amortised); complete() binary-searches the ring
 * (O(log n)) and, when it completes the head, pops every done entry at the
 * head (amortised O(1) per offset). Memory is proportional to the span between
 * the oldest incomplete offset and the newest added one.
 *
 * Not internally locked: one tracker belongs to one partition and the caller
 * serialises access (the processor holds its partition lock around add, complete
 * and committable). No function here blocks or calls back.
 */
#ifndef KJ_PARTITIONS_OFFSET_TRACKER_H
#define KJ_PARTITIONS_OFFSET_TRACKER_H

#include <stddef.h>
#include <stdint.h>

typedef struct kj_offset_tracker kj_offset_tracker;

/**
 * New, empty tracker (committable() == -1). @p capacity_hint is the initial
 * number of slots (rounded up to a power of two, min 16); it grows as needed.
 * Returns NULL on allocation failure. Free with kj_offset_tracker_free().
 */
kj_offset_tracker *kj_offset_tracker_new(size_t capacity_hint);

/** Frees @p t (NULL is a no-op). */
void kj_offset_tracker_free(kj_offset_tracker *t);

/**
 * Records that @p offset was consumed and is now pending.
 * Returns 0, or -1 if @p offset is negative or not greater than every offset
 * added since creation/clear/reset (nothing is changed then), or on allocation
 * failure while growing (errno ENOMEM; nothing is changed).
 */
int kj_offset_tracker_add(kj_offset_tracker *t, int64_t offset);

/**
 * Marks a pending @p offset finished. Returns 0, or -1 if the offset was never
 * added (or was dropped by clear/reset) or is already completed.
 */
int kj_offset_tracker_complete(kj_offset_tracker *t, int64_t offset);

/** The offset safe to commit (see the file comment), or -1 if nothing was ever added. */
int64_t kj_offset_tracker_committable(const kj_offset_tracker *t);

/**
 * The tail of a partition may hold records that are never delivered: transaction markers,
 * records of aborted transactions (read_committed), compaction gaps. Then the consumer's
 * position (the next offset it would deliver) is past "last added + 1", and a commit of that
 * value would leave lag > 0 forever. When nothing is pending (every added offset completed)
 * and @p position is beyond committable(), this moves the tracker to @p position as
 * kj_offset_tracker_reset() would: committable() == position, and the next add() must be
 * >= position. Returns 1 if it moved, 0 otherwise (offsets pending, or position not ahead:
 * negative/logical, or <= committable()).
 */
int kj_offset_tracker_advance(kj_offset_tracker *t, int64_t position);

/** Number of offsets added but not yet completed. */
size_t kj_offset_tracker_pending(const kj_offset_tracker *t);

/**
 * Number of added offsets at or above committable(): the pending ones plus those completed out
 * of order above the lowest pending one — what a restart from the committed offset would
 * deliver again (gaps between offsets not counted). 0 when everything added is completed.
 * kjobs' key ordering (several lanes per partition) bounds this, not just the undispatched
 * queue, so the work a crash can make run twice stays within batch.max_pending.
 */
size_t kj_offset_tracker_held(const kj_offset_tracker *t);

/** Back to the freshly created state: no pending offsets, committable() == -1,
 * any offset may be added next. Keeps the allocated ring. */
void kj_offset_tracker_clear(kj_offset_tracker *t);

/**
 * Drops every pending offset and positions the tracker at @p next_offset, as if
 * everything below it was completed: committable() == next_offset and the next
 * add() must be >= next_offset. For a partition (re)assigned at a known
 * position. @p next_offset < 0 is the same as clear().
 */
void kj_offset_tracker_reset(kj_offset_tracker *t, int64_t next_offset);

#endif
