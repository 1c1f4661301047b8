/*
 * clock.h — the two clocks kjobs reads: wall-clock epoch milliseconds (what Kafka timestamps
 * and the kjobs-not-before / kjobs-failed-at headers use, shared with other processes) and
 * monotonic seconds (for measuring durations, immune to clock steps). Inline: both sit on
 * per-message and per-batch paths.
 */
#ifndef KJOBS_CLOCK_H
#define KJOBS_CLOCK_H

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

#endif /* KJOBS_CLOCK_H */
