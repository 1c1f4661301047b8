/*
 * tests/unit/test_cron.c — processor/cron.c: parsing, next-tick search, time zones and DST.
 *
 * Vectors of test_published come from the test table of gorhill/cronexpr, file cronexpr_test.go
 * (github.com/gorhill/cronexpr at commit 88b0669, as Debian ships it in
 * golang-github-gorhill-cronexpr-dev 1.0.0+git20180427.88b0669-2,
 * /usr/share/gocode/src/github.com/gorhill/cronexpr/cronexpr_test.go). Its expressions carry a
 * trailing year field, which kjobs does not have: they are written here without it (all of them
 * use `*` for the year). Its L, W and # rows are left out (kjobs refuses those). Each row is
 * (expression, from, expected next), all UTC; "next" is strictly after "from", as in cronexpr.
 *
 * The other tests are kjobs' own: the Vixie day rule, names, macros, errors, the search bound,
 * and the DST rules of cron.h checked against instants worked out by hand from the tz database
 * (America/New_York 2026: clocks go 02:00 EST → 03:00 EDT on 2026-03-08 at 07:00Z and 02:00 EDT →
 * 01:00 EST on 2026-11-01 at 06:00Z; Australia/Lord_Howe moves by 30 minutes).
 * tests/unit/cron_diff.js compares many more expressions with the npm cron-parser package.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "processor/cron.h"

static void expect_error_fn(const char *expr, const char *want);
#define expect_error expect_error_fn

/* "YYYY-MM-DD HH:MM:SS" UTC → epoch ms. */
static int64_t utc(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        abort();
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static void fmt(int64_t ms, char *buf, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Assert that expr in zone, after `from`, fires at each of the `n` expected UTC times in turn. */
static void expect_seq(const char *expr, const char *zone, const char *from,
                       const char *const *expected, int n) {
    char err[256];
    kj_cron c;
    if (kj_cron_parse(expr, &c, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", expr, err);
        fail();
    }
    kj_cron_zone *z = kj_cron_zone_open(zone, err, sizeof err);
    assert_non_null(z);
    int64_t t = utc(from);
    for (int i = 0; i < n; i++) {
        int64_t next = 0;
        assert_int_equal(kj_cron_next(&c, z, t, &next), KJ_CRON_OK);
        if (next != utc(expected[i])) {
            char got[32];
            fmt(next, got, sizeof got);
            fprintf(stderr, "%s (%s) after %s: expected %s, got %s\n", expr, zone, from,
                    expected[i], got);
            fail();
        }
        t = next;
    }
    kj_cron_zone_close(z);
}

static void expect_next(const char *expr, const char *from, const char *next) {
    const char *e[1] = {next};
    expect_seq(expr, "UTC", from, e, 1);
}

typedef struct vec {
    const char *expr, *from, *next;
} vec;

static void test_published(void **state) {
    (void)state;
    static const vec v[] = {
        /* "* * * * * * *" (seconds) */
        {"* * * * * *", "2013-01-01 00:00:00", "2013-01-01 00:00:01"},
        {"* * * * * *", "2013-01-01 00:00:59", "2013-01-01 00:01:00"},
        {"* * * * * *", "2013-01-01 00:59:59", "2013-01-01 01:00:00"},
        {"* * * * * *", "2013-01-01 23:59:59", "2013-01-02 00:00:00"},
        {"* * * * * *", "2013-02-28 23:59:59", "2013-03-01 00:00:00"},
        {"* * * * * *", "2016-02-28 23:59:59", "2016-02-29 00:00:00"},
        {"* * * * * *", "2012-12-31 23:59:59", "2013-01-01 00:00:00"},
        /* "*\/5 * * * * * *" */
        {"*/5 * * * * *", "2013-01-01 00:00:00", "2013-01-01 00:00:05"},
        {"*/5 * * * * *", "2013-01-01 00:00:59", "2013-01-01 00:01:00"},
        {"*/5 * * * * *", "2013-01-01 00:59:59", "2013-01-01 01:00:00"},
        {"*/5 * * * * *", "2013-01-01 23:59:59", "2013-01-02 00:00:00"},
        {"*/5 * * * * *", "2013-02-28 23:59:59", "2013-03-01 00:00:00"},
        {"*/5 * * * * *", "2016-02-28 23:59:59", "2016-02-29 00:00:00"},
        {"*/5 * * * * *", "2012-12-31 23:59:59", "2013-01-01 00:00:00"},
        /* "* * * * *" (minutes) */
        {"* * * * *", "2013-01-01 00:00:00", "2013-01-01 00:01:00"},
        {"* * * * *", "2013-01-01 00:00:59", "2013-01-01 00:01:00"},
        {"* * * * *", "2013-01-01 00:59:00", "2013-01-01 01:00:00"},
        {"* * * * *", "2013-01-01 23:59:00", "2013-01-02 00:00:00"},
        {"* * * * *", "2013-02-28 23:59:00", "2013-03-01 00:00:00"},
        {"* * * * *", "2016-02-28 23:59:00", "2016-02-29 00:00:00"},
        {"* * * * *", "2012-12-31 23:59:00", "2013-01-01 00:00:00"},
        /* "17-43/5 * * * *" */
        {"17-43/5 * * * *", "2013-01-01 00:00:00", "2013-01-01 00:17:00"},
        {"17-43/5 * * * *", "2013-01-01 00:16:59", "2013-01-01 00:17:00"},
        {"17-43/5 * * * *", "2013-01-01 00:30:00", "2013-01-01 00:32:00"},
        {"17-43/5 * * * *", "2013-01-01 00:50:00", "2013-01-01 01:17:00"},
        {"17-43/5 * * * *", "2013-01-01 23:50:00", "2013-01-02 00:17:00"},
        {"17-43/5 * * * *", "2013-02-28 23:50:00", "2013-03-01 00:17:00"},
        {"17-43/5 * * * *", "2016-02-28 23:50:00", "2016-02-29 00:17:00"},
        {"17-43/5 * * * *", "2012-12-31 23:50:00", "2013-01-01 00:17:00"},
        /* "15-30/4,55 * * * *" */
        {"15-30/4,55 * * * *", "2013-01-01 00:00:00", "2013-01-01 00:15:00"},
        {"15-30/4,55 * * * *", "2013-01-01 00:16:00", "2013-01-01 00:19:00"},
        {"15-30/4,55 * * * *", "2013-01-01 00:30:00", "2013-01-01 00:55:00"},
        {"15-30/4,55 * * * *", "2013-01-01 00:55:00", "2013-01-01 01:15:00"},
        {"15-30/4,55 * * * *", "2013-01-01 23:55:00", "2013-01-02 00:15:00"},
        {"15-30/4,55 * * * *", "2013-02-28 23:55:00", "2013-03-01 00:15:00"},
        {"15-30/4,55 * * * *", "2016-02-28 23:55:00", "2016-02-29 00:15:00"},
        {"15-30/4,55 * * * *", "2012-12-31 23:54:00", "2012-12-31 23:55:00"},
        {"15-30/4,55 * * * *", "2012-12-31 23:55:00", "2013-01-01 00:15:00"},
        /* days of week */
        {"0 0 * * MON", "2013-01-01 00:00:00", "2013-01-07 00:00:00"},
        {"0 0 * * MON", "2013-01-28 00:00:00", "2013-02-04 00:00:00"},
        {"0 0 * * MON", "2013-12-30 00:30:00", "2014-01-06 00:00:00"},
        {"0 0 * * friday", "2013-01-01 00:00:00", "2013-01-04 00:00:00"},
        {"0 0 * * friday", "2013-01-28 00:00:00", "2013-02-01 00:00:00"},
        {"0 0 * * friday", "2013-12-30 00:30:00", "2014-01-03 00:00:00"},
        {"0 0 * * 6,7", "2013-01-01 00:00:00", "2013-01-05 00:00:00"},
        {"0 0 * * 6,7", "2013-01-28 00:00:00", "2013-02-02 00:00:00"},
        {"0 0 * * 6,7", "2013-12-30 00:30:00", "2014-01-04 00:00:00"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        expect_next(v[i].expr, v[i].from, v[i].next);
}

static void test_day_rule(void **state) {
    (void)state;
    /* Both restricted: either matches. 2026-03-01 is a Sunday; Mondays 2, 9; the 1st and 15th. */
    const char *either[] = {"2026-03-02 00:00:00", "2026-03-09 00:00:00", "2026-03-15 00:00:00",
                            "2026-03-16 00:00:00"};
    expect_seq("0 0 1,15 * MON", "UTC", "2026-03-01 00:00:00", either, 4);
    /* `*` with a step counts as unrestricted (its text starts with '*'): both must match. */
    const char *both[] = {"2026-03-09 00:00:00", "2026-03-23 00:00:00", "2026-04-13 00:00:00"};
    expect_seq("0 0 */2 * 1", "UTC", "2026-03-01 00:00:00", both, 3);
    /* `?` is `*`. */
    expect_next("0 0 ? * 7", "2026-03-02 00:00:00", "2026-03-08 00:00:00");
    /* Sunday as 0 and 7, ranges reaching 7, names in ranges. */
    expect_next("0 0 * * 5-7", "2026-03-02 00:00:00", "2026-03-06 00:00:00");
    expect_next("0 0 * * mon-WED", "2026-03-07 00:00:00", "2026-03-09 00:00:00");
    expect_error_fn("0 0 * * sat-sun", "range start is after its end"); /* Vixie refuses it too */
    expect_next("0 0 1 jun-AUG *", "2026-03-02 00:00:00", "2026-06-01 00:00:00");
    expect_next("0 12 * DECEMBER *", "2026-03-02 00:00:00", "2026-12-01 12:00:00");
}

static void test_steps_and_lists(void **state) {
    (void)state;
    expect_next("5/20 * * * *", "2026-03-01 00:06:00", "2026-03-01 00:25:00");
    expect_next("5/20 * * * *", "2026-03-01 00:45:00", "2026-03-01 01:05:00");
    expect_next("0 0-6/3,20 * * *", "2026-03-01 06:00:00", "2026-03-01 20:00:00");
    expect_next("30 0 0 * * *", "2026-03-01 00:00:30", "2026-03-02 00:00:30");
    expect_next("0 0 29 2 *", "2026-01-01 00:00:00", "2028-02-29 00:00:00");
    /* 2100 is not a leap year: the next Feb 29 after 2096 is 2104 (8 years, inside the bound). */
    expect_next("0 0 29 2 *", "2096-03-01 00:00:00", "2104-02-29 00:00:00");
    expect_next("0 0 31 * *", "2026-04-01 00:00:00", "2026-05-31 00:00:00");
    /* Sub-second "from": the next whole-second tick after it. */
    char err[128];
    kj_cron c;
    assert_int_equal(kj_cron_parse("* * * * * *", &c, err, sizeof err), 0);
    kj_cron_zone *z = kj_cron_zone_open("UTC", err, sizeof err);
    int64_t next;
    assert_int_equal(kj_cron_next(&c, z, utc("2026-03-01 00:00:00") + 999, &next), KJ_CRON_OK);
    assert_int_equal(next, utc("2026-03-01 00:00:01"));
    kj_cron_zone_close(z);
}

static void test_macros(void **state) {
    (void)state;
    expect_next("@hourly", "2026-03-01 10:15:00", "2026-03-01 11:00:00");
    expect_next("@daily", "2026-03-01 10:15:00", "2026-03-02 00:00:00");
    expect_next("@midnight", "2026-03-01 10:15:00", "2026-03-02 00:00:00");
    expect_next("@weekly", "2026-03-01 10:15:00", "2026-03-08 00:00:00");
    expect_next("@monthly", "2026-03-01 10:15:00", "2026-04-01 00:00:00");
    expect_next("@yearly", "2026-03-01 10:15:00", "2027-01-01 00:00:00");
    expect_next("  @ANNUALLY ", "2026-03-01 10:15:00", "2027-01-01 00:00:00");
}

/* The error for expr contains `want`. */
static void expect_error_fn(const char *expr, const char *want) {
    char err[256] = "";
    kj_cron c;
    if (kj_cron_parse(expr, &c, err, sizeof err) != -1 || !strstr(err, want)) {
        fprintf(stderr, "\"%s\": expected an error containing '%s', got '%s'\n", expr, want, err);
        fail();
    }
}

static void test_errors(void **state) {
    (void)state;
    expect_error("", "expected 5 fields");
    expect_error("* * * *", "got 4");
    expect_error("* * * * * * *", "got more than 6");
    expect_error("61 * * * *", "minute field: \"61\" is out of range 0-59");
    expect_error("60 * * * * *", "second field: \"60\" is out of range 0-59");
    expect_error("* 24 * * *", "hour field: \"24\" is out of range 0-23");
    expect_error("* * 0 * *", "day-of-month field: \"0\" is out of range 1-31");
    expect_error("* * * 13 *", "month field: \"13\" is out of range 1-12");
    expect_error("* * * * 8", "day-of-week field: \"8\" is out of range 0-7");
    expect_error("* * * FOO *", "month field: \"FOO\" is not a value or range");
    expect_error("*/0 * * * *", "minute field: \"*/0\": step must be 1-60");
    expect_error("*/x * * * *", "step must be");
    expect_error("30-10 * * * *", "minute field: \"30-10\": range start is after its end");
    expect_error("1,,2 * * * *", "minute field: \"1,,2\" has an empty list item");
    expect_error("1, * * * *", "empty list item");
    expect_error("? * * * *", "minute field: \"?\" is not a value or range");
    expect_error("0 0 L * *", "day-of-month field: \"L\": 'L' is not supported");
    expect_error("0 0 15W * *", "'W' is not supported");
    expect_error("0 0 * * 6#3", "day-of-week field: \"6#3\": '#' is not supported");
    expect_error("@reboot", "\"@reboot\" is not a supported macro");
    expect_error("@daily 5", "is not a supported macro");
    expect_error("1-2-3 * * * *", "not a value or range");
    expect_error("-1 * * * *", "not a value or range");
}

static void test_never(void **state) {
    (void)state;
    char err[128];
    kj_cron c;
    kj_cron_zone *z = kj_cron_zone_open("Europe/Berlin", err, sizeof err);
    assert_non_null(z);
    int64_t next = 42;
    assert_int_equal(kj_cron_parse("0 0 30 2 *", &c, err, sizeof err), 0);
    assert_int_equal(kj_cron_next(&c, z, utc("2026-01-01 00:00:00"), &next), KJ_CRON_NONE);
    assert_int_equal(kj_cron_parse("0 0 31 4,6,9,11 *", &c, err, sizeof err), 0);
    assert_int_equal(kj_cron_next(&c, z, utc("2026-01-01 00:00:00"), &next), KJ_CRON_NONE);
    assert_int_equal(next, 42);
    assert_int_equal(kj_cron_next(&c, z, -1, &next), KJ_CRON_ERROR);
    kj_cron_zone_close(z);
}

static void test_zones(void **state) {
    (void)state;
    char err[256];
    assert_null(kj_cron_zone_open("Mars/Olympus_Mons", err, sizeof err));
    assert_non_null(strstr(err, "unknown time zone \"Mars/Olympus_Mons\""));
    assert_null(kj_cron_zone_open("europe/berlin ", err, sizeof err));
    kj_cron_zone *z = kj_cron_zone_open(NULL, err, sizeof err);
    assert_string_equal(kj_cron_zone_name(z), "UTC");
    kj_cron_zone_close(z);
    /* Berlin is UTC+1 in winter, UTC+2 in summer; Kolkata is UTC+5:30 all year. */
    const char *berlin[] = {"2026-01-15 02:30:00", "2026-01-16 02:30:00"};
    expect_seq("0 30 3 * * *", "Europe/Berlin", "2026-01-15 00:00:00", berlin, 2);
    const char *summer[] = {"2026-07-15 01:30:00"};
    expect_seq("0 30 3 * * *", "Europe/Berlin", "2026-07-15 00:00:00", summer, 1);
    const char *kolkata[] = {"2026-07-14 18:30:00", "2026-07-15 18:30:00"};
    expect_seq("0 0 * * *", "Asia/Kolkata", "2026-07-14 12:00:00", kolkata, 2);
}

static void test_dst(void **state) {
    (void)state;
    /* Spring forward, New York 2026-03-08: 02:30 does not exist; it fires at 03:30 EDT (07:30Z)
     * that day, once; the next day 02:30 EDT is 06:30Z. */
    const char *gap[] = {"2026-03-07 07:30:00", "2026-03-08 07:30:00", "2026-03-09 06:30:00"};
    expect_seq("0 30 2 * * *", "America/New_York", "2026-03-07 00:00:00", gap, 3);
    /* Every 20 minutes across the gap: 01:40 EST, then 03:00 EDT (02:00 shifted coincides with
     * the real 03:00: one tick), 03:20 — no tick twice. */
    const char *gap20[] = {"2026-03-08 06:40:00", "2026-03-08 07:00:00", "2026-03-08 07:20:00",
                           "2026-03-08 07:40:00"};
    expect_seq("*/20 * * * *", "America/New_York", "2026-03-08 06:30:00", gap20, 4);
    /* Asked from inside the gap's shifted hour (03:10 EDT = 07:10Z), the shifted 02:30 (03:30 EDT)
     * is still found: the search starts early enough. */
    const char *inside[] = {"2026-03-08 07:30:00", "2026-03-09 06:30:00"};
    expect_seq("0 30 2 * * *", "America/New_York", "2026-03-08 07:10:00", inside, 2);
    /* Fall back, New York 2026-11-01: 01:00-01:59 occurs twice (EDT 05:00-05:59Z, EST
     * 06:00-06:59Z); 01:30 fires once, at its first occurrence. */
    const char *fall[] = {"2026-10-31 05:30:00", "2026-11-01 05:30:00", "2026-11-02 06:30:00"};
    expect_seq("0 30 1 * * *", "America/New_York", "2026-10-31 00:00:00", fall, 3);
    /* Every 20 minutes across the overlap: the repeated hour is not run again. */
    const char *fall20[] = {"2026-11-01 05:20:00", "2026-11-01 05:40:00", "2026-11-01 07:00:00",
                            "2026-11-01 07:20:00"};
    expect_seq("*/20 * * * *", "America/New_York", "2026-11-01 05:00:00", fall20, 4);
    /* Asked from inside the second occurrence (01:10 EST = 06:10Z): the next is 02:00 EST. */
    const char *second[] = {"2026-11-01 07:00:00"};
    expect_seq("*/20 * * * *", "America/New_York", "2026-11-01 06:10:00", second, 1);
    /* Lord Howe moves by 30 minutes: 2026-10-04 02:00 +10:30 → 02:30 +11 (15:30Z on the 3rd). 02:15
     * is in the gap and shifts to 02:45 (+11 = 15:45Z); 02:40 is real (15:40Z) and comes first. */
    const char *lh[] = {"2026-10-03 15:40:00", "2026-10-03 15:45:00", "2026-10-04 15:15:00"};
    expect_seq("15,40 2 * * *", "Australia/Lord_Howe", "2026-10-03 15:00:00", lh, 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published),       cmocka_unit_test(test_day_rule),
        cmocka_unit_test(test_steps_and_lists), cmocka_unit_test(test_macros),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_never),
        cmocka_unit_test(test_zones),           cmocka_unit_test(test_dst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
