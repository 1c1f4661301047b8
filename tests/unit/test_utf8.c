/*
 * test_utf8.c — the UTF-8 helper (common/utf8.c): validity per RFC 3629 (overlongs,
 * surrogates, > U+10FFFF, truncated sequences), replacement of bad bytes and NUL, cutting on a
 * character boundary with the ellipsis marker within the size, and JSON strings that are never
 * NULL for untrusted bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/utf8.h"

static void test_validity(void **state) {
    (void)state;
    assert_true(kj_utf8_valid("", 0));
    assert_true(kj_utf8_valid("abc", 3));
    assert_true(kj_utf8_valid("\xC3\xA9", 2));          /* é */
    assert_true(kj_utf8_valid("\xF0\x9F\x98\x80", 4));  /* U+1F600 */
    assert_false(kj_utf8_valid("\xC3", 1));             /* truncated */
    assert_false(kj_utf8_valid("\xC0\xAF", 2));         /* overlong '/' */
    assert_false(kj_utf8_valid("\xE0\x80\xAF", 3));     /* overlong */
    assert_false(kj_utf8_valid("\xED\xA0\x80", 3));     /* surrogate */
    assert_false(kj_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(kj_utf8_valid("\xFF", 1));
    assert_int_equal(kj_utf8_seq_len("\xE2\x80\xA6", 3), 3);
    assert_int_equal(kj_utf8_seq_len("\xE2\x80", 2), 0);
}

/* kj_utf8_ascii_run stops at (or up to 7 bytes before) the first NUL or high byte, wherever
 * it is in a word, and never reads past n. */
static void test_ascii_run_stops_at_nul_and_high_bytes(void **state) {
    (void)state;
    char buf[40];
    for (size_t at = 0; at < 24; at++) {
        for (int kind = 0; kind < 3; kind++) {
            memset(buf, 'a', sizeof(buf));
            buf[at] = kind == 0 ? 0 : kind == 1 ? (char)0x80 : (char)0xFF;
            size_t run = kj_utf8_ascii_run(buf, sizeof(buf));
            assert_true(run <= at);
            assert_true(at - run < 8);
            assert_int_equal(run % 8, 0);
        }
    }
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(kj_utf8_ascii_run(buf, 40), 40);
    assert_int_equal(kj_utf8_ascii_run(buf, 13), 8); /* the tail is the caller's */
    assert_int_equal(kj_utf8_ascii_run(buf, 7), 0);
    buf[39] = 0x7F; /* DEL is ASCII */
    assert_int_equal(kj_utf8_ascii_run(buf, 40), 40);
}

static void test_clean_replaces_bad_bytes_and_nul(void **state) {
    (void)state;
    char out[64];
    size_t n = kj_utf8_clean(out, sizeof(out), "a\xC3z\0b\xFF", 6, NULL, true);
    assert_string_equal(out,
                        "a" KJ_UTF8_REPLACEMENT "z" KJ_UTF8_REPLACEMENT "b" KJ_UTF8_REPLACEMENT);
    assert_int_equal(n, strlen(out));
    kj_utf8_clean(out, sizeof(out), "x\xFFy", 3, "?", false);
    assert_string_equal(out, "x?y");
    /* runs of ASCII longer than a word around them, and cut inside one */
    static const char mixed[] = "attempt 1 failed: \xFF bad byte then \0 a NUL, and then more";
    n = kj_utf8_clean(out, sizeof(out), mixed, sizeof(mixed) - 1, "?", false);
    assert_string_equal(out, "attempt 1 failed: ? bad byte then ? a NUL, and then more");
    assert_int_equal(n, sizeof(mixed) - 1);
    n = kj_utf8_clean(out, 14, mixed, sizeof(mixed) - 1, NULL, true);
    assert_string_equal(out, "attempt 1 " KJ_UTF8_ELLIPSIS);
    assert_int_equal(n, 13);
    n = kj_utf8_clean(out, 12, mixed, sizeof(mixed) - 1, NULL, false);
    assert_string_equal(out, "attempt 1 f");
    assert_int_equal(n, 11);
    /* a long ASCII text cut to the destination: the first bytes of it, then the marker */
    static char longtext[1 << 16];
    for (size_t i = 0; i < sizeof(longtext); i++)
        longtext[i] = (char)('a' + i % 26);
    char cut[1024];
    n = kj_utf8_clean(cut, sizeof(cut), longtext, sizeof(longtext), NULL, true);
    assert_int_equal(n, sizeof(cut) - 1);
    assert_memory_equal(cut, longtext, n - 3);
    assert_memory_equal(cut + n - 3, KJ_UTF8_ELLIPSIS, 3);
}

static void test_cut_on_character_boundary_with_ellipsis(void **state) {
    (void)state;
    char src[1400], out[1024];
    size_t len = 0;
    for (int i = 0; i < 700; i++) { /* "é" × 700 = 1400 bytes, a character across byte 1023 */
        src[len++] = '\xC3';
        src[len++] = '\xA9';
    }
    size_t n = kj_utf8_clean(out, sizeof(out), src, len, NULL, true);
    assert_true(n <= sizeof(out) - 1);
    assert_int_equal(n, strlen(out));
    assert_true(kj_utf8_valid(out, n));
    assert_memory_equal(out + n - 3, KJ_UTF8_ELLIPSIS, 3);
    assert_int_equal(n, 1020 + 3); /* 510 whole "é" and the marker: as much as fits */
    /* text that fits is not marked */
    n = kj_utf8_clean(out, sizeof(out), src, 1022, NULL, true);
    assert_int_equal(n, 1022);
    assert_null(strstr(out, KJ_UTF8_ELLIPSIS));
    /* without the marker: just the whole characters */
    n = kj_utf8_clean(out, 8, src, len, NULL, false);
    assert_int_equal(n, 6);
    /* a destination too small for the marker still gets valid text */
    n = kj_utf8_clean(out, 3, src, len, NULL, true);
    assert_true(kj_utf8_valid(out, n));
}

static void test_json_string_never_null(void **state) {
    (void)state;
    json_t *j = kj_utf8_json_string("ok\xC3", 3);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "ok" KJ_UTF8_REPLACEMENT);
    json_decref(j);
    j = kj_utf8_json_string(NULL, 0);
    assert_true(json_is_null(j));
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validity),
        cmocka_unit_test(test_ascii_run_stops_at_nul_and_high_bytes),
        cmocka_unit_test(test_clean_replaces_bad_bytes_and_nul),
        cmocka_unit_test(test_cut_on_character_boundary_with_ellipsis),
        cmocka_unit_test(test_json_string_never_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
