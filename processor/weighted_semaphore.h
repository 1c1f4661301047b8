/*
 * weighted_semaphore.h — a bound on bytes held by many threads at once, passed in the order the
 * waiters came (FIFO). The router bounds the memory of its routed copies with it
 * (batch.max_pending_bytes): a copy takes its footprint before it is queued and gives it back
 * when acknowledged.
 *
 * FIFO, not "whoever fits": with threads queueing small copies while a large one waits, the
 * small ones would take every byte an acknowledgement frees and the large one would wait out
 * its whole timeout. The shape follows Go's golang.org/x/sync/semaphore.Weighted (a waiter
 * that does not fit blocks every later one), with two differences kjobs needs: a weight larger
 * than the whole limit passes once nothing else is held (a copy is never refused for its size
 * here: message.max.bytes decides that), and a timed-out wait still acquires (the caller lifts
 * the bound while the broker is away: back-pressure, never loss).
 *
 * Thread-safe. kj_wsem_acquire blocks; kj_wsem_release never does, and takes the lock only when
 * someone waits.
 */
#ifndef KJOBS_WEIGHTED_SEMAPHORE_H
#define KJOBS_WEIGHTED_SEMAPHORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct kj_wsem_waiter;

typedef struct kj_wsem {
    atomic_llong held; /* acquired, not yet released (may exceed limit: see acquire) */
    long long limit;
    atomic_int waiters;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    struct kj_wsem_waiter *head, *tail; /* under lock: the waiters, oldest first */
    int queued;                         /* under lock: how many */
} kj_wsem;

typedef enum {
    KJ_WSEM_ACQUIRED,  /* there was room, in turn */
    KJ_WSEM_BYPASSED,  /* passed without room: `bypass` said so, or kj_wsem_open let it through */
    KJ_WSEM_TIMED_OUT, /* no room within the timeout (acquired anyway) */
} kj_wsem_result;

/** Initialises `s` with room for `limit` (> 0) units (kjobs: bytes). */
void kj_wsem_init(kj_wsem *s, long long limit);
void kj_wsem_destroy(kj_wsem *s);

/** Takes `n` (>= 0) units: at once if no one waits and held + n <= limit (or nothing is held),
 * else after every earlier waiter, once the releases leave room. `bypass(opaque)` (may be
 * NULL), checked on entry and on every wake-up, lets the caller skip the bound (kjobs: the
 * producer is stalled or failed). After `timeout_ms` it stops waiting. The units are taken in
 * every case: the caller releases them with kj_wsem_release. A timed-out waiter does not let
 * later ones through: the caller decides (kj_wsem_open). */
kj_wsem_result kj_wsem_acquire(kj_wsem *s, long long n, int timeout_ms, bool (*bypass)(void *),
                               void *opaque);

/** Gives back `n` units taken by kj_wsem_acquire; wakes the waiters if it leaves room. */
void kj_wsem_release(kj_wsem *s, long long n);

/** Lets every current waiter through (KJ_WSEM_BYPASSED) and wakes them; later ones wait again
 * unless their `bypass` says otherwise. */
void kj_wsem_open(kj_wsem *s);

/** Units held now (a snapshot). */
long long kj_wsem_held(const kj_wsem *s);

/** Threads queued in kj_wsem_acquire now, room not yet granted (a snapshot, under the lock:
 * a thread counted here has been refused room at least once). */
int kj_wsem_waiters(kj_wsem *s);

#endif /* KJOBS_WEIGHTED_SEMAPHORE_H */
