/*
 * builtins.c — the built-in job types (fixed names, for demos, tests and benchmarks). They
 * register through the same public calls a plugin uses.
 *   kjobs.noop            succeed at once
 *   kjobs.sleep           payload: ASCII milliseconds (0..3600000), then succeed; returns
 *                         early once kjobs_job_cancelled() (its time limit passed)
 *   kjobs.fail            always a retryable failure
 *   kjobs.fail-permanent  always a permanent failure (straight to the DLQ)
 *   kjobs.flaky           payload: ASCII N; fails (retryable) while attempt <= N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/handlers.h"

/* Payload as a bounded decimal number; -1 if it is not one. */
static long long payload_number(const kjobs_job_t *job, long long max) {
    size_t len;
    const char *p = kjobs_job_payload(job, &len);
    if (len == 0 || len > 19) return -1;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v <= max ? v : -1;
}

static void handle_noop(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)job;
    (void)result;
    (void)opaque;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void handle_sleep(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)opaque;
    long long ms = payload_number(job, 3600000);
    if (ms < 0) {
        kjobs_result_fail(result, "kjobs.sleep: payload must be milliseconds 0..3600000");
        return;
    }
    /* until an absolute CLOCK_MONOTONIC deadline (never early), in slices of at most 10 ms so a
     * time limit is noticed within 10 ms (cooperative) */
    const int64_t slice_ns = 10000000;
    int64_t end = mono_ns() + ms * 1000000;
    for (int64_t now = mono_ns(); now < end && !kjobs_job_cancelled(job); now = mono_ns()) {
        int64_t next = end - now > slice_ns ? now + slice_ns : end;
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000),
                              .tv_nsec = (long)(next % 1000000000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
    }
    if (kjobs_job_cancelled(job)) kjobs_result_retry(result, -1, "kjobs.sleep: cancelled");
}

static void handle_fail(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)opaque;
    kjobs_result_retry(result, -1, "kjobs.fail: attempt %d failed (it always does)",
                       kjobs_job_attempt(job));
}

static void handle_fail_permanent(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)job;
    (void)opaque;
    kjobs_result_fail(result, "kjobs.fail-permanent: permanent failure");
}

static void handle_flaky(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)opaque;
    long long n = payload_number(job, 1000000);
    if (n < 0) {
        kjobs_result_fail(result, "kjobs.flaky: payload must be a number of failures");
        return;
    }
    if (kjobs_job_attempt(job) <= n)
        kjobs_result_retry(result, -1, "kjobs.flaky: attempt %d of %lld planned failures",
                           kjobs_job_attempt(job), n);
}

int kj_builtins_register(kj_handler_registry *reg, char *errstr, size_t errstr_size) {
    static const struct {
        const char *type;
        kjobs_job_handler_fn *fn;
    } builtins[] = {
        {"kjobs.noop", handle_noop},   {"kjobs.sleep", handle_sleep},
        {"kjobs.fail", handle_fail},   {"kjobs.fail-permanent", handle_fail_permanent},
        {"kjobs.flaky", handle_flaky},
    };
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
        if (kjobs_register_job_handler(reg, builtins[i].type, builtins[i].fn, NULL, errstr,
                                       errstr_size) != 0)
            return -1;
    return 0;
}
