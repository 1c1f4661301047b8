/*
 * tests/unit/test_buf.c — the shared helpers with no other test of their own: the growable
 * buffer (common/buf.h: always NUL-terminated, "" when empty, growth across many appends,
 * binary bytes kept) and the in-memory string hash (common/hash.h: the values the three
 * copies it replaced computed, and the bytes/str forms agree).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/buf.h"
#include "common/hash.h"

static void test_empty_buffer_is_empty_string(void **state) {
    (void)state;
    kj_buf b = {0};
    size_t len = 99;
    char *s = kj_buf_take_str(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    assert_null(b.data);
    free(s);
    kj_buf_free(&b); /* a reset buffer frees cleanly */
}

static void test_appends_grow_and_stay_terminated(void **state) {
    (void)state;
    kj_buf b = {0};
    for (int i = 0; i < 10000; i++) {
        kj_buf_puts(&b, "ab");
        assert_int_equal(b.data[b.len], '\0');
    }
    assert_int_equal(b.len, 20000);
    assert_false(b.oom);
    kj_buf_put(&b, "\0\xff", 2); /* binary bytes are kept, NUL included */
    assert_int_equal(b.len, 20002);
    assert_int_equal(b.data[20000], 0);
    assert_int_equal(b.data[20001], 0xff);
    size_t len;
    char *s = kj_buf_take_str(&b, &len);
    assert_int_equal(len, 20002);
    assert_int_equal(strncmp(s, "abab", 4), 0);
    free(s);
}

static void test_failed_buffer_yields_null(void **state) {
    (void)state;
    kj_buf b = {0};
    kj_buf_puts(&b, "x");
    b.oom = 1; /* as after a failed allocation */
    kj_buf_puts(&b, "dropped");
    assert_int_equal(b.len, 1);
    assert_null(kj_buf_take_str(&b, NULL));
    assert_null(b.data);
}

static void test_hash_values(void **state) {
    (void)state;
    /* what handlers.c, exec_handler.c and metrics.c computed before they shared hash.h */
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = "kjobs.noop"; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    assert_true(kj_hash_str("kjobs.noop") == h);
    assert_true(kj_hash_bytes(KJ_HASH_INIT, "kjobs.noop", 10) == h);
    assert_true(kj_hash_str("") == KJ_HASH_INIT);
    /* continuing a hash is hashing the concatenation */
    assert_true(kj_hash_bytes(kj_hash_bytes(KJ_HASH_INIT, "ab", 2), "c", 1) == kj_hash_str("abc"));
    assert_true(kj_hash_str("ab") != kj_hash_str("ba"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_buffer_is_empty_string),
        cmocka_unit_test(test_appends_grow_and_stay_terminated),
        cmocka_unit_test(test_failed_buffer_yields_null),
        cmocka_unit_test(test_hash_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
