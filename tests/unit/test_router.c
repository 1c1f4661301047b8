/*
 * tests/unit/test_router.c — the router's pure parts, without a broker: the size of a copy as
 * librdkafka counts it against message.max.bytes, checked against librdkafka itself, and which
 * delivery reports confirm a copy. (Where a failed job goes is the retry policy's:
 * tests/unit/test_retry_policy.c.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "processor/header_contract.h"
#include "processor/router.h"

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

/* Only a delivery report carrying the offset the broker stored the copy at completes its
 * source: a success without one (librdkafka's implicit acknowledgement, RD_KAFKA_OFFSET_INVALID;
 * or -1) is sent again, except in exactly-once mode; a failure never confirms. */
static void test_copy_confirmed_needs_an_offset(void **state) {
    (void)state;
    assert_true(kj_copy_confirmed(RD_KAFKA_RESP_ERR_NO_ERROR, 0, false));
    assert_true(kj_copy_confirmed(RD_KAFKA_RESP_ERR_NO_ERROR, 12345, false));
    assert_false(kj_copy_confirmed(RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_OFFSET_INVALID, false));
    assert_false(kj_copy_confirmed(RD_KAFKA_RESP_ERR_NO_ERROR, -1, false));
    assert_true(kj_copy_confirmed(RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_OFFSET_INVALID, true));
    assert_false(kj_copy_confirmed(RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 7, false));
    assert_false(
        kj_copy_confirmed(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_OFFSET_INVALID, true));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_size_matches_librdkafka),
        cmocka_unit_test(test_copy_confirmed_needs_an_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
