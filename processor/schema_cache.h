/*
 * schema_cache.h — what kjobs has learnt about Confluent Schema Registry schema ids: the
 * bounded, thread-safe cache in front of the registry (processor/schema_registry.h).
 *
 * DESIGN
 * ------
 * A registry's schema ids are immutable: once id N names a schema, it always names that
 * schema. So two verdicts are kept for as long as the process runs:
 *  - FOUND: the schema resolves to kjobs.Job; the entry holds the resolved writer (codec.h);
 *  - INCOMPATIBLE: the registry has the id, but its schema is not Avro, or does not resolve to
 *    kjobs.Job; the entry holds the reason.
 * UNKNOWN (the registry answered "not found", error code 40403) is the one answer that can
 * change — a producer may register the schema a moment later, or ask another registry node
 * that is behind — so it expires after `unknown_ttl_ms`. Failures to reach or understand the
 * registry are never cached (the caller retries them).
 *
 * Bounded: at most `max_entries` ids. When full, an insert first drops expired UNKNOWN entries,
 * then the oldest UNKNOWN one, then the oldest entry of all (a producer spraying random ids
 * can only churn the cache, never grow it). Entries are reference counted: a lookup hands out a
 * reference that stays valid after eviction, until kj_schema_entry_release.
 *
 * Lookups are a binary search under one mutex (ids are kept sorted); inserts shift the array
 * (rare: once per id). Times are caller-supplied monotonic milliseconds, so tests need no clock.
 *
 * @locality any thread
 */
#ifndef KJOBS_SCHEMA_CACHE_H
#define KJOBS_SCHEMA_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "schemas/codec.h"

typedef enum {
    KJ_SCHEMA_FOUND = 0,    /* resolves to kjobs.Job: decode with kj_schema_entry_writer */
    KJ_SCHEMA_UNKNOWN,      /* the registry does not know the id (expires) */
    KJ_SCHEMA_INCOMPATIBLE, /* known, but not an Avro schema that resolves to kjobs.Job */
} kj_schema_verdict;

typedef struct kj_schema_cache kj_schema_cache;
typedef struct kj_schema_entry kj_schema_entry;

/** A cache of at most `max_entries` (>= 1) ids; UNKNOWN entries live `unknown_ttl_ms`.
 *  NULL when out of memory. */
kj_schema_cache *kj_schema_cache_new(size_t max_entries, int64_t unknown_ttl_ms);

/** Free the cache; references handed out stay valid until released. NULL is ok. */
void kj_schema_cache_free(kj_schema_cache *c);

/** The entry for `id`, as a new reference (release it), or NULL when absent or expired. */
kj_schema_entry *kj_schema_cache_get(kj_schema_cache *c, uint32_t id, int64_t now_ms);

/**
 * Record a verdict for `id`. Takes ownership of `writer` (FOUND: required; otherwise must be
 * NULL); `reason` is copied (INCOMPATIBLE/UNKNOWN: why, for the DLQ; may be NULL). Replaces an
 * expired or UNKNOWN entry; when a live FOUND/INCOMPATIBLE entry exists (another thread fetched
 * the same id first), keeps that one and frees `writer`. Returns a reference to the entry now
 * cached for `id` (release it), or NULL when out of memory (writer freed).
 */
kj_schema_entry *kj_schema_cache_put(kj_schema_cache *c, uint32_t id, kj_schema_verdict verdict,
                                     kj_writer *writer, const char *reason, int64_t now_ms);

/** Ids held now (expired ones included until an insert drops them). */
size_t kj_schema_cache_size(kj_schema_cache *c);

kj_schema_verdict kj_schema_entry_verdict(const kj_schema_entry *e);
/** FOUND: the resolved writer (owned by the entry, valid while the reference is held). */
const kj_writer *kj_schema_entry_writer(const kj_schema_entry *e);
/** The reason given with the verdict ("" when none); owned by the entry. */
const char *kj_schema_entry_reason(const kj_schema_entry *e);
/** Drop a reference; the last one frees the entry. NULL is ok. */
void kj_schema_entry_release(kj_schema_entry *e);

#endif /* KJOBS_SCHEMA_CACHE_H */
