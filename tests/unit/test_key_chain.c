/*
 * tests/unit/test_key_chain.c — the ladder copies by key behind retry.ordering = "key": a job
 * waits only behind an earlier origin of its own key; the copy to follow is the earliest
 * origin's furthest step; duplicates count; removing what is not there changes nothing; keys
 * with binary bytes and many keys (growth); and a randomised comparison against a naive list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "partitions/key_chain.h"

static void add(kj_key_chain *c, const char *key, int64_t origin, int step, int64_t nb) {
    kj_chain_copy copy = {.origin = origin, .step = step, .not_before_ms = nb};
    assert_int_equal(kj_key_chain_add(c, key, strlen(key), &copy), 0);
}

static bool blocked(kj_key_chain *c, const char *key, int64_t origin, kj_chain_copy *out) {
    return kj_key_chain_blocker(c, key, strlen(key), origin, out);
}

static void test_waits_only_behind_an_earlier_origin_of_its_key(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    assert_non_null(c);
    assert_false(blocked(c, "a", 10, NULL));
    add(c, "a", 10, 1, 1000);
    assert_true(blocked(c, "a", 11, NULL));
    assert_false(blocked(c, "a", 10, NULL)); /* its own copy (a re-run after a crash) */
    assert_false(blocked(c, "a", 9, NULL));  /* an earlier job: not behind a later one */
    assert_false(blocked(c, "b", 11, NULL)); /* other keys flow */
    assert_false(blocked(c, "", 11, NULL));
    assert_int_equal(kj_key_chain_keys(c), 1);
    kj_key_chain_remove(c, "a", 1, 10, 1);
    assert_false(blocked(c, "a", 11, NULL));
    assert_int_equal(kj_key_chain_keys(c), 0);
    kj_key_chain_free(c);
    kj_key_chain_free(NULL);
}

static void test_follows_the_earliest_origin_to_its_furthest_step(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    add(c, "k", 20, 1, 500); /* a follower, parked */
    add(c, "k", 10, 1, 100); /* the head on step 1 ... */
    add(c, "k", 10, 2, 900); /* ... and its copy on step 2 (added before step 1's went) */
    add(c, "k", 10, 2, 800); /* a duplicate copy: counted, the later not-before kept */
    kj_chain_copy out;
    assert_true(blocked(c, "k", 30, &out));
    assert_int_equal(out.origin, 10);
    assert_int_equal(out.step, 2);
    assert_int_equal(out.not_before_ms, 900);
    assert_true(blocked(c, "k", 20, &out)); /* the follower itself waits for the head */
    assert_int_equal(out.origin, 10);
    kj_key_chain_remove(c, "k", 1, 10, 1);
    kj_key_chain_remove(c, "k", 1, 10, 2);
    assert_true(blocked(c, "k", 20, NULL)); /* one of the two step-2 copies is still there */
    kj_key_chain_remove(c, "k", 1, 10, 2);
    assert_false(blocked(c, "k", 20, NULL)); /* the head is done: the follower may run */
    assert_true(blocked(c, "k", 30, &out));  /* and a later job waits behind the follower */
    assert_int_equal(out.origin, 20);
    assert_int_equal(out.not_before_ms, 500);
    kj_key_chain_free(c);
}

/* whether the copy to wait behind is itself parked (the worker waits in memory only for a
 * retry: a parked copy may be behind the waiting one on its lane) */
static void test_parked_flag(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    kj_chain_copy parked = {.origin = 5, .step = 1, .not_before_ms = 10, .parked = true};
    assert_int_equal(kj_key_chain_add(c, "p", 1, &parked), 0);
    kj_chain_copy out;
    assert_true(kj_key_chain_blocker(c, "p", 1, 6, &out));
    assert_true(out.parked);
    add(c, "r", 5, 1, 10); /* a retry */
    assert_true(kj_key_chain_blocker(c, "r", 1, 6, &out));
    assert_false(out.parked);
    assert_int_equal(kj_key_chain_add(c, "r", 1, &parked), 0); /* same (origin, step): parked */
    assert_true(kj_key_chain_blocker(c, "r", 1, 6, &out));
    assert_true(out.parked);
    kj_key_chain_free(c);
}

static void test_removing_what_is_not_there_changes_nothing(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    kj_key_chain_remove(c, "x", 1, 5, 1); /* no key */
    add(c, "x", 5, 1, 0);
    kj_key_chain_remove(c, "x", 1, 5, 2); /* no such step */
    kj_key_chain_remove(c, "x", 1, 4, 1); /* no such origin */
    assert_true(blocked(c, "x", 6, NULL));
    kj_key_chain_remove(c, "x", 1, 5, 1);
    kj_key_chain_remove(c, "x", 1, 5, 1); /* twice: a rewind consumed it twice */
    assert_false(blocked(c, "x", 6, NULL));
    add(c, "x", 5, 1, 0); /* and it is counted again from zero */
    assert_true(blocked(c, "x", 6, NULL));
    kj_key_chain_clear(c);
    assert_false(blocked(c, "x", 6, NULL));
    assert_int_equal(kj_key_chain_keys(c), 0);
    kj_key_chain_free(c);
}

static void test_binary_keys(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    const char a[] = {'k', 0, 'a'}, b[] = {'k', 0, 'b'};
    kj_chain_copy copy = {.origin = 1, .step = 1};
    assert_int_equal(kj_key_chain_add(c, a, sizeof(a), &copy), 0);
    assert_true(kj_key_chain_blocker(c, a, sizeof(a), 2, NULL));
    assert_false(kj_key_chain_blocker(c, b, sizeof(b), 2, NULL));
    assert_false(kj_key_chain_blocker(c, a, 1, 2, NULL)); /* "k" is another key */
    kj_key_chain_free(c);
}

/* The naive model: a list of (key, origin, step) copies. */
typedef struct {
    int key;
    int64_t origin;
    int step;
} naive;

static void test_random_against_a_naive_list(void **state) {
    (void)state;
    kj_key_chain *c = kj_key_chain_new();
    enum { KEYS = 300, OPS = 60000 };
    naive *list = calloc(OPS, sizeof(*list));
    size_t n = 0;
    srand(16);
    for (int op = 0; op < OPS; op++) {
        int key = rand() % KEYS;
        char name[16];
        snprintf(name, sizeof(name), "key-%d", key);
        int64_t origin = rand() % 50;
        int step = 1 + rand() % 3;
        int what = rand() % 3;
        if (what == 0) {
            add(c, name, origin, step, origin * 10);
            list[n++] = (naive){key, origin, step};
        } else if (what == 1) {
            kj_key_chain_remove(c, name, strlen(name), origin, step);
            for (size_t i = 0; i < n; i++)
                if (list[i].key == key && list[i].origin == origin && list[i].step == step) {
                    list[i] = list[--n];
                    break;
                }
        } else {
            int64_t want = -1;
            int want_step = 0;
            for (size_t i = 0; i < n; i++)
                if (list[i].key == key && list[i].origin < origin &&
                    (want < 0 || list[i].origin < want ||
                     (list[i].origin == want && list[i].step > want_step))) {
                    want = list[i].origin;
                    want_step = list[i].step;
                }
            kj_chain_copy out;
            bool got = blocked(c, name, origin, &out);
            assert_int_equal(got, want >= 0);
            if (got) {
                assert_int_equal(out.origin, want);
                assert_int_equal(out.step, want_step);
            }
        }
    }
    size_t keys = 0;
    for (int key = 0; key < KEYS; key++)
        for (size_t i = 0; i < n; i++)
            if (list[i].key == key) {
                keys++;
                break;
            }
    assert_int_equal(kj_key_chain_keys(c), keys);
    free(list);
    kj_key_chain_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_only_behind_an_earlier_origin_of_its_key),
        cmocka_unit_test(test_follows_the_earliest_origin_to_its_furthest_step),
        cmocka_unit_test(test_parked_flag),
        cmocka_unit_test(test_removing_what_is_not_there_changes_nothing),
        cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_random_against_a_naive_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
