/*
 * test_error_text.c — text of unknown origin on its way out (issue #10 item 6): a handler error
 * longer than KJ_ERROR_MAX with a multi-byte character across the cut is stored as valid UTF-8,
 * cut on a character boundary with an ellipsis, within the size; invalid bytes in a handler's
 * error become U+FFFD; and a log line with a field that is not valid UTF-8 keeps every field
 * (it used to collapse to {"log_error":"Invalid UTF-8 string"}). Self-contained checks only
 * (no kjobs UTF-8 helper), so the same assertions judge any implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/handlers.h"
#include "processor/log.h"

/* Strict UTF-8 check written here, independent of the code under test. */
static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80                   ? 1
                   : (c >= 0xC2 && c <= 0xDF) ? 2
                   : (c & 0xF0) == 0xE0       ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4
                                              : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static void test_long_error_cut_on_character_boundary(void **state) {
    (void)state;
    char text[1401];
    for (int i = 0; i < 700; i++)
        memcpy(text + 2 * i, "\xC3\xA9", 2); /* "é" × 700 */
    text[1400] = '\0';
    kjobs_result_t r;
    kj_result_reset(&r);
    kjobs_result_fail(&r, "%s", text);
    size_t n = strlen(r.error);
    assert_true(n <= KJ_ERROR_MAX - 1);
    if (!valid_utf8((const unsigned char *)r.error, n)) fail_msg("kjobs-error is not valid UTF-8");
    assert_true(n >= 3);
    assert_memory_equal(r.error + n - 3, "\xE2\x80\xA6", 3); /* ends with "…" */
    assert_memory_equal(r.error, "\xC3\xA9\xC3\xA9", 4);
    assert_true(n >= KJ_ERROR_MAX - 1 - 4); /* kept as much as fits */
}

static void test_invalid_bytes_in_error_replaced(void **state) {
    (void)state;
    kjobs_result_t r;
    kj_result_reset(&r);
    kjobs_result_retry(&r, -1, "bad \xFF\xC3 end");
    size_t n = strlen(r.error);
    if (!valid_utf8((const unsigned char *)r.error, n)) fail_msg("error is not valid UTF-8");
    assert_non_null(strstr(r.error, "bad "));
    assert_non_null(strstr(r.error, " end"));
    assert_non_null(strstr(r.error, "\xEF\xBF\xBD")); /* U+FFFD */
}

static void test_log_line_keeps_fields_with_invalid_utf8(void **state) {
    (void)state;
    char path[] = "/tmp/kjobs-error-text-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    kj_log_set_fd(fd);
    kj_log(KJ_LOG_WARN, "job failed, dead-lettered", "{s:s?,s:s,s:i,s:I,s:s}", "id", "job-1",
           "topic", "jobs", "partition", 3, "offset", (json_int_t)42, "error",
           "cut in the middle \xC3");
    kj_log_set_fd(2);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    json_error_t jerr;
    json_t *line = json_loads(buf, 0, &jerr);
    assert_non_null(line);
    assert_null(json_object_get(line, "log_error"));
    assert_string_equal(json_string_value(json_object_get(line, "id")), "job-1");
    assert_string_equal(json_string_value(json_object_get(line, "topic")), "jobs");
    assert_int_equal(json_integer_value(json_object_get(line, "partition")), 3);
    assert_int_equal(json_integer_value(json_object_get(line, "offset")), 42);
    const char *err = json_string_value(json_object_get(line, "error"));
    assert_non_null(err);
    assert_non_null(strstr(err, "cut in the middle "));
    json_decref(line);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_error_cut_on_character_boundary),
        cmocka_unit_test(test_invalid_bytes_in_error_replaced),
        cmocka_unit_test(test_log_line_keeps_fields_with_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
