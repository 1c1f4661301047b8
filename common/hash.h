/*
 * hash.h — kjobs' one string hash for its in-memory hash tables (handler registry, exec
 * batches' jobs by id, metric series by label values): 64-bit FNV-1a, (h ^ byte) * prime.
 *
 * The start value is 1469598103934665603, which is not FNV's published offset basis
 * (14695981039346656037, one digit longer); every copy this replaces used it, so it is kept
 * to leave table layouts as they were (the start value hardly matters for spreading); the
 * values are never stored or sent, so nothing outside one process depends on them. Not for
 * untrusted keys where collisions matter (no seed).
 *
 * @locality any thread (pure)
 */
#ifndef KJOBS_HASH_H
#define KJOBS_HASH_H

#include <stddef.h>
#include <stdint.h>

/** The start value of a hash (see above). */
#define KJ_HASH_INIT UINT64_C(1469598103934665603)
/** The 64-bit FNV prime. */
#define KJ_HASH_PRIME UINT64_C(1099511628211)

/** Continues hash h over len bytes of data (NULL only when len is 0). */
static inline uint64_t kj_hash_bytes(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * KJ_HASH_PRIME;
    return h;
}

/** The hash of the NUL-terminated s (without its NUL), from KJ_HASH_INIT. */
static inline uint64_t kj_hash_str(const char *s) {
    uint64_t h = KJ_HASH_INIT;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * KJ_HASH_PRIME;
    return h;
}

#endif /* KJOBS_HASH_H */
