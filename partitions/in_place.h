/*
 * partitions/in_place.h — the jobs of one partition being retried in place
 * (retry.in_place_attempts, docs/retries.md "Retrying in place"): offset -> tries made so far and
 * when the next try is due.
 *
 * A failed job retried in place goes back to the head of its engine lane (kj_engine_lane_requeue)
 * and comes back as the same record; this set is all that remembers it was tried, so that its
 * next try is its next attempt and runs no earlier than its due time (a lane wake makes every
 * requeued item due at once: the batch path checks the due time here again).
 *
 * Shape: open addressing over int64 offsets, linear probing, deletion by backward shift (no
 * tombstones; Knuth, TAOCP vol. 3, 6.4 Algorithm R), capacity a power of two grown at load 1/2.
 * Every operation is O(1) expected, so a partition whose every job fails (a whole batch of
 * 100,000 retried in place) costs one probe per job, not one scan of the set per job.
 *
 * Zero-initialised is empty. Not internally locked: the caller serialises (kj_part.lock).
 * Nothing here blocks, logs or calls back.
 */
#ifndef KJ_PARTITIONS_IN_PLACE_H
#define KJ_PARTITIONS_IN_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** One job retried in place. */
typedef struct kj_in_place_entry {
    int64_t offset; /* the record's offset, >= 0 */
    int tries;      /* tries in place made so far, >= 1 */
    int64_t due_ms; /* the next try runs no earlier (the engine's clock, ms) */
} kj_in_place_entry;

/** The set; zero-initialised is empty. */
typedef struct kj_in_place {
    kj_in_place_entry *slots; /* cap slots; offset -1 = free */
    size_t cap, count;
} kj_in_place;

/** The entry of @p offset, or NULL. The pointer is valid until the next put or remove. */
kj_in_place_entry *kj_in_place_find(const kj_in_place *s, int64_t offset);

/** Adds or replaces the entry of e->offset (>= 0). Returns 0, or -1 (ENOMEM: unchanged). */
int kj_in_place_put(kj_in_place *s, const kj_in_place_entry *e);

/** Removes the entry of @p offset; true if there was one. */
bool kj_in_place_remove(kj_in_place *s, int64_t offset);

/** Entries held. */
static inline size_t kj_in_place_count(const kj_in_place *s) {
    return s->count;
}

/** Frees the slots; the set is empty (and usable) again. */
void kj_in_place_clear(kj_in_place *s);

#endif /* KJ_PARTITIONS_IN_PLACE_H */
