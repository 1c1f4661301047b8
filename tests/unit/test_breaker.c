/*
 * test_breaker.c — the DLQ circuit breaker's trip rules (processor/breaker.c): consecutive
 * dead letters, the windowed ratio with its minimum fill, rules disabled by 0, and reset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "processor/breaker.h"

static void test_consecutive_rule_trips_at_the_limit(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, 5, 0, 0, 0.0), 0);
    for (int i = 0; i < 4; i++)
        assert_false(kj_breaker_record(&b, true));
    assert_false(kj_breaker_record(&b, false)); /* a success breaks the run */
    for (int i = 0; i < 4; i++)
        assert_false(kj_breaker_record(&b, true));
    assert_true(kj_breaker_record(&b, true));
    assert_true(b.open);
    assert_non_null(strstr(b.reason, "5 jobs in a row"));
    assert_false(kj_breaker_record(&b, true)); /* trips once, stays open */
    kj_breaker_free(&b);
}

static void test_ratio_rule_waits_for_min_window(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, 0, 10, 6, 0.5), 0);
    /* 5 dead of 5: ratio 100% but below min_window */
    for (int i = 0; i < 5; i++)
        assert_false(kj_breaker_record(&b, true));
    assert_true(kj_breaker_record(&b, false)); /* 5 of 6 >= 50% once the window holds 6 */
    kj_breaker_free(&b);
}

static void test_ratio_rule_slides(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, 0, 4, 4, 0.75), 0);
    /* pattern d,ok,ok,ok then d,d,d: the window forgets the old outcomes */
    assert_false(kj_breaker_record(&b, true));
    for (int i = 0; i < 3; i++)
        assert_false(kj_breaker_record(&b, false));
    assert_false(kj_breaker_record(&b, true)); /* window: ok ok ok d -> 1/4 */
    assert_false(kj_breaker_record(&b, true)); /* ok ok d d -> 2/4 */
    assert_true(kj_breaker_record(&b, true));  /* ok d d d -> 3/4 = 75% */
    kj_breaker_free(&b);
}

static void test_disabled_rules_never_trip(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, 0, 0, 0, 0.0), 0);
    for (int i = 0; i < 100000; i++)
        assert_false(kj_breaker_record(&b, true));
    kj_breaker_free(&b);
    assert_int_equal(kj_breaker_init(&b, 0, 100, 10, 0.0), 0); /* ratio 0 = off */
    for (int i = 0; i < 1000; i++)
        assert_false(kj_breaker_record(&b, true));
    kj_breaker_free(&b);
}

static void test_reset_forgets_history(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, 3, 10, 10, 0.5), 0);
    for (int i = 0; i < 3; i++)
        kj_breaker_record(&b, true);
    assert_true(b.open);
    kj_breaker_reset(&b);
    assert_false(b.open);
    assert_false(kj_breaker_record(&b, true));
    assert_false(kj_breaker_record(&b, true));
    assert_true(kj_breaker_record(&b, true));
    kj_breaker_free(&b);
}

static void test_bad_parameters_rejected(void **state) {
    (void)state;
    kj_breaker b;
    assert_int_equal(kj_breaker_init(&b, -1, 0, 0, 0.0), -1);
    assert_int_equal(kj_breaker_init(&b, 0, 10, 5, 1.5), -1);
    assert_int_equal(kj_breaker_init(&b, 0, -3, 0, 0.5), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consecutive_rule_trips_at_the_limit),
        cmocka_unit_test(test_ratio_rule_waits_for_min_window),
        cmocka_unit_test(test_ratio_rule_slides),
        cmocka_unit_test(test_disabled_rules_never_trip),
        cmocka_unit_test(test_reset_forgets_history),
        cmocka_unit_test(test_bad_parameters_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
