/*
 * partitions/engine.c — lanes, the ready list, the timer heap and the workers.
 * The guarantees are stated in engine.h (DESIGN); this is how they are kept.
 *
 * One mutex (e->lock) guards all engine and lane state except the few
 * counters readable lock-free (lane pending / in_flight, engine items in flight),
 * which are atomics written under the lock. A lane is always in exactly one state:
 *
 *   IDLE   empty, in no structure
 *   TIMED  has items, not yet eligible: in the min-heap, keyed by wake_ms
 *   READY  eligible: in the FIFO ready list
 *   BUSY   a worker runs one of its batches: in no structure
 *
 * Only a worker popping the ready list moves a lane to BUSY, and only that
 * worker moves it out of BUSY (after its callback returned, under the lock):
 * that is the whole "one worker per lane, in order" argument. A removing lane
 * is taken out of the ready list/heap and, if BUSY, never rescheduled.
 *
 * Wake-ups. Sleeping workers wait on work_cond. Someone is signalled when
 * (a) a lane becomes READY from the producer side, (b) the heap's earliest
 * deadline moves before `armed` — a bound >= the earliest deadline any
 * timed sleeper is waiting for, so no timer can be missed — or (c) a worker
 * about to run a batch leaves ready lanes or an unarmed timer behind it.
 * Batch completions are announced on done_cond only when someone
 * (lane_remove, wait_idle) waits there.
 */
#include "partitions/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum kj_lane_state { KJ_LANE_IDLE, KJ_LANE_TIMED, KJ_LANE_READY, KJ_LANE_BUSY };

/* pushed_at of requeued items: "waited long enough", and how kj_engine_lane_wake knows them */
#define KJ_REQUEUED (INT64_MIN / 2)

struct kj_slot {
    void *item;
    int64_t not_before; /* engine clock ms; 0 = due */
    int64_t pushed_at;  /* engine clock ms at push */
};

struct kj_lane {
    kj_engine *e;
    void *opaque;

    /* All below guarded by e->lock, except the atomics (written under it). */
    struct kj_slot *ring;
    size_t cap; /* power of two */
    size_t head;
    size_t count;
    _Atomic size_t pending;   /* == count, for lock-free readers */
    _Atomic size_t in_flight; /* items in the running batch */
    uint64_t pushed;          /* items ever pushed */
    uint64_t dispatched;      /* items ever handed to a batch; == sequence number of head */
    uint64_t flush_mark;      /* items with sequence < flush_mark are flushed */

    enum kj_lane_state state;
    bool removing;
    bool abandoned;                 /* BUSY, given up: its worker frees it after the batch */
    kj_discard_fn *abandon_discard; /* abandoned: for what the last batch requeued */
    void *abandon_opaque;
    kj_released_fn *released; /* abandoned: told when the last batch returned */
    void *released_opaque;
    bool wake_pending;      /* BUSY: woken before its callback requeued parked items */
    int64_t wake_ms;        /* TIMED: when it becomes eligible */
    size_t heap_idx;        /* TIMED: index in e->heap */
    kj_lane *rnext, *rprev; /* READY: ready list links */
    kj_lane *next, *prev;   /* every lane of the engine */
};

struct kj_worker {
    kj_engine *e;
    pthread_t tid;
    void **items; /* max_batch slots, handed to the callback */
};

struct kj_engine {
    pthread_mutex_t lock;
    pthread_cond_t work_cond; /* idle workers */
    pthread_cond_t done_cond; /* batch completions, for remove / wait_idle */

    kj_batch_fn *fn;
    void *opaque;
    size_t max_batch;
    int64_t max_wait_ms;
    kj_clock_fn *now_fn;
    void *clock_opaque;
    bool custom_clock;

    kj_lane *ready_head, *ready_tail;
    size_t ready_count;
    kj_lane **heap;
    size_t heap_len, heap_cap;
    kj_lane *lanes;
    size_t lane_count;

    int idle_workers; /* workers waiting on work_cond */
    int64_t armed;    /* >= the earliest timed-wait deadline of a sleeper; INT64_MAX if none */
    int done_waiters; /* threads waiting on done_cond */
    size_t batches_in_flight;
    _Atomic size_t items_in_flight;
    bool stopped;  /* kj_engine_stop_dispatch() */
    bool shutdown; /* kj_engine_destroy() */

    int nworkers;
    struct kj_worker *workers;
};

/* The lane whose batch callback runs on this thread, to catch self-removal. */
static _Thread_local const kj_lane *tl_current_lane;
static _Thread_local const kj_engine *tl_worker_of;

static int64_t realtime_ms(void *opaque) {
    (void)opaque;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t engine_now(const kj_engine *e) {
    return e->now_fn(e->clock_opaque);
}

static int64_t sat_add(int64_t a, int64_t b) {
    return (b > 0 && a > INT64_MAX - b) ? INT64_MAX : a + b;
}

/* CLOCK_MONOTONIC absolute time @p delta_ms from now, for timed waits. */
static struct timespec mono_deadline(int64_t delta_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (delta_ms > INT64_C(1) << 40) /* ~35 years: treat as far away, avoid overflow */
        delta_ms = INT64_C(1) << 40;
    ts.tv_sec += (time_t)(delta_ms / 1000);
    ts.tv_nsec += (long)(delta_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- ready list (FIFO) ---- @locks_required e->lock */

static void ready_push(kj_engine *e, kj_lane *l) {
    l->rnext = NULL;
    l->rprev = e->ready_tail;
    if (e->ready_tail)
        e->ready_tail->rnext = l;
    else
        e->ready_head = l;
    e->ready_tail = l;
    e->ready_count++;
    l->state = KJ_LANE_READY;
}

static void ready_unlink(kj_engine *e, kj_lane *l) {
    if (l->rprev)
        l->rprev->rnext = l->rnext;
    else
        e->ready_head = l->rnext;
    if (l->rnext)
        l->rnext->rprev = l->rprev;
    else
        e->ready_tail = l->rprev;
    l->rnext = l->rprev = NULL;
    e->ready_count--;
    l->state = KJ_LANE_IDLE;
}

/* ---- timer heap (min on wake_ms) ---- @locks_required e->lock */

static void heap_set(kj_engine *e, size_t i, kj_lane *l) {
    e->heap[i] = l;
    l->heap_idx = i;
}

static void heap_sift_up(kj_engine *e, size_t i) {
    kj_lane *l = e->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (e->heap[parent]->wake_ms <= l->wake_ms) break;
        heap_set(e, i, e->heap[parent]);
        i = parent;
    }
    heap_set(e, i, l);
}

static void heap_sift_down(kj_engine *e, size_t i) {
    kj_lane *l = e->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->heap_len) break;
        if (c + 1 < e->heap_len && e->heap[c + 1]->wake_ms < e->heap[c]->wake_ms) c++;
        if (l->wake_ms <= e->heap[c]->wake_ms) break;
        heap_set(e, i, e->heap[c]);
        i = c;
    }
    heap_set(e, i, l);
}

/* Capacity is reserved in kj_engine_lane_add (one slot per lane), so this cannot fail. */
static void heap_insert(kj_engine *e, kj_lane *l) {
    heap_set(e, e->heap_len++, l);
    heap_sift_up(e, l->heap_idx);
    l->state = KJ_LANE_TIMED;
}

static void heap_remove(kj_engine *e, kj_lane *l) {
    size_t i = l->heap_idx;
    kj_lane *last = e->heap[--e->heap_len];
    if (last != l) {
        heap_set(e, i, last);
        heap_sift_down(e, i);
        heap_sift_up(e, last->heap_idx);
    }
    l->state = KJ_LANE_IDLE;
}

static inline int64_t heap_top_wake(const kj_engine *e) {
    return e->heap_len ? e->heap[0]->wake_ms : INT64_MAX;
}

/* ---- lane queue ---- */

static inline struct kj_slot *lane_slot(const kj_lane *l, size_t i) {
    return &l->ring[(l->head + i) & (l->cap - 1)];
}

/* When the lane (non-empty) becomes eligible, per the rule in engine.h.
 * @locks_required e->lock */
static int64_t lane_wake(const kj_engine *e, const kj_lane *l) {
    const struct kj_slot *h = lane_slot(l, 0);
    int64_t wake = h->not_before;
    bool full = l->count >= e->max_batch;
    bool flushed = l->dispatched < l->flush_mark;
    if (!full && !flushed) {
        int64_t waited = sat_add(h->pushed_at, e->max_wait_ms);
        if (waited > wake) wake = waited;
    }
    return wake;
}

/* Puts a lane that is not BUSY and not removing where it belongs for time @p now.
 * @locks_required e->lock */
static void lane_schedule(kj_engine *e, kj_lane *l, int64_t now) {
    if (l->state == KJ_LANE_READY) return; /* eligibility never goes away except by dispatch */
    if (l->count == 0) {
        if (l->state == KJ_LANE_TIMED) heap_remove(e, l);
        l->state = KJ_LANE_IDLE;
        return;
    }
    int64_t wake = lane_wake(e, l);
    if (wake <= now) {
        if (l->state == KJ_LANE_TIMED) heap_remove(e, l);
        ready_push(e, l);
    } else if (l->state == KJ_LANE_TIMED) {
        if (wake != l->wake_ms) {
            l->wake_ms = wake;
            heap_sift_down(e, l->heap_idx);
            heap_sift_up(e, l->heap_idx);
        }
    } else {
        l->wake_ms = wake;
        heap_insert(e, l);
    }
}

/* After the producer side changed a lane: wake one worker if it now has work
 * or an earlier timer than any sleeper will notice. @locks_required e->lock */
static void notify_producer_change(kj_engine *e, kj_lane *l) {
    if (e->idle_workers == 0) return;
    if (l->state == KJ_LANE_READY || heap_top_wake(e) < e->armed)
        pthread_cond_signal(&e->work_cond);
}

/* Moves every TIMED lane whose wake time has come to the ready list.
 * @locks_required e->lock */
static void promote_due(kj_engine *e, int64_t now) {
    while (e->heap_len && e->heap[0]->wake_ms <= now) {
        kj_lane *l = e->heap[0];
        heap_remove(e, l);
        ready_push(e, l);
    }
}

#define KJ_LANE_INITIAL_CAP 64
#define KJ_LANE_SHRINK_CAP  (4 * KJ_LANE_INITIAL_CAP)

/* An emptied ring back to its initial size: the rings of hundreds of partitions would
 * otherwise each keep the largest backlog they ever had (batch.max_pending_bytes bounds what is
 * queued, not what was once allocated). Only above KJ_LANE_SHRINK_CAP, so a lane that empties at
 * every batch under a steady load does not reallocate each time. @locks_required e->lock */
static void lane_shrink(kj_lane *l) {
    struct kj_slot *n = realloc(l->ring, KJ_LANE_INITIAL_CAP * sizeof *n);
    if (!n) return; /* keep the larger ring */
    l->ring = n;
    l->cap = KJ_LANE_INITIAL_CAP;
    l->head = 0;
}

/* Takes the due run at the head of @p l (up to max_batch) into @p items.
 * @locks_required e->lock */
static size_t lane_take(kj_engine *e, kj_lane *l, int64_t now, void **items) {
    size_t n = 0;
    while (n < e->max_batch && n < l->count) {
        struct kj_slot *s = lane_slot(l, n);
        if (s->not_before > now) break;
        items[n++] = s->item;
    }
    l->head = (l->head + n) & (l->cap - 1);
    l->count -= n;
    l->dispatched += n;
    if (l->count == 0 && l->cap > KJ_LANE_SHRINK_CAP) lane_shrink(l);
    atomic_store_explicit(&l->pending, l->count, memory_order_relaxed);
    return n;
}

/* ---- workers ---- */

static void lane_free(kj_lane *l, kj_discard_fn *discard, void *opaque);

static void *worker_main(void *arg) {
    struct kj_worker *w = arg;
    kj_engine *e = w->e;
    tl_worker_of = e;

    pthread_mutex_lock(&e->lock);
    while (!e->shutdown) {
        if (!e->stopped) {
            int64_t now = engine_now(e);
            promote_due(e, now);
            kj_lane *l = e->ready_head;
            if (l) {
                ready_unlink(e, l);
                size_t n = lane_take(e, l, now, w->items);
                if (n == 0) {
                    /* Head not due after all (the clock went backwards). */
                    lane_schedule(e, l, now);
                    continue;
                }
                l->state = KJ_LANE_BUSY;
                atomic_store_explicit(&l->in_flight, n, memory_order_relaxed);
                e->batches_in_flight++;
                atomic_fetch_add_explicit(&e->items_in_flight, n, memory_order_relaxed);
                /* Don't sit on work another sleeper could do while we run the callback. */
                if (e->idle_workers > 0 && (e->ready_count > 0 || heap_top_wake(e) < e->armed))
                    pthread_cond_signal(&e->work_cond);
                pthread_mutex_unlock(&e->lock);

                tl_current_lane = l;
                e->fn(l, l->opaque, w->items, n, e->opaque);
                tl_current_lane = NULL;

                pthread_mutex_lock(&e->lock);
                if (l->abandoned) {
                    /* kj_engine_lane_abandon: ours to free, before the batch counts as done
                     * (so kj_engine_wait_idle returning means the lane is gone) */
                    pthread_mutex_unlock(&e->lock);
                    if (l->released) l->released(l, l->released_opaque);
                    lane_free(l, l->abandon_discard, l->abandon_opaque);
                    pthread_mutex_lock(&e->lock);
                    e->batches_in_flight--;
                    atomic_fetch_sub_explicit(&e->items_in_flight, n, memory_order_relaxed);
                    if (e->done_waiters > 0) pthread_cond_broadcast(&e->done_cond);
                    continue;
                }
                e->batches_in_flight--;
                atomic_fetch_sub_explicit(&e->items_in_flight, n, memory_order_relaxed);
                atomic_store_explicit(&l->in_flight, 0, memory_order_relaxed);
                l->state = KJ_LANE_IDLE;
                l->wake_pending = false;
                if (!l->removing) lane_schedule(e, l, engine_now(e));
                if (e->done_waiters > 0) pthread_cond_broadcast(&e->done_cond);
                continue;
            }
        }

        /* Nothing to run: sleep until the earliest timer, or until signalled. */
        e->idle_workers++;
        int64_t top = heap_top_wake(e);
        if (!e->stopped && top != INT64_MAX && !e->custom_clock) {
            int64_t delta = top - engine_now(e);
            if (delta < 0) delta = 0;
            struct timespec ts = mono_deadline(delta);
            if (top < e->armed) e->armed = top;
            pthread_cond_timedwait(&e->work_cond, &e->lock, &ts);
            if (e->armed == top)
                e->armed = INT64_MAX; /* conservative: stays >= every remaining sleeper's */
        } else {
            pthread_cond_wait(&e->work_cond, &e->lock);
        }
        e->idle_workers--;
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---- public API ---- */

static void free_workers(kj_engine *e) {
    for (int i = 0; i < e->nworkers; i++)
        free(e->workers[i].items);
    free(e->workers);
}

kj_engine *kj_engine_new(const kj_engine_config *cfg, kj_batch_fn *fn, void *opaque) {
    if (!cfg || !fn || cfg->workers < 1 || cfg->max_batch < 1 || cfg->max_wait_ms < 0 ||
        cfg->max_batch > SIZE_MAX / sizeof(void *)) {
        errno = EINVAL;
        return NULL;
    }
    kj_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->fn = fn;
    e->opaque = opaque;
    e->max_batch = cfg->max_batch;
    e->max_wait_ms = cfg->max_wait_ms;
    e->custom_clock = cfg->now_ms != NULL;
    e->now_fn = cfg->now_ms ? cfg->now_ms : realtime_ms;
    e->clock_opaque = cfg->clock_opaque;
    e->armed = INT64_MAX;
    atomic_init(&e->items_in_flight, 0);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work_cond, &ca);
    pthread_cond_init(&e->done_cond, &ca);
    pthread_condattr_destroy(&ca);

    e->workers = calloc((size_t)cfg->workers, sizeof *e->workers);
    if (!e->workers) goto fail;
    e->nworkers = cfg->workers;
    for (int i = 0; i < e->nworkers; i++) {
        e->workers[i].e = e;
        e->workers[i].items = malloc(e->max_batch * sizeof(void *));
        if (!e->workers[i].items) goto fail;
    }
    for (int i = 0; i < e->nworkers; i++) {
        int rc = pthread_create(&e->workers[i].tid, NULL, worker_main, &e->workers[i]);
        if (rc != 0) {
            pthread_mutex_lock(&e->lock);
            e->shutdown = true;
            pthread_cond_broadcast(&e->work_cond);
            pthread_mutex_unlock(&e->lock);
            for (int j = 0; j < i; j++)
                pthread_join(e->workers[j].tid, NULL);
            errno = rc;
            goto fail;
        }
    }
    return e;

fail:;
    int saved = errno;
    if (e->workers) free_workers(e);
    pthread_cond_destroy(&e->work_cond);
    pthread_cond_destroy(&e->done_cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
    errno = saved;
    return NULL;
}

kj_lane *kj_engine_lane_add(kj_engine *e, void *lane_opaque) {
    kj_lane *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->ring = malloc(KJ_LANE_INITIAL_CAP * sizeof *l->ring);
    if (!l->ring) {
        free(l);
        return NULL;
    }
    l->cap = KJ_LANE_INITIAL_CAP;
    l->e = e;
    l->opaque = lane_opaque;
    l->state = KJ_LANE_IDLE;
    atomic_init(&l->pending, 0);
    atomic_init(&l->in_flight, 0);

    pthread_mutex_lock(&e->lock);
    if (e->heap_cap < e->lane_count + 1) {
        size_t ncap = e->heap_cap ? e->heap_cap * 2 : 16;
        kj_lane **nh = realloc(e->heap, ncap * sizeof *nh);
        if (!nh) {
            pthread_mutex_unlock(&e->lock);
            free(l->ring);
            free(l);
            errno = ENOMEM;
            return NULL;
        }
        e->heap = nh;
        e->heap_cap = ncap;
    }
    l->next = e->lanes;
    if (e->lanes) e->lanes->prev = l;
    e->lanes = l;
    e->lane_count++;
    pthread_mutex_unlock(&e->lock);
    return l;
}

void *kj_engine_lane_opaque(const kj_lane *lane) {
    return lane->opaque;
}

/* Doubles the ring, unwrapping it. @locks_required e->lock */
static int lane_grow(kj_lane *l) {
    if (l->cap > (SIZE_MAX / 2) / sizeof *l->ring) return -1;
    size_t ncap = l->cap * 2;
    struct kj_slot *n = malloc(ncap * sizeof *n);
    if (!n) return -1;
    size_t first = l->cap - l->head;
    if (first > l->count) first = l->count;
    memcpy(n, l->ring + l->head, first * sizeof *n);
    memcpy(n + first, l->ring, (l->count - first) * sizeof *n);
    free(l->ring);
    l->ring = n;
    l->cap = ncap;
    l->head = 0;
    return 0;
}

size_t kj_engine_push(kj_lane *l, void *item, int64_t not_before_ms) {
    kj_engine *e = l->e;
    /* The clock is read only where a time can count: a batch wait (pushed_at matters) or a
     * not-before. Else pushed_at is 0, which lane_wake treats as "pushed long ago", exactly as
     * any past time with max_wait_ms 0. (One read per job was ~2 % of a drain's CPU.) */
    bool timed = e->max_wait_ms > 0 || not_before_ms > 0;
    int64_t now = timed ? engine_now(e) : 0;

    pthread_mutex_lock(&e->lock);
    if (l->count == l->cap && lane_grow(l) != 0) {
        pthread_mutex_unlock(&e->lock);
        errno = ENOMEM;
        return 0;
    }
    struct kj_slot *s = lane_slot(l, l->count);
    s->item = item;
    s->not_before = not_before_ms;
    s->pushed_at = now;
    size_t pending = ++l->count;
    l->pushed++;
    if (!l->removing) atomic_store_explicit(&l->pending, pending, memory_order_relaxed);

    /* Only a new head (IDLE lane) or reaching a full batch (TIMED lane) can
     * change when the lane becomes eligible; READY/BUSY lanes need nothing. */
    if (!l->removing &&
        (l->state == KJ_LANE_IDLE || (l->state == KJ_LANE_TIMED && pending == e->max_batch))) {
        /* an untimed job alone in its lane is due at any time; an older head may not be */
        if (!timed && (pending > 1 || l->state != KJ_LANE_IDLE)) now = engine_now(e);
        lane_schedule(e, l, now);
        notify_producer_change(e, l);
    }
    pthread_mutex_unlock(&e->lock);
    return pending;
}

void kj_engine_lane_flush(kj_lane *l) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    l->flush_mark = l->pushed;
    if (!l->removing && (l->state == KJ_LANE_IDLE || l->state == KJ_LANE_TIMED)) {
        lane_schedule(e, l, engine_now(e));
        notify_producer_change(e, l);
    }
    pthread_mutex_unlock(&e->lock);
}

size_t kj_engine_lane_pending(const kj_lane *l) {
    return atomic_load_explicit(&l->pending, memory_order_relaxed);
}

size_t kj_engine_lane_in_flight(const kj_lane *l) {
    return atomic_load_explicit(&l->in_flight, memory_order_relaxed);
}

int64_t kj_engine_lane_head_not_before(kj_lane *l) {
    kj_engine *e = l->e;
    int64_t nb = 0;
    pthread_mutex_lock(&e->lock);
    if (l->count > 0) {
        nb = lane_slot(l, 0)->not_before;
        if (nb <= engine_now(e)) nb = 0;
    }
    pthread_mutex_unlock(&e->lock);
    return nb;
}

int kj_engine_lane_requeue(kj_lane *l, void *const *items, size_t count, int64_t not_before_ms) {
    kj_engine *e = l->e;
    if (tl_current_lane != l || count == 0) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    while (l->cap - l->count < count)
        if (lane_grow(l) != 0) {
            pthread_mutex_unlock(&e->lock);
            errno = ENOMEM;
            return -1;
        }
    if (l->wake_pending) not_before_ms = 0;
    l->wake_pending = false;
    l->head = (l->head - count) & (l->cap - 1);
    for (size_t i = 0; i < count; i++) {
        struct kj_slot *s = lane_slot(l, i);
        s->item = items[i];
        s->not_before = not_before_ms;
        s->pushed_at = KJ_REQUEUED; /* waited long enough: dispatched as soon as due */
    }
    l->count += count;
    l->dispatched -= count;
    if (!l->removing) atomic_store_explicit(&l->pending, l->count, memory_order_relaxed);
    /* BUSY: the worker reschedules the lane when the callback returns. */
    pthread_mutex_unlock(&e->lock);
    return 0;
}

void kj_engine_lane_wake(kj_lane *l) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    size_t woken = 0;
    for (; woken < l->count && lane_slot(l, woken)->pushed_at == KJ_REQUEUED; woken++)
        lane_slot(l, woken)->not_before = 0;
    if (l->state == KJ_LANE_BUSY) {
        if (woken == 0) l->wake_pending = true;
    } else if (woken > 0 && !l->removing) {
        lane_schedule(e, l, engine_now(e));
        notify_producer_change(e, l);
    }
    pthread_mutex_unlock(&e->lock);
}

size_t kj_engine_lane_discard_pending(kj_lane *l, kj_discard_fn *discard, void *opaque) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    size_t n = l->count;
    for (size_t i = 0; i < n; i++)
        if (discard) discard(lane_slot(l, i)->item, opaque);
    l->head = (l->head + n) & (l->cap - 1);
    l->count = 0;
    l->dispatched += n;
    if (!l->removing) atomic_store_explicit(&l->pending, 0, memory_order_relaxed);
    if (l->state == KJ_LANE_READY)
        ready_unlink(e, l);
    else if (l->state == KJ_LANE_TIMED)
        heap_remove(e, l);
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* Frees a lane no thread can reach any more, handing its items to `discard`. */
static void lane_free(kj_lane *l, kj_discard_fn *discard, void *opaque) {
    if (discard)
        for (size_t i = 0; i < l->count; i++)
            discard(lane_slot(l, i)->item, opaque);
    free(l->ring);
    free(l);
}

/* Under e->lock: stop dispatching `l` (removal has begun). */
static void lane_stop(kj_engine *e, kj_lane *l) {
    if (tl_current_lane == l) {
        fputs("kj_engine_lane_remove: called from the lane's own batch callback\n", stderr);
        abort();
    }
    l->removing = true;
    /* Nothing of this lane will be dispatched any more: its pending count drops now. */
    atomic_store_explicit(&l->pending, 0, memory_order_relaxed);
    if (l->state == KJ_LANE_READY)
        ready_unlink(e, l);
    else if (l->state == KJ_LANE_TIMED)
        heap_remove(e, l);
}

/* Under e->lock: take `l` off the engine's list of lanes. */
static void lane_unlink(kj_engine *e, kj_lane *l) {
    if (l->prev)
        l->prev->next = l->next;
    else
        e->lanes = l->next;
    if (l->next) l->next->prev = l->prev;
    e->lane_count--;
}

int kj_engine_lane_remove_wait(kj_lane *l, kj_discard_fn *discard, void *opaque, int64_t wait_ms) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    lane_stop(e, l);
    struct timespec ts = mono_deadline(wait_ms < 0 ? 0 : wait_ms);
    while (l->state == KJ_LANE_BUSY) {
        e->done_waiters++;
        int rc = wait_ms < 0 ? pthread_cond_wait(&e->done_cond, &e->lock)
                             : pthread_cond_timedwait(&e->done_cond, &e->lock, &ts);
        e->done_waiters--;
        if (rc == ETIMEDOUT && l->state == KJ_LANE_BUSY) {
            pthread_mutex_unlock(&e->lock);
            return -1;
        }
    }
    lane_unlink(e, l);
    pthread_mutex_unlock(&e->lock);
    /* The lane is unreachable now: no lock needed to drain it. */
    lane_free(l, discard, opaque);
    return 0;
}

void kj_engine_lane_remove(kj_lane *l, kj_discard_fn *discard, void *opaque) {
    kj_engine_lane_remove_wait(l, discard, opaque, -1);
}

void kj_engine_lane_stop(kj_lane *l) {
    pthread_mutex_lock(&l->e->lock);
    lane_stop(l->e, l);
    pthread_mutex_unlock(&l->e->lock);
}

void kj_engine_lanes_remove(kj_lane *const *lanes, size_t n, kj_discard_fn *discard, void *opaque) {
    /* First take every lane out of dispatch, then wait: no lane of the set starts a batch
     * while another one's in-flight batch is waited for. */
    for (size_t i = 0; i < n; i++)
        kj_engine_lane_stop(lanes[i]);
    for (size_t i = 0; i < n; i++)
        kj_engine_lane_remove_wait(lanes[i], discard, opaque, -1);
}

bool kj_engine_lane_abandon(kj_lane *l, kj_discard_fn *discard, void *opaque,
                            kj_released_fn *released, void *released_opaque) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    lane_stop(e, l);
    if (l->state != KJ_LANE_BUSY) {
        pthread_mutex_unlock(&e->lock);
        kj_engine_lane_remove(l, discard, opaque);
        return false;
    }
    lane_unlink(e, l);
    l->abandoned = true;
    l->abandon_discard = discard;
    l->abandon_opaque = opaque;
    l->released = released;
    l->released_opaque = released_opaque;
    /* what is queued now goes at once; the batch's worker frees the rest with the lane */
    size_t n = l->count;
    void **items = n ? malloc(n * sizeof(*items)) : NULL;
    for (size_t i = 0; items && i < n; i++)
        items[i] = lane_slot(l, i)->item;
    if (items) {
        l->head = (l->head + n) & (l->cap - 1);
        l->count = 0;
    }
    pthread_mutex_unlock(&e->lock);
    for (size_t i = 0; items && discard && i < n; i++)
        discard(items[i], opaque);
    free(items);
    return true;
}

bool kj_engine_lane_idle(kj_lane *l) {
    kj_engine *e = l->e;
    pthread_mutex_lock(&e->lock);
    bool idle = l->count == 0 && l->state != KJ_LANE_BUSY;
    pthread_mutex_unlock(&e->lock);
    return idle;
}

void kj_engine_stop_dispatch(kj_engine *e) {
    pthread_mutex_lock(&e->lock);
    e->stopped = true;
    pthread_mutex_unlock(&e->lock);
}

int kj_engine_wait_idle(kj_engine *e, int64_t timeout_ms) {
    struct timespec ts = mono_deadline(timeout_ms < 0 ? 0 : timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    while (e->batches_in_flight > 0) {
        e->done_waiters++;
        int w = timeout_ms < 0 ? pthread_cond_wait(&e->done_cond, &e->lock)
                               : pthread_cond_timedwait(&e->done_cond, &e->lock, &ts);
        e->done_waiters--;
        if (w == ETIMEDOUT && e->batches_in_flight > 0) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

size_t kj_engine_in_flight_items(const kj_engine *e) {
    return atomic_load_explicit(&e->items_in_flight, memory_order_relaxed);
}

int64_t kj_engine_now_ms(const kj_engine *e) {
    return engine_now(e);
}

void kj_engine_kick(kj_engine *e) {
    pthread_mutex_lock(&e->lock);
    pthread_cond_broadcast(&e->work_cond);
    pthread_mutex_unlock(&e->lock);
}

void kj_engine_destroy(kj_engine *e) {
    if (!e) return;
    if (tl_worker_of == e) {
        fputs("kj_engine_destroy: called from a worker thread\n", stderr);
        abort();
    }
    pthread_mutex_lock(&e->lock);
    e->shutdown = true;
    pthread_cond_broadcast(&e->work_cond);
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < e->nworkers; i++)
        pthread_join(e->workers[i].tid, NULL);

    for (kj_lane *l = e->lanes, *next; l; l = next) {
        next = l->next;
        free(l->ring);
        free(l);
    }
    free(e->heap);
    free_workers(e);
    pthread_cond_destroy(&e->work_cond);
    pthread_cond_destroy(&e->done_cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
}
