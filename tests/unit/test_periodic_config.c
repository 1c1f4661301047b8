/*
 * tests/unit/test_periodic_config.c — schedule.periodic in the configuration file
 * (processor/periodic_config.c through kj_config_load_string): every field read, defaults, and
 * each error naming the file, the line and the entry's setting; the commented example of
 * kjobs.cfg.example loads once uncommented.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "processor/config.h"
#include "processor/periodic_config.h"

static void test_entry_fields(void **state) {
    (void)state;
    const char *text = "schedule = {\n"
                       "  periodic = (\n"
                       "    { name = \"nightly-report\"; cron = \"0 30 3 * * *\";\n"
                       "      time_zone = \"Europe/Berlin\"; type = \"report.build\";\n"
                       "      key = \"nightly\"; payload = \"{\\\"kind\\\":\\\"daily\\\"}\";\n"
                       "      meta = { team = \"bi\"; owner = \"ana\"; };\n"
                       "      missed = \"run_once\"; catch_up = \"2m\"; jitter = \"30s\"; },\n"
                       "    { name = \"tick\"; cron = \"*/2 * * * * *\"; type = \"t\"; }\n"
                       "  );\n"
                       "};\n";
    kj_config cfg;
    char err[512] = "";
    int rc = kj_config_load_string(&cfg, text, "kjobs.cfg", NULL, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(cfg.periodic_count, 2);
    const kj_periodic_entry *e = &cfg.periodic[0];
    assert_string_equal(e->name, "nightly-report");
    assert_string_equal(e->cron_text, "0 30 3 * * *");
    assert_string_equal(e->time_zone, "Europe/Berlin");
    assert_string_equal(e->type, "report.build");
    assert_string_equal(e->key, "nightly");
    assert_string_equal(e->payload, "{\"kind\":\"daily\"}");
    assert_int_equal(e->meta_count, 2);
    assert_string_equal(e->meta_keys[1], "owner");
    assert_string_equal(e->meta_values[1], "ana");
    assert_int_equal(e->missed, KJ_MISSED_RUN_ONCE);
    assert_int_equal(e->catch_up_ms, 120000);
    assert_int_equal(e->jitter_ms, 30000);
    assert_int_equal(e->line, 3);
    assert_true(e->cron.hour == (1u << 3));
    e = &cfg.periodic[1];
    assert_null(e->key);
    assert_string_equal(e->payload, "");
    assert_string_equal(e->time_zone, "UTC");
    assert_int_equal(e->missed, KJ_MISSED_SKIP);
    assert_int_equal(e->catch_up_ms, 300000);
    assert_int_equal(e->jitter_ms, 0);
    char *t = kj_periodic_state_topic(&cfg);
    assert_string_equal(t, "jobs.schedule");
    free(t);
    kj_config_free(&cfg);
    /* No list: no entries. */
    assert_int_equal(
        kj_config_load_string(&cfg, "workers = 2;\n", "kjobs.cfg", NULL, err, sizeof err), 0);
    assert_int_equal(cfg.periodic_count, 0);
    kj_config_free(&cfg);
}

/* Loading `entries` (the body of periodic = ( ... )) fails with exactly `want`. */
static void expect_error(const char *entries, const char *extra, const char *want) {
    char text[2048];
    snprintf(text, sizeof text, "%sschedule = {\n  periodic = (\n%s  );\n};\n", extra, entries);
    kj_config cfg;
    char err[512] = "";
    int rc = kj_config_load_string(&cfg, text, "kjobs.cfg", NULL, err, sizeof err);
    kj_config_free(&cfg);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("config:\n%s\nexpected: %s\n     got: %s (rc %d)", text, want, err, rc);
}

static void test_errors(void **state) {
    (void)state;
    /* line 1 "schedule = {", line 2 "periodic = (", entries from line 3 */
    expect_error("    { name = \"a\"; type = \"t\";\n      cron = \"61 * * * *\"; }\n", "",
                 "kjobs.cfg:4: schedule.periodic[0].cron: minute field: \"61\" is out of range "
                 "0-59");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; },\n"
                 "    { name = \"b\"; type = \"t\"; cron = \"* * * * *\";\n"
                 "      time_zone = \"Europe/Berlinn\"; }\n",
                 "",
                 "kjobs.cfg:5: schedule.periodic[1].time_zone: unknown time zone "
                 "\"Europe/Berlinn\" (an IANA name: UTC, Europe/Berlin)");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; },\n"
                 "    { name = \"a\"; type = \"u\"; cron = \"@daily\"; }\n",
                 "",
                 "kjobs.cfg:4: schedule.periodic[1].name: \"a\" is already the name of "
                 "schedule.periodic[0] (line 3); names must be unique");
    expect_error("    { name = \"a\"; cron = \"* * * * *\"; }\n", "",
                 "kjobs.cfg:3: schedule.periodic[0] (a): missing type");
    expect_error("    { type = \"t\"; cron = \"* * * * *\"; }\n", "",
                 "kjobs.cfg:3: schedule.periodic[0]: missing name");
    expect_error("    { name = \"a\"; type = \"t\"; }\n", "",
                 "kjobs.cfg:3: schedule.periodic[0] (a): missing cron");
    expect_error("    { name = \"a b\"; type = \"t\"; cron = \"* * * * *\"; }\n", "",
                 "kjobs.cfg:3: schedule.periodic[0].name: \"a b\" must be 1-100 characters of "
                 "A-Z a-z 0-9 . _ -");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\";\n"
                 "      mised = \"skip\"; }\n",
                 "",
                 "kjobs.cfg:4: schedule.periodic[0].mised: unknown setting (an entry has name, "
                 "cron, time_zone, type, key, payload, meta, missed, catch_up, jitter)");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; missed = \"all\"; }\n",
                 "",
                 "kjobs.cfg:3: schedule.periodic[0].missed: \"all\": expected \"skip\" or "
                 "\"run_once\"");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; jitter = \"soon\"; }\n",
                 "",
                 "kjobs.cfg:3: schedule.periodic[0].jitter: \"soon\" is not a duration from 0s to "
                 "30d (e.g. \"30s\", \"5m\")");
    expect_error("    { name = \"a\"; type = \"t\"; cron = 5; }\n", "",
                 "kjobs.cfg:3: schedule.periodic[0].cron: expected a string, got a number");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; meta = { n = 1; }; }\n",
                 "", "kjobs.cfg:3: schedule.periodic[0].meta.n: expected a UTF-8 string");
    /* libconfig dates a scalar list element at the line where it saw its end (line 4) */
    expect_error("    \"x\"\n", "",
                 "kjobs.cfg:4: schedule.periodic[0]: expected a group { name = ...; cron = ...; "
                 "type = ...; }, got a string");
    /* Cross-setting: jitter needs a ladder and fits schedule.max_delay. */
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; jitter = \"10s\"; }\n",
                 "retry = { delays = [ ]; };\n",
                 "kjobs.cfg:4: schedule.periodic[0].jitter needs a retry ladder (retry.delays is "
                 "empty): a jittered job is held on it until due");
    expect_error("    { name = \"a\"; type = \"t\"; cron = \"* * * * *\"; jitter = \"2d\"; }\n",
                 "topics = { retention = \"1d\"; dlq_retention = \"7d\"; };\n",
                 "kjobs.cfg:4: schedule.periodic[0].jitter (172800000 ms) must be at most "
                 "schedule.max_delay (86400000 ms): the jittered job is held like a delayed job");
    /* Not a list. */
    kj_config cfg;
    char err[512] = "";
    assert_int_equal(kj_config_load_string(&cfg, "schedule = { periodic = \"x\"; };\n", "kjobs.cfg",
                                           NULL, err, sizeof err),
                     -1);
    assert_string_equal(err, "kjobs.cfg:1: schedule.periodic: expected a list like periodic = "
                             "( { name = ...; cron = ...; type = ...; } ), got a string");
    kj_config_free(&cfg);
}

/* The commented example in kjobs.cfg.example, uncommented, is a valid configuration. */
static void test_example_uncommented(void **state) {
    (void)state;
    FILE *f = fopen(KJOBS_SOURCE_DIR "/kjobs.cfg.example", "r");
    assert_non_null(f);
    char line[512], text[4096] = "schedule = {\n";
    bool in = false;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "# periodic = (")) in = true;
        if (in) strncat(text, strchr(line, '#') + 1, sizeof text - strlen(text) - 1);
        if (in && strstr(line, "# );")) break;
    }
    fclose(f);
    assert_true(in);
    strncat(text, "};\n", sizeof text - strlen(text) - 1);
    kj_config cfg;
    char err[512] = "";
    if (kj_config_load_string(&cfg, text, "example", NULL, err, sizeof err))
        fail_msg("%s\n%s", text, err);
    assert_int_equal(cfg.periodic_count, 1);
    assert_string_equal(cfg.periodic[0].name, "nightly-report");
    kj_config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_fields),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_example_uncommented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
