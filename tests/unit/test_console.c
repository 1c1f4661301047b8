/*
 * test_console.c — the console's guards (processor/console.c): the token comparison and the
 * loopback Host check that keeps a token-less console from answering a DNS-rebinding page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "processor/console.h"

static void test_token_equal(void **state) {
    (void)state;
    assert_true(kj_console_token_equal("s3cret", "s3cret"));
    assert_false(kj_console_token_equal("s3cres", "s3cret"));
    assert_false(kj_console_token_equal("s3cre", "s3cret"));
    assert_false(kj_console_token_equal("s3crett", "s3cret"));
    assert_false(kj_console_token_equal("", "s3cret"));
}

static void test_host_is_loopback(void **state) {
    (void)state;
    assert_true(kj_console_host_is_loopback("127.0.0.1:8090"));
    assert_true(kj_console_host_is_loopback("127.1.2.3"));
    assert_true(kj_console_host_is_loopback("localhost:1"));
    assert_true(kj_console_host_is_loopback("LOCALHOST"));
    assert_true(kj_console_host_is_loopback("[::1]:8090"));
    assert_true(kj_console_host_is_loopback("[::1]"));
    assert_false(kj_console_host_is_loopback(NULL));
    assert_false(kj_console_host_is_loopback(""));
    assert_false(kj_console_host_is_loopback("attacker.example:8090"));
    assert_false(kj_console_host_is_loopback("localhost.attacker.example"));
    assert_false(kj_console_host_is_loopback("127.0.0.1.attacker.example"));
    assert_false(kj_console_host_is_loopback("0.0.0.0:8090"));
    assert_false(kj_console_host_is_loopback("[::]:8090"));
    assert_false(kj_console_host_is_loopback("[::1]x"));
    assert_false(kj_console_host_is_loopback("10.0.0.1"));
    /* what the resolver reads otherwise: octal 0127 is 87, "127.1" is 127.0.0.1 but not here */
    assert_false(kj_console_host_is_loopback("0127.0.0.1:8090"));
    assert_false(kj_console_host_is_loopback("127.000.000.001"));
    assert_false(kj_console_host_is_loopback("+127.0.0.1"));
    assert_false(kj_console_host_is_loopback(" 127.0.0.1"));
    assert_false(kj_console_listen_is_loopback("0127.0.0.1:8090"));
    assert_true(kj_console_listen_is_loopback("127.0.0.1:0"));
    assert_false(kj_console_listen_is_loopback(":8090"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_equal),
        cmocka_unit_test(test_host_is_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
