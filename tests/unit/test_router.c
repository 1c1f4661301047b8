/*
 * tests/unit/test_router.c — the router's pure parts, without a broker: where a failed job
 * goes (ladder step for the attempt, or for a handler's own delay: the step with the longest
 * delay not above it, due no earlier than that step's delay), and the size of a copy as
 * librdkafka counts it against message.max.bytes, checked against librdkafka itself.
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
#include "processor/header_contract.h"
#include "processor/router.h"

static void noop_done(void *owner, int64_t offset, void *opaque) {
    (void)owner;
    (void)offset;
    (void)opaque;
}

typedef struct fixture {
    kj_config cfg;
    kj_router *router;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    char err[512];
    kj_config_defaults(&f->cfg);
    if (kj_config_set(&f->cfg, "retry.delays", "300ms,10s,1m", err, sizeof(err)) ||
        kj_config_set(&f->cfg, "retry.max_attempts", "6", err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err));
    f->router = kj_router_new(&f->cfg, conf, "test@host", noop_done, NULL, err, sizeof(err));
    if (!f->router) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    kj_router_free(f->router);
    kj_config_free(&f->cfg);
    free(f);
    return 0;
}

static kjobs_result_t retry_after(int64_t delay_ms) {
    kjobs_result_t r;
    memset(&r, 0, sizeof(r));
    r.outcome = KJ_OUTCOME_RETRY;
    r.delay_ms = delay_ms;
    return r;
}

static void test_step_for_delay(void **state) {
    fixture *f = *state;
    assert_int_equal(kj_router_step_for_delay(f->router, 0), 1);
    assert_int_equal(kj_router_step_for_delay(f->router, 299), 1);
    assert_int_equal(kj_router_step_for_delay(f->router, 300), 1);
    assert_int_equal(kj_router_step_for_delay(f->router, 9999), 1);
    assert_int_equal(kj_router_step_for_delay(f->router, 10000), 2);
    assert_int_equal(kj_router_step_for_delay(f->router, 65000), 3);
    assert_int_equal(kj_router_step_for_delay(f->router, 3600000), 3);
}

static void test_decide(void **state) {
    fixture *f = *state;
    const int64_t now = 1000000;
    kj_route_decision d;
    /* the ladder's own delays: attempt n → step min(n, N) */
    kjobs_result_t r = retry_after(-1);
    kj_router_decide(f->router, 1, &r, now, &d);
    assert_false(d.to_dlq);
    assert_int_equal(d.step, 1);
    assert_int_equal(d.not_before_ms, now + 300);
    kj_router_decide(f->router, 5, &r, now, &d);
    assert_int_equal(d.step, 3);
    assert_int_equal(d.not_before_ms, now + 60000);
    assert_string_equal(d.topic, "jobs.retry.3");
    /* a handler's delay: the step whose delay it covers; due at now + its delay */
    r = retry_after(20000);
    kj_router_decide(f->router, 1, &r, now, &d);
    assert_int_equal(d.step, 2);
    assert_int_equal(d.not_before_ms, now + 20000);
    r = retry_after(7200000); /* longer than the last step: last step, hops from there */
    kj_router_decide(f->router, 1, &r, now, &d);
    assert_int_equal(d.step, 3);
    assert_int_equal(d.not_before_ms, now + 7200000);
    /* shorter than the first step: never due before the step's delay (monotone partition) */
    r = retry_after(0);
    kj_router_decide(f->router, 4, &r, now, &d);
    assert_int_equal(d.step, 1);
    assert_int_equal(d.not_before_ms, now + 300);
    /* capped at the longest delay a header may carry */
    r = retry_after(INT64_MAX / 4);
    kj_router_decide(f->router, 1, &r, now, &d);
    assert_int_equal(d.not_before_ms, now + KJ_RETRY_MAX_DELAY_MS);
    /* attempts exhausted, permanent: the DLQ */
    r = retry_after(-1);
    kj_router_decide(f->router, 6, &r, now, &d);
    assert_true(d.to_dlq);
    r.outcome = KJ_OUTCOME_INVALID_HEADER;
    kj_router_decide(f->router, 1, &r, now, &d);
    assert_true(d.to_dlq);
    assert_string_equal(d.topic, "jobs.dlq");
}

/* kj_copy_wire_size() is exactly what librdkafka checks: a record of that size is accepted
 * by rd_kafka_producev() at message.max.bytes = size and refused one byte below. */
static void test_wire_size_matches_librdkafka(void **state) {
    (void)state;
    static const size_t value_lens[] = {0, 1, 127, 128, 5000, 16384, 200000};
    static const size_t key_lens[] = {0, 3, 200};
    static const size_t header_vals[] = {0, 1, 63, 64, 300, 9000};
    char *big = malloc(300000);
    memset(big, 'v', 300000);
    for (size_t v = 0; v < sizeof(value_lens) / sizeof(value_lens[0]); v++)
        for (size_t k = 0; k < sizeof(key_lens) / sizeof(key_lens[0]); k++)
            for (size_t hv = 0; hv < sizeof(header_vals) / sizeof(header_vals[0]); hv++) {
                rd_kafka_headers_t *h = rd_kafka_headers_new(4);
                rd_kafka_header_add(h, KJ_HDR_ERROR, -1, big, (ssize_t)header_vals[hv]);
                rd_kafka_header_add(h, "a-much-longer-header-name-than-usual-for-kjobs", -1, "x",
                                    1);
                rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "3", 1);
                size_t size = kj_copy_wire_size(key_lens[k], value_lens[v], h);
                if (size < 1000) { /* message.max.bytes is at least 1000 */
                    rd_kafka_headers_destroy(h);
                    continue;
                }
                for (int delta = 0; delta <= 1; delta++) {
                    char err[256], max[32];
                    rd_kafka_conf_t *conf = rd_kafka_conf_new();
                    snprintf(max, sizeof(max), "%zu", size - (size_t)delta);
                    assert_int_equal(
                        rd_kafka_conf_set(conf, "message.max.bytes", max, err, sizeof(err)),
                        RD_KAFKA_CONF_OK);
                    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
                    assert_non_null(rk);
                    rd_kafka_headers_t *copy = rd_kafka_headers_copy(h);
                    rd_kafka_resp_err_t e = rd_kafka_producev(
                        rk, RD_KAFKA_V_TOPIC("t"), RD_KAFKA_V_KEY(big, key_lens[k]),
                        RD_KAFKA_V_VALUE(big, value_lens[v]), RD_KAFKA_V_HEADERS(copy),
                        RD_KAFKA_V_END);
                    if (e) rd_kafka_headers_destroy(copy);
                    if (delta == 0 && e) {
                        fprintf(stderr, "size %zu refused at max %s: %s\n", size, max,
                                rd_kafka_err2str(e));
                        fail();
                    }
                    if (delta == 1) assert_int_equal(e, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
                    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE);
                    rd_kafka_destroy(rk);
                }
                rd_kafka_headers_destroy(h);
            }
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_step_for_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide, setup, teardown),
        cmocka_unit_test(test_wire_size_matches_librdkafka),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
