/*
 * handler_deadline.h — time limits of in-process handler calls (handlers.timeout[s],
 * handlers.timeout_grace): the calls running under a limit, and the watchdog thread that
 * ends the process when one outlives its limit by the grace.
 *
 * Why a process exit: a C handler thread cannot be stopped safely (pthread_cancel would leave
 * its locks, allocations and the job's partition in an unknown state). The limit itself is
 * cooperative — kjobs_job_cancelled() turns true, and the worker fails the call's jobs with
 * error class "timeout" when it returns (job_pipeline.c) — and the grace is the hard stop: the
 * watchdog logs the job (type, id, topic, partition, offset) and calls _exit(1)
 * (KJ_EXIT_HANDLER_OVERRUN), so the replica is restarted, the
 * job's offset is not committed and, with dlq.crash_loop_limit set, the crash-loop guard
 * counts the job like any crash (crash_guard.h). Temporal's start-to-close timeout and
 * Celery's soft/hard time limits are the models.
 *
 * Threads: enter/leave run on handler threads; the watchdog is one thread that sleeps until
 * the earliest limit or grace end (a CLOCK_MONOTONIC timed wait, woken when an earlier call
 * enters), so a process without limits runs no watchdog at all. A call record lives on the
 * caller's stack between enter and leave; the watchdog reads it only under the lock.
 */
#ifndef KJOBS_HANDLER_DEADLINE_H
#define KJOBS_HANDLER_DEADLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kjobs.h"

#define KJ_EXIT_HANDLER_OVERRUN 1 /* a runtime error (CONTRACT.md: 0 ok, 1 runtime, 2 usage) */

typedef struct kj_deadline_watch kj_deadline_watch;

/** One running handler call under a limit; filled by the caller, owned by the caller. */
typedef struct kj_deadline_call {
    int64_t deadline_mono_ms;       /* when the limit ends (CLOCK_MONOTONIC ms) */
    int64_t limit_ms;               /* the whole call's limit, for the log */
    const kjobs_job_t *const *jobs; /* the call's jobs (valid until leave) */
    size_t count;
    bool warned; /* (watchdog) "past its limit" logged */
    struct kj_deadline_call *prev, *next;
} kj_deadline_call;

/**
 * Starts the watchdog. `grace_ms` > 0: a call still running that long after its limit ends
 * the process; 0: never (the watchdog then only logs once per overdue call). NULL on failure
 * (no thread or memory).
 */
kj_deadline_watch *kj_deadline_watch_start(int64_t grace_ms);
/** Stops and frees it; calls still registered are forgotten. NULL is a no-op. */
void kj_deadline_watch_stop(kj_deadline_watch *dw);
/** Registers a call about to run (its fields set). O(1); wakes the watchdog if it is earlier. */
void kj_deadline_watch_enter(kj_deadline_watch *dw, kj_deadline_call *call);
/** Unregisters it once the handler returned. O(1). A call that returned past its limit before
 *  the watchdog looked (it gave up right at its limit, on a busy machine) gets the watchdog's
 *  "past its time limit" line here, so every overdue call is logged exactly once. */
void kj_deadline_watch_leave(kj_deadline_watch *dw, kj_deadline_call *call);

#endif /* KJOBS_HANDLER_DEADLINE_H */
