/*
 * test_output.c — the commands' output shapes (cli/output.h): a table's columns padded to their
 * widest cell with the last one left as is, the header counted; cells made terminal-safe (C0,
 * DEL and C1 controls replaced, valid UTF-8 kept, byte length kept); a JSON line compact, in
 * insertion order, newline-terminated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/output.h"

static char *render(const kj_table *t) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    kj_table_print(t, out);
    fclose(out);
    return text;
}

static void test_columns_are_padded_to_their_widest_cell(void **state) {
    (void)state;
    static const char *const heads[3] = {"ID", "TYPE", "ERROR"};
    kj_table *t = kj_table_new(3, heads, "  ");
    kj_table_add(t, (const char *const[]){"a-long-id", "x", "boom"});
    kj_table_add(t, (const char *const[]){"b", "a-long-type", NULL});
    assert_int_equal(kj_table_rows(t), 2);
    char *text = render(t);
    assert_string_equal(text, "ID         TYPE         ERROR\n"
                              "a-long-id  x            boom\n"
                              "b          a-long-type  \n");
    free(text);
    kj_table_free(t);
}

static void test_an_empty_table_prints_its_header(void **state) {
    (void)state;
    static const char *const heads[2] = {"GROUP", "LAG"};
    kj_table *t = kj_table_new(2, heads, " ");
    char *text = render(t);
    assert_string_equal(text, "GROUP LAG\n");
    free(text);
    kj_table_free(t);
}

static void test_cells_are_terminal_safe(void **state) {
    (void)state;
    static const char *const heads[2] = {"A", "B"};
    kj_table *t = kj_table_new(2, heads, " ");
    /* ESC [ 2 J, a newline, DEL, a C1 CSI (U+009B) and a kept non-ASCII letter (U+00E9) */
    kj_table_add(t, (const char *const[]){"\x1b[2J", "a\nb\x7f\xc2\x9b\xc3\xa9"});
    char *text = render(t);
    assert_string_equal(text, "A    B\n?[2J a?b???\xc3\xa9\n");
    free(text);
    kj_table_free(t);
    char s[] = "ok\tfine";
    kj_terminal_safe(s);
    assert_string_equal(s, "ok?fine");
}

static void test_a_json_line_is_compact_and_ordered(void **state) {
    (void)state;
    json_t *o = json_pack("{s:i,s:s,s:[i,i]}", "z", 1, "a", "x\ny", "l", 1, 2);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    kj_print_json_line(o, out);
    fclose(out);
    assert_string_equal(text, "{\"z\":1,\"a\":\"x\\ny\",\"l\":[1,2]}\n");
    free(text);
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_are_padded_to_their_widest_cell),
        cmocka_unit_test(test_an_empty_table_prints_its_header),
        cmocka_unit_test(test_cells_are_terminal_safe),
        cmocka_unit_test(test_a_json_line_is_compact_and_ordered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
