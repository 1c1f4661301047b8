/*
 * partitions/flow_control.c — token buckets, slots and wait queues per job type. The rules are
 * stated in flow_control.h; this is how they are kept. One mutex guards every limit's state;
 * it is held only for O(waiting lanes) bookkeeping, and kj_engine_lane_wake() is called with it
 * held (lock order: flow, then engine — the engine never calls back into this module).
 */
#include "partitions/flow_control.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A small FIFO of lanes (a lane appears at most once). */
typedef struct lane_queue {
    kj_lane **v;
    size_t n, cap;
} lane_queue;

typedef struct limit_state {
    char *type;
    double rate, burst;   /* configured */
    double erate, eburst; /* effective: scaled by the share for group scope */
    int cap;
    bool group_scope;
    double tokens;
    int64_t last_ms; /* last refill, engine clock; INT64_MIN before the first */
    int running;
    lane_queue waiting; /* parked, FIFO */
    lane_queue woken;   /* woken and promised a slot, not yet back */
} limit_state;

struct kj_flow {
    pthread_mutex_t lock;
    limit_state *limits;
    size_t n;
    lane_queue closed; /* lanes being removed: never queued again (kj_flow_forget_lane) */
};

static bool queue_has(const lane_queue *q, const kj_lane *l) {
    for (size_t i = 0; i < q->n; i++)
        if (q->v[i] == l) return true;
    return false;
}

/* Appends unless present. Returns -1 when out of memory. */
static int queue_push(lane_queue *q, kj_lane *l) {
    if (queue_has(q, l)) return 0;
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 8;
        kj_lane **nv = realloc(q->v, ncap * sizeof *nv);
        if (!nv) return -1;
        q->v = nv;
        q->cap = ncap;
    }
    q->v[q->n++] = l;
    return 0;
}

static bool queue_remove(lane_queue *q, const kj_lane *l) {
    for (size_t i = 0; i < q->n; i++)
        if (q->v[i] == l) {
            memmove(q->v + i, q->v + i + 1, (q->n - i - 1) * sizeof *q->v);
            q->n--;
            return true;
        }
    return false;
}

static kj_lane *queue_pop(lane_queue *q) {
    if (q->n == 0) return NULL;
    kj_lane *l = q->v[0];
    memmove(q->v, q->v + 1, (q->n - 1) * sizeof *q->v);
    q->n--;
    return l;
}

kj_flow *kj_flow_new(const kj_flow_limit *limits, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const kj_flow_limit *l = &limits[i];
        bool bad = !l->type || !l->type[0] || l->rate < 0 || !isfinite(l->rate) ||
                   l->concurrency < 0 || (l->rate == 0 && l->concurrency == 0) ||
                   (l->rate > 0 && (!(l->burst >= 1) || !isfinite(l->burst)));
        for (size_t j = 0; j < i && !bad; j++)
            bad = strcmp(limits[j].type, l->type) == 0;
        if (bad) {
            errno = EINVAL;
            return NULL;
        }
    }
    kj_flow *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->limits = calloc(n ? n : 1, sizeof *f->limits);
    if (!f->limits) {
        free(f);
        return NULL;
    }
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        limit_state *s = &f->limits[i];
        s->type = strdup(limits[i].type);
        if (!s->type) {
            kj_flow_free(f);
            errno = ENOMEM;
            return NULL;
        }
        s->rate = s->erate = limits[i].rate;
        s->burst = s->eburst = limits[i].burst;
        s->tokens = s->burst;
        s->last_ms = INT64_MIN;
        s->cap = limits[i].concurrency;
        s->group_scope = limits[i].group_scope;
    }
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

void kj_flow_free(kj_flow *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->limits[i].type);
        free(f->limits[i].waiting.v);
        free(f->limits[i].woken.v);
    }
    free(f->limits);
    free(f->closed.v);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

int kj_flow_find(const kj_flow *f, const char *type) {
    if (!f) return -1;
    for (size_t i = 0; i < f->n; i++) /* a handful of limits: a scan beats a hash */
        if (strcmp(f->limits[i].type, type) == 0) return (int)i;
    return -1;
}

bool kj_flow_has_cap(const kj_flow *f, int idx) {
    return f->limits[idx].cap > 0;
}

/* @locks_required f->lock */
static void refill(limit_state *s, int64_t now) {
    if (s->last_ms == INT64_MIN || now < s->last_ms) { /* first use, or the clock stepped back */
        s->last_ms = now;
        return;
    }
    s->tokens += (double)(now - s->last_ms) * s->erate / 1000.0;
    if (s->tokens > s->eburst) s->tokens = s->eburst;
    s->last_ms = now;
}

bool kj_flow_admit(kj_flow *f, int idx, bool take_slot, kj_lane *lane, int64_t now_ms,
                   kj_flow_wait *wait) {
    limit_state *s = &f->limits[idx];
    bool slot = take_slot && s->cap > 0;
    pthread_mutex_lock(&f->lock);
    if (slot && lane && queue_has(&f->closed, lane)) { /* being removed: its jobs are dropped */
        pthread_mutex_unlock(&f->lock);
        wait->reason = KJ_FLOW_CONCURRENCY;
        wait->until_ms = now_ms;
        return false;
    }
    if (slot) {
        bool promised = queue_has(&s->woken, lane);
        int free_slots = s->cap - s->running - (promised ? 0 : (int)s->woken.n);
        if (free_slots <= 0) {
            /* Out of memory here would lose the wake-up: keep the job due soon instead. */
            bool queued = queue_push(&s->waiting, lane) == 0;
            pthread_mutex_unlock(&f->lock);
            wait->reason = KJ_FLOW_CONCURRENCY;
            wait->until_ms = queued ? KJ_ENGINE_PARKED : now_ms + 100;
            return false;
        }
    }
    if (s->erate > 0) {
        refill(s, now_ms);
        if (s->tokens < 1.0) {
            /* less a hair: 0.99 tokens at 10/s is due in 1 ms, not 2 */
            double ms = ceil((1.0 - s->tokens) * 1000.0 / s->erate - 1e-6);
            pthread_mutex_unlock(&f->lock);
            wait->reason = KJ_FLOW_RATE;
            wait->until_ms = now_ms + (ms < 1 ? 1 : (int64_t)ms);
            return false;
        }
        s->tokens -= 1.0;
    }
    if (slot) {
        queue_remove(&s->woken, lane);
        queue_remove(&s->waiting, lane);
        s->running++;
    }
    pthread_mutex_unlock(&f->lock);
    return true;
}

/* Promises free slots to waiting lanes, longest-waiting first. @locks_required f->lock */
static void wake_waiters(limit_state *s) {
    while (s->waiting.n > 0 && s->cap - s->running - (int)s->woken.n > 0) {
        kj_lane *l = queue_pop(&s->waiting);
        if (queue_push(&s->woken, l) != 0) { /* no memory to track the promise: wake anyway */
            kj_engine_lane_wake(l);
            break;
        }
        kj_engine_lane_wake(l);
    }
}

void kj_flow_release(kj_flow *f, int idx) {
    limit_state *s = &f->limits[idx];
    pthread_mutex_lock(&f->lock);
    if (s->running > 0) s->running--;
    wake_waiters(s);
    pthread_mutex_unlock(&f->lock);
}

void kj_flow_forget_lane(kj_flow *f, kj_lane *lane, bool closing) {
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    if (closing && queue_push(&f->closed, lane) != 0) abort(); /* a few pointers: fatal if not */
    for (size_t i = 0; i < f->n; i++) {
        limit_state *s = &f->limits[i];
        queue_remove(&s->waiting, lane);
        if (queue_remove(&s->woken, lane)) wake_waiters(s);
    }
    pthread_mutex_unlock(&f->lock);
}

void kj_flow_lane_removed(kj_flow *f, kj_lane *lane) {
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    queue_remove(&f->closed, lane);
    pthread_mutex_unlock(&f->lock);
}

void kj_flow_set_share(kj_flow *f, double share) {
    if (!f || !(share > 0) || share > 1) return;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n; i++) {
        limit_state *s = &f->limits[i];
        if (!s->group_scope || s->rate == 0) continue;
        s->erate = s->rate * share;
        s->eburst = s->burst * share < 1 ? 1 : s->burst * share;
        if (s->tokens > s->eburst) s->tokens = s->eburst;
    }
    pthread_mutex_unlock(&f->lock);
}

int kj_flow_running(kj_flow *f, int idx) {
    pthread_mutex_lock(&f->lock);
    int r = f->limits[idx].running;
    pthread_mutex_unlock(&f->lock);
    return r;
}
