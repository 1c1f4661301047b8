/*
 * tests/unit/test_weighted_semaphore.c — processor/weighted_semaphore.h: waiters pass in the
 * order they came (a small weight that would fit waits behind a large one that does not; one
 * release grants as many as fit, in order), a weight over half the limit passes once at most
 * half is held, a timed-out waiter takes its units and leaves the queue, kj_wsem_open and the
 * bypass let waiters through, and under contention every unit comes back. Threads are awaited
 * through the semaphore's own count of queued waiters, never by sleeping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "processor/weighted_semaphore.h"

typedef struct {
    kj_wsem *s;
    long long n;
    int timeout_ms;
    atomic_int *order; /* shared: the next pass's number */
    int passed_as;     /* this thread's place among the passes (1 = first) */
    atomic_bool passed;
    kj_wsem_result result;
    pthread_t thread;
} acquirer;

static void *acquire_main(void *arg) {
    acquirer *a = arg;
    a->result = kj_wsem_acquire(a->s, a->n, a->timeout_ms, NULL, NULL);
    a->passed_as = atomic_fetch_add(a->order, 1) + 1;
    atomic_store(&a->passed, true);
    return NULL;
}

/* Starts an acquirer and returns once the semaphore has refused it room and queued it; fails
 * if it passes instead. */
static void start_waiting(acquirer *a) {
    int before = kj_wsem_waiters(a->s);
    assert_int_equal(pthread_create(&a->thread, NULL, acquire_main, a), 0);
    while (kj_wsem_waiters(a->s) == before && !atomic_load(&a->passed))
        sched_yield();
    assert_false(atomic_load(&a->passed));
}

/* Room for the large weight only once the first holder leaves, and then not for the small one
 * too: the small one, which would fit at once, passes only after the large one released. */
static void test_a_small_weight_never_overtakes_a_waiting_large_one(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int order = 0;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 60, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    acquirer large = {.s = &s, .n = 70, .timeout_ms = 60000, .order = &order};
    acquirer small = {.s = &s, .n = 35, .timeout_ms = 60000, .order = &order};
    start_waiting(&large); /* 60 + 70 > 100 */
    start_waiting(&small); /* 60 + 35 fits, but the large one came first: queued */
    assert_int_equal(kj_wsem_held(&s), 60);
    kj_wsem_release(&s, 60); /* room for the large one (70), then not for 35 more */
    pthread_join(large.thread, NULL);
    assert_int_equal(large.result, KJ_WSEM_ACQUIRED);
    assert_int_equal(kj_wsem_held(&s), 70);
    assert_int_equal(kj_wsem_waiters(&s), 1); /* 70 + 35 > 100: the small one still waits */
    kj_wsem_release(&s, 70);
    pthread_join(small.thread, NULL);
    assert_int_equal(small.result, KJ_WSEM_ACQUIRED);
    assert_int_equal(large.passed_as, 1);
    assert_int_equal(small.passed_as, 2);
    assert_int_equal(kj_wsem_held(&s), 35);
    kj_wsem_destroy(&s);
}

/* One release granting room to several waiters at once, in order, as far as it goes. */
static void test_a_release_grants_the_queue_in_order_while_it_fits(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int order = 0;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 100, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    acquirer a = {.s = &s, .n = 40, .timeout_ms = 60000, .order = &order};
    acquirer b = {.s = &s, .n = 40, .timeout_ms = 60000, .order = &order};
    acquirer c = {.s = &s, .n = 40, .timeout_ms = 60000, .order = &order};
    start_waiting(&a);
    start_waiting(&b);
    start_waiting(&c);
    kj_wsem_release(&s, 100); /* a and b fit (80); c does not (120) */
    pthread_join(a.thread, NULL);
    pthread_join(b.thread, NULL);
    assert_int_equal(kj_wsem_held(&s), 80);
    assert_int_equal(kj_wsem_waiters(&s), 1);
    kj_wsem_release(&s, 40);
    pthread_join(c.thread, NULL);
    assert_int_equal(kj_wsem_held(&s), 80);
    kj_wsem_destroy(&s);
}

static void test_a_weight_over_half_the_limit_needs_only_half_of_it_free(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int order = 0;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 500, 1000, NULL, NULL), KJ_WSEM_ACQUIRED); /* 0 held */
    assert_int_equal(kj_wsem_held(&s), 500);
    kj_wsem_release(&s, 500);
    assert_int_equal(kj_wsem_acquire(&s, 80, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    acquirer large = {.s = &s, .n = 300, .timeout_ms = 60000, .order = &order};
    start_waiting(&large); /* 80 held: more than half */
    kj_wsem_release(&s, 20);
    assert_int_equal(kj_wsem_waiters(&s), 1); /* 60: still more than half */
    kj_wsem_release(&s, 10);                  /* 50 held, half: 50 + 300 passes */
    pthread_join(large.thread, NULL);
    assert_int_equal(large.result, KJ_WSEM_ACQUIRED);
    assert_int_equal(kj_wsem_held(&s), 350);
    kj_wsem_destroy(&s);
}

/* A waiter that gives up leaves the queue: the next one is served by releases as usual, not
 * stuck behind a place no one holds. */
static void test_a_timed_out_waiter_takes_its_units_and_leaves_the_queue(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int order = 0;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 95, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    acquirer head = {.s = &s, .n = 40, .timeout_ms = 50, .order = &order};
    start_waiting(&head);
    pthread_join(head.thread, NULL);
    assert_int_equal(head.result, KJ_WSEM_TIMED_OUT);
    assert_int_equal(kj_wsem_held(&s), 135); /* taken anyway: the caller releases them */
    assert_int_equal(kj_wsem_waiters(&s), 0);
    acquirer next = {.s = &s, .n = 5, .timeout_ms = 60000, .order = &order};
    start_waiting(&next);
    kj_wsem_release(&s, 95); /* 40 + 5 fits */
    pthread_join(next.thread, NULL);
    assert_int_equal(next.result, KJ_WSEM_ACQUIRED);
    assert_int_equal(kj_wsem_held(&s), 45);
    kj_wsem_destroy(&s);
}

static void test_open_lets_every_waiter_through(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int order = 0;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 100, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    acquirer a = {.s = &s, .n = 10, .timeout_ms = 60000, .order = &order};
    acquirer b = {.s = &s, .n = 20, .timeout_ms = 60000, .order = &order};
    start_waiting(&a);
    start_waiting(&b);
    kj_wsem_open(&s);
    pthread_join(a.thread, NULL);
    pthread_join(b.thread, NULL);
    assert_int_equal(a.result, KJ_WSEM_BYPASSED); /* not TIMED_OUT after 60 s */
    assert_int_equal(b.result, KJ_WSEM_BYPASSED);
    assert_int_equal(kj_wsem_held(&s), 130);
    assert_int_equal(kj_wsem_waiters(&s), 0);
    kj_wsem_destroy(&s);
}

static bool flag_set(void *opaque) {
    return atomic_load((atomic_bool *)opaque);
}

static void test_the_bypass_lets_a_waiter_through_without_room(void **state) {
    (void)state;
    kj_wsem s;
    atomic_bool unbounded = true;
    kj_wsem_init(&s, 100);
    assert_int_equal(kj_wsem_acquire(&s, 100, 1000, NULL, NULL), KJ_WSEM_ACQUIRED);
    assert_int_equal(kj_wsem_acquire(&s, 10, 60000, flag_set, &unbounded), KJ_WSEM_BYPASSED);
    assert_int_equal(kj_wsem_held(&s), 110);
    kj_wsem_destroy(&s);
}

/* Eight threads taking and giving back random weights (some over the limit), with short
 * timeouts and the semaphore opened now and then: whatever the interleaving, every unit taken
 * comes back and no thread is left queued. */
typedef struct {
    kj_wsem *s;
    unsigned seed;
    atomic_int *timeouts;
} stresser;

static void *stress_main(void *arg) {
    stresser *t = arg;
    for (int i = 0; i < 2000; i++) {
        t->seed = t->seed * 1103515245u + 12345u;
        long long n = (t->seed >> 16) % 40 + (i % 97 == 0 ? 150 : 0);
        if (kj_wsem_acquire(t->s, n, 5000, NULL, NULL) == KJ_WSEM_TIMED_OUT)
            atomic_fetch_add(t->timeouts, 1);
        if (i % 211 == 0) kj_wsem_open(t->s);
        sched_yield();
        kj_wsem_release(t->s, n);
    }
    return NULL;
}

static void test_every_unit_comes_back_under_contention(void **state) {
    (void)state;
    kj_wsem s;
    atomic_int timeouts = 0;
    kj_wsem_init(&s, 100);
    stresser t[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (stresser){.s = &s, .seed = (unsigned)i * 7919u + 1u, .timeouts = &timeouts};
        assert_int_equal(pthread_create(&th[i], NULL, stress_main, &t[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(kj_wsem_held(&s), 0);
    assert_int_equal(kj_wsem_waiters(&s), 0);
    assert_int_equal(atomic_load(&timeouts), 0); /* every wait ended by a release or an open */
    kj_wsem_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_small_weight_never_overtakes_a_waiting_large_one),
        cmocka_unit_test(test_a_release_grants_the_queue_in_order_while_it_fits),
        cmocka_unit_test(test_a_weight_over_half_the_limit_needs_only_half_of_it_free),
        cmocka_unit_test(test_a_timed_out_waiter_takes_its_units_and_leaves_the_queue),
        cmocka_unit_test(test_open_lets_every_waiter_through),
        cmocka_unit_test(test_the_bypass_lets_a_waiter_through_without_room),
        cmocka_unit_test(test_every_unit_comes_back_under_contention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
