/*
 * tests/unit/test_offset_tracker.c — the commit watermark: in-order and
 * out-of-order completion (and what stays held above the lowest pending offset), gaps, rejected
 * duplicates, growth past the initial capacity with a wrapped ring, clear/reset, advancing to the
 * consumer's position past an undeliverable tail (transaction markers), and a randomised comparison
 * against a naive model (a plain array scanned from the start).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "partitions/offset_tracker.h"

static void test_empty(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    assert_non_null(t);
    assert_int_equal(kj_offset_tracker_committable(t), -1);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 0), -1);
    kj_offset_tracker_free(t);
    kj_offset_tracker_free(NULL);
}

static void test_in_order(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(4);
    for (int64_t o = 100; o < 110; o++)
        assert_int_equal(kj_offset_tracker_add(t, o), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 100);
    assert_int_equal(kj_offset_tracker_pending(t), 10);
    for (int64_t o = 100; o < 110; o++) {
        assert_int_equal(kj_offset_tracker_complete(t, o), 0);
        assert_int_equal(kj_offset_tracker_committable(t), o + 1);
    }
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 110);
    kj_offset_tracker_free(t);
}

static void test_out_of_order(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    for (int64_t o = 0; o < 5; o++)
        assert_int_equal(kj_offset_tracker_add(t, o), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 3), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 1), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 0);
    assert_int_equal(kj_offset_tracker_pending(t), 3);
    assert_int_equal(kj_offset_tracker_held(t), 5); /* 1 and 3 done, but above pending 0 */
    assert_int_equal(kj_offset_tracker_complete(t, 0), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 2); /* 0,1 done; 2 pending */
    assert_int_equal(kj_offset_tracker_held(t), 3);        /* 2, 3 (done), 4 */
    assert_int_equal(kj_offset_tracker_complete(t, 2), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 4); /* 3 was already done */
    assert_int_equal(kj_offset_tracker_complete(t, 4), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 5);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    assert_int_equal(kj_offset_tracker_held(t), 0);
    kj_offset_tracker_free(t);
}

static void test_gaps(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    /* 11 and 12 are e.g. a transaction marker and a compacted record. */
    assert_int_equal(kj_offset_tracker_add(t, 10), 0);
    assert_int_equal(kj_offset_tracker_add(t, 13), 0);
    assert_int_equal(kj_offset_tracker_add(t, 20), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 11), -1); /* never added */
    assert_int_equal(kj_offset_tracker_complete(t, 21), -1);
    assert_int_equal(kj_offset_tracker_complete(t, 9), -1);
    assert_int_equal(kj_offset_tracker_complete(t, 10), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 13); /* jumps over the gap */
    assert_int_equal(kj_offset_tracker_complete(t, 20), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 13);
    assert_int_equal(kj_offset_tracker_complete(t, 13), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 21); /* last added + 1 */
    kj_offset_tracker_free(t);
}

static void test_rejects(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    assert_int_equal(kj_offset_tracker_add(t, -1), -1);
    assert_int_equal(kj_offset_tracker_add(t, 5), 0);
    assert_int_equal(kj_offset_tracker_add(t, 5), -1); /* duplicate */
    assert_int_equal(kj_offset_tracker_add(t, 4), -1); /* going back */
    assert_int_equal(kj_offset_tracker_add(t, 6), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 6), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 6), -1); /* already done, not at head */
    assert_int_equal(kj_offset_tracker_complete(t, 5), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 5), -1); /* already done, popped */
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    /* Still strictly increasing after everything drained. */
    assert_int_equal(kj_offset_tracker_add(t, 6), -1);
    assert_int_equal(kj_offset_tracker_add(t, 7), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 7);
    kj_offset_tracker_free(t);
}

/* Wrap the ring, then grow it while wrapped, and check nothing is lost or reordered. */
static void test_growth_wrapped(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(16);
    int64_t next = 0;
    for (int i = 0; i < 12; i++)
        assert_int_equal(kj_offset_tracker_add(t, next++), 0);
    for (int64_t o = 0; o < 10; o++) /* head moves to physical slot 10 */
        assert_int_equal(kj_offset_tracker_complete(t, o), 0);
    for (int i = 0; i < 1000; i++) /* wraps, then grows several times */
        assert_int_equal(kj_offset_tracker_add(t, next++ * 2), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 10);
    assert_int_equal(kj_offset_tracker_pending(t), 1002);
    /* Complete the newest half first, then the rest in reverse. */
    int64_t last = (next - 1) * 2;
    for (int64_t i = next - 1; i >= 12; i--)
        assert_int_equal(kj_offset_tracker_complete(t, i * 2), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 10);
    assert_int_equal(kj_offset_tracker_complete(t, 11), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 10);
    assert_int_equal(kj_offset_tracker_complete(t, 10), 0);
    assert_int_equal(kj_offset_tracker_committable(t), last + 1);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    kj_offset_tracker_free(t);
}

static void test_clear_and_reset(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    assert_int_equal(kj_offset_tracker_add(t, 50), 0);
    assert_int_equal(kj_offset_tracker_add(t, 51), 0);
    kj_offset_tracker_clear(t);
    assert_int_equal(kj_offset_tracker_committable(t), -1);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 50), -1);
    assert_int_equal(kj_offset_tracker_add(t, 3), 0); /* anything goes after clear */
    assert_int_equal(kj_offset_tracker_committable(t), 3);

    kj_offset_tracker_reset(t, 40);
    assert_int_equal(kj_offset_tracker_committable(t), 40);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    assert_int_equal(kj_offset_tracker_add(t, 39), -1);
    assert_int_equal(kj_offset_tracker_add(t, 40), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 40);
    assert_int_equal(kj_offset_tracker_complete(t, 40), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 41);

    kj_offset_tracker_reset(t, 0);
    assert_int_equal(kj_offset_tracker_committable(t), 0);
    assert_int_equal(kj_offset_tracker_add(t, 0), 0);
    kj_offset_tracker_reset(t, -1);
    assert_int_equal(kj_offset_tracker_committable(t), -1);
    kj_offset_tracker_free(t);
}

/* Randomised: a naive model must agree after every operation. */
static void test_against_model(void **state) {
    (void)state;
    enum { N = 5000 };
    int64_t *offs = malloc(N * sizeof *offs);
    char *done = calloc(N, 1);
    size_t *order = malloc(N * sizeof *order);
    assert_non_null(offs);
    assert_non_null(done);
    assert_non_null(order);
    srand(12345);
    kj_offset_tracker *t = kj_offset_tracker_new(1);
    int64_t o = 1000;
    size_t added = 0, completed = 0;
    for (size_t i = 0; i < N; i++)
        order[i] = i;
    /* Completion order: a shuffle with limited displacement, like real batches. */
    for (size_t i = 0; i < N; i++) {
        size_t j = i + (size_t)rand() % (N - i < 64 ? N - i : 64);
        size_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    while (completed < N) {
        if (added < N && (rand() % 3 != 0 || completed == added)) {
            o += 1 + rand() % 3;
            offs[added] = o;
            assert_int_equal(kj_offset_tracker_add(t, o), 0);
            added++;
        } else {
            /* Next completion in `order` whose offset was added; else the lowest pending. */
            size_t k = order[completed];
            if (k >= added) {
                for (k = 0; k < added && done[k]; k++)
                    ;
                /* Swap it into this position of order[] to keep order a permutation. */
                for (size_t m = completed; m < N; m++)
                    if (order[m] == k) {
                        order[m] = order[completed];
                        order[completed] = k;
                        break;
                    }
            }
            assert_int_equal(kj_offset_tracker_complete(t, offs[k]), 0);
            assert_int_equal(kj_offset_tracker_complete(t, offs[k]), -1);
            done[k] = 1;
            completed++;
        }
        size_t first = 0;
        while (first < added && done[first])
            first++;
        int64_t want = added == 0 ? -1 : first < added ? offs[first] : offs[added - 1] + 1;
        assert_int_equal(kj_offset_tracker_committable(t), want);
        assert_int_equal(kj_offset_tracker_pending(t), added - completed);
        assert_int_equal(kj_offset_tracker_held(t), added - first);
    }
    kj_offset_tracker_free(t);
    free(offs);
    free(done);
    free(order);
}

/* Issue #10: a transactional producer's 3 jobs (offsets 0..2) and its commit marker (3).
 * A read_committed consumer delivers 0..2 and its position is 4: once the jobs are done the
 * committable offset must reach 4, not stay at 3 (lag 1 forever). */
static void test_advance_past_undeliverable_tail(void **state) {
    (void)state;
    kj_offset_tracker *t = kj_offset_tracker_new(0);
    assert_int_equal(kj_offset_tracker_advance(t, 4), 1); /* nothing added yet: a fresh start */
    assert_int_equal(kj_offset_tracker_committable(t), 4);
    kj_offset_tracker_clear(t);
    for (int64_t o = 0; o < 3; o++)
        assert_int_equal(kj_offset_tracker_add(t, o), 0);
    /* jobs pending: the position must not move the commit past them */
    assert_int_equal(kj_offset_tracker_advance(t, 4), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 1), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 2), 0);
    assert_int_equal(kj_offset_tracker_advance(t, 4), 0); /* 0 still pending (out of order) */
    assert_int_equal(kj_offset_tracker_committable(t), 0);
    assert_int_equal(kj_offset_tracker_complete(t, 0), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 3); /* last delivered + 1 */
    assert_int_equal(kj_offset_tracker_advance(t, 4), 1);  /* ... then the position */
    assert_int_equal(kj_offset_tracker_committable(t), 4);
    assert_int_equal(kj_offset_tracker_pending(t), 0);
    /* never backwards, never a logical offset */
    assert_int_equal(kj_offset_tracker_advance(t, 4), 0);
    assert_int_equal(kj_offset_tracker_advance(t, 2), 0);
    assert_int_equal(kj_offset_tracker_advance(t, -1001), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 4);
    /* below the position nothing can be added again; at or past it consumption goes on */
    assert_int_equal(kj_offset_tracker_add(t, 3), -1);
    assert_int_equal(kj_offset_tracker_add(t, 6), 0); /* 4, 5: an aborted transaction's gap */
    assert_int_equal(kj_offset_tracker_committable(t), 6);
    assert_int_equal(kj_offset_tracker_complete(t, 6), 0);
    assert_int_equal(kj_offset_tracker_committable(t), 7);
    kj_offset_tracker_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_gaps),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_growth_wrapped),
        cmocka_unit_test(test_clear_and_reset),
        cmocka_unit_test(test_against_model),
        cmocka_unit_test(test_advance_past_undeliverable_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
