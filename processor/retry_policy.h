/*
 * retry_policy.h — the retry policy: where a failed job goes next, decided once per failure.
 *
 * It owns the rule, and only the rule; the router writes the copy the decision names, and the
 * worker logs, counts and feeds the breaker from the same decision. Pure (no producer, no
 * librdkafka, no clock), so the whole rule is unit-tested as a table
 * (tests/unit/test_retry_policy.c).
 *
 * The rule (attempt n, 1 = first run, failed):
 *   - permanent failure, undecodable value, unknown type, invalid control header → DLQ
 *     (KJ_DLQ_NOT_RETRYABLE)
 *   - retryable or timeout, e >= retry.max_attempts                              → DLQ
 *     (KJ_DLQ_ATTEMPTS_EXHAUSTED), where e = r(1 + L) ends the block of attempts of run
 *     r = ceil(n / (1 + L)) (L = retry.in_place_attempts: each run, from the main topic or a
 *     ladder step, owns attempts (r-1)(1+L)+1 .. r(1+L), and one ending early has used its
 *     block up; L = 0: e = r = n)
 *   - retryable or timeout, retry.delays empty                                   → DLQ
 *     (KJ_DLQ_NO_LADDER)
 *   - otherwise ladder step min(r, N) with kjobs-attempt e, due at now + that step's delay; or,
 *     when a retryable
 *     result asked for its own delay d >= 0 (capped at KJ_RETRY_MAX_DELAY_MS), the step with
 *     the longest delay <= d (else the shortest step), due at now + max(d, that step's delay).
 *     A timeout never carries a delay of its own.
 *
 * Every record of a ladder step is therefore due at least that step's delay after it was
 * written, which the worker's release of ladder records relies on (see router.h).
 */
#ifndef KJOBS_RETRY_POLICY_H
#define KJOBS_RETRY_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "kjobs.h"
#include "processor/config.h"

/** Why a failed job is dead-lettered (KJ_DLQ_NONE: it is not). */
typedef enum kj_dlq_reason {
    KJ_DLQ_NONE = 0,
    KJ_DLQ_NOT_RETRYABLE,      /* its class is never retried */
    KJ_DLQ_ATTEMPTS_EXHAUSTED, /* attempt >= retry.max_attempts */
    KJ_DLQ_NO_LADDER,          /* retry.delays is empty */
    KJ_DLQ_TOO_LARGE,          /* set by the router: the retry copy could not be written as it
                                  is and was dead-lettered reduced (router.h, "Size") */
} kj_dlq_reason;

/** What happens to one failed job. Plain data; copy it freely. */
typedef struct kj_retry_decision {
    bool to_dlq;
    int attempt;           /* the copy's kjobs-attempt: the attempt that failed (1 = first
                              run), or on the ladder the end of its run's block (above) */
    int step;              /* ladder step 1..retry_delay_count when !to_dlq; 0 when to_dlq */
    int64_t now_ms;        /* when it was decided: the failure time, epoch ms */
    int64_t not_before_ms; /* !to_dlq: earliest run of the next attempt, epoch ms; else 0 */
    const char
        *error_class;     /* kjobs-error-class ("retryable", "permanent", "decode",
                             "unknown-type", "timeout", "invalid-header", "crash-loop"); static */
    kj_dlq_reason reason; /* to_dlq: why; else KJ_DLQ_NONE */
} kj_retry_decision;

/**
 * Decide where a failed job goes. `attempt` >= 1 is the attempt that ended with `result` (a
 * failure: not KJ_OUTCOME_OK); `now_ms` is the current time in epoch ms. Uses cfg's
 * retry_delays_ms / retry_delay_count / retry_max_attempts. Fills *out entirely; cannot fail.
 */
void kj_retry_decide(const kj_config *cfg, int attempt, const kjobs_result_t *result,
                     int64_t now_ms, kj_retry_decision *out);

/**
 * The ladder step for a delay in ms: the step with the longest delay <= delay_ms, else the
 * shortest step. 1-based; needs a non-empty ladder (retry_delay_count >= 1).
 */
int kj_retry_step_for_delay(const kj_config *cfg, int64_t delay_ms);

#endif /* KJOBS_RETRY_POLICY_H */
