/*
 * clock.h — the two clocks kjobs reads: wall-clock epoch milliseconds (what Kafka timestamps
 * and the kjobs-not-before / kjobs-failed-at headers use, shared with other processes) and
 * monotonic seconds (for measuring durations, immune to clock steps), and the one civil-date
 * conversion the time parsers share, and the monotonic condition variable every timed wait uses
 * (so a clock step never shortens or stretches a wait). Inline: the clocks sit on per-message
 * and per-batch paths.
 */
#ifndef KJOBS_CLOCK_H
#define KJOBS_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/** Epoch milliseconds (CLOCK_REALTIME). */
static inline long long kj_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/** Monotonic seconds (CLOCK_MONOTONIC), for durations. */
static inline double kj_mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/** Monotonic milliseconds (CLOCK_MONOTONIC), for deadlines inside this process. */
static inline int64_t kj_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/** The CLOCK_MONOTONIC time `ms` milliseconds from now, as pthread_cond_timedwait takes it on
 * a condition variable made by kj_cond_init_monotonic. */
static inline struct timespec kj_mono_deadline(int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/** Initialises `cond` to time its waits on CLOCK_MONOTONIC (pthread_cond_destroy frees it). */
static inline void kj_cond_init_monotonic(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

/** Days from 1970-01-01 to the proleptic Gregorian date y-m-d (m 1..12, d 1..31), negative
 * before it. Howard Hinnant's days_from_civil ("chrono-Compatible Low-Level Date Algorithms");
 * used by the RFC 3339 header parser and the cron search. */
static inline int64_t kj_days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

#endif /* KJOBS_CLOCK_H */
