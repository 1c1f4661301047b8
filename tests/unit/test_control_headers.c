/*
 * tests/unit/test_control_headers.c — kjobs control headers as untrusted input: strict
 * decimal parsing (no sign, spaces, trailing junk or overflow), validation of every header a
 * ladder record must carry (missing, repeated, garbage, far-future not-before, bad topic
 * name), and the hold rule that keeps a ladder partition's release times in offset order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "processor/control_headers.h"

#define NOW 1700000000000LL

static bool parse(const char *text, int64_t max, int64_t *out) {
    return kj_control_parse_uint(text, strlen(text), max, out);
}

static void test_parse_uint_is_strict(void **state) {
    (void)state;
    int64_t v = -1;
    assert_true(parse("0", 10, &v));
    assert_int_equal(v, 0);
    assert_true(parse("007", 10, &v));
    assert_int_equal(v, 7);
    assert_true(parse("1000", 1000, &v));
    assert_int_equal(v, 1000);
    assert_true(parse("9223372036854775807", INT64_MAX, &v));
    assert_int_equal(v, INT64_MAX);
    const char *bad[] = {"",
                         " 7",
                         "7 ",
                         " 7x",
                         "7x",
                         "+7",
                         "-5",
                         "0x10",
                         "1e3",
                         "7.0",
                         "9223372036854775808",
                         "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        assert_false(parse(bad[i], INT64_MAX, &v));
        assert_int_equal(v, 42);
    }
    assert_false(parse("1001", 1000, &v));
    assert_false(parse("5", 0, &v));
    assert_false(kj_control_parse_uint(NULL, 0, 10, &v));
    assert_false(kj_control_parse_uint("12\0", 3, 100, &v)); /* NUL inside */
}

static rd_kafka_headers_t *ladder_headers(const char *attempt, const char *not_before,
                                          const char *topic, const char *partition,
                                          const char *offset) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    if (attempt) rd_kafka_header_add(h, "kjobs-attempt", -1, attempt, -1);
    if (not_before) rd_kafka_header_add(h, "kjobs-not-before", -1, not_before, -1);
    if (topic) rd_kafka_header_add(h, "kjobs-original-topic", -1, topic, -1);
    if (partition) rd_kafka_header_add(h, "kjobs-original-partition", -1, partition, -1);
    if (offset) rd_kafka_header_add(h, "kjobs-original-offset", -1, offset, -1);
    return h;
}

static void expect_invalid(rd_kafka_headers_t *h, const char *header, const char *in_reason) {
    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), -1);
    assert_non_null(c.invalid_header);
    assert_string_equal(c.invalid_header, header);
    assert_non_null(strstr(c.reason, header));
    if (in_reason) assert_non_null(strstr(c.reason, in_reason));
    rd_kafka_headers_destroy(h);
}

static void test_valid_ladder_headers(void **state) {
    (void)state;
    rd_kafka_headers_t *h = ladder_headers("2", "1700000005000", "jobs", "3", "12345");
    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_null(c.invalid_header);
    assert_int_equal(c.attempt, 2);
    assert_int_equal(c.not_before_ms, 1700000005000LL);
    assert_string_equal(c.original_topic, "jobs");
    assert_int_equal(c.original_partition, 3);
    assert_int_equal(c.original_offset, 12345);
    int64_t nb;
    assert_int_equal(kj_control_not_before(h, NOW, &nb), 0);
    assert_int_equal(nb, 1700000005000LL);
    rd_kafka_headers_destroy(h);
}

static void test_invalid_ladder_headers(void **state) {
    (void)state;
    expect_invalid(rd_kafka_headers_new(1), "kjobs-attempt", "missing");
    expect_invalid(ladder_headers(" 7x", "1", "jobs", "0", "0"), "kjobs-attempt", NULL);
    expect_invalid(ladder_headers("0", "1", "jobs", "0", "0"), "kjobs-attempt", NULL);
    expect_invalid(ladder_headers("1001", "1", "jobs", "0", "0"), "kjobs-attempt", NULL);
    expect_invalid(ladder_headers("1", NULL, "jobs", "0", "0"), "kjobs-not-before", "missing");
    expect_invalid(ladder_headers("1", "-5", "jobs", "0", "0"), "kjobs-not-before", NULL);
    /* 10^12 ms ahead: far past the longest retry delay */
    char far[32];
    snprintf(far, sizeof(far), "%lld", NOW + 1000000000000LL);
    expect_invalid(ladder_headers("1", far, "jobs", "0", "0"), "kjobs-not-before", "ahead");
    expect_invalid(ladder_headers("1", "1", NULL, "0", "0"), "kjobs-original-topic", "missing");
    expect_invalid(ladder_headers("1", "1", "jobs\nx", "0", "0"), "kjobs-original-topic", NULL);
    expect_invalid(ladder_headers("1", "1", "", "0", "0"), "kjobs-original-topic", NULL);
    expect_invalid(ladder_headers("1", "1", "jobs", "2147483648", "0"), "kjobs-original-partition",
                   NULL);
    expect_invalid(ladder_headers("1", "1", "jobs", "0", "-1"), "kjobs-original-offset", NULL);
    /* a repeated control header is ambiguous */
    rd_kafka_headers_t *h = ladder_headers("1", "1", "jobs", "0", "0");
    rd_kafka_header_add(h, "kjobs-attempt", -1, "3", -1);
    expect_invalid(h, "kjobs-attempt", "more than once");
    /* the longest allowed delay (plus skew) is still valid */
    snprintf(far, sizeof(far), "%lld", NOW + KJ_RETRY_MAX_DELAY_MS + KJ_CLOCK_SKEW_MS);
    h = ladder_headers("1", far, "jobs", "0", "0");
    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    rd_kafka_headers_destroy(h);
}

static void test_hold_never_exceeds_step_delay_after_write(void **state) {
    (void)state;
    const int64_t step = 300;
    /* due before the cap: held until due */
    assert_int_equal(kj_control_hold_until(NOW + 100, NOW, NOW, step), NOW + 100);
    /* a per-job delay longer than the step: released at write time + step delay */
    assert_int_equal(kj_control_hold_until(NOW + 20000, NOW, NOW + 5, step), NOW + 300);
    /* unknown or future timestamps count from the fetch time */
    assert_int_equal(kj_control_hold_until(NOW + 20000, -1, NOW, step), NOW + 300);
    assert_int_equal(kj_control_hold_until(NOW + 20000, NOW + 99999, NOW, step), NOW + 300);
    /* a far-future not-before holds for at most the step's delay */
    assert_int_equal(kj_control_hold_until(INT64_MAX / 2, NOW, NOW, step), NOW + 300);

    /* A ladder partition written in time order, mixing the step's own delay and longer
     * per-job delays: release times never decrease along the offsets, so the head is always
     * released first and nobody waits behind a later-due record. */
    int64_t last = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t written = NOW + i * 7;
        int64_t nb = written + (i % 3 == 0 ? 20000 + i : step);
        int64_t hold = kj_control_hold_until(nb, written, written + 50, step);
        assert_true(hold >= last);
        assert_true(hold <= written + step);
        last = hold;
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_uint_is_strict),
        cmocka_unit_test(test_valid_ladder_headers),
        cmocka_unit_test(test_invalid_ladder_headers),
        cmocka_unit_test(test_hold_never_exceeds_step_delay_after_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
