/*
 * partitions/key_chain.c — the per-partition multiset of ladder copies by key (key_chain.h).
 * A chained hash table; each key node owns a copy of its key bytes and a growable array of
 * distinct (origin, step) copies with counts. A key whose last copy goes is unlinked and freed.
 */
#include "partitions/key_chain.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct chain_copy {
    kj_chain_copy c;
    size_t count;
} chain_copy;

typedef struct key_node {
    struct key_node *next;
    uint64_t hash;
    size_t key_len;
    chain_copy *copies;
    size_t n, cap;
    unsigned char key[]; /* key_len bytes */
} key_node;

struct kj_key_chain {
    key_node **buckets;
    size_t nbuckets; /* a power of two */
    size_t keys;
    uint64_t seed;
};

/* FNV-1a 64 (Fowler, Noll, Vo; http://www.isthe.com/chongo/tech/comp/fnv/), started from a
 * per-chain seed: keys are written by producers, so bucket collisions must not be choosable */
static uint64_t key_hash(const kj_key_chain *c, const void *key, size_t len) {
    const unsigned char *p = key;
    uint64_t h = 14695981039346656037ULL ^ c->seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29); /* the low bits pick the bucket: fold the better-mixed high bits in */
}

kj_key_chain *kj_key_chain_new(void) {
    kj_key_chain *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->seed = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)(uintptr_t)c;
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

void kj_key_chain_clear(kj_key_chain *c) {
    if (!c) return;
    for (size_t b = 0; b < c->nbuckets; b++) {
        for (key_node *k = c->buckets[b], *next; k; k = next) {
            next = k->next;
            free(k->copies);
            free(k);
        }
        c->buckets[b] = NULL;
    }
    c->keys = 0;
}

void kj_key_chain_free(kj_key_chain *c) {
    if (!c) return;
    kj_key_chain_clear(c);
    free(c->buckets);
    free(c);
}

static key_node **find(const kj_key_chain *c, const void *key, size_t len, uint64_t h) {
    key_node **link = &c->buckets[h & (c->nbuckets - 1)];
    for (; *link; link = &(*link)->next)
        if ((*link)->hash == h && (*link)->key_len == len && memcmp((*link)->key, key, len) == 0)
            return link;
    return link; /* the empty link at the bucket's end */
}

static void grow(kj_key_chain *c) {
    size_t n = c->nbuckets * 2;
    key_node **b = calloc(n, sizeof(*b));
    if (!b) return; /* stay at this size: longer chains, still correct */
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (key_node *k = c->buckets[i], *next; k; k = next) {
            next = k->next;
            k->next = b[k->hash & (n - 1)];
            b[k->hash & (n - 1)] = k;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

int kj_key_chain_add(kj_key_chain *c, const void *key, size_t key_len, const kj_chain_copy *copy) {
    uint64_t h = key_hash(c, key, key_len);
    key_node **link = find(c, key, key_len, h);
    key_node *k = *link;
    if (k) {
        for (size_t i = 0; i < k->n; i++) {
            chain_copy *e = &k->copies[i];
            if (e->c.origin == copy->origin && e->c.step == copy->step) {
                e->count++;
                if (copy->not_before_ms > e->c.not_before_ms)
                    e->c.not_before_ms = copy->not_before_ms;
                e->c.parked = e->c.parked || copy->parked;
                return 0;
            }
        }
    } else {
        k = calloc(1, sizeof(*k) + key_len);
        if (!k) return -1;
        k->hash = h;
        k->key_len = key_len;
        memcpy(k->key, key, key_len);
    }
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 4;
        chain_copy *a = realloc(k->copies, cap * sizeof(*a));
        if (!a) {
            if (!*link) free(k); /* new and empty */
            return -1;
        }
        k->copies = a;
        k->cap = cap;
    }
    k->copies[k->n++] = (chain_copy){.c = *copy, .count = 1};
    if (!*link) {
        *link = k;
        if (++c->keys > c->nbuckets) grow(c);
    }
    return 0;
}

void kj_key_chain_remove(kj_key_chain *c, const void *key, size_t key_len, int64_t origin,
                         int step) {
    key_node **link = find(c, key, key_len, key_hash(c, key, key_len));
    key_node *k = *link;
    if (!k) return;
    for (size_t i = 0; i < k->n; i++) {
        chain_copy *e = &k->copies[i];
        if (e->c.origin != origin || e->c.step != step) continue;
        if (--e->count == 0) k->copies[i] = k->copies[--k->n];
        break;
    }
    if (k->n == 0) {
        *link = k->next;
        free(k->copies);
        free(k);
        c->keys--;
    }
}

bool kj_key_chain_blocker(const kj_key_chain *c, const void *key, size_t key_len, int64_t origin,
                          kj_chain_copy *out) {
    const key_node *k = *find(c, key, key_len, key_hash(c, key, key_len));
    if (!k) return false;
    const kj_chain_copy *best = NULL;
    for (size_t i = 0; i < k->n; i++) {
        const kj_chain_copy *e = &k->copies[i].c;
        if (e->origin >= origin) continue;
        if (!best || e->origin < best->origin ||
            (e->origin == best->origin &&
             (e->step > best->step ||
              (e->step == best->step && e->not_before_ms > best->not_before_ms))))
            best = e;
    }
    if (best && out) *out = *best;
    return best != NULL;
}

size_t kj_key_chain_keys(const kj_key_chain *c) {
    return c->keys;
}
