/*
 * handler_deadline.c — the watchdog of handler time limits (handler_deadline.h): a list of
 * running calls under one mutex and a thread that sleeps until the earliest moment something
 * is due (a limit to report, a grace to enforce).
 */
#include "processor/handler_deadline.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "processor/log.h"

struct kj_deadline_watch {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    kj_deadline_call *calls;
    int64_t
        wake_at; /* when the watchdog will look next (mono ms); INT64_MAX: not before a signal */
    int64_t grace_ms;
    bool stop;
    pthread_t thread;
};

/* Logged once per call that runs past its limit (by the watchdog, or on leave). */
#define PAST_LIMIT                                                                                 \
    "handler past its time limit: its jobs fail with class timeout when it returns "               \
    "(kjobs_job_cancelled() is true)"

static void log_call(const kj_deadline_call *c, kj_log_level level, const char *msg, int64_t now) {
    const kjobs_job_t *job = c->jobs[0];
    kj_log(level, msg, "{s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:I}", "type", kjobs_job_type(job), "id",
           kjobs_job_id(job), "topic", kjobs_job_topic(job), "partition", kjobs_job_partition(job),
           "offset", (json_int_t)kjobs_job_offset(job), "jobs_in_call", (json_int_t)c->count,
           "limit_ms", (json_int_t)c->limit_ms, "running_ms",
           (json_int_t)(now - (c->deadline_mono_ms - c->limit_ms)));
}

/* Next moment call `c` needs the watchdog: its limit (not yet reported), else its grace end. */
static int64_t due_of(const kj_deadline_watch *dw, const kj_deadline_call *c) {
    if (!c->warned) return c->deadline_mono_ms;
    return dw->grace_ms > 0 ? c->deadline_mono_ms + dw->grace_ms : INT64_MAX;
}

static void *watchdog_main(void *arg) {
    kj_deadline_watch *dw = arg;
    pthread_mutex_lock(&dw->lock);
    while (!dw->stop) {
        int64_t now = kj_mono_ms(), next = INT64_MAX;
        for (kj_deadline_call *c = dw->calls; c; c = c->next) {
            if (!c->warned && now >= c->deadline_mono_ms) {
                c->warned = true;
                log_call(c, KJ_LOG_WARN, PAST_LIMIT, now);
            }
            if (c->warned && dw->grace_ms > 0 && now >= c->deadline_mono_ms + dw->grace_ms) {
                log_call(c, KJ_LOG_ERROR,
                         "handler still running past its time limit and handlers.timeout_grace: "
                         "exiting (status 1); its job runs again on the next owner",
                         now);
                _exit(KJ_EXIT_HANDLER_OVERRUN);
            }
            int64_t due = due_of(dw, c);
            if (due < next) next = due;
        }
        dw->wake_at = next;
        if (next == INT64_MAX) {
            pthread_cond_wait(&dw->cond, &dw->lock);
        } else {
            struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000L};
            pthread_cond_timedwait(&dw->cond, &dw->lock, &ts);
        }
    }
    pthread_mutex_unlock(&dw->lock);
    return NULL;
}

kj_deadline_watch *kj_deadline_watch_start(int64_t grace_ms) {
    kj_deadline_watch *dw = calloc(1, sizeof(*dw));
    if (!dw) return NULL;
    kj_cond_init_monotonic(&dw->cond);
    pthread_mutex_init(&dw->lock, NULL);
    dw->grace_ms = grace_ms;
    dw->wake_at = INT64_MAX;
    if (pthread_create(&dw->thread, NULL, watchdog_main, dw) != 0) {
        pthread_cond_destroy(&dw->cond);
        pthread_mutex_destroy(&dw->lock);
        free(dw);
        return NULL;
    }
    return dw;
}

void kj_deadline_watch_stop(kj_deadline_watch *dw) {
    if (!dw) return;
    pthread_mutex_lock(&dw->lock);
    dw->stop = true;
    pthread_cond_signal(&dw->cond);
    pthread_mutex_unlock(&dw->lock);
    pthread_join(dw->thread, NULL);
    pthread_cond_destroy(&dw->cond);
    pthread_mutex_destroy(&dw->lock);
    free(dw);
}

void kj_deadline_watch_enter(kj_deadline_watch *dw, kj_deadline_call *call) {
    call->warned = false;
    call->prev = NULL;
    pthread_mutex_lock(&dw->lock);
    call->next = dw->calls;
    if (dw->calls) dw->calls->prev = call;
    dw->calls = call;
    if (call->deadline_mono_ms < dw->wake_at) {
        dw->wake_at = call->deadline_mono_ms;
        pthread_cond_signal(&dw->cond);
    }
    pthread_mutex_unlock(&dw->lock);
}

void kj_deadline_watch_leave(kj_deadline_watch *dw, kj_deadline_call *call) {
    pthread_mutex_lock(&dw->lock);
    int64_t now = kj_mono_ms();
    if (!call->warned && now >= call->deadline_mono_ms) {
        call->warned = true;
        log_call(call, KJ_LOG_WARN, PAST_LIMIT, now);
    }
    if (call->prev)
        call->prev->next = call->next;
    else
        dw->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    pthread_mutex_unlock(&dw->lock);
}
