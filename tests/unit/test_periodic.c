/*
 * tests/unit/test_periodic.c — the pure parts of processor/periodic.c: what an owner enqueues
 * when it starts (kj_periodic_plan_entry: no state, nothing due, late ticks after a short
 * handover, missed ticks after downtime under skip and run_once, the enumeration cap) and the
 * deterministic jitter (same for every owner, within [0, jitter], spread out).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "processor/periodic.h"

#define S  1000LL
#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */

static kj_periodic_entry entry(const char *cron, kj_missed_policy missed, int64_t catch_up_ms) {
    kj_periodic_entry e;
    memset(&e, 0, sizeof e);
    e.name = "e";
    char err[128];
    if (kj_cron_parse(cron, &e.cron, err, sizeof err)) fail_msg("%s", err);
    e.missed = missed;
    e.catch_up_ms = catch_up_ms;
    return e;
}

static kj_periodic_plan plan(const kj_periodic_entry *e, int64_t last, int64_t now) {
    char err[128];
    kj_cron_zone *z = kj_cron_zone_open("UTC", err, sizeof err);
    kj_periodic_plan p;
    assert_int_equal(kj_periodic_plan_entry(e, z, last, now, &p), 0);
    kj_cron_zone_close(z);
    return p;
}

static void test_no_state(void **state) {
    (void)state;
    kj_periodic_entry e = entry("*/10 * * * * *", KJ_MISSED_RUN_ONCE, 60 * S);
    kj_periodic_plan p = plan(&e, -1, T0 + 12 * S);
    assert_int_equal(p.next, T0 + 20 * S); /* no backfill: the first tick after now */
    assert_int_equal(p.first_late, -1);
    assert_int_equal(p.run_once_tick, -1);
    assert_int_equal(p.missed, 0);
}

static void test_nothing_due(void **state) {
    (void)state;
    kj_periodic_entry e = entry("*/10 * * * * *", KJ_MISSED_SKIP, 60 * S);
    kj_periodic_plan p = plan(&e, T0 + 10 * S, T0 + 19 * S);
    assert_int_equal(p.first_late, -1);
    assert_int_equal(p.next, T0 + 20 * S);
    /* now exactly on the tick: that tick is due */
    p = plan(&e, T0 + 10 * S, T0 + 20 * S);
    assert_int_equal(p.first_late, T0 + 20 * S);
}

static void test_late_after_handover(void **state) {
    (void)state;
    /* Last tick 10 s, now 45 s, catch_up 60 s: 20, 30, 40 are late: all enqueued. */
    for (int policy = KJ_MISSED_SKIP; policy <= KJ_MISSED_RUN_ONCE; policy++) {
        kj_periodic_entry e = entry("*/10 * * * * *", (kj_missed_policy)policy, 60 * S);
        kj_periodic_plan p = plan(&e, T0 + 10 * S, T0 + 45 * S);
        assert_int_equal(p.first_late, T0 + 20 * S);
        assert_int_equal(p.missed, 0);
        assert_int_equal(p.run_once_tick, -1);
        assert_int_equal(p.next, T0 + 50 * S);
    }
}

static void test_missed_after_downtime(void **state) {
    (void)state;
    /* Last tick 10 s, now 125 s, catch_up 30 s: ticks 20..90 (8) are missed (before 95 s),
     * 100, 110, 120 are late. */
    kj_periodic_entry e = entry("*/10 * * * * *", KJ_MISSED_SKIP, 30 * S);
    kj_periodic_plan p = plan(&e, T0 + 10 * S, T0 + 125 * S);
    assert_int_equal(p.missed, 8);
    assert_int_equal(p.run_once_tick, -1);
    assert_int_equal(p.first_late, T0 + 100 * S);
    e.missed = KJ_MISSED_RUN_ONCE;
    p = plan(&e, T0 + 10 * S, T0 + 125 * S);
    assert_int_equal(p.missed, 8);
    assert_int_equal(p.run_once_tick, T0 + 90 * S);
    assert_int_equal(p.first_late, T0 + 100 * S);
    /* catch_up 0: everything before now is missed; a tick exactly at now is late. */
    e.catch_up_ms = 0;
    p = plan(&e, T0 + 10 * S, T0 + 125 * S);
    assert_int_equal(p.missed, 11);
    assert_int_equal(p.run_once_tick, T0 + 120 * S);
    assert_int_equal(p.first_late, -1);
    assert_int_equal(p.next, T0 + 130 * S);
    p = plan(&e, T0 + 10 * S, T0 + 130 * S);
    assert_int_equal(p.run_once_tick, T0 + 120 * S);
    assert_int_equal(p.first_late, T0 + 130 * S);
}

static void test_enumeration_cap(void **state) {
    (void)state;
    /* Every second for 3 days: more than the enumeration cap; the latest missed is still found. */
    kj_periodic_entry e = entry("* * * * * *", KJ_MISSED_RUN_ONCE, 0);
    int64_t now = T0 + 3 * 86400 * S + 500;
    kj_periodic_plan p = plan(&e, T0, now);
    assert_int_equal(p.missed, KJ_PERIODIC_COUNT_CAP);
    assert_int_equal(p.run_once_tick, T0 + 3 * 86400 * S);
    assert_int_equal(p.next, T0 + 3 * 86400 * S + S);
}

static void test_jitter(void **state) {
    (void)state;
    assert_int_equal(kj_periodic_jitter("e", T0, 0), 0);
    int64_t a = kj_periodic_jitter("nightly", T0, 30 * S);
    assert_int_equal(a, kj_periodic_jitter("nightly", T0, 30 * S)); /* any owner: the same */
    int buckets[10] = {0};
    bool differ = false;
    for (int i = 0; i < 1000; i++) {
        int64_t j = kj_periodic_jitter("nightly", T0 + i * 86400 * S, 30 * S);
        assert_true(j >= 0 && j <= 30 * S);
        buckets[j * 10 / (30 * S + 1)]++;
        differ = differ || j != a;
    }
    assert_true(differ);
    for (int b = 0; b < 10; b++)
        assert_true(buckets[b] > 50); /* roughly uniform: ~100 each */
    assert_true(kj_periodic_jitter("a", T0, 30 * S) != kj_periodic_jitter("b", T0, 30 * S) ||
                kj_periodic_jitter("a", T0 + S, 30 * S) != kj_periodic_jitter("b", T0 + S, 30 * S));
}

/* The last owner's clock ran 25 s ahead: its recorded tick is in this owner's future; the
 * next tick starts after it, so none it enqueued is enqueued again. */
static void test_recorded_tick_ahead_of_the_clock(void **state) {
    (void)state;
    kj_periodic_entry e = entry("* * * * * *", KJ_MISSED_SKIP, 60 * S);
    kj_periodic_plan p = plan(&e, T0 + 25 * S, T0);
    assert_int_equal(p.first_late, -1);
    assert_int_equal(p.run_once_tick, -1);
    assert_int_equal(p.next, T0 + 26 * S);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recorded_tick_ahead_of_the_clock),
        cmocka_unit_test(test_no_state),
        cmocka_unit_test(test_nothing_due),
        cmocka_unit_test(test_late_after_handover),
        cmocka_unit_test(test_missed_after_downtime),
        cmocka_unit_test(test_enumeration_cap),
        cmocka_unit_test(test_jitter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
