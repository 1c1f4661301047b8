/*
 * tests/unit/test_retry_policy.c — the retry policy as a table: for every failure class, at the
 * attempt boundaries (first, ladder end, max_attempts - 1, max_attempts, beyond), under several
 * ladders (three steps, one step, more steps than attempts, unsorted delays, no ladder,
 * max_attempts 1), with and without a handler's own delay (retry_after), the table says where
 * the job goes: ladder step N due at now + delay, or the DLQ, and the error class it carries.
 *
 * The table was first run against kj_router_decide(), the router's copy of the rule before the
 * policy had a module of its own; it pins that behaviour.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "processor/config.h"
#include "processor/handlers.h"
#include "processor/header_contract.h"
#include "processor/retry_policy.h"

#define NOW   1000000
#define NONE  (-1) /* no delay asked for: the ladder's */
#define DLQ   0    /* expected step of a dead letter */
#define MAX_D KJ_RETRY_MAX_DELAY_MS

/* The ladders the table is checked under: retry.delays and retry.max_attempts. */
typedef struct ladder {
    const char *name;
    const char *delays;
    const char *max_attempts;
} ladder;

enum { L3, L1, L5, LUNSORTED, LNONE, LMAX1, LADDER_COUNT };

static const ladder ladders[LADDER_COUNT] = {
    [L3] = {"L3", "300ms,10s,1m", "6"},               /* more attempts than steps */
    [L1] = {"L1", "5s", "3"},                         /* one step, used again and again */
    [L5] = {"L5", "1s,2s,4s,8s,16s", "3"},            /* more steps than attempts */
    [LUNSORTED] = {"LUNSORTED", "1m,300ms,10s", "5"}, /* delays not in order */
    [LNONE] = {"LNONE", "", "4"},                     /* no ladder: every failure is dead */
    [LMAX1] = {"LMAX1", "10s,1m,10m", "1"},           /* one attempt: every failure is dead */
};

/* Why a job is dead-lettered, in the order the policy checks. */
enum {
    WHY_NONE = KJ_DLQ_NONE,
    WHY_CLASS = KJ_DLQ_NOT_RETRYABLE,
    WHY_EXHAUSTED = KJ_DLQ_ATTEMPTS_EXHAUSTED,
    WHY_NO_LADDER = KJ_DLQ_NO_LADDER,
};

typedef struct row {
    int ladder;
    kj_outcome outcome;
    int attempt;
    int64_t retry_after_ms; /* the result's delay_ms; NONE = -1 */
    int step;               /* expected: 1..N, or DLQ */
    int64_t delay_ms;       /* expected: not_before - now (ladder steps only) */
    int why;                /* expected reason of a dead letter */
} row;

#define RETRY   KJ_OUTCOME_RETRY
#define TIMEOUT KJ_OUTCOME_TIMEOUT

static const row rows[] = {
    /* L3 "300ms,10s,1m", 6 attempts: attempt n → step min(n, 3), then the DLQ at 6 */
    {L3, RETRY, 1, NONE, 1, 300, WHY_NONE},
    {L3, RETRY, 2, NONE, 2, 10000, WHY_NONE},
    {L3, RETRY, 3, NONE, 3, 60000, WHY_NONE},
    {L3, RETRY, 4, NONE, 3, 60000, WHY_NONE},
    {L3, RETRY, 5, NONE, 3, 60000, WHY_NONE},
    {L3, RETRY, 6, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L3, RETRY, 7, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L3, TIMEOUT, 1, NONE, 1, 300, WHY_NONE},
    {L3, TIMEOUT, 2, NONE, 2, 10000, WHY_NONE},
    {L3, TIMEOUT, 3, NONE, 3, 60000, WHY_NONE},
    {L3, TIMEOUT, 5, NONE, 3, 60000, WHY_NONE},
    {L3, TIMEOUT, 6, NONE, DLQ, 0, WHY_EXHAUSTED},
    /* a negative delay_ms is "no delay asked for" */
    {L3, RETRY, 2, -5, 2, 10000, WHY_NONE},
    /* retry_after: the step with the longest delay <= it (else the first), due at
     * now + max(it, that step's delay), capped at KJ_RETRY_MAX_DELAY_MS; the attempt does
     * not choose the step */
    {L3, RETRY, 1, 0, 1, 300, WHY_NONE},
    {L3, RETRY, 1, 299, 1, 300, WHY_NONE},
    {L3, RETRY, 1, 300, 1, 300, WHY_NONE},
    {L3, RETRY, 1, 301, 1, 301, WHY_NONE},
    {L3, RETRY, 1, 9999, 1, 9999, WHY_NONE},
    {L3, RETRY, 1, 10000, 2, 10000, WHY_NONE},
    {L3, RETRY, 1, 20000, 2, 20000, WHY_NONE},
    {L3, RETRY, 1, 59999, 2, 59999, WHY_NONE},
    {L3, RETRY, 1, 60000, 3, 60000, WHY_NONE},
    {L3, RETRY, 1, 7200000, 3, 7200000, WHY_NONE},
    {L3, RETRY, 1, MAX_D, 3, MAX_D, WHY_NONE},
    {L3, RETRY, 1, MAX_D + 1, 3, MAX_D, WHY_NONE},
    {L3, RETRY, 1, INT64_MAX, 3, MAX_D, WHY_NONE},
    {L3, RETRY, 5, 0, 1, 300, WHY_NONE},
    {L3, RETRY, 5, 20000, 2, 20000, WHY_NONE},
    {L3, RETRY, 6, 20000, DLQ, 0, WHY_EXHAUSTED}, /* attempts exhausted: no delay helps */
    {L3, TIMEOUT, 1, 20000, 1, 300, WHY_NONE},    /* a timeout asks for nothing */
    {L3, TIMEOUT, 4, 20000, 3, 60000, WHY_NONE},

    /* L1 "5s", 3 attempts */
    {L1, RETRY, 1, NONE, 1, 5000, WHY_NONE},
    {L1, RETRY, 2, NONE, 1, 5000, WHY_NONE},
    {L1, RETRY, 3, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L1, TIMEOUT, 2, NONE, 1, 5000, WHY_NONE},
    {L1, TIMEOUT, 3, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L1, RETRY, 1, 1000, 1, 5000, WHY_NONE},
    {L1, RETRY, 2, 9000, 1, 9000, WHY_NONE},
    {L1, RETRY, 3, 9000, DLQ, 0, WHY_EXHAUSTED},

    /* L5 "1s,2s,4s,8s,16s", 3 attempts: the ladder's end is never reached */
    {L5, RETRY, 1, NONE, 1, 1000, WHY_NONE},
    {L5, RETRY, 2, NONE, 2, 2000, WHY_NONE},
    {L5, RETRY, 3, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L5, TIMEOUT, 2, NONE, 2, 2000, WHY_NONE},
    {L5, TIMEOUT, 3, NONE, DLQ, 0, WHY_EXHAUSTED},
    {L5, RETRY, 1, 16000, 5, 16000, WHY_NONE}, /* a delay may reach steps attempts cannot */
    {L5, RETRY, 2, 5000, 3, 5000, WHY_NONE},

    /* LUNSORTED "1m,300ms,10s", 5 attempts: attempt n → step min(n, 3) whatever its delay; a
     * delay → the step with the longest delay <= it, else the shortest step */
    {LUNSORTED, RETRY, 1, NONE, 1, 60000, WHY_NONE},
    {LUNSORTED, RETRY, 2, NONE, 2, 300, WHY_NONE},
    {LUNSORTED, RETRY, 3, NONE, 3, 10000, WHY_NONE},
    {LUNSORTED, RETRY, 4, NONE, 3, 10000, WHY_NONE},
    {LUNSORTED, RETRY, 5, NONE, DLQ, 0, WHY_EXHAUSTED},
    {LUNSORTED, TIMEOUT, 1, NONE, 1, 60000, WHY_NONE},
    {LUNSORTED, RETRY, 1, 100, 2, 300, WHY_NONE},
    {LUNSORTED, RETRY, 1, 5000, 2, 5000, WHY_NONE},
    {LUNSORTED, RETRY, 1, 30000, 3, 30000, WHY_NONE},
    {LUNSORTED, RETRY, 1, 60000, 1, 60000, WHY_NONE},

    /* LNONE: no ladder */
    {LNONE, RETRY, 1, NONE, DLQ, 0, WHY_NO_LADDER},
    {LNONE, RETRY, 1, 1000, DLQ, 0, WHY_NO_LADDER},
    {LNONE, TIMEOUT, 3, NONE, DLQ, 0, WHY_NO_LADDER},
    {LNONE, RETRY, 4, NONE, DLQ, 0, WHY_EXHAUSTED}, /* exhausted is named first */

    /* LMAX1: the first failure is the last */
    {LMAX1, RETRY, 1, NONE, DLQ, 0, WHY_EXHAUSTED},
    {LMAX1, RETRY, 1, 20000, DLQ, 0, WHY_EXHAUSTED},
    {LMAX1, TIMEOUT, 1, NONE, DLQ, 0, WHY_EXHAUSTED},
};

/* Classes that are never retried, under every ladder, at every attempt, whatever delay the
 * result carries: the DLQ, reason "class". */
static const kj_outcome never_retried[] = {KJ_OUTCOME_FAIL, KJ_OUTCOME_DECODE,
                                           KJ_OUTCOME_UNKNOWN_TYPE, KJ_OUTCOME_INVALID_HEADER};
static const int any_attempt[] = {1, 2, 3, 5, 6, 7, 1000};
static const int64_t any_delay[] = {NONE, 0, 20000, MAX_D + 1};

/* ---- the decision under test, and what it returned ----------------------------------------- */

typedef struct fixture {
    kj_config cfg[LADDER_COUNT];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    char err[512];
    for (int l = 0; l < LADDER_COUNT; l++) {
        kj_config_defaults(&f->cfg[l]);
        if (kj_config_set(&f->cfg[l], "retry.delays", ladders[l].delays, err, sizeof(err)) ||
            kj_config_set(&f->cfg[l], "retry.max_attempts", ladders[l].max_attempts, err,
                          sizeof(err))) {
            fprintf(stderr, "%s: %s\n", ladders[l].name, err);
            return -1;
        }
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    for (int l = 0; l < LADDER_COUNT; l++)
        kj_config_free(&f->cfg[l]);
    free(f);
    return 0;
}

static kj_retry_decision decide(const fixture *f, int l, kj_outcome outcome, int attempt,
                                int64_t retry_after_ms) {
    kjobs_result_t result;
    memset(&result, 0, sizeof(result));
    result.outcome = outcome;
    result.delay_ms = retry_after_ms;
    kj_retry_decision d;
    memset(&d, 0xa5, sizeof(d)); /* every field must be written */
    kj_retry_decide(&f->cfg[l], attempt, &result, NOW, &d);
    return d;
}

/* ---- the checks -------------------------------------------------------------------------------
 */

static void check(const fixture *f, int l, kj_outcome outcome, int attempt, int64_t retry_after,
                  int step, int64_t delay_ms, int why, const char *where) {
    kj_retry_decision d = decide(f, l, outcome, attempt, retry_after);
    bool ok = d.to_dlq == (step == DLQ) && d.step == step && d.attempt == attempt &&
              d.now_ms == NOW && d.not_before_ms == (step ? NOW + delay_ms : 0) &&
              (int)d.reason == why && strcmp(d.error_class, kj_outcome_error_class(outcome)) == 0;
    if (!ok) {
        fprintf(stderr,
                "%s: ladder %s, %s, attempt %d, retry_after %lld: expected step %d +%lld (why "
                "%d), got to_dlq %d step %d not_before %lld (attempt %d, class %s, why %d)\n",
                where, ladders[l].name, kj_outcome_name(outcome), attempt, (long long)retry_after,
                step, (long long)delay_ms, why, d.to_dlq, d.step, (long long)d.not_before_ms,
                d.attempt, d.error_class, (int)d.reason);
        fail();
    }
}

static void test_table(void **state) {
    const fixture *f = *state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const row *r = &rows[i];
        char where[32];
        snprintf(where, sizeof(where), "row %zu", i);
        check(f, r->ladder, r->outcome, r->attempt, r->retry_after_ms, r->step, r->delay_ms, r->why,
              where);
    }
}

static void test_never_retried(void **state) {
    const fixture *f = *state;
    for (int l = 0; l < LADDER_COUNT; l++)
        for (size_t c = 0; c < sizeof(never_retried) / sizeof(never_retried[0]); c++)
            for (size_t a = 0; a < sizeof(any_attempt) / sizeof(any_attempt[0]); a++)
                for (size_t d = 0; d < sizeof(any_delay) / sizeof(any_delay[0]); d++)
                    check(f, l, never_retried[c], any_attempt[a], any_delay[d], DLQ, 0, WHY_CLASS,
                          "never retried");
}

/* Every retryable failure under every ladder, at every attempt up to max_attempts + 1: the
 * table's rules restated as a loop, so no (ladder, attempt) pair is left out. */
static void test_retryable_every_attempt(void **state) {
    const fixture *f = *state;
    static const kj_outcome retryable[] = {KJ_OUTCOME_RETRY, KJ_OUTCOME_TIMEOUT};
    for (int l = 0; l < LADDER_COUNT; l++) {
        const kj_config *cfg = &f->cfg[l];
        for (size_t c = 0; c < 2; c++)
            for (int attempt = 1; attempt <= cfg->retry_max_attempts + 1; attempt++) {
                int step = DLQ, why = WHY_NONE;
                int64_t delay = 0;
                if (attempt >= cfg->retry_max_attempts)
                    why = WHY_EXHAUSTED;
                else if (cfg->retry_delay_count == 0)
                    why = WHY_NO_LADDER;
                else {
                    step = attempt < (int)cfg->retry_delay_count ? attempt
                                                                 : (int)cfg->retry_delay_count;
                    delay = cfg->retry_delays_ms[step - 1];
                }
                check(f, l, retryable[c], attempt, NONE, step, delay, why, "every attempt");
            }
    }
}

/* The step for a delay (also what a hop uses): the longest step delay <= it, else the shortest. */
static void test_step_for_delay(void **state) {
    const fixture *f = *state;
    static const struct {
        int ladder;
        int64_t delay_ms;
        int step;
    } cases[] = {
        {L3, INT64_MIN, 1},
        {L3, -1, 1},
        {L3, 0, 1},
        {L3, 299, 1},
        {L3, 300, 1},
        {L3, 9999, 1},
        {L3, 10000, 2},
        {L3, 65000, 3},
        {L3, 3600000, 3},
        {L3, INT64_MAX, 3},
        {L1, 0, 1},
        {L1, 5000, 1},
        {L1, INT64_MAX, 1},
        {L5, 3999, 2},
        {L5, 4000, 3},
        {L5, 16000, 5},
        {LUNSORTED, 0, 2},
        {LUNSORTED, 300, 2},
        {LUNSORTED, 10000, 3},
        {LUNSORTED, 59999, 3},
        {LUNSORTED, 60000, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int step = kj_retry_step_for_delay(&f->cfg[cases[i].ladder], cases[i].delay_ms);
        if (step != cases[i].step) {
            fprintf(stderr, "ladder %s, delay %lld: expected step %d, got %d\n",
                    ladders[cases[i].ladder].name, (long long)cases[i].delay_ms, cases[i].step,
                    step);
            fail();
        }
    }
}

/* retry.in_place_attempts = 2: each run owns a block of 3 attempts, so the ladder step follows
 * the runs, not the attempts (attempts 1-3: step 1; 4-6: step 2; 7-9: step 3), the copy's
 * kjobs-attempt is its block's end (a run ending early, e.g. by a timeout, still moves on by a
 * step), and retry.max_attempts counts every attempt: a failure in the last block is dead. */
static void test_in_place_attempts_keep_the_ladder_steps(void **state) {
    (void)state;
    kj_config cfg;
    char err[256];
    kj_config_defaults(&cfg);
    assert_int_equal(kj_config_set(&cfg, "retry.delays", "1s,10s,1m", err, sizeof(err)), 0);
    assert_int_equal(kj_config_set(&cfg, "retry.max_attempts", "12", err, sizeof(err)), 0);
    assert_int_equal(kj_config_set(&cfg, "retry.in_place_attempts", "2", err, sizeof(err)), 0);
    static const int want_step[] = {0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0, 0, 0};
    static const int want_attempt[] = {0, 3, 3, 3, 6, 6, 6, 9, 9, 9, 10, 11, 12};
    for (int attempt = 1; attempt <= 12; attempt++)
        for (int c = 0; c < 2; c++) { /* a retry, or a timeout (never retried in place) */
            kjobs_result_t result = {.outcome = c ? KJ_OUTCOME_TIMEOUT : KJ_OUTCOME_RETRY,
                                     .delay_ms = NONE};
            kj_retry_decision d;
            kj_retry_decide(&cfg, attempt, &result, NOW, &d);
            assert_int_equal(d.attempt, want_attempt[attempt]);
            if (want_step[attempt] == 0) { /* run 4 would start at attempt 13 > 12 */
                assert_true(d.to_dlq);
                assert_int_equal(d.reason, KJ_DLQ_ATTEMPTS_EXHAUSTED);
                continue;
            }
            assert_false(d.to_dlq);
            assert_int_equal(d.step, want_step[attempt]);
            assert_int_equal(d.not_before_ms, NOW + cfg.retry_delays_ms[d.step - 1]);
        }
    /* a handler's own delay still picks the step by the delay */
    kjobs_result_t own = {.outcome = KJ_OUTCOME_RETRY, .delay_ms = 60000};
    kj_retry_decision d;
    /* the default max_attempts (4) with L = 2 (docs/retries.md): the tries in place shorten
     * the ladder to one step, attempt 4 being the last */
    kj_config short_cfg = cfg;
    assert_int_equal(kj_config_set(&short_cfg, "retry.max_attempts", "4", err, sizeof(err)), 0);
    kjobs_result_t retry = {.outcome = KJ_OUTCOME_RETRY, .delay_ms = NONE};
    kj_retry_decide(&short_cfg, 3, &retry, NOW, &d);
    assert_false(d.to_dlq);
    assert_int_equal(d.step, 1);
    assert_int_equal(d.attempt, 3);
    kj_retry_decide(&short_cfg, 4, &retry, NOW, &d);
    assert_true(d.to_dlq);
    assert_int_equal(d.reason, KJ_DLQ_ATTEMPTS_EXHAUSTED);
    kj_retry_decide(&cfg, 1, &own, NOW, &d);
    assert_int_equal(d.step, 3);
    /* out of range is a config error naming the setting */
    assert_int_not_equal(kj_config_set(&cfg, "retry.in_place_attempts", "101", err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "retry.in_place_attempts"));
    assert_int_not_equal(kj_config_set(&cfg, "retry.in_place_delay", "11s", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "retry.in_place_delay"));
    kj_config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_never_retried),
        cmocka_unit_test(test_retryable_every_attempt),
        cmocka_unit_test(test_step_for_delay),
        cmocka_unit_test(test_in_place_attempts_keep_the_ladder_steps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
