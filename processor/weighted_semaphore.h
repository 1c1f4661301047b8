/*
 * weighted_semaphore.h — a bound on bytes held by many threads at once, passed in the order the
 * waiters came (FIFO). The router bounds the memory of its routed copies with it
 * (batch.max_pending_bytes): a copy takes its footprint before it is queued and gives it back
 * when acknowledged.
 *
 * FIFO, not "whoever fits": with threads queueing small copies while a large one waits, the
 * small ones would take every byte an acknowledgement frees and the large one would wait out
 * its whole timeout. The shape follows Go's golang.org/x/sync/semaphore.Weighted (a waiter
 * that does not fit blocks every later one; each waiter is woken on its own, so a grant wakes
 * only the threads it lets through), with two differences kjobs needs: a weight over half the
 * limit passes once at most half the limit is held (so one large copy is not held up by a few
 * small ones that cannot be acknowledged yet; a copy is never refused for its size here:
 * message.max.bytes decides that), and a timed-out wait still acquires (the caller lifts the
 * bound while the broker is away: back-pressure, never loss).
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
    atomic_int waiters; /* in kj_wsem_acquire's slow path (queued or about to be) */
    pthread_mutex_t lock;
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

/** Takes `n` (>= 0) units: at once if no one waits and they fit (held + n <= limit; for n over
 * half the limit, held <= limit / 2), else after every earlier waiter, once the releases leave
 * room. `bypass(opaque)` (may be NULL), checked before and as the thread queues, lets the caller
 * skip the bound (kjobs: the producer is stalled or failed); a caller whose bypass turns true while
 * threads wait lets them through with kj_wsem_open. After `timeout_ms` it stops waiting. The
 * units are taken in every case: the caller releases them with kj_wsem_release. A timed-out
 * waiter leaves the queue without letting later ones through: the caller decides
 * (kj_wsem_open). */
kj_wsem_result kj_wsem_acquire(kj_wsem *s, long long n, int timeout_ms, bool (*bypass)(void *),
                               void *opaque);

/** Gives back `n` units taken by kj_wsem_acquire; grants room to the waiters it now fits, in
 * order, and wakes only them. */
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
