/*
 * tests/unit/test_header_contract.c — the kjobs-* header contract (processor/header_contract.h):
 * the wire names byte for byte; the control headers as untrusted input: strict decimal parsing
 * (no sign, spaces, trailing junk, overflow, oversized or non-UTF-8 values), topic names,
 * validation of every header a ladder record must carry (missing, repeated, garbage,
 * far-future not-before, bad topic name); the hold rule that keeps a ladder partition's
 * release times in offset order; and the writers, round-tripped through the parser; the
 * scheduling header kjobs-run-at and its deprecated alias kjobs-deliver-at (absent, valid, past,
 * malformed, repeated, too far; both present: equal is valid, different is invalid), the
 * scheduled ladder copy's attempt 0, and the RFC 3339 parser of `kjobs enqueue --at`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "processor/header_contract.h"

#define NOW 1700000000000LL

static bool parse(const char *text, int64_t max, int64_t *out) {
    return kj_hdr_parse_uint(text, strlen(text), max, out);
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
    assert_false(kj_hdr_parse_uint(NULL, 0, 10, &v));
    assert_false(kj_hdr_parse_uint("12\0", 3, 100, &v)); /* NUL inside */
}

static rd_kafka_headers_t *ladder_headers(const char *attempt, const char *not_before,
                                          const char *topic, const char *partition,
                                          const char *offset) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    if (attempt) rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, attempt, -1);
    if (not_before) rd_kafka_header_add(h, KJ_HDR_NOT_BEFORE, -1, not_before, -1);
    if (topic) rd_kafka_header_add(h, KJ_HDR_ORIGINAL_TOPIC, -1, topic, -1);
    if (partition) rd_kafka_header_add(h, KJ_HDR_ORIGINAL_PARTITION, -1, partition, -1);
    if (offset) rd_kafka_header_add(h, KJ_HDR_ORIGINAL_OFFSET, -1, offset, -1);
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
    expect_invalid(rd_kafka_headers_new(1), KJ_HDR_ATTEMPT, "missing");
    expect_invalid(ladder_headers(" 7x", "1", "jobs", "0", "0"), KJ_HDR_ATTEMPT, NULL);
    expect_invalid(ladder_headers("0", "1", "jobs", "0", "0"), KJ_HDR_ATTEMPT, NULL);
    expect_invalid(ladder_headers("1001", "1", "jobs", "0", "0"), KJ_HDR_ATTEMPT, NULL);
    expect_invalid(ladder_headers("1", NULL, "jobs", "0", "0"), KJ_HDR_NOT_BEFORE, "missing");
    expect_invalid(ladder_headers("1", "-5", "jobs", "0", "0"), KJ_HDR_NOT_BEFORE, NULL);
    /* 10^12 ms ahead: far past the longest retry delay */
    char far[32];
    snprintf(far, sizeof(far), "%lld", NOW + 1000000000000LL);
    expect_invalid(ladder_headers("1", far, "jobs", "0", "0"), KJ_HDR_NOT_BEFORE, "ahead");
    expect_invalid(ladder_headers("1", "1", NULL, "0", "0"), KJ_HDR_ORIGINAL_TOPIC, "missing");
    expect_invalid(ladder_headers("1", "1", "jobs\nx", "0", "0"), KJ_HDR_ORIGINAL_TOPIC, NULL);
    expect_invalid(ladder_headers("1", "1", "", "0", "0"), KJ_HDR_ORIGINAL_TOPIC, NULL);
    expect_invalid(ladder_headers("1", "1", "jobs", "2147483648", "0"), KJ_HDR_ORIGINAL_PARTITION,
                   NULL);
    expect_invalid(ladder_headers("1", "1", "jobs", "0", "-1"), KJ_HDR_ORIGINAL_OFFSET, NULL);
    /* a repeated control header is ambiguous */
    rd_kafka_headers_t *h = ladder_headers("1", "1", "jobs", "0", "0");
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "3", -1);
    expect_invalid(h, KJ_HDR_ATTEMPT, "more than once");
    /* the longest allowed delay (plus skew) is still valid */
    snprintf(far, sizeof(far), "%lld", NOW + KJ_RETRY_MAX_DELAY_MS + KJ_CLOCK_SKEW_MS);
    h = ladder_headers("1", far, "jobs", "0", "0");
    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    rd_kafka_headers_destroy(h);
}

/* t rounded up to a multiple of grain (the expected release times, computed apart) */
static int64_t up(int64_t t, int64_t grain) {
    return t % grain ? t + grain - t % grain : t;
}

static void test_hold_never_exceeds_step_delay_and_grain_after_write(void **state) {
    (void)state;
    const int64_t step = 300, grain = 30; /* a tenth of the step */
    assert_int_equal(kj_ladder_grain_ms(step), grain);
    /* due before the cap: held until due (NOW + 110 rounded up to the grain) */
    assert_int_equal(kj_control_hold_until(NOW + 110, NOW, NOW, step, grain), up(NOW + 110, grain));
    /* a per-job delay longer than the step: released at write time + step delay (not at fetch
     * time + step delay, which falls in another grain) */
    assert_int_equal(kj_control_hold_until(NOW + 20000, NOW, NOW + 40, step, grain),
                     up(NOW + 300, grain));
    assert_true(up(NOW + 300, grain) != up(NOW + 340, grain));
    /* unknown or future timestamps count from the fetch time */
    assert_int_equal(kj_control_hold_until(NOW + 20000, -1, NOW + 40, step, grain),
                     up(NOW + 340, grain));
    assert_int_equal(kj_control_hold_until(NOW + 20000, NOW + 99999, NOW + 40, step, grain),
                     up(NOW + 340, grain));
    /* a far-future not-before holds for at most the step's delay */
    assert_int_equal(kj_control_hold_until(INT64_MAX / 2, NOW, NOW, step, grain),
                     up(NOW + 300, grain));
    /* a scheduled copy (grain 1) is released to the millisecond */
    assert_int_equal(kj_control_hold_until(NOW + 111, NOW, NOW, step, 1), NOW + 111);

    /* A ladder partition written in time order, mixing due times within the step's delay, the
     * step's own delay and longer per-job delays: release times never decrease along the
     * offsets, so the head is always released first and nobody waits behind a later-due
     * record; none is released before it is due or the step's delay has passed, nor a grain or
     * more after that. */
    int64_t last = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t written = NOW + i * 7;
        int64_t nb = written + (i % 3 == 0 ? 20000 + i : i % 3 == 1 ? step : step / 2 + i % 50);
        int64_t due = nb < written + step ? nb : written + step;
        int64_t hold = kj_control_hold_until(nb, written, written + 50, step, grain);
        assert_true(hold >= due && hold < due + grain);
        assert_int_equal(hold % grain, 0);
        if (i % 3 != 2) { /* the step's own copies are written due in time order */
            assert_true(hold >= last);
            last = hold;
        }
    }
}

/* The grain: a tenth of the step's delay, between 1 ms and 1 s; records due within one grain
 * are released at the same instant. */
static void test_ladder_grain_coalesces_release_times(void **state) {
    (void)state;
    assert_int_equal(kj_ladder_grain_ms(5), 1);
    assert_int_equal(kj_ladder_grain_ms(1000), 100);
    assert_int_equal(kj_ladder_grain_ms(10000), 1000);
    assert_int_equal(kj_ladder_grain_ms(600000), 1000);
    const int64_t step = 1000, base = 1700000000000LL; /* a multiple of the 100 ms grain */
    for (int64_t d = 1; d <= 100; d++)
        assert_int_equal(kj_control_hold_until(base + d, base, base, step, 100), base + 100);
    assert_int_equal(kj_control_hold_until(base + 101, base, base, step, 100), base + 200);
}

/* Retries are rounded to the step's grain; a record of attempt 0 (scheduled or parked) is not;
 * a record without headers (any producer can write one) gets the step's grain, no crash. */
static void test_release_grain_spares_attempt_0(void **state) {
    (void)state;
    assert_int_equal(kj_ladder_release_grain_ms(NULL, 1000), 100);
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 100); /* no attempt header */
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "0", 1);
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 1);
    rd_kafka_headers_destroy(h);
    h = rd_kafka_headers_new(4); /* a retry of a job that once had a run-at: rounded */
    rd_kafka_header_add(h, KJ_HDR_RUN_AT, -1, "1700000000000", -1);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "2", 1);
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 100);
    rd_kafka_headers_destroy(h);
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "00", 2); /* strict decimal 0, as the parser */
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 1);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "0", 1); /* repeated: invalid, rounded */
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 100);
    rd_kafka_headers_destroy(h);
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, NULL, 0); /* empty: invalid, rounded */
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 100);
    rd_kafka_headers_destroy(h);
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "0x", 2); /* not decimal: rounded */
    assert_int_equal(kj_ladder_release_grain_ms(h, 1000), 100);
    rd_kafka_headers_destroy(h);
}

/* The wire names are fixed by ../shared/CONTRACT.md: this list is the one place outside
 * header_contract.h that spells them, as the independent witness. */
static void test_wire_names_are_the_contract(void **state) {
    (void)state;
    assert_string_equal(KJ_HDR_PREFIX, "kjobs-");
    assert_string_equal(KJ_HDR_ATTEMPT, "kjobs-attempt");
    assert_string_equal(KJ_HDR_NOT_BEFORE, "kjobs-not-before");
    assert_string_equal(KJ_HDR_ERROR, "kjobs-error");
    assert_string_equal(KJ_HDR_ERROR_CLASS, "kjobs-error-class");
    assert_string_equal(KJ_HDR_ORIGINAL_TOPIC, "kjobs-original-topic");
    assert_string_equal(KJ_HDR_ORIGINAL_PARTITION, "kjobs-original-partition");
    assert_string_equal(KJ_HDR_ORIGINAL_OFFSET, "kjobs-original-offset");
    assert_string_equal(KJ_HDR_FAILED_AT, "kjobs-failed-at");
    assert_string_equal(KJ_HDR_WORKER, "kjobs-worker");
    assert_string_equal(KJ_HDR_TRUNCATED, "kjobs-truncated");
    assert_string_equal(KJ_HDR_REPLAYED_FROM, "kjobs-replayed-from");
    assert_string_equal(KJ_HDR_REPLAYED_AT, "kjobs-replayed-at");
    assert_string_equal(KJ_HDR_RUN_AT, "kjobs-run-at");
    assert_string_equal(KJ_HDR_DELIVER_AT, "kjobs-deliver-at"); /* deprecated alias, read only */
    assert_string_equal(KJ_HDR_PARKED_BEHIND, "kjobs-parked-behind");
}

static void test_is_kjobs(void **state) {
    (void)state;
    assert_true(kj_hdr_is_kjobs(KJ_HDR_ATTEMPT));
    assert_true(kj_hdr_is_kjobs(KJ_HDR_REPLAYED_AT));
    assert_true(kj_hdr_is_kjobs("kjobs-"));
    assert_true(kj_hdr_is_kjobs("kjobs-anything-new"));
    assert_false(kj_hdr_is_kjobs("kjobs"));
    assert_false(kj_hdr_is_kjobs("Kjobs-attempt"));
    assert_false(kj_hdr_is_kjobs("x-kjobs-attempt"));
    assert_false(kj_hdr_is_kjobs("traceparent"));
    assert_false(kj_hdr_is_kjobs(""));
}

/* Oversized and non-ASCII (valid or invalid UTF-8) values are never numbers. */
static void test_parse_uint_oversized_and_non_utf8(void **state) {
    (void)state;
    int64_t v = 42;
    /* 19 digits are the most accepted, whatever the value; 20 never, even when small */
    assert_true(parse("0000000000000000001", INT64_MAX, &v));
    assert_int_equal(v, 1);
    assert_false(parse("00000000000000000001", INT64_MAX, &v));
    char big[4096];
    memset(big, '1', sizeof(big));
    assert_false(kj_hdr_parse_uint(big, sizeof(big), INT64_MAX, &v));
    const char *bad[] = {"\xff",
                         "1\xff",
                         "\xc3\xa9",
                         "1\xc3\xa9",
                         "\xef\xbc\x91", /* U+FF11 */
                         "\xd9\xa1" /* U+0661 ARABIC-INDIC ONE */,
                         "1\x80",
                         "\xc0\xb1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(parse(bad[i], INT64_MAX, &v));
    assert_int_equal(v, 1);
}

static void test_topic_ok(void **state) {
    (void)state;
    assert_true(kj_hdr_topic_ok("jobs", 4));
    assert_true(kj_hdr_topic_ok("a.B_c-9", 7));
    char name[KJ_TOPIC_NAME_MAX + 2];
    memset(name, 't', sizeof(name));
    assert_true(kj_hdr_topic_ok(name, KJ_TOPIC_NAME_MAX));
    assert_false(kj_hdr_topic_ok(name, KJ_TOPIC_NAME_MAX + 1));
    assert_false(kj_hdr_topic_ok(NULL, 0));
    assert_false(kj_hdr_topic_ok("", 0));
    const char *bad[] = {"jo bs", "jobs/x", "jobs\n", "jobs\xff", "jobs\xc3\xa9", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(kj_hdr_topic_ok(bad[i], strlen(bad[i])));
    assert_false(kj_hdr_topic_ok("jobs\0x", 6)); /* NUL inside */
}

/* Ladder headers with oversized or non-UTF-8 values are invalid, naming the header. */
static void test_ladder_oversized_and_non_utf8(void **state) {
    (void)state;
    char topic[KJ_TOPIC_NAME_MAX + 2];
    memset(topic, 't', sizeof(topic) - 1);
    topic[sizeof(topic) - 1] = '\0';
    expect_invalid(ladder_headers("1", "1", topic, "0", "0"), KJ_HDR_ORIGINAL_TOPIC, NULL);
    expect_invalid(ladder_headers("\xff", "1", "jobs", "0", "0"), KJ_HDR_ATTEMPT, NULL);
    expect_invalid(ladder_headers("1", "1",
                                  "j\xc3\xb6"
                                  "bs",
                                  "0", "0"),
                   KJ_HDR_ORIGINAL_TOPIC, NULL);
    expect_invalid(ladder_headers("1", "00000000000000000001", "jobs", "0", "0"), KJ_HDR_NOT_BEFORE,
                   "20 bytes");
    expect_invalid(ladder_headers("1", "1", "jobs", "0", "1\xc3\xa9"), KJ_HDR_ORIGINAL_OFFSET,
                   NULL);
}

static void test_set_int_formats_and_replaces(void **state) {
    (void)state;
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "n", -1, "old", -1);
    rd_kafka_header_add(h, "n", -1, "older", -1);
    static const struct {
        int64_t v;
        const char *text;
    } cases[] = {{0, "0"},
                 {7, "7"},
                 {-5, "-5"},
                 {INT64_MAX, "9223372036854775807"},
                 {INT64_MIN, "-9223372036854775808"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kj_hdr_set_int(h, "n", cases[i].v);
        const void *val;
        size_t len;
        assert_int_equal(rd_kafka_header_get(h, 0, "n", &val, &len), RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_int_equal(len, strlen(cases[i].text));
        assert_memory_equal(val, cases[i].text, len);
        assert_int_not_equal(rd_kafka_header_get(h, 1, "n", &val, &len),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
        int64_t back;
        if (cases[i].v >= 0) {
            assert_true(kj_hdr_parse_uint(val, len, INT64_MAX, &back));
            assert_int_equal(back, cases[i].v);
        } else {
            assert_false(kj_hdr_parse_uint(val, len, INT64_MAX, &back));
        }
    }
    rd_kafka_headers_destroy(h);
}

/* The value of the one header `name` (asserting it is there exactly once), NUL-terminated. */
static const char *only(const rd_kafka_headers_t *h, const char *name, char *buf, size_t size) {
    const void *val;
    size_t len;
    assert_int_equal(rd_kafka_header_get(h, 0, name, &val, &len), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_not_equal(rd_kafka_header_get(h, 1, name, &val, &len), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_true(len < size);
    memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

/* A failure written onto a ladder copy reads back through the strict parser unchanged;
 * original headers stay first, stale kjobs-* values are replaced, kjobs-truncated goes. */
static void test_write_failure_round_trip(void **state) {
    (void)state;
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "traceparent", -1, "00-abc-def-01", -1);
    rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "1", -1);      /* from the previous step */
    rd_kafka_header_add(h, KJ_HDR_ERROR, -1, "\xff old", -1); /* foreign, not UTF-8 */
    rd_kafka_header_add(h, KJ_HDR_TRUNCATED, -1, "headers", -1);
    const char *error = "d\xc3\xa9j\xc3\xa0 vu \xe2\x80\xa6"; /* UTF-8 text, kept byte for byte */
    kj_hdr_failure f = {.original_topic = "orders.main",
                        .original_partition = INT32_MAX,
                        .original_offset = INT64_MAX,
                        .attempt = KJ_ATTEMPT_MAX,
                        .not_before_ms = NOW + 5000,
                        .error = error,
                        .error_class = "retryable",
                        .failed_at_ms = NOW,
                        .worker = "kjobs-host-1"};
    kj_hdr_write_failure(h, &f);

    static const char *const order[] = {
        "traceparent",          KJ_HDR_ORIGINAL_TOPIC, KJ_HDR_ORIGINAL_PARTITION,
        KJ_HDR_ORIGINAL_OFFSET, KJ_HDR_ATTEMPT,        KJ_HDR_NOT_BEFORE,
        KJ_HDR_ERROR,           KJ_HDR_ERROR_CLASS,    KJ_HDR_FAILED_AT,
        KJ_HDR_WORKER};
    const char *name;
    const void *val;
    size_t len, i = 0;
    for (; rd_kafka_header_get_all(h, i, &name, &val, &len) == 0; i++) {
        assert_true(i < sizeof(order) / sizeof(order[0]));
        assert_string_equal(name, order[i]);
    }
    assert_int_equal(i, sizeof(order) / sizeof(order[0]));

    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_int_equal(c.attempt, KJ_ATTEMPT_MAX);
    assert_int_equal(c.not_before_ms, NOW + 5000);
    assert_string_equal(c.original_topic, "orders.main");
    assert_int_equal(c.original_partition, INT32_MAX);
    assert_int_equal(c.original_offset, INT64_MAX);
    char buf[128];
    assert_string_equal(only(h, KJ_HDR_ERROR, buf, sizeof(buf)), error);
    assert_string_equal(only(h, KJ_HDR_ERROR_CLASS, buf, sizeof(buf)), "retryable");
    assert_string_equal(only(h, KJ_HDR_FAILED_AT, buf, sizeof(buf)), "1700000000000");
    assert_string_equal(only(h, KJ_HDR_WORKER, buf, sizeof(buf)), "kjobs-host-1");

    /* written again (the next step): still one of each, new values */
    f.attempt = 2;
    f.original_partition = 0;
    kj_hdr_write_failure(h, &f);
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_int_equal(c.attempt, 2);
    assert_int_equal(c.original_partition, 0);
    rd_kafka_headers_destroy(h);
}

/* retry.ordering = "key": a parked copy (kjobs-parked-behind) may carry attempt 0; the header
 * is strict like every control header; a failure written over a parked copy drops it, a parked
 * copy written again keeps exactly one */
static void test_parked_copy(void **state) {
    (void)state;
    rd_kafka_headers_t *h = ladder_headers("0", "1", "jobs", "2", "40");
    rd_kafka_header_add(h, KJ_HDR_PARKED_BEHIND, -1, "17", -1);
    kj_control c;
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_true(c.parked);
    assert_int_equal(c.parked_behind, 17);
    assert_int_equal(c.attempt, 0);
    rd_kafka_headers_destroy(h);
    h = ladder_headers("2", "1", "jobs", "2", "40"); /* a retried job parked: attempts kept */
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_false(c.parked);
    rd_kafka_headers_destroy(h);
    h = ladder_headers("0", "1", "jobs", "2", "40");
    rd_kafka_header_add(h, KJ_HDR_PARKED_BEHIND, -1, "-17", -1);
    expect_invalid(h, KJ_HDR_PARKED_BEHIND, NULL);
    h = ladder_headers("0", "1", "jobs", "2", "40");
    rd_kafka_header_add(h, KJ_HDR_PARKED_BEHIND, -1, "17", -1);
    rd_kafka_header_add(h, KJ_HDR_PARKED_BEHIND, -1, "18", -1);
    expect_invalid(h, KJ_HDR_PARKED_BEHIND, "more than once");

    h = rd_kafka_headers_new(4);
    kj_hdr_failure f = {.original_topic = "jobs",
                        .original_partition = 2,
                        .original_offset = 40,
                        .attempt = 0,
                        .not_before_ms = NOW,
                        .error = "waiting",
                        .error_class = "parked",
                        .failed_at_ms = NOW,
                        .worker = "w",
                        .parked = true,
                        .parked_behind = 17};
    kj_hdr_write_failure(h, &f);
    kj_hdr_write_failure(h, &f);
    char buf[32];
    assert_string_equal(only(h, KJ_HDR_PARKED_BEHIND, buf, sizeof(buf)), "17");
    f.parked = false; /* it ran, failed and goes down the ladder on its own */
    f.attempt = 1;
    kj_hdr_write_failure(h, &f);
    const void *val;
    size_t len;
    assert_int_not_equal(rd_kafka_header_get(h, 0, KJ_HDR_PARKED_BEHIND, &val, &len),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
    assert_false(c.parked);
    rd_kafka_headers_destroy(h);
}

static void test_write_replay(void **state) {
    (void)state;
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    kj_hdr_write_replay(h, "jobs.dlq", 3, 42, NOW);
    char buf[KJ_HDR_REPLAYED_FROM_MAX + 1];
    assert_string_equal(only(h, KJ_HDR_REPLAYED_FROM, buf, sizeof(buf)), "jobs.dlq:3:42");
    assert_string_equal(only(h, KJ_HDR_REPLAYED_AT, buf, sizeof(buf)), "1700000000000");
    int64_t at;
    const void *val;
    size_t len;
    assert_int_equal(rd_kafka_header_get_last(h, KJ_HDR_REPLAYED_AT, &val, &len), 0);
    assert_true(kj_hdr_parse_uint(val, len, INT64_MAX, &at));
    assert_int_equal(at, NOW);
    rd_kafka_headers_destroy(h);

    /* an oversized topic is cut to the bound, never overflowing */
    char topic[1000];
    memset(topic, 't', sizeof(topic) - 1);
    topic[sizeof(topic) - 1] = '\0';
    h = rd_kafka_headers_new(2);
    kj_hdr_write_replay(h, topic, 0, 0, NOW);
    assert_int_equal(rd_kafka_header_get_last(h, KJ_HDR_REPLAYED_FROM, &val, &len), 0);
    assert_int_equal(len, KJ_HDR_REPLAYED_FROM_MAX);
    rd_kafka_headers_destroy(h);
}

/* kj_run_at_parse of a record carrying @p name with each non-NULL value, in order. */
static kj_run_at_status run_at_named(const char *name, const char *v1, const char *v2, int64_t max,
                                     int64_t *due, const char **header, char *reason) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    if (v1) rd_kafka_header_add(h, name, -1, v1, -1);
    if (v2) rd_kafka_header_add(h, name, -1, v2, -1);
    kj_run_at_status st = kj_run_at_parse(h, NOW, max, due, header, reason, 160);
    rd_kafka_headers_destroy(h);
    return st;
}

/* The single-header rules, the same for the header and its alias. */
static void expect_single_header_rules(const char *name) {
    int64_t due = -1;
    const char *header = "unset";
    char reason[160] = "";
    assert_int_equal(run_at_named(name, NULL, NULL, 1000, &due, &header, reason), KJ_RUN_AT_NONE);
    assert_null(header);
    assert_int_equal(due, -1);
    assert_int_equal(run_at_named(name, "1700000001000", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_VALID);
    assert_int_equal(due, 1700000001000LL);
    assert_string_equal(header, name);
    assert_int_equal(run_at_named(name, "5", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_VALID); /* past */
    assert_int_equal(due, 5);
    assert_int_equal(run_at_named(name, "1700000001001", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_TOO_FAR);
    assert_non_null(strstr(reason, "schedule.max_delay"));
    assert_true(strncmp(reason, name, strlen(name)) == 0);
    assert_int_equal(run_at_named(name, "99999999999999999999", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_INVALID); /* 20 digits */
    /* epoch seconds (a common producer mistake) are refused, not run at once; the bounds of
     * the refused range 10^9..10^11 - 1 ms, and the values just outside it */
    assert_int_equal(run_at_named(name, "1700000001", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_non_null(strstr(reason, "looks like epoch seconds"));
    assert_non_null(strstr(reason, "1700000001000"));
    assert_int_equal(run_at_named(name, "1000000000", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_int_equal(run_at_named(name, "99999999999", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_int_equal(run_at_named(name, "999999999", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_VALID); /* 1970-01-12: past, runs at once */
    assert_int_equal(run_at_named(name, "100000000000", NULL, 1000, &due, &header, reason),
                     KJ_RUN_AT_VALID); /* 1973-03-03: past, runs at once */
    assert_int_equal(run_at_named(name, "5", NULL, 1000, &due, &header, reason), KJ_RUN_AT_VALID);
    const char *bad[] = {"", " 1", "-1", "+1", "1.5", "1e3", "2026-12-01T10:00:00Z", "12\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reason[0] = '\0';
        header = NULL;
        assert_int_equal(run_at_named(name, bad[i], NULL, 1000, &due, &header, reason),
                         KJ_RUN_AT_INVALID);
        assert_non_null(strstr(reason, name));
        assert_non_null(strstr(reason, "not a decimal epoch time"));
        assert_string_equal(header, name);
    }
    assert_int_equal(run_at_named(name, "1", "2", 1000, &due, &header, reason), KJ_RUN_AT_INVALID);
    assert_non_null(strstr(reason, "more than once"));
    assert_non_null(strstr(reason, name));
    assert_int_equal(run_at_named(name, "1", "1", 1000, &due, &header, reason), KJ_RUN_AT_INVALID);
    assert_int_equal(due, 5); /* untouched when invalid */
}

static void test_run_at(void **state) {
    (void)state;
    assert_string_equal(KJ_HDR_RUN_AT, "kjobs-run-at"); /* ../shared/CONTRACT.md */
    int64_t due = -1;
    char reason[160] = "";
    assert_int_equal(kj_run_at_parse(NULL, NOW, 1000, &due, NULL, reason, sizeof(reason)),
                     KJ_RUN_AT_NONE);
    expect_single_header_rules(KJ_HDR_RUN_AT);
}

static void test_deliver_at_alias(void **state) {
    (void)state;
    assert_string_equal(KJ_HDR_DELIVER_AT, "kjobs-deliver-at");
    expect_single_header_rules(KJ_HDR_DELIVER_AT);
}

/* A record with kjobs-run-at @p run_at and kjobs-deliver-at @p alias (NULL: absent). */
static kj_run_at_status run_at_both(const char *run_at, const char *alias, int64_t *due,
                                    const char **header, char *reason) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    if (alias) rd_kafka_header_add(h, KJ_HDR_DELIVER_AT, -1, alias, -1); /* order does not matter */
    if (run_at) rd_kafka_header_add(h, KJ_HDR_RUN_AT, -1, run_at, -1);
    kj_run_at_status st = kj_run_at_parse(h, NOW, 1000, due, header, reason, 160);
    rd_kafka_headers_destroy(h);
    return st;
}

static void test_run_at_and_alias_both_present(void **state) {
    (void)state;
    int64_t due = -1;
    const char *header = NULL;
    char reason[160] = "";
    /* the same time under both names: valid, read as kjobs-run-at */
    assert_int_equal(run_at_both("1700000000500", "1700000000500", &due, &header, reason),
                     KJ_RUN_AT_VALID);
    assert_int_equal(due, 1700000000500LL);
    assert_string_equal(header, KJ_HDR_RUN_AT);
    /* the same number spelt with a leading zero is the same time */
    assert_int_equal(run_at_both("1700000000600", "01700000000600", &due, &header, reason),
                     KJ_RUN_AT_VALID);
    assert_int_equal(due, 1700000000600LL);
    /* different times: ambiguous, invalid whichever is later (never run early, never guessed) */
    due = -1;
    assert_int_equal(run_at_both("1700000000500", "1700000000900", &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_string_equal(header, KJ_HDR_RUN_AT);
    assert_non_null(strstr(reason, "invalid kjobs-run-at header: 1700000000500"));
    assert_non_null(strstr(reason, "kjobs-deliver-at says 1700000000900"));
    assert_int_equal(run_at_both("1700000000900", "1700000000500", &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_int_equal(run_at_both("5", "1700000000500", &due, &header, reason), KJ_RUN_AT_INVALID);
    assert_int_equal(due, -1);
    /* a malformed or repeated one of the two makes the record invalid, naming that one */
    assert_int_equal(run_at_both("1700000000500", "soon", &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_string_equal(header, KJ_HDR_DELIVER_AT);
    assert_non_null(strstr(reason, "invalid kjobs-deliver-at header: not a decimal"));
    assert_int_equal(run_at_both("soon", "1700000000500", &due, &header, reason),
                     KJ_RUN_AT_INVALID);
    assert_string_equal(header, KJ_HDR_RUN_AT);
    assert_non_null(strstr(reason, "invalid kjobs-run-at header: not a decimal"));
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, KJ_HDR_RUN_AT, -1, "1700000000500", -1);
    rd_kafka_header_add(h, KJ_HDR_DELIVER_AT, -1, "1700000000500", -1);
    rd_kafka_header_add(h, KJ_HDR_DELIVER_AT, -1, "1700000000500", -1);
    assert_int_equal(kj_run_at_parse(h, NOW, 1000, &due, &header, reason, sizeof(reason)),
                     KJ_RUN_AT_INVALID);
    rd_kafka_headers_destroy(h);
    assert_string_equal(header, KJ_HDR_DELIVER_AT);
    assert_non_null(strstr(reason, "kjobs-deliver-at header: present more than once"));
    /* agreeing but too far: too far, named as kjobs-run-at */
    assert_int_equal(run_at_both("1700000001001", "1700000001001", &due, &header, reason),
                     KJ_RUN_AT_TOO_FAR);
    assert_non_null(strstr(reason, "kjobs-run-at too far ahead"));
    assert_int_equal(due, -1);
}

static void test_scheduled_copy_attempt_zero(void **state) {
    (void)state;
    /* attempt 0 is valid on a ladder record only with kjobs-run-at (or the alias kjobs-deliver-at
     * on a copy of a record that used it): its first run is 1 */
    const char *marker[] = {KJ_HDR_RUN_AT, KJ_HDR_DELIVER_AT};
    for (size_t i = 0; i < 2; i++) {
        rd_kafka_headers_t *h = ladder_headers("0", "1700000005000", "jobs", "0", "7");
        rd_kafka_header_add(h, marker[i], -1, "1700000005000", -1);
        kj_control c;
        assert_int_equal(kj_control_parse_ladder(h, NOW, &c), 0);
        assert_int_equal(c.attempt, 0);
        rd_kafka_headers_destroy(h);
    }
    expect_invalid(ladder_headers("0", "1", "jobs", "0", "0"), KJ_HDR_ATTEMPT, "attempts start");
}

static void test_rfc3339(void **state) {
    (void)state;
    int64_t ms = 0;
    assert_int_equal(kj_parse_rfc3339_ms("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(kj_parse_rfc3339_ms("2023-11-14T22:13:20Z", &ms), 0);
    assert_int_equal(ms, 1700000000000LL);
    assert_int_equal(kj_parse_rfc3339_ms("2023-11-14t22:13:20.5z", &ms), 0);
    assert_int_equal(ms, 1700000000500LL);
    assert_int_equal(kj_parse_rfc3339_ms("2023-11-14 23:13:20.123456+01:00", &ms), 0);
    assert_int_equal(ms, 1700000000123LL);
    assert_int_equal(kj_parse_rfc3339_ms("2023-11-14T17:13:20-05:00", &ms), 0);
    assert_int_equal(ms, 1700000000000LL);
    assert_int_equal(kj_parse_rfc3339_ms("2024-02-29T00:00:00Z", &ms), 0);
    assert_int_equal(kj_parse_rfc3339_ms("2000-02-29T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 951782400000LL);
    const char *bad[] = {"",
                         "2023-11-14",
                         "2023-11-14T22:13:20",      /* no offset */
                         "2023-11-14T22:13:20+0100", /* offset without colon */
                         "2023-13-01T00:00:00Z",
                         "2023-02-29T00:00:00Z", /* not a leap year */
                         "1900-02-29T00:00:00Z",
                         "2023-04-31T00:00:00Z",
                         "2023-11-14T24:00:00Z",
                         "2023-11-14T22:60:00Z",
                         "2023-11-14T22:13:60Z",
                         "2023-11-14T22:13:20.Z",
                         "2023-11-14T22:13:20Zjunk",
                         "10m",
                         "1700000000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        assert_int_equal(kj_parse_rfc3339_ms(bad[i], &ms), -1);
        assert_int_equal(ms, 42);
    }
    assert_int_equal(kj_parse_rfc3339_ms(NULL, &ms), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_uint_is_strict),
        cmocka_unit_test(test_valid_ladder_headers),
        cmocka_unit_test(test_invalid_ladder_headers),
        cmocka_unit_test(test_hold_never_exceeds_step_delay_and_grain_after_write),
        cmocka_unit_test(test_ladder_grain_coalesces_release_times),
        cmocka_unit_test(test_release_grain_spares_attempt_0),
        cmocka_unit_test(test_wire_names_are_the_contract),
        cmocka_unit_test(test_is_kjobs),
        cmocka_unit_test(test_parse_uint_oversized_and_non_utf8),
        cmocka_unit_test(test_topic_ok),
        cmocka_unit_test(test_ladder_oversized_and_non_utf8),
        cmocka_unit_test(test_set_int_formats_and_replaces),
        cmocka_unit_test(test_write_failure_round_trip),
        cmocka_unit_test(test_write_replay),
        cmocka_unit_test(test_run_at),
        cmocka_unit_test(test_deliver_at_alias),
        cmocka_unit_test(test_run_at_and_alias_both_present),
        cmocka_unit_test(test_scheduled_copy_attempt_zero),
        cmocka_unit_test(test_parked_copy),
        cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
