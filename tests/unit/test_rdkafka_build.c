/*
 * test_rdkafka_build.c — the librdkafka kjobs runs with is the one it was compiled against:
 * the header's RD_KAFKA_VERSION equals the loaded library's rd_kafka_version(), and, when the
 * build uses scripts/build-librdkafka.sh's prefix (KJOBS_RDKAFKA_PREFIX), the library loaded
 * is the file under that prefix, not the distribution's /usr/lib librdkafka.so.1 (same soname,
 * so only the RPATH tells them apart). A mismatch means wrong include order or a lost RPATH.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#ifndef KJOBS_RDKAFKA_PREFIX
#define KJOBS_RDKAFKA_PREFIX ""
#endif

static void header_matches_library(void **state) {
    (void)state;
    print_message("header %#x, library %s\n", RD_KAFKA_VERSION, rd_kafka_version_str());
    assert_int_equal(rd_kafka_version(), RD_KAFKA_VERSION);
}

static void library_comes_from_the_configured_prefix(void **state) {
    (void)state;
    if (KJOBS_RDKAFKA_PREFIX[0] == '\0') skip(); /* built against the system library */
    Dl_info info;
    assert_int_not_equal(dladdr((void *)rd_kafka_version, &info), 0);
    assert_non_null(info.dli_fname);
    print_message("loaded %s\n", info.dli_fname);
    char want[4096];
    snprintf(want, sizeof(want), "%s/lib/", KJOBS_RDKAFKA_PREFIX);
    assert_int_equal(strncmp(info.dli_fname, want, strlen(want)), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_matches_library),
        cmocka_unit_test(library_comes_from_the_configured_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
