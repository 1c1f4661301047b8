/*
 * tests/unit/test_in_place.c — the set of jobs retried in place (partitions/in_place.h) against
 * a plain array model: random puts, replaces and removes over a small offset range (so probe
 * runs collide and wrap), every offset's presence and entry compared after each step; plus the
 * empty set, growth from zero, and consecutive offsets (the usual case) in bulk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "partitions/in_place.h"

#define RANGE 300

static void test_empty_set(void **state) {
    (void)state;
    kj_in_place s = {0};
    assert_null(kj_in_place_find(&s, 0));
    assert_false(kj_in_place_remove(&s, 7));
    assert_int_equal(kj_in_place_count(&s), 0);
    kj_in_place_clear(&s);
}

static void test_matches_a_model_under_random_operations(void **state) {
    (void)state;
    kj_in_place s = {0};
    int model[RANGE] = {0}; /* tries, 0 = absent */
    srand(12345);
    for (int step = 0; step < 200000; step++) {
        int64_t off = rand() % RANGE;
        if (rand() % 3) {
            kj_in_place_entry e = {.offset = off, .tries = 1 + rand() % 50, .due_ms = off * 7};
            assert_int_equal(kj_in_place_put(&s, &e), 0);
            model[off] = e.tries;
        } else {
            assert_int_equal(kj_in_place_remove(&s, off), model[off] != 0);
            model[off] = 0;
        }
        if (step % 997 == 0 || step > 199000) {
            size_t n = 0;
            for (int64_t o = 0; o < RANGE; o++) {
                kj_in_place_entry *e = kj_in_place_find(&s, o);
                if (!model[o]) {
                    assert_null(e);
                    continue;
                }
                n++;
                assert_non_null(e);
                assert_int_equal(e->tries, model[o]);
                assert_int_equal(e->due_ms, o * 7);
            }
            assert_int_equal(kj_in_place_count(&s), n);
        }
    }
    kj_in_place_clear(&s);
    assert_int_equal(kj_in_place_count(&s), 0);
}

static void test_a_whole_failing_batch(void **state) {
    (void)state;
    kj_in_place s = {0};
    const int64_t base = 1000000000LL, n = 100000;
    for (int64_t o = base; o < base + n; o++) {
        kj_in_place_entry e = {.offset = o, .tries = 1, .due_ms = 0};
        assert_int_equal(kj_in_place_put(&s, &e), 0);
    }
    assert_int_equal(kj_in_place_count(&s), n);
    assert_true(s.cap >= 2 * (size_t)n); /* load at most 1/2 */
    for (int64_t o = base; o < base + n; o += 2)
        assert_true(kj_in_place_remove(&s, o));
    for (int64_t o = base; o < base + n; o++)
        assert_true((kj_in_place_find(&s, o) != NULL) == ((o - base) % 2 == 1));
    assert_null(kj_in_place_find(&s, base + n));
    kj_in_place_clear(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_set),
        cmocka_unit_test(test_matches_a_model_under_random_operations),
        cmocka_unit_test(test_a_whole_failing_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
