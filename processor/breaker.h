/*
 * breaker.h — the dead-letter circuit breaker's decision, as a pure data structure.
 *
 * When a downstream outage makes every job fail, dead-lettering the whole backlog is the worst
 * outcome: the jobs leave the main topic and someone has to replay them. The breaker trips
 * instead, and the worker stops consuming (worker.c does the stopping). Two rules, each
 * disabled by 0:
 *   - consecutive: `consecutive` jobs in a row went to the DLQ;
 *   - ratio: of the last `window` finished jobs (once at least `min_window` are known), a
 *     fraction >= `ratio` went to the DLQ.
 * Every finished job counts: success and retry-routed as "not dead", dead-lettered as "dead".
 * Not internally locked: the owner serialises calls (job_pipeline.c's record_breaker takes one
 * mutex per batch).
 */
#ifndef KJOBS_BREAKER_H
#define KJOBS_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kj_breaker {
    int consecutive_limit, window, min_window;
    double ratio;
    int consecutive; /* current run of dead letters */
    uint8_t *ring;   /* last `window` outcomes, 1 = dead */
    int ring_pos, ring_filled, ring_dead;
    bool open;
    char reason[160];
} kj_breaker;

/** 0, or -1 on bad parameters (negative values, ratio outside [0,1]). */
int kj_breaker_init(kj_breaker *b, int consecutive, int window, int min_window, double ratio);
void kj_breaker_free(kj_breaker *b);
/** Record one finished job; returns true when this record tripped the breaker. */
bool kj_breaker_record(kj_breaker *b, bool dead_lettered);
/** Close it again and forget the history (after an operator reset or the cool-down). */
void kj_breaker_reset(kj_breaker *b);

#endif /* KJOBS_BREAKER_H */
