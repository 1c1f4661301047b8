/*
 * tests/unit/test_crash_guard.c — processor/crash_guard.h: the committed-metadata marks parse
 * back exactly what was formatted and nothing else (any other tool may write metadata), and
 * the plan/decision rule: careful mode only after an owner died, the suspect counted per owner,
 * dead-lettered at the limit, a stale suspect below the committed offset ignored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "processor/crash_guard.h"

static kj_crash_meta parse(const char *s) {
    return kj_crash_meta_parse(s, strlen(s));
}

static void test_marks_round_trip(void **state) {
    (void)state;
    char buf[KJ_CRASH_META_MAX];
    kj_crash_meta in[] = {{.kind = KJ_CRASH_META_CLEAN},
                          {.kind = KJ_CRASH_META_LIVE},
                          {.kind = KJ_CRASH_META_PROBE, .offset = 0, .count = 1},
                          {.kind = KJ_CRASH_META_PROBE, .offset = 999999999999999999, .count = 7}};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        kj_crash_meta_format(&in[i], buf, sizeof buf);
        kj_crash_meta out = parse(buf);
        assert_int_equal(out.kind, in[i].kind);
        if (in[i].kind == KJ_CRASH_META_PROBE) {
            assert_int_equal(out.offset, in[i].offset);
            assert_int_equal(out.count, in[i].count);
        }
    }
    assert_string_equal(kj_crash_meta_format(&in[2], buf, sizeof buf), "kjobs1:probe:0:1");
    kj_crash_meta none = {.kind = KJ_CRASH_META_NONE};
    assert_string_equal(kj_crash_meta_format(&none, buf, sizeof buf), "");
}

static void test_foreign_metadata_is_none(void **state) {
    (void)state;
    const char *bad[] = {"",
                         "clean",
                         "kjobs1:",
                         "kjobs1:clean ",
                         "kjobs1:Clean",
                         "kjobs2:live",
                         "kjobs1:probe:",
                         "kjobs1:probe:5",
                         "kjobs1:probe:5:",
                         "kjobs1:probe::1",
                         "kjobs1:probe:-5:1",
                         "kjobs1:probe:5:0",
                         "kjobs1:probe:5:-1",
                         "kjobs1:probe:05:1",
                         "kjobs1:probe:5:1:2",
                         "kjobs1:probe:5:1x",
                         "kjobs1:probe:1234567890123456789:1",
                         "kjobs1:probe:5:99999999",
                         "some consumer's own metadata"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (parse(bad[i]).kind != KJ_CRASH_META_NONE)
            fail_msg("\"%s\" was taken as a mark", bad[i]);
    assert_int_equal(kj_crash_meta_parse(NULL, 0).kind, KJ_CRASH_META_NONE);
    /* not NUL-terminated: only `size` bytes count */
    assert_int_equal(kj_crash_meta_parse("kjobs1:liveXYZ", 11).kind, KJ_CRASH_META_LIVE);
}

static void test_plan_and_decide(void **state) {
    (void)state;
    int n = 0;
    /* given up cleanly, or never marked: no careful mode */
    kj_crash_meta clean = parse("kjobs1:clean"), none = parse("");
    assert_int_equal(kj_crash_plan_for(&clean, 100, 50).careful_until, 0);
    assert_int_equal(kj_crash_plan_for(&none, 100, 50).careful_until, 0);
    /* died holding it: careful over the window, no suspect yet */
    kj_crash_meta live = parse("kjobs1:live");
    kj_crash_plan p = kj_crash_plan_for(&live, 100, 50);
    assert_int_equal(p.careful_until, 150);
    assert_int_equal(p.suspect, -1);
    assert_int_equal(kj_crash_decide(&p, 100, 3, &n), KJ_CRASH_PROBE);
    assert_int_equal(n, 1);
    /* died running 120 alone, twice: the third owner probes it as 3, the fourth dead-letters */
    kj_crash_meta probe2 = parse("kjobs1:probe:120:2");
    p = kj_crash_plan_for(&probe2, 100, 50);
    assert_int_equal(p.suspect, 120);
    assert_int_equal(kj_crash_decide(&p, 110, 3, &n), KJ_CRASH_PROBE);
    assert_int_equal(n, 1); /* another job: a first probe */
    assert_int_equal(kj_crash_decide(&p, 120, 3, &n), KJ_CRASH_PROBE);
    assert_int_equal(n, 3);
    kj_crash_meta probe3 = parse("kjobs1:probe:120:3");
    p = kj_crash_plan_for(&probe3, 100, 50);
    assert_int_equal(kj_crash_decide(&p, 120, 3, &n), KJ_CRASH_DEAD_LETTER);
    assert_int_equal(kj_crash_decide(&p, 120, 4, &n), KJ_CRASH_PROBE); /* a higher limit */
    assert_int_equal(n, 4);
    /* the suspect beyond the window still gets careful treatment */
    kj_crash_meta far = parse("kjobs1:probe:900:1");
    p = kj_crash_plan_for(&far, 100, 50);
    assert_true(p.careful_until > 900);
    /* a suspect below the committed offset finished since: ignored */
    kj_crash_meta stale = parse("kjobs1:probe:90:5");
    p = kj_crash_plan_for(&stale, 100, 50);
    assert_int_equal(p.suspect, -1);
    assert_int_equal(p.careful_until, 150);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marks_round_trip),
        cmocka_unit_test(test_foreign_metadata_is_none),
        cmocka_unit_test(test_plan_and_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
