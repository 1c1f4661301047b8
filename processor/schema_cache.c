/*
 * schema_cache.c — the bounded, reference-counted cache of Schema Registry verdicts per schema
 * id. The policy (what is kept how long, what is evicted first) is stated in schema_cache.h.
 */
#include "processor/schema_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct kj_schema_entry {
    atomic_int refs;
    uint32_t id;
    kj_schema_verdict verdict;
    kj_writer *writer;
    char *reason;
    int64_t expires_ms; /* UNKNOWN only; 0: never */
    uint64_t seq;       /* insertion order, for "oldest" */
};

struct kj_schema_cache {
    pthread_mutex_t mu;
    kj_schema_entry **e; /* sorted by id */
    size_t n, max;
    int64_t unknown_ttl_ms;
    uint64_t next_seq;
};

kj_schema_cache *kj_schema_cache_new(size_t max_entries, int64_t unknown_ttl_ms) {
    kj_schema_cache *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->max = max_entries ? max_entries : 1;
    c->e = calloc(c->max, sizeof(*c->e));
    if (!c->e) {
        free(c);
        return NULL;
    }
    c->unknown_ttl_ms = unknown_ttl_ms;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void kj_schema_entry_release(kj_schema_entry *e) {
    if (!e || atomic_fetch_sub(&e->refs, 1) != 1) return;
    kj_writer_free(e->writer);
    free(e->reason);
    free(e);
}

void kj_schema_cache_free(kj_schema_cache *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++)
        kj_schema_entry_release(c->e[i]);
    free(c->e);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Index of `id`, or of where it would go (*found = 0). @locks_required c->mu */
static size_t find(const kj_schema_cache *c, uint32_t id, int *found) {
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->e[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < c->n && c->e[lo]->id == id;
    return lo;
}

static int expired(const kj_schema_entry *e, int64_t now_ms) {
    return e->expires_ms != 0 && now_ms >= e->expires_ms;
}

/* Remove entry i from the array. @locks_required c->mu */
static void drop_at(kj_schema_cache *c, size_t i) {
    kj_schema_entry_release(c->e[i]);
    memmove(&c->e[i], &c->e[i + 1], (c->n - i - 1) * sizeof(*c->e));
    c->n--;
}

/* Make room for one entry (policy in schema_cache.h). @locks_required c->mu */
static void make_room(kj_schema_cache *c, int64_t now_ms) {
    for (size_t i = c->n; i-- > 0;)
        if (c->e[i]->verdict == KJ_SCHEMA_UNKNOWN && expired(c->e[i], now_ms)) drop_at(c, i);
    if (c->n < c->max) return;
    size_t victim = SIZE_MAX, oldest = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i]->seq < c->e[oldest]->seq) oldest = i;
        if (c->e[i]->verdict == KJ_SCHEMA_UNKNOWN &&
            (victim == SIZE_MAX || c->e[i]->seq < c->e[victim]->seq))
            victim = i;
    }
    drop_at(c, victim != SIZE_MAX ? victim : oldest);
}

kj_schema_entry *kj_schema_cache_get(kj_schema_cache *c, uint32_t id, int64_t now_ms) {
    kj_schema_entry *got = NULL;
    int found;
    pthread_mutex_lock(&c->mu);
    size_t i = find(c, id, &found);
    if (found && !expired(c->e[i], now_ms)) {
        got = c->e[i];
        atomic_fetch_add(&got->refs, 1);
    }
    pthread_mutex_unlock(&c->mu);
    return got;
}

kj_schema_entry *kj_schema_cache_put(kj_schema_cache *c, uint32_t id, kj_schema_verdict verdict,
                                     kj_writer *writer, const char *reason, int64_t now_ms) {
    kj_schema_entry *e = calloc(1, sizeof(*e));
    char *why = strdup(reason ? reason : "");
    if (!e || !why) {
        free(e);
        free(why);
        kj_writer_free(writer);
        return NULL;
    }
    atomic_init(&e->refs, 2); /* the cache's and the caller's */
    e->id = id;
    e->verdict = verdict;
    e->writer = writer;
    e->reason = why;
    if (verdict == KJ_SCHEMA_UNKNOWN) {
        e->expires_ms = now_ms + c->unknown_ttl_ms;
        if (e->expires_ms == 0) e->expires_ms = 1;
    }
    pthread_mutex_lock(&c->mu);
    e->seq = c->next_seq++;
    int found;
    size_t i = find(c, id, &found);
    if (found) {
        kj_schema_entry *old = c->e[i];
        if (old->verdict != KJ_SCHEMA_UNKNOWN && !expired(old, now_ms)) {
            /* an immutable verdict is already there: keep it */
            atomic_fetch_add(&old->refs, 1);
            pthread_mutex_unlock(&c->mu);
            atomic_store(&e->refs, 1);
            kj_schema_entry_release(e);
            return old;
        }
        c->e[i] = e;
        pthread_mutex_unlock(&c->mu);
        kj_schema_entry_release(old);
        return e;
    }
    if (c->n >= c->max) {
        make_room(c, now_ms);
        i = find(c, id, &found);
    }
    memmove(&c->e[i + 1], &c->e[i], (c->n - i) * sizeof(*c->e));
    c->e[i] = e;
    c->n++;
    pthread_mutex_unlock(&c->mu);
    return e;
}

size_t kj_schema_cache_size(kj_schema_cache *c) {
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

kj_schema_verdict kj_schema_entry_verdict(const kj_schema_entry *e) {
    return e->verdict;
}

const kj_writer *kj_schema_entry_writer(const kj_schema_entry *e) {
    return e->writer;
}

const char *kj_schema_entry_reason(const kj_schema_entry *e) {
    return e->reason;
}
