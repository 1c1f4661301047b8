/*
 * partitions/offset_tracker.c — ring buffer behind the commit watermark.
 *
 * Invariants (between calls):
 *   - ring[head .. head+count) (mod cap) holds strictly increasing offsets;
 *   - when count > 0 the head entry is not done (done entries at the head are
 *     popped eagerly), so committable() is just the head's offset;
 *   - pending counts the not-done entries; last is the greatest offset ever
 *     added (or next-1 after reset, -1 after clear), and add() requires offset > last.
 * cap is a power of two so logical index i maps to (head + i) & (cap - 1).
 */
#include "partitions/offset_tracker.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct kj_entry {
    int64_t offset;
    bool done;
};

struct kj_offset_tracker {
    struct kj_entry *ring;
    size_t cap;     /* power of two */
    size_t head;    /* physical index of the oldest entry */
    size_t count;   /* entries in the ring (done or not) */
    size_t pending; /* entries not done */
    int64_t last;   /* greatest offset added; -1 if none */
    bool any;       /* something was added (or reset to a position) */
};

#define KJ_TRACKER_MIN_CAP    16
#define KJ_TRACKER_SHRINK_CAP 256 /* a power of two; emptied rings above it go back to 64 */

static size_t round_up_pow2(size_t n) {
    size_t c = KJ_TRACKER_MIN_CAP;
    while (c < n && c <= (SIZE_MAX >> 1))
        c <<= 1;
    return c;
}

static inline struct kj_entry *at(const kj_offset_tracker *t, size_t i) {
    return &t->ring[(t->head + i) & (t->cap - 1)];
}

kj_offset_tracker *kj_offset_tracker_new(size_t capacity_hint) {
    kj_offset_tracker *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cap = round_up_pow2(capacity_hint);
    t->ring = malloc(t->cap * sizeof *t->ring);
    if (!t->ring) {
        free(t);
        return NULL;
    }
    t->last = -1;
    return t;
}

void kj_offset_tracker_free(kj_offset_tracker *t) {
    if (!t) return;
    free(t->ring);
    free(t);
}

/* Doubles the ring, unwrapping it so the head lands at index 0. */
static int grow(kj_offset_tracker *t) {
    if (t->cap > (SIZE_MAX / 2) / sizeof *t->ring) {
        errno = ENOMEM;
        return -1;
    }
    size_t ncap = t->cap * 2;
    struct kj_entry *n = malloc(ncap * sizeof *n);
    if (!n) return -1;
    size_t first = t->cap - t->head; /* entries from head to the physical end */
    if (first > t->count) first = t->count;
    memcpy(n, t->ring + t->head, first * sizeof *n);
    memcpy(n + first, t->ring, (t->count - first) * sizeof *n);
    free(t->ring);
    t->ring = n;
    t->cap = ncap;
    t->head = 0;
    return 0;
}

int kj_offset_tracker_add(kj_offset_tracker *t, int64_t offset) {
    if (offset < 0 || (t->any && offset <= t->last)) return -1;
    if (t->count == t->cap && grow(t) != 0) return -1;
    struct kj_entry *e = at(t, t->count);
    e->offset = offset;
    e->done = false;
    t->count++;
    t->pending++;
    t->last = offset;
    t->any = true;
    return 0;
}

int kj_offset_tracker_complete(kj_offset_tracker *t, int64_t offset) {
    if (t->count == 0 || offset < at(t, 0)->offset || offset > t->last) return -1;
    /* Offsets are strictly increasing, so offset sits at index offset - head or before it;
     * exactly there unless the ring holds a gap (a transaction marker, a compacted record)
     * below it: the common case costs one probe. A job that waits for its retry copy's
     * acknowledgement keeps every later offset in the ring, which is when this matters. */
    size_t lo = (size_t)(offset - at(t, 0)->offset), hi = t->count;
    if (lo < hi && at(t, lo)->offset == offset)
        hi = lo;
    else
        lo = 0;
    /* Otherwise a binary search for offset among logical indices [lo, hi). */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t v = at(t, mid)->offset;
        if (v < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == t->count) return -1;
    struct kj_entry *e = at(t, lo);
    if (e->offset != offset || e->done) return -1;
    e->done = true;
    t->pending--;
    if (lo == 0) {
        /* Advance past every done entry at the head. */
        while (t->count > 0 && at(t, 0)->done) {
            t->head = (t->head + 1) & (t->cap - 1);
            t->count--;
        }
        if (t->count == 0) {
            t->head = 0;
            /* hundreds of partitions would otherwise each keep the ring of the largest
             * backlog they ever had; only above KJ_TRACKER_SHRINK_CAP, so a partition that
             * empties at every batch under steady load does not reallocate each time */
            if (t->cap > KJ_TRACKER_SHRINK_CAP) {
                struct kj_entry *n = realloc(t->ring, KJ_TRACKER_SHRINK_CAP / 4 * sizeof *n);
                if (n) {
                    t->ring = n;
                    t->cap = KJ_TRACKER_SHRINK_CAP / 4;
                }
            }
        }
    }
    return 0;
}

int64_t kj_offset_tracker_committable(const kj_offset_tracker *t) {
    if (t->count > 0) return at(t, 0)->offset;
    return t->any ? t->last + 1 : -1;
}

int kj_offset_tracker_advance(kj_offset_tracker *t, int64_t position) {
    if (t->count > 0 || position < 0 || position <= kj_offset_tracker_committable(t)) return 0;
    kj_offset_tracker_reset(t, position);
    return 1;
}

size_t kj_offset_tracker_pending(const kj_offset_tracker *t) {
    return t->pending;
}

size_t kj_offset_tracker_held(const kj_offset_tracker *t) {
    return t
        ->count; /* done entries at the head are popped eagerly: count starts at a pending one */
}

void kj_offset_tracker_clear(kj_offset_tracker *t) {
    t->head = t->count = t->pending = 0;
    t->last = -1;
    t->any = false;
}

void kj_offset_tracker_reset(kj_offset_tracker *t, int64_t next_offset) {
    kj_offset_tracker_clear(t);
    if (next_offset >= 0) {
        t->last = next_offset - 1;
        t->any = true;
    }
}
