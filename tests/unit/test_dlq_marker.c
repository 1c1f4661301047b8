/*
 * test_dlq_marker.c — the replay marker (processor/dlq_marker.c): the metadata text byte for
 * byte (what kafka-python reads back in tests/integration/test_dlq.py), parsing what is ours
 * and refusing what is not, normalising (sort, cut at W, merge adjacent), and the rule that
 * moves W: held by the first dead letter still new, by a read that stopped early, never back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "processor/dlq_marker.h"

static void assert_format(const kj_dlq_ranges *s, const char *want) {
    char *text = kj_dlq_marker_format(s);
    assert_string_equal(text, want);
    free(text);
}

static void test_format(void **state) {
    (void)state;
    kj_dlq_ranges s = {0};
    assert_format(&s, "kjobs-replayed:v1:");
    kj_dlq_ranges_add(&s, 45);
    kj_dlq_ranges_add(&s, 12);
    kj_dlq_ranges_normalize(&s, 0);
    assert_format(&s, "kjobs-replayed:v1:12,45");
    for (int64_t o = 13; o <= 40; o++)
        kj_dlq_ranges_add(&s, o);
    kj_dlq_ranges_normalize(&s, 0);
    assert_format(&s, "kjobs-replayed:v1:12-40,45");
    assert_int_equal(s.n, 2);
    /* the widest offsets fit the buffer */
    kj_dlq_ranges_free(&s);
    kj_dlq_ranges_add(&s, INT64_MAX - 1);
    kj_dlq_ranges_add(&s, INT64_MAX);
    kj_dlq_ranges_normalize(&s, 0);
    assert_format(&s, "kjobs-replayed:v1:9223372036854775806-9223372036854775807");
    kj_dlq_ranges_free(&s);
    assert_null(s.v);
    assert_int_equal(s.n, 0);
}

static void test_parse_round_trip(void **state) {
    (void)state;
    static const char *const texts[] = {"kjobs-replayed:v1:", "kjobs-replayed:v1:0",
                                        "kjobs-replayed:v1:2,4", "kjobs-replayed:v1:12-40,45",
                                        "kjobs-replayed:v1:0-9223372036854775807"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
        kj_dlq_ranges s = {0};
        assert_int_equal(kj_dlq_marker_parse(texts[i], &s), 0);
        assert_format(&s, texts[i]);
        kj_dlq_ranges_free(&s);
    }
    kj_dlq_ranges s = {0};
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:12-40,45", &s), 0);
    assert_true(kj_dlq_ranges_has(&s, 12));
    assert_true(kj_dlq_ranges_has(&s, 40));
    assert_true(kj_dlq_ranges_has(&s, 45));
    assert_false(kj_dlq_ranges_has(&s, 11));
    assert_false(kj_dlq_ranges_has(&s, 41));
    kj_dlq_ranges_free(&s);
}

static void test_parse_refuses_what_is_not_ours(void **state) {
    (void)state;
    static const char *const bad[] = {
        "",                        /* a commit without metadata */
        "kjobs-replayed:v2:1",     /* another version */
        "something else",          /* another tool's metadata */
        "kjobs-replayed:v1:-1",    /* below 0 */
        "kjobs-replayed:v1:5-3",   /* reversed */
        "kjobs-replayed:v1:1;2",   /* stray character */
        "kjobs-replayed:v1:1-",    /* no upper bound */
        "kjobs-replayed:v1:a",     /* not a number */
        "kjobs-replayed:v1:1 ,2",  /* space */
        "kjobs-replayed:v1:,1",    /* empty first range */
        "kjobs-replayed:v1:3-5-7", /* two dashes */
        "kjobs-replayed:v1:3--5",  /* negative upper bound */
        "kjobs-replayed:v1:1,,2",  /* empty range */
        "kjobs-replayed:v1:1\n"    /* newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        kj_dlq_ranges s = {0};
        if (kj_dlq_marker_parse(bad[i], &s) != -1) fail_msg("accepted \"%s\"", bad[i]);
        kj_dlq_ranges_free(&s);
    }
    /* tolerated, as always: a trailing comma */
    kj_dlq_ranges s = {0};
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:1,", &s), 0);
    assert_int_equal(s.n, 1);
    kj_dlq_ranges_free(&s);
}

static void test_normalize(void **state) {
    (void)state;
    kj_dlq_ranges s = {0};
    kj_dlq_ranges_normalize(&s, 5); /* empty: no qsort on a NULL array */
    assert_int_equal(s.n, 0);
    /* unsorted, overlapping, adjacent, partly and wholly below the floor */
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:20-22,1-3,8-12,4,13,30-31,10", &s), 0);
    kj_dlq_ranges_normalize(&s, 0);
    assert_format(&s, "kjobs-replayed:v1:1-4,8-13,20-22,30-31");
    kj_dlq_ranges_normalize(&s, 10);
    assert_format(&s, "kjobs-replayed:v1:10-13,20-22,30-31");
    kj_dlq_ranges_normalize(&s, 22);
    assert_format(&s, "kjobs-replayed:v1:22,30-31");
    kj_dlq_ranges_normalize(&s, 40);
    assert_format(&s, "kjobs-replayed:v1:");
    /* adding what a range holds adds nothing */
    kj_dlq_ranges_free(&s);
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:3-6", &s), 0);
    kj_dlq_ranges_add(&s, 5);
    assert_int_equal(s.n, 1);
    kj_dlq_ranges_free(&s);
}

/* The rule, table-tested: each row is one partition after a replay. */
static void test_next(void **state) {
    (void)state;
    static const struct {
        const char *what;
        int64_t committed;
        const char *marks; /* NULL: none */
        int64_t end;
        bool read_to_end;
        int64_t next_expected, first_new;
        const char *acked; /* as marker text, NULL: none */
        int64_t want_w;
        const char *want;
    } rows[] = {
        {"everything replayed: W at the end, no ranges", -1, NULL, 6, true, 6, -1,
         "kjobs-replayed:v1:0-5", 6, "kjobs-replayed:v1:"},
        {"filtered: the first one left new holds W", -1, NULL, 6, true, 6, 1,
         "kjobs-replayed:v1:0,2,4", 1, "kjobs-replayed:v1:2,4"},
        {"test_dlq.py: the B's later, refailed 5 not new", 1, "kjobs-replayed:v1:2,4", 6, true, 6,
         -1, "kjobs-replayed:v1:1,3", 6, "kjobs-replayed:v1:"},
        {"nothing acknowledged, nothing new: W moves over what is not replayable", -1, NULL, 3,
         true, 3, -1, NULL, 3, "kjobs-replayed:v1:"},
        {"a copy not acknowledged (still new) holds W", -1, NULL, 2, true, 2, 1,
         "kjobs-replayed:v1:0", 1, "kjobs-replayed:v1:"},
        {"stopped early: W at most where the read stopped", -1, NULL, 10, false, 4, -1,
         "kjobs-replayed:v1:0-3", 4, "kjobs-replayed:v1:"},
        {"never back: an --again replay from 0 below W", 8, "kjobs-replayed:v1:9", 10, true, 10, 2,
         "kjobs-replayed:v1:3", 8, "kjobs-replayed:v1:9"},
        {"old ranges kept above the new W", 2, "kjobs-replayed:v1:5,7-8", 12, true, 12, 4,
         "kjobs-replayed:v1:3,10", 4, "kjobs-replayed:v1:5,7-8,10"},
        {"empty partition", -1, NULL, 0, true, 0, -1, NULL, 0, "kjobs-replayed:v1:"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(*rows); i++) {
        kj_dlq_ranges marks = {0}, acked = {0}, out = {0};
        if (rows[i].marks) assert_int_equal(kj_dlq_marker_parse(rows[i].marks, &marks), 0);
        if (rows[i].acked) assert_int_equal(kj_dlq_marker_parse(rows[i].acked, &acked), 0);
        kj_dlq_marker_step st = {.committed = rows[i].committed,
                                 .marks = &marks,
                                 .end = rows[i].end,
                                 .read_to_end = rows[i].read_to_end,
                                 .next_expected = rows[i].next_expected,
                                 .first_new = rows[i].first_new,
                                 .acked = &acked};
        int64_t w = kj_dlq_marker_next(&st, &out);
        char *text = kj_dlq_marker_format(&out);
        if (w != rows[i].want_w || strcmp(text, rows[i].want) != 0)
            fail_msg("%s: got W=%lld %s, want W=%lld %s", rows[i].what, (long long)w, text,
                     (long long)rows[i].want_w, rows[i].want);
        free(text);
        kj_dlq_ranges_free(&marks);
        kj_dlq_ranges_free(&acked);
        kj_dlq_ranges_free(&out);
    }
}

static void test_changed(void **state) {
    (void)state;
    const char *empty = KJ_DLQ_MARKER_PREFIX;
    /* no marker yet */
    assert_false(kj_dlq_marker_changed(-1, NULL, 0, 0, empty)); /* nothing below low */
    assert_false(kj_dlq_marker_changed(-1, NULL, 5, 3, empty)); /* retention moved low past W */
    assert_true(kj_dlq_marker_changed(-1, NULL, 0, 1, empty));
    assert_true(kj_dlq_marker_changed(-1, NULL, 0, 0, "kjobs-replayed:v1:2"));
    /* a marker read back */
    assert_false(kj_dlq_marker_changed(6, empty, 0, 6, empty));
    assert_true(kj_dlq_marker_changed(6, empty, 0, 7, empty));
    assert_true(kj_dlq_marker_changed(1, "kjobs-replayed:v1:2,4", 0, 1, "kjobs-replayed:v1:2-4"));
    /* a commit without our metadata is rewritten in our form */
    assert_true(kj_dlq_marker_changed(3, "", 0, 3, empty));
    assert_false(kj_dlq_marker_changed(3, "kjobs-replayed:v1:", 0, 3, empty));
}

/* Offsets of [low, end) that no marker settles (below its W or in its ranges). */
static void test_unsettled(void **state) {
    (void)state;
    kj_dlq_ranges r1 = {0}, r2 = {0};
    assert_int_equal(kj_dlq_marker_unsettled(0, 0, NULL, 0), 0);
    assert_int_equal(kj_dlq_marker_unsettled(5, 15, NULL, 0), 10); /* no marker: all */
    kj_dlq_marker_view none[] = {{-1, NULL}, {-1, &r1}};
    assert_int_equal(kj_dlq_marker_unsettled(5, 15, none, 2), 10);
    /* replay W 8 + {10, 12-13}; discard W 6 + {9-10, 14, 40}: settled are those below 8 and
     * 9, 10, 12, 13, 14 */
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:10,12-13", &r1), 0);
    assert_int_equal(kj_dlq_marker_parse("kjobs-replayed:v1:9-10,14,40", &r2), 0);
    kj_dlq_marker_view both[] = {{8, &r1}, {6, &r2}};
    assert_int_equal(kj_dlq_marker_unsettled(5, 15, both, 2), 2); /* 8 and 11 */
    assert_int_equal(kj_dlq_marker_unsettled(0, 20, both, 2), 7); /* 8, 11, 15..19 */
    assert_int_equal(kj_dlq_marker_unsettled(10, 12, both, 2), 1);
    /* a W past the end settles everything; retention past W changes nothing */
    kj_dlq_marker_view past[] = {{30, NULL}};
    assert_int_equal(kj_dlq_marker_unsettled(5, 15, past, 1), 0);
    assert_int_equal(kj_dlq_marker_unsettled(35, 45, both, 2), 9); /* 40 settled */
    kj_dlq_ranges_free(&r1);
    kj_dlq_ranges_free(&r2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_round_trip),
        cmocka_unit_test(test_parse_refuses_what_is_not_ours),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_changed),
        cmocka_unit_test(test_unsettled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
