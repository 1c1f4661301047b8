/*
 * tests/unit/test_flow_control.c — partitions/flow_control.h: the token bucket's admissions and
 * due times under an explicit clock, group-scope scaling, the concurrency cap's FIFO promises
 * (a freed slot goes to the longest-waiting lane, a promise of a forgotten lane passes on), and
 * the end-to-end wait: a parked lane of a real engine runs when a slot is released.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "partitions/flow_control.h"

static void test_rejects_bad_limits(void **state) {
    (void)state;
    kj_flow_limit bad[][2] = {
        {{.type = "a"}},                          /* neither rate nor cap */
        {{.type = "a", .rate = 5, .burst = 0.5}}, /* burst below one job */
        {{.type = "a", .rate = -1, .burst = 1}},  /* negative rate */
        {{.type = "", .concurrency = 1}},         /* no type */
        {{.type = "a", .concurrency = 1}, {.type = "a", .concurrency = 2}}, /* twice */
    };
    size_t counts[] = {1, 1, 1, 1, 2};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        errno = 0;
        assert_null(kj_flow_new(bad[i], counts[i]));
        assert_int_equal(errno, EINVAL);
    }
    kj_flow *f = kj_flow_new(NULL, 0);
    assert_non_null(f);
    assert_int_equal(kj_flow_find(f, "a"), -1);
    kj_flow_free(f);
}

/* 10 jobs/s, burst 2: two at once, then one every 100 ms; the wait says when. */
static void test_token_bucket(void **state) {
    (void)state;
    kj_flow_limit l[] = {{.type = "email", .rate = 10, .burst = 2},
                         {.type = "other", .concurrency = 3}};
    kj_flow *f = kj_flow_new(l, 2);
    assert_non_null(f);
    int i = kj_flow_find(f, "email");
    assert_int_equal(i, 0);
    assert_int_equal(kj_flow_find(f, "other"), 1);
    assert_int_equal(kj_flow_find(f, "none"), -1);
    kj_flow_wait w;
    int64_t t = 1000000;
    assert_true(kj_flow_admit(f, i, true, NULL, t, &w));
    assert_true(kj_flow_admit(f, i, true, NULL, t, &w));
    assert_false(kj_flow_admit(f, i, true, NULL, t, &w));
    assert_int_equal(w.reason, KJ_FLOW_RATE);
    assert_int_equal(w.until_ms, t + 100);
    assert_false(kj_flow_admit(f, i, true, NULL, t + 99, &w));
    assert_int_equal(w.until_ms, t + 100);
    assert_true(kj_flow_admit(f, i, true, NULL, t + 100, &w));
    assert_false(kj_flow_admit(f, i, true, NULL, t + 150, &w));
    assert_int_equal(w.until_ms, t + 200);
    /* idle for a minute: the bucket holds at most burst */
    t += 60000;
    assert_true(kj_flow_admit(f, i, true, NULL, t, &w));
    assert_true(kj_flow_admit(f, i, true, NULL, t, &w));
    assert_false(kj_flow_admit(f, i, true, NULL, t, &w));
    /* no cap on this type: nothing to release, running stays 0 */
    assert_false(kj_flow_has_cap(f, i));
    assert_int_equal(kj_flow_running(f, i), 0);
    kj_flow_free(f);
}

/* Group scope: half the partitions, half the rate and burst (burst never below 1). */
static void test_group_share(void **state) {
    (void)state;
    kj_flow_limit l[] = {{.type = "g", .rate = 10, .burst = 4, .group_scope = true},
                         {.type = "p", .rate = 10, .burst = 4}};
    kj_flow *f = kj_flow_new(l, 2);
    kj_flow_set_share(f, 0.5);
    kj_flow_wait w;
    int64_t t = 5000;
    int admitted_g = 0, admitted_p = 0;
    while (kj_flow_admit(f, 0, false, NULL, t, &w))
        admitted_g++;
    while (kj_flow_admit(f, 1, false, NULL, t, &w))
        admitted_p++;
    assert_int_equal(admitted_g, 2); /* burst 4 x 0.5 */
    assert_int_equal(admitted_p, 4); /* process scope: unscaled */
    assert_false(kj_flow_admit(f, 0, false, NULL, t, &w));
    assert_int_equal(w.until_ms, t + 200); /* 5 jobs/s */
    kj_flow_set_share(f, 0.01);            /* tiny share: burst stays 1 job */
    assert_true(kj_flow_admit(f, 0, false, NULL, t + 10000, &w));
    assert_false(kj_flow_admit(f, 0, false, NULL, t + 10000, &w));
    kj_flow_free(f);
}

/* Lanes only as identities here: an engine with a no-op callback. */
static void noop_batch(kj_lane *lane, void *lo, void **items, size_t count, void *eo) {
    (void)lane, (void)lo, (void)items, (void)count, (void)eo;
}

static void test_cap_fifo_promises(void **state) {
    (void)state;
    kj_engine_config ec = {.workers = 1, .max_batch = 1};
    kj_engine *e = kj_engine_new(&ec, noop_batch, NULL);
    kj_lane *a = kj_engine_lane_add(e, NULL), *b = kj_engine_lane_add(e, NULL),
            *c = kj_engine_lane_add(e, NULL);
    kj_flow_limit l[] = {{.type = "t", .concurrency = 1}};
    kj_flow *f = kj_flow_new(l, 1);
    kj_flow_wait w;
    assert_true(kj_flow_has_cap(f, 0));
    assert_true(kj_flow_admit(f, 0, true, a, 0, &w));
    assert_int_equal(kj_flow_running(f, 0), 1);
    assert_false(kj_flow_admit(f, 0, true, b, 0, &w));
    assert_int_equal(w.reason, KJ_FLOW_CONCURRENCY);
    assert_int_equal(w.until_ms, KJ_ENGINE_PARKED);
    assert_false(kj_flow_admit(f, 0, true, c, 0, &w));
    /* without take_slot a capped type is not held back (one slot covers a run of jobs) */
    assert_true(kj_flow_admit(f, 0, false, c, 0, &w));
    kj_flow_release(f, 0); /* promised to b, the first waiter */
    assert_int_equal(kj_flow_running(f, 0), 0);
    assert_false(kj_flow_admit(f, 0, true, c, 0, &w)); /* c may not take b's slot */
    assert_false(kj_flow_admit(f, 0, true, a, 0, &w)); /* nor may a, which never waited */
    assert_true(kj_flow_admit(f, 0, true, b, 0, &w));
    kj_flow_release(f, 0);            /* promised to c (then a) */
    kj_flow_forget_lane(f, c, false); /* c revoked: its promise passes to a */
    assert_true(kj_flow_admit(f, 0, true, a, 0, &w));
    assert_false(kj_flow_admit(f, 0, true, b, 0, &w));
    kj_flow_forget_lane(f, b, false); /* b dropped its parked jobs: no promise left behind */
    kj_flow_release(f, 0);
    assert_true(kj_flow_admit(f, 0, true, c, 0, &w)); /* nobody waits: any lane may run */
    kj_flow_release(f, 0);
    kj_flow_free(f);
    kj_engine_lane_remove(a, NULL, NULL);
    kj_engine_lane_remove(b, NULL, NULL);
    kj_engine_lane_remove(c, NULL, NULL);
    kj_engine_destroy(e);
}

/* End to end on a real engine: items of type t (cap 1) on two lanes; each batch admits its
 * head, parks when refused, and holds its slot until the test releases it. Every item runs
 * exactly once, never two at once, and a parked lane runs only after a release. */
struct e2e {
    kj_flow *flow;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, max_running, ran, parked;
    bool hold; /* a running item waits until released by the test */
    int releases_allowed;
};

static void e2e_batch(kj_lane *lane, void *lo, void **items, size_t count, void *eo) {
    (void)lo;
    struct e2e *x = eo;
    kj_flow_wait w;
    if (!kj_flow_admit(x->flow, 0, true, lane, 0, &w)) {
        if (kj_engine_lane_requeue(lane, items, count, w.until_ms) != 0) abort();
        pthread_mutex_lock(&x->mu);
        x->parked++;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
        return;
    }
    pthread_mutex_lock(&x->mu);
    x->running++;
    if (x->running > x->max_running) x->max_running = x->running;
    pthread_cond_broadcast(&x->cv);
    while (x->hold && x->releases_allowed == 0)
        pthread_cond_wait(&x->cv, &x->mu);
    if (x->hold) x->releases_allowed--;
    x->running--;
    pthread_mutex_unlock(&x->mu);
    kj_flow_release(x->flow, 0);
    pthread_mutex_lock(&x->mu);
    x->ran += (int)count;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static bool e2e_wait(struct e2e *x, const int *v, int want) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    bool ok = true;
    pthread_mutex_lock(&x->mu);
    while (*v < want && ok)
        ok = pthread_cond_timedwait(&x->cv, &x->mu, &ts) == 0 || *v >= want;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

static void test_parked_lane_runs_on_release(void **state) {
    (void)state;
    struct e2e x = {.hold = true};
    pthread_mutex_init(&x.mu, NULL);
    pthread_cond_init(&x.cv, NULL);
    kj_flow_limit l[] = {{.type = "t", .concurrency = 1}};
    x.flow = kj_flow_new(l, 1);
    kj_engine_config ec = {.workers = 2, .max_batch = 1};
    kj_engine *e = kj_engine_new(&ec, e2e_batch, &x);
    kj_lane *a = kj_engine_lane_add(e, NULL), *b = kj_engine_lane_add(e, NULL);
    for (uintptr_t i = 1; i <= 3; i++) {
        assert_true(kj_engine_push(a, (void *)i, 0) > 0);
        assert_true(kj_engine_push(b, (void *)(i + 10), 0) > 0);
    }
    kj_engine_lane_flush(a);
    kj_engine_lane_flush(b);
    assert_true(e2e_wait(&x, &x.running, 1)); /* one runs, held */
    assert_true(e2e_wait(&x, &x.parked, 1));  /* the other lane parked, holding no worker */
    for (int k = 1; k <= 6; k++) {
        pthread_mutex_lock(&x.mu);
        x.releases_allowed++;
        pthread_cond_broadcast(&x.cv);
        pthread_mutex_unlock(&x.mu);
        assert_true(e2e_wait(&x, &x.ran, k));
    }
    assert_int_equal(x.ran, 6);
    assert_int_equal(x.max_running, 1);
    assert_int_equal(kj_flow_running(x.flow, 0), 0);
    kj_flow_forget_lane(x.flow, a, true);
    kj_flow_forget_lane(x.flow, b, true);
    kj_engine_lane_remove(a, NULL, NULL);
    kj_engine_lane_remove(b, NULL, NULL);
    kj_flow_lane_removed(x.flow, a);
    kj_flow_lane_removed(x.flow, b);
    kj_engine_destroy(e);
    kj_flow_free(x.flow);
    pthread_cond_destroy(&x.cv);
    pthread_mutex_destroy(&x.mu);
}

/* A lane being removed is never queued again (a batch of it still running may ask), and a
 * clock stepped back does not freeze the bucket. */
static void test_closed_lane_and_clock_step(void **state) {
    (void)state;
    kj_engine_config ec = {.workers = 1, .max_batch = 1};
    kj_engine *e = kj_engine_new(&ec, noop_batch, NULL);
    kj_lane *a = kj_engine_lane_add(e, NULL), *b = kj_engine_lane_add(e, NULL);
    kj_flow_limit l[] = {{.type = "t", .concurrency = 1}, {.type = "r", .rate = 10, .burst = 1}};
    kj_flow *f = kj_flow_new(l, 2);
    kj_flow_wait w;
    assert_true(kj_flow_admit(f, 0, true, a, 0, &w));
    kj_flow_forget_lane(f, b, true);                   /* b is being revoked */
    assert_false(kj_flow_admit(f, 0, true, b, 0, &w)); /* its running batch asks: not queued */
    kj_flow_release(f, 0);                             /* nobody waits: no promise made */
    assert_true(kj_flow_admit(f, 0, true, a, 0, &w));
    kj_flow_release(f, 0);
    kj_flow_lane_removed(f, b);
    assert_true(kj_flow_admit(f, 0, true, b, 0, &w)); /* the address is a new lane now */
    kj_flow_release(f, 0);

    int64_t t = 10000000;
    assert_true(kj_flow_admit(f, 1, false, NULL, t, &w));
    assert_false(kj_flow_admit(f, 1, false, NULL, t - 3600000, &w)); /* stepped back an hour */
    assert_true(w.until_ms <= t - 3600000 + 100);                    /* a token in 100 ms */
    assert_true(kj_flow_admit(f, 1, false, NULL, t - 3600000 + 100, &w));
    kj_flow_free(f);
    kj_engine_lane_remove(a, NULL, NULL);
    kj_engine_lane_remove(b, NULL, NULL);
    kj_engine_destroy(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_bad_limits),
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_group_share),
        cmocka_unit_test(test_cap_fifo_promises),
        cmocka_unit_test(test_parked_lane_runs_on_release),
        cmocka_unit_test(test_closed_lane_and_clock_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
