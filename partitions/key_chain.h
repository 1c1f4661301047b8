/*
 * partitions/key_chain.h — which jobs of a key are on the retry ladder, for retry.ordering =
 * "key" (docs/ordering.md, "Key-ordered retries").
 *
 * With key-ordered retries a job may run only when no earlier job of its key is still on the
 * ladder. "Earlier" is the main-topic offset the job was first consumed at (its origin: the
 * record's own offset on the main topic, kjobs-original-offset on a ladder copy); a partition's
 * ladder copies are kept in the ladder partition with the main partition's number, so one
 * chain per main partition holds every copy that can block one of its keys.
 *
 * Model: a multiset of copies per key, each copy (origin, ladder step, not-before). A copy is
 * added when kjobs produces it (a retry, a hop, a follower parked behind its key's head) or
 * finds it between the committed offset and the end of a ladder partition on assignment, and
 * removed when its record is consumed and finished here (run, routed on, dead-lettered).
 * Removing a copy that is not there does nothing: a rewind may consume a record twice, and a
 * copy missed by both (written late by a member that lost the partition) must never block its
 * key for good. The rule is only a question: kj_key_chain_blocker(key, origin) names the
 * earliest-origin copy with an origin before `origin`, if any — the job then waits behind it.
 *
 * Shape: a chained hash table of keys (FNV-1a 64, power-of-two buckets, grown at load 1), each
 * key holding a small array of distinct (origin, step) copies with a count. Keys and copies are
 * few (the jobs on the ladder right now), so every operation is O(copies of that key).
 *
 * Not internally locked: the caller serialises (processor/key_order.c holds the chain's lock).
 * Nothing here blocks, logs or calls back.
 */
#ifndef KJ_PARTITIONS_KEY_CHAIN_H
#define KJ_PARTITIONS_KEY_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kj_key_chain kj_key_chain;

/** One ladder copy of a job, as far as ordering is concerned. */
typedef struct kj_chain_copy {
    int64_t origin;        /* main-topic offset the job was first consumed at, >= 0 */
    int step;              /* ladder step 1..N the copy is on */
    int64_t not_before_ms; /* its kjobs-not-before, epoch ms */
    bool parked;           /* a parked copy (waiting itself), not a retry of a failed run */
} kj_chain_copy;

/** New empty chain, or NULL (ENOMEM). Free with kj_key_chain_free. */
kj_key_chain *kj_key_chain_new(void);
/** Frees @p c and every key it holds (NULL is a no-op). */
void kj_key_chain_free(kj_key_chain *c);
/** Forgets every copy (the chain is rebuilt from the ladder after this). */
void kj_key_chain_clear(kj_key_chain *c);

/**
 * Adds one copy of the job with key (@p key, @p key_len bytes, any bytes, maybe none) described by
 * @p copy; a copy with the same (origin, step) as one held raises its count and keeps the
 * later not-before, and is parked when either is. Returns 0, or -1 on allocation failure
 * (nothing changed).
 */
int kj_key_chain_add(kj_key_chain *c, const void *key, size_t key_len, const kj_chain_copy *copy);

/** Removes one copy (origin, step) of @p key; nothing when there is none. */
void kj_key_chain_remove(kj_key_chain *c, const void *key, size_t key_len, int64_t origin,
                         int step);

/**
 * Whether a job of @p key first consumed at @p origin must wait: true when a copy of the key
 * with a smaller origin is held. Then *out (may be NULL) is the copy to wait behind: the
 * smallest such origin and, among its copies, the highest step (then the latest not-before) —
 * where its job will run next.
 */
bool kj_key_chain_blocker(const kj_key_chain *c, const void *key, size_t key_len, int64_t origin,
                          kj_chain_copy *out);

/** Keys with at least one copy held. */
size_t kj_key_chain_keys(const kj_key_chain *c);

#endif /* KJ_PARTITIONS_KEY_CHAIN_H */
