/*
 * weighted_semaphore.c — the FIFO byte bound (weighted_semaphore.h). Waiters queue as nodes on
 * their own stacks, oldest first, each with its own condition variable; whoever frees room (a
 * release) grants it to the queue's head while it fits, counting the units for it and waking
 * that thread alone, so a waiter that does not fit holds back every later one instead of being
 * overtaken, no waiter races the next one for the room it was given, and a grant wakes no
 * thread it does not let through. The fast path (nobody waiting, room) is an atomic load and
 * add without the lock: a thread racing a new waiter may pass it once, which overshoots the
 * limit by at most one weight per thread.
 */
#include "processor/weighted_semaphore.h"

#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "common/clock.h"

typedef struct kj_wsem_waiter {
    long long n;
    bool granted;       /* its units were counted by whoever granted them */
    kj_wsem_result how; /* ACQUIRED or BYPASSED, once granted */
    pthread_cond_t cond;
    struct kj_wsem_waiter *prev, *next;
} kj_wsem_waiter;

void kj_wsem_init(kj_wsem *s, long long limit) {
    atomic_init(&s->held, 0);
    atomic_init(&s->waiters, 0);
    s->limit = limit;
    s->head = s->tail = NULL;
    s->queued = 0;
    pthread_mutex_init(&s->lock, NULL);
}

void kj_wsem_destroy(kj_wsem *s) {
    pthread_mutex_destroy(&s->lock);
}

/* Whether n more units fit now. A weight over half the limit needs only half of it free: the
 * bound is then at most half the limit plus that one weight. */
static bool fits(const kj_wsem *s, long long n) {
    long long held = atomic_load(&s->held);
    return held == 0 || held + (n > s->limit / 2 ? s->limit / 2 : n) <= s->limit;
}

static void unlink_waiter(kj_wsem *s, kj_wsem_waiter *w) {
    s->queued--;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        s->tail = w->prev;
}

/* Grants room to the queue's head while it fits, or to every waiter with `how` =
 * KJ_WSEM_BYPASSED (kj_wsem_open), and wakes each one granted. @locality s->lock held */
static void grant_locked(kj_wsem *s, kj_wsem_result how) {
    while (s->head && (how == KJ_WSEM_BYPASSED || fits(s, s->head->n))) {
        kj_wsem_waiter *w = s->head;
        atomic_fetch_add(&s->held, w->n);
        w->granted = true;
        w->how = how;
        unlink_waiter(s, w);
        pthread_cond_signal(&w->cond);
    }
}

kj_wsem_result kj_wsem_acquire(kj_wsem *s, long long n, int timeout_ms, bool (*bypass)(void *),
                               void *opaque) {
    if (atomic_load(&s->waiters) == 0 && fits(s, n)) {
        atomic_fetch_add(&s->held, n);
        return KJ_WSEM_ACQUIRED;
    }
    if (bypass && bypass(opaque)) {
        atomic_fetch_add(&s->held, n);
        return KJ_WSEM_BYPASSED;
    }
    struct timespec deadline = kj_mono_deadline(timeout_ms);
    kj_wsem_waiter w = {.n = n};
    kj_cond_init_monotonic(&w.cond);
    atomic_fetch_add(&s->waiters, 1); /* before it looks for room: see kj_wsem_release */
    pthread_mutex_lock(&s->lock);
    w.prev = s->tail;
    if (s->tail)
        s->tail->next = &w;
    else
        s->head = &w;
    s->tail = &w;
    s->queued++;
    grant_locked(s, KJ_WSEM_ACQUIRED); /* the room may have been freed before it queued */
    if (!w.granted && bypass && bypass(opaque)) {
        /* turned true (and kj_wsem_open ran) between the check above and queueing */
        unlink_waiter(s, &w);
        atomic_fetch_add(&s->held, n);
        w.granted = true;
        w.how = KJ_WSEM_BYPASSED;
    }
    while (!w.granted)
        if (pthread_cond_timedwait(&w.cond, &s->lock, &deadline) == ETIMEDOUT && !w.granted) {
            /* a release may have freed its room and be waiting for the lock to grant it */
            if (s->head == &w) grant_locked(s, KJ_WSEM_ACQUIRED);
            if (w.granted) break;
            /* it leaves the queue with its units taken all the same (the caller releases
             * them): no one behind it fits any sooner for its going */
            unlink_waiter(s, &w);
            atomic_fetch_add(&s->held, n);
            w.how = KJ_WSEM_TIMED_OUT;
            break;
        }
    pthread_mutex_unlock(&s->lock);
    pthread_cond_destroy(&w.cond);
    atomic_fetch_sub(&s->waiters, 1);
    return w.how;
}

void kj_wsem_release(kj_wsem *s, long long n) {
    atomic_fetch_sub(&s->held, n);
    if (atomic_load(&s->waiters) > 0) {
        pthread_mutex_lock(&s->lock);
        grant_locked(s, KJ_WSEM_ACQUIRED);
        pthread_mutex_unlock(&s->lock);
    }
}

void kj_wsem_open(kj_wsem *s) {
    pthread_mutex_lock(&s->lock);
    grant_locked(s, KJ_WSEM_BYPASSED);
    pthread_mutex_unlock(&s->lock);
}

long long kj_wsem_held(const kj_wsem *s) {
    return atomic_load(&s->held);
}

int kj_wsem_waiters(kj_wsem *s) {
    pthread_mutex_lock(&s->lock);
    int queued = s->queued;
    pthread_mutex_unlock(&s->lock);
    return queued;
}
