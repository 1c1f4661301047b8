/*
 * retry_policy.c — the retry rule (see retry_policy.h). Moved here from the router, where it
 * was kj_router_decide, so that it is decided once per failed job and testable on its own.
 */
#include "processor/retry_policy.h"

#include <string.h>

#include "processor/handlers.h"
#include "processor/header_contract.h"

int kj_retry_step_for_delay(const kj_config *cfg, int64_t delay_ms) {
    const int64_t *delays = cfg->retry_delays_ms;
    size_t n = cfg->retry_delay_count, best = n, shortest = 0;
    for (size_t i = 0; i < n; i++) {
        if (delays[i] <= delay_ms && (best == n || delays[i] >= delays[best])) best = i;
        if (delays[i] < delays[shortest]) shortest = i;
    }
    return (int)(best < n ? best : shortest) + 1;
}

void kj_retry_decide(const kj_config *cfg, int attempt, const kjobs_result_t *result,
                     int64_t now_ms, kj_retry_decision *out) {
    bool retryable = result->outcome == KJ_OUTCOME_RETRY || result->outcome == KJ_OUTCOME_TIMEOUT;
    memset(out, 0, sizeof(*out));
    out->attempt = attempt;
    out->now_ms = now_ms;
    out->error_class = kj_outcome_error_class(result->outcome);
    /* Runs: each run (from the main topic or a ladder step) owns a block of 1 + L attempts
     * (L = retry.in_place_attempts), (r-1)(1+L)+1 .. r(1+L); a run ending early (a timeout, a
     * longer delay of its own) has still used its block up, so the next run starts at the next
     * block and the step follows the runs. L = 0: a block is one attempt. */
    int per_run = cfg->retry_in_place_attempts + 1;
    int runs = (attempt + per_run - 1) / per_run;
    int block_end = runs * per_run;
    if (!retryable || block_end >= cfg->retry_max_attempts || cfg->retry_delay_count == 0) {
        out->to_dlq = true;
        out->reason = !retryable                             ? KJ_DLQ_NOT_RETRYABLE
                      : block_end >= cfg->retry_max_attempts ? KJ_DLQ_ATTEMPTS_EXHAUSTED
                                                             : KJ_DLQ_NO_LADDER;
        return;
    }
    out->attempt = block_end; /* the copy's kjobs-attempt: its next run starts after it */
    size_t step = (size_t)runs < cfg->retry_delay_count ? (size_t)runs : cfg->retry_delay_count;
    int64_t delay = cfg->retry_delays_ms[step - 1];
    if (result->outcome == KJ_OUTCOME_RETRY && result->delay_ms >= 0) {
        /* A job's own delay: the step with the longest delay not above it (the job hops on
         * at that step's release time until its not-before), and never less than that
         * step's delay, so every record of a step is due exactly its delay after it was
         * written and a ladder partition's due times follow its offsets. */
        delay = result->delay_ms < KJ_RETRY_MAX_DELAY_MS ? result->delay_ms : KJ_RETRY_MAX_DELAY_MS;
        step = (size_t)kj_retry_step_for_delay(cfg, delay);
        if (delay < cfg->retry_delays_ms[step - 1]) delay = cfg->retry_delays_ms[step - 1];
    }
    out->step = (int)step;
    out->not_before_ms = now_ms + delay;
}
