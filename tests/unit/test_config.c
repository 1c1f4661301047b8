/*
 * test_config.c — unit tests for processor/config.c (the settings table and everything it drives).
 *
 * Shape: most tests load configuration text from memory with an injected environment
 * (kj_config_load_string) so they never depend on, or change, the process environment. The
 * override test is itself table-driven and fails when a setting is added to config.c without a
 * case here. The golden tests compare kjobs.cfg.example and the reference section of
 * docs/configuration.md with what the table generates; on a mismatch they write the generated
 * text next to the build (see the failure message) so updating is a copy, not a hand edit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "processor/config.h"
#include "processor/config_limits.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_NAME "kjobs.cfg"

static char err[1024];

/* Load text with the given environment (NULL-terminated list); returns the rc. */
static int load(kj_config *cfg, const char *text, char *const *envp) {
    err[0] = '\0';
    return kj_config_load_string(cfg, text, FILE_NAME, envp, err, sizeof(err));
}

static void expect_load_error(const char *text, char *const *envp, const char *expected) {
    kj_config cfg;
    int rc = load(&cfg, text, envp);
    kj_config_free(&cfg);
    if (rc != -1 || strcmp(err, expected) != 0)
        fail_msg("config:\n%s\nexpected error: %s\ngot (rc %d): %s", text, expected, rc, err);
}

/* Error must contain `needle` (and the load must fail). */
static void expect_load_error_containing(const char *text, char *const *envp, const char *needle) {
    kj_config cfg;
    int rc = load(&cfg, text, envp);
    kj_config_free(&cfg);
    if (rc != -1 || !strstr(err, needle))
        fail_msg("config:\n%s\nexpected an error containing: %s\ngot (rc %d): %s", text, needle, rc,
                 err);
}

static char *format(const kj_config *cfg, const char *key) {
    static char buf[1024];
    assert_int_equal(kj_config_format_value(cfg, key, buf, sizeof(buf)), 0);
    return buf;
}

static char *read_whole_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, mem);
    fclose(mem);
    fclose(f);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */

static void test_defaults_without_file(void **state) {
    (void)state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    char dir[] = "/tmp/kjobs-config-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chdir(dir), 0);

    kj_config cfg;
    int rc = kj_config_load_env(&cfg, NULL, NULL, err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
    assert_int_equal(rc, 0);
    assert_null(cfg.source_path);
    assert_string_equal(cfg.bootstrap, "embedded");
    assert_string_equal(cfg.group, "kjobs");
    assert_string_equal(cfg.client_id, "kjobs");
    assert_string_equal(cfg.group_instance_id, "");
    assert_int_equal(cfg.rdkafka_prop_count, 0);
    assert_string_equal(cfg.main_topic, "jobs");
    assert_string_equal(cfg.retry_prefix, "jobs.retry.");
    assert_string_equal(cfg.dlq_topic, "jobs.dlq");
    assert_int_equal(cfg.partitions, 8);
    assert_int_equal(cfg.replication_factor, 1);
    assert_int_equal(cfg.batch_max_jobs, 100);
    assert_int_equal(cfg.batch_max_wait_ms, 0);
    assert_int_equal(cfg.batch_max_pending, 10000);
    assert_int_equal(cfg.batch_max_pending_bytes, 4 << 20);
    assert_string_equal(cfg.batch_ordering, "partition");
    assert_int_equal(cfg.batch_key_lanes, 0);
    assert_int_equal(kj_config_key_lanes(&cfg), 1); /* partition ordering: one lane */
    assert_int_equal(cfg.workers, 2);
    assert_int_equal(cfg.retry_delay_count, 3);
    assert_int_equal(cfg.retry_delays_ms[0], 10000);
    assert_int_equal(cfg.retry_delays_ms[1], 60000);
    assert_int_equal(cfg.retry_delays_ms[2], 600000);
    assert_int_equal(cfg.retry_max_attempts, 4);
    assert_false(cfg.retry_exactly_once);
    assert_int_equal(cfg.breaker_consecutive, 200);
    assert_int_equal(cfg.breaker_window, 1000);
    assert_true(cfg.breaker_ratio == 0.5);
    assert_int_equal(cfg.breaker_min_window, 100);
    assert_int_equal(cfg.breaker_cooldown_ms, 0);
    assert_string_equal(cfg.handlers_plugin, "");
    assert_int_equal(cfg.handlers_exec_count, 0);
    assert_int_equal(cfg.handlers_exec_type_count, 0);
    assert_int_equal(cfg.handlers_exec_timeout_ms, 30000);
    assert_string_equal(cfg.http_listen, "0.0.0.0:8080");
    assert_int_equal(cfg.shutdown_grace_ms, 30000);
    assert_string_equal(cfg.log_level, "info");
    for (size_t i = 0; i < kj_config_setting_count(); i++)
        assert_int_equal(kj_config_origin_of(&cfg, kj_config_setting_name(i), NULL),
                         KJ_CONFIG_FROM_DEFAULT);
    kj_config_free(&cfg);
    kj_config_free(&cfg); /* safe twice */

    /* kj_config_defaults alone gives the same values. */
    kj_config d;
    kj_config_defaults(&d);
    assert_string_equal(d.dlq_topic, "jobs.dlq");
    assert_int_equal(d.retry_delay_count, 3);
    kj_config_free(&d);
}

static void test_default_file_and_explicit_paths(void **state) {
    (void)state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    char dir[] = "/tmp/kjobs-config-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chdir(dir), 0);
    FILE *f = fopen("kjobs.cfg", "w");
    assert_non_null(f);
    fputs("# comment\nworkers = 7;\n", f);
    fclose(f);
    f = fopen("other.cfg", "w");
    fputs("\n\nbatch = { max_jobs = 0; };\n", f);
    fclose(f);

    kj_config cfg;
    int rc = kj_config_load_env(&cfg, NULL, NULL, err, sizeof(err));
    int workers = cfg.workers;
    char *src = cfg.source_path ? strdup(cfg.source_path) : NULL;
    int line = 0, origin = kj_config_origin_of(&cfg, "workers", &line);
    kj_config_free(&cfg);

    /* An explicit path that is missing is an error naming it. */
    int rc_missing = kj_config_load_env(&cfg, "nope.cfg", NULL, err, sizeof(err));
    char err_missing[1024];
    snprintf(err_missing, sizeof(err_missing), "%s", err);
    kj_config_free(&cfg);

    /* KJOBS_CONFIG counts as explicit. */
    char *env_missing[] = {"KJOBS_CONFIG=gone.cfg", NULL};
    int rc_env_missing = kj_config_load_env(&cfg, NULL, env_missing, err, sizeof(err));
    char err_env_missing[1024];
    snprintf(err_env_missing, sizeof(err_env_missing), "%s", err);
    kj_config_free(&cfg);
    char *env_other[] = {"KJOBS_CONFIG=other.cfg", NULL};
    int rc_env_other = kj_config_load_env(&cfg, NULL, env_other, err, sizeof(err));
    char err_other[1024];
    snprintf(err_other, sizeof(err_other), "%s", err);
    kj_config_free(&cfg);

    unlink("kjobs.cfg");
    unlink("other.cfg");
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);

    assert_int_equal(rc, 0);
    assert_int_equal(workers, 7);
    assert_string_equal(src, KJ_CONFIG_DEFAULT_PATH);
    free(src);
    assert_int_equal(origin, KJ_CONFIG_FROM_FILE);
    assert_int_equal(line, 2);
    assert_int_equal(rc_missing, -1);
    assert_non_null(strstr(err_missing, "nope.cfg"));
    assert_int_equal(rc_env_missing, -1);
    assert_non_null(strstr(err_env_missing, "gone.cfg"));
    assert_int_equal(rc_env_other, -1);
    assert_string_equal(err_other,
                        "other.cfg:3: batch.max_jobs: expected an integer from 1 to 100000, got 0");
}

/* One case per setting: a file literal, an environment value, and how each formats back. */
static const struct override_case {
    const char *key;
    const char *file_value, *file_expect;
    const char *env_value, *env_expect;
    const char *file_extra; /* more settings inside the same group, if the rule needs them */
    const char *env_extra;  /* one more NAME=value */
} override_cases[] = {
    {"kafka.bootstrap", "\"b1:9092,b2:9092\"", NULL, "env1:9092", "\"env1:9092\"", NULL, NULL},
    {"kafka.group", "\"g-file\"", NULL, "g-env", "\"g-env\"", NULL, NULL},
    {"kafka.client_id", "\"c-file\"", NULL, "c-env", "\"c-env\"", NULL, NULL},
    {"kafka.group_instance_id", "\"pod-0\"", NULL, "pod-1", "\"pod-1\"", NULL, NULL},
    {"kafka.group_protocol", "\"classic\"", NULL, "consumer", "\"consumer\"", NULL, NULL},
    {"kafka.properties", "[ \"socket.timeout.ms=1234\", \"client.rack=r0\" ]", NULL,
     "[\"client.rack=r1\"]", "[ \"client.rack=r1\" ]", NULL, NULL},
    {"kafka.schema_registry_url", "\"http://sr:8081\"", NULL,
     "https://a:8081/apis/ccompat/v7,https://b:8081",
     "\"https://a:8081/apis/ccompat/v7,https://b:8081\"", NULL, NULL},
    {"kafka.schema_registry_user", "\"u-file\"", NULL, "u-env", "\"u-env\"", NULL, NULL},
    {"kafka.schema_registry_password", "\"p-file\"", NULL, "p-env", "\"p-env\"",
     "schema_registry_user = \"u\";", "KJOBS_KAFKA_SCHEMA_REGISTRY_USER=u"},
    {"kafka.schema_registry_ca_file", "\"/etc/ca.pem\"", NULL, "/x/ca.pem", "\"/x/ca.pem\"", NULL,
     NULL},
    {"kafka.schema_registry_cert_file", "\"/etc/c.pem\"", NULL, "/x/c.pem", "\"/x/c.pem\"", NULL,
     NULL},
    {"kafka.schema_registry_key_file", "\"/etc/k.pem\"", NULL, "/x/k.pem", "\"/x/k.pem\"",
     "schema_registry_cert_file = \"/etc/c.pem\";", "KJOBS_KAFKA_SCHEMA_REGISTRY_CERT_FILE=/c"},
    {"kafka.schema_registry_key_password", "\"kp-file\"", NULL, "kp-env", "\"kp-env\"", NULL, NULL},
    {"kafka.schema_registry_timeout", "\"2s\"", NULL, "1500ms", "\"1s500ms\"", NULL, NULL},
    {"kafka.schema_registry_cache_size", "50", NULL, "70", "70", NULL, NULL},
    {"kafka.schema_registry_unknown_ttl", "\"30s\"", NULL, "0", "\"0s\"", NULL, NULL},
    {"topics.main", "\"orders\"", NULL, "payments", "\"payments\"", NULL, NULL},
    {"topics.retry_prefix", "\"again.\"", NULL, "later-", "\"later-\"", NULL, NULL},
    {"topics.dlq", "\"dead\"", NULL, "graveyard", "\"graveyard\"", NULL, NULL},
    {"topics.partitions", "16", NULL, "32", "32", NULL, NULL},
    {"topics.replication_factor", "3", NULL, "2", "2", NULL, NULL},
    {"topics.min_insync_replicas", "1", NULL, "0", "0", NULL, NULL},
    {"topics.retention", "\"14d\"", NULL, "2d", "\"2d\"", NULL, NULL},
    {"topics.dlq_retention", "\"90d\"", NULL, "60d", "\"60d\"", NULL, NULL},
    {"batch.max_jobs", "500", NULL, "700", "700", NULL, NULL},
    {"batch.max_wait_ms", "\"1s\"", "1000", "250", "250", NULL, NULL},
    {"batch.max_pending", "20000", NULL, "30000", "30000", NULL, NULL},
    {"batch.max_pending_bytes", "1048576", NULL, "33554432", "33554432", NULL, NULL},
    {"batch.ordering", "\"key\"", NULL, "partition", "\"partition\"", NULL, NULL},
    {"retry.ordering", "\"key\"", NULL, "none", "\"none\"", NULL, NULL},
    {"batch.key_lanes", "16", NULL, "4", "4", NULL, NULL},
    {"workers", "8", NULL, "16", "16", NULL, NULL},
    {"retry.delays", "[ \"1s\", \"2s\" ]", NULL, "5s, 1m30s", "[ \"5s\", \"1m30s\" ]", NULL, NULL},
    {"retry.max_attempts", "10", NULL, "3", "3", NULL, NULL},
    {"retry.exactly_once", "true", NULL, "yes", "true", NULL, NULL},
    {"retry.in_place_attempts", "2", NULL, "3", "3", NULL, NULL},
    {"retry.in_place_delay", "\"250ms\"", NULL, "2s", "\"2s\"", NULL, NULL},
    {"schedule.max_delay", "\"1d\"", NULL, "36h", "\"1d12h\"", NULL, NULL},
    {"dlq.breaker_consecutive", "0", NULL, "50", "50", NULL, NULL},
    {"dlq.breaker_window", "5000", NULL, "0", "0", NULL, NULL},
    {"dlq.breaker_ratio", "0.25", NULL, "1", "1.0", NULL, NULL},
    {"dlq.breaker_min_window", "10", NULL, "20", "20", NULL, NULL},
    {"dlq.breaker_cooldown", "\"5m\"", NULL, "90000", "\"1m30s\"", NULL, NULL},
    {"dlq.crash_loop_limit", "5", NULL, "2", "2", NULL, NULL},
    {"handlers.plugin", "\"/opt/p.so\"", NULL, "/usr/lib/x.so", "\"/usr/lib/x.so\"", NULL, NULL},
    {"handlers.exec", "[ \"python3\", \"-u\", \"h.py\" ]", NULL, "node  handler.js --fast",
     "[ \"node\", \"handler.js\", \"--fast\" ]", NULL, NULL},
    {"handlers.exec_types", "[ \"a\", \"b\" ]", NULL, "x, y", "[ \"x\", \"y\" ]",
     "exec = [ \"h\" ];", "KJOBS_HANDLERS_EXEC=h"},
    {"handlers.exec_timeout", "5000", "\"5s\"", "2m", "\"2m\"", NULL, NULL},
    {"handlers.exec_protocol", "\"binary\"", NULL, "json-lines", "\"json-lines\"", NULL, NULL},
    {"handlers.timeout", "\"90s\"", "\"1m30s\"", "10m", "\"10m\"", NULL, NULL},
    {"handlers.timeouts", "[ \"a=1s\", \"b.c=0\" ]", NULL, "x=2m, y=1h", "[ \"x=2m\", \"y=1h\" ]",
     NULL, NULL},
    {"handlers.timeout_grace", "\"0\"", "\"0s\"", "1m", "\"1m\"", NULL, NULL},
    {"http.listen", "\"127.0.0.1:9090\"", NULL, "[::1]:0", "\"[::1]:0\"", NULL, NULL},
    {"shutdown.grace_ms", "\"10s\"", "10000", "45000", "45000", NULL, NULL},
    {"ui.report_interval", "\"2s\"", NULL, "500ms", "\"500ms\"", NULL, NULL},
    {"ui.listen", "\"127.0.0.1:9191\"", NULL, "[::1]:0", "\"[::1]:0\"", NULL, NULL},
    {"ui.token", "\"t-file-0123456789ab\"", NULL, "t-env-0123456789ab", "\"t-env-0123456789ab\"",
     NULL, NULL},
    {"ui.allow_actions", "true", NULL, "yes", "true", NULL, NULL},
    {"ui.on_worker", "true", NULL, "yes", "true", NULL, NULL},
    {"log.level", "\"debug\"", NULL, "error", "\"error\"", NULL, NULL},
};

static const char *env_name_of(const char *key) {
    for (size_t i = 0; i < kj_config_setting_count(); i++)
        if (strcmp(kj_config_setting_name(i), key) == 0) return kj_config_setting_env(i);
    return NULL;
}

static void file_text_for(const struct override_case *c, char *buf, size_t size) {
    const char *dot = strchr(c->key, '.');
    if (dot)
        snprintf(buf, size, "# first line\n%.*s = {\n  %s = %s;\n  %s\n};\n", (int)(dot - c->key),
                 c->key, dot + 1, c->file_value, c->file_extra ? c->file_extra : "");
    else
        snprintf(buf, size, "# first line\n%s = %s;\n", c->key, c->file_value);
}

static void test_every_setting_overridable(void **state) {
    (void)state;
    size_t ncases = sizeof(override_cases) / sizeof(override_cases[0]);
    /* Every setting in the table has a case (add one when you add a setting). */
    for (size_t i = 0; i < kj_config_setting_count(); i++) {
        bool found = false;
        for (size_t j = 0; j < ncases; j++)
            if (strcmp(override_cases[j].key, kj_config_setting_name(i)) == 0) found = true;
        if (!found) fail_msg("no override case for %s", kj_config_setting_name(i));
    }
    assert_int_equal(ncases, kj_config_setting_count());

    for (size_t j = 0; j < ncases; j++) {
        const struct override_case *c = &override_cases[j];
        char text[512], env_entry[256];
        file_text_for(c, text, sizeof(text));
        const char *env = env_name_of(c->key);
        assert_non_null(env);
        snprintf(env_entry, sizeof(env_entry), "%s=%s", env, c->env_value);
        char *envp[] = {env_entry, (char *)c->env_extra, NULL};
        kj_config cfg;

        /* File only. */
        if (load(&cfg, text, NULL) != 0) fail_msg("%s from file: %s", c->key, err);
        const char *want = c->file_expect ? c->file_expect : c->file_value;
        if (strcmp(format(&cfg, c->key), want) != 0)
            fail_msg("%s from file: want %s, got %s", c->key, want, format(&cfg, c->key));
        int line = 0;
        assert_int_equal(kj_config_origin_of(&cfg, c->key, &line), KJ_CONFIG_FROM_FILE);
        assert_int_equal(line, strchr(c->key, '.') ? 3 : 2);
        kj_config_free(&cfg);

        /* Environment only. */
        char *env_only[] = {env_entry, (char *)c->env_extra, NULL};
        if (load(&cfg, "", env_only) != 0) fail_msg("%s from env: %s", c->key, err);
        if (strcmp(format(&cfg, c->key), c->env_expect) != 0)
            fail_msg("%s from env: want %s, got %s", c->key, c->env_expect, format(&cfg, c->key));
        assert_int_equal(kj_config_origin_of(&cfg, c->key, NULL), KJ_CONFIG_FROM_ENV);
        kj_config_free(&cfg);

        /* Both: the environment wins. */
        if (load(&cfg, text, envp) != 0) fail_msg("%s from file+env: %s", c->key, err);
        if (strcmp(format(&cfg, c->key), c->env_expect) != 0)
            fail_msg("%s: env should win over file: want %s, got %s", c->key, c->env_expect,
                     format(&cfg, c->key));
        kj_config_free(&cfg);
    }
}

static void test_env_names_follow_rule(void **state) {
    (void)state;
    for (size_t i = 0; i < kj_config_setting_count(); i++) {
        const char *key = kj_config_setting_name(i);
        char want[128] = "KJOBS_";
        size_t o = strlen(want);
        for (const char *p = key; *p; p++)
            want[o++] = *p == '.' ? '_' : (char)toupper(*p);
        want[o] = '\0';
        assert_string_equal(kj_config_setting_env(i), want);
    }
    assert_null(kj_config_setting_name(kj_config_setting_count()));
}

/* handlers.timeouts entries: the last '=' splits, the type is non-empty, 0..7 days. */
static void test_type_timeout_parse(void **state) {
    (void)state;
    static const struct {
        const char *text;
        size_t type_len;
        int64_t ms;
    } good[] = {{"resize=10m", 6, 600000}, {"a=0", 1, 0}, {"t=7d", 1, 604800000}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t len = 0;
        int64_t ms = -1;
        assert_int_equal(kj_type_timeout_parse(good[i].text, &len, &ms), 0);
        assert_int_equal(len, good[i].type_len);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {
        "resize", "=1s", "a=",     "a=1x",     "a=8d",
        "a=-1",   "",    "x=y=1s", "a=2s;b=1s"}; /* the first = splits */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms;
        assert_int_equal(kj_type_timeout_parse(bad[i], NULL, &ms), -1);
    }
}

static void test_duration_parse(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0},
        {"250", 250},
        {"250ms", 250},
        {"10s", 10000},
        {"1m", 60000},
        {"2h", 7200000},
        {"1d", 86400000},
        {"1m30s", 90000},
        {"1h0m", 3600000},
        {"1s500ms", 1500},
        {"007s", 7000},
        {"0s", 0},
        {"1d2h3m4s5ms", 93784005},
        {"9223372036854775807", INT64_MAX},
    };
    static const char *const bad[] = {
        "",
        "-1s",
        "-5",
        "1.5s",
        "10 s",
        " 10s",
        "10s ",
        "10S",
        "s",
        "10x",
        "1m1h",
        "1s1s",
        "1m30",
        "+5",
        "1ms2s",
        "ms",
        "1sm",
        "0x10",
        "9223372036854775808",
        "106751991167301d",
        "99999999999999999999s",
        "1h-1m",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ms = -1;
        if (kj_duration_parse(good[i].text, &ms) != 0) fail_msg("rejected %s", good[i].text);
        if (ms != good[i].ms)
            fail_msg("%s: want %lld got %lld", good[i].text, (long long)good[i].ms, (long long)ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = 12345;
        if (kj_duration_parse(bad[i], &ms) == 0)
            fail_msg("accepted \"%s\" as %lld", bad[i], (long long)ms);
        assert_int_equal(ms, 12345); /* untouched on failure */
    }
    assert_int_equal(kj_duration_parse(NULL, &(int64_t){0}), -1);

    /* format and parse agree */
    static const int64_t round[] = {0,     1,       999,      1000,     1500,     60000,
                                    90000, 3600000, 86400000, 93784005, INT64_MAX};
    for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
        char buf[64];
        int64_t back = -1;
        kj_duration_format(round[i], buf, sizeof(buf));
        assert_int_equal(kj_duration_parse(buf, &back), 0);
        assert_true(back == round[i]);
    }
    char buf[32];
    kj_duration_format(90000, buf, sizeof(buf));
    assert_string_equal(buf, "1m30s");

    /* Durations in the file: integer ms, strings; negatives and garbage rejected. */
    kj_config cfg;
    assert_int_equal(load(&cfg, "shutdown = { grace_ms = \"1m\"; };", NULL), 0);
    assert_int_equal(cfg.shutdown_grace_ms, 60000);
    kj_config_free(&cfg);
    assert_int_equal(load(&cfg, "shutdown = { grace_ms = 1500; };", NULL), 0);
    assert_int_equal(cfg.shutdown_grace_ms, 1500);
    kj_config_free(&cfg);
    expect_load_error("shutdown = { grace_ms = -1; };", NULL,
                      "kjobs.cfg:1: shutdown.grace_ms: expected a duration from 0s to 1h "
                      "(milliseconds, or a string like \"250ms\", \"10s\", \"1m\"), got -1");
    expect_load_error_containing("shutdown = { grace_ms = \"soon\"; };", NULL,
                                 "shutdown.grace_ms: expected a duration from 0s to 1h");
    expect_load_error_containing("shutdown = { grace_ms = \"2h\"; };", NULL,
                                 "shutdown.grace_ms: expected a duration from 0s to 1h "
                                 "(milliseconds, or a string like \"250ms\", \"10s\", \"1m\"), "
                                 "got 2h");
    expect_load_error_containing("handlers = { exec_timeout = 0; };", NULL,
                                 "kjobs.cfg:1: handlers.exec_timeout: expected a duration from "
                                 "1ms to 1h");
}

static void test_file_errors_name_file_line_setting(void **state) {
    (void)state;
    /* The example from the contract, on line 12. */
    expect_load_error("\n\n\n\n\n\n\n\n\n\n\nbatch = { max_jobs = 0; };\n", NULL,
                      "kjobs.cfg:12: batch.max_jobs: expected an integer from 1 to 100000, got 0");
    /* Wrong type. */
    expect_load_error("batch = {\n  max_jobs = \"many\";\n};\n", NULL,
                      "kjobs.cfg:2: batch.max_jobs: expected an integer from 1 to 100000, got "
                      "\"many\"");
    expect_load_error("workers = 1.5;\n", NULL,
                      "kjobs.cfg:1: workers: expected an integer from 1 to 1024, got 1.5");
    expect_load_error("retry = { exactly_once = 1; };", NULL,
                      "kjobs.cfg:1: retry.exactly_once: expected true or false, got 1");
    expect_load_error("kafka = { bootstrap = [ \"a:1\" ]; };", NULL,
                      "kjobs.cfg:1: kafka.bootstrap: expected \"embedded\" or a broker list "
                      "\"host:port,host:port\", got a list");
    expect_load_error("batch = 5;", NULL,
                      "kjobs.cfg:1: batch: expected a group like batch = { ... }, got 5");
    /* the value is not quoted: handlers.exec words may carry secrets (--token=...) */
    expect_load_error("handlers = { exec = \"python3 h.py\"; };", NULL,
                      "kjobs.cfg:1: handlers.exec: expected a list like [ \"a\", \"b\" ], got "
                      "(hidden)");
    /* Out of range, including a list item on its own line. */
    expect_load_error("workers = 0;", NULL,
                      "kjobs.cfg:1: workers: expected an integer from 1 to 1024, got 0");
    expect_load_error("dlq = { breaker_ratio = 1.5; };", NULL,
                      "kjobs.cfg:1: dlq.breaker_ratio: expected a number from 0 to 1, got 1.5");
    /* (libconfig dates a list item by the token after it, so the bad item is not the last.) */
    expect_load_error(
        "retry = {\n  delays = [\n    \"10s\",\n    \"forever\",\n    \"1m\"\n  ];\n};\n", NULL,
        "kjobs.cfg:4: retry.delays[1]: expected a duration (milliseconds, or a "
        "string like \"250ms\", \"10s\", \"1m\"), got \"forever\"");
    expect_load_error("retry = { delays = ( \"1s\", 31d ); };", NULL, "kjobs.cfg:1: syntax error");
    expect_load_error("retry = { delays = ( \"1s\", \"31d\" ); };", NULL,
                      "kjobs.cfg:1: retry.delays[1]: expected a duration from 0s to 30d, got 31d");
    expect_load_error("log = { level = \"verbose\"; };", NULL,
                      "kjobs.cfg:1: log.level: expected debug, info, warn or error, got "
                      "\"verbose\"");
    expect_load_error("batch = { ordering = \"keys\"; };", NULL,
                      "kjobs.cfg:1: batch.ordering: expected partition or key, got \"keys\"");
    expect_load_error("topics = { main = \"has space\"; };", NULL,
                      "kjobs.cfg:1: topics.main: expected a Kafka topic name (1 to 249 of a-z "
                      "A-Z 0-9 . _ -), got \"has space\"");
    expect_load_error_containing("http = { listen = \"8080\"; };", NULL,
                                 "kjobs.cfg:1: http.listen: expected \"\" (disabled)");
    expect_load_error_containing("kafka = { bootstrap = \"a:1,,b:2\"; };", NULL,
                                 "kjobs.cfg:1: kafka.bootstrap: expected \"embedded\" or a broker");
    expect_load_error_containing("kafka = { group = \"\"; };", NULL,
                                 "kjobs.cfg:1: kafka.group: expected a non-empty string, got \"\"");
    /* Too many ladder steps. */
    char text[1024] = "retry = { delays = [ \"1s\"";
    for (int i = 0; i < 32; i++)
        strcat(text, ", \"1s\"");
    strcat(text, " ]; };");
    expect_load_error(text, NULL, "kjobs.cfg:1: retry.delays: expected at most 32 items, got 33");
    /* Unknown keys, with suggestions. */
    expect_load_error("batch = {\n  max_job = 5;\n};", NULL,
                      "kjobs.cfg:2: batch.max_job: unknown setting (did you mean batch.max_jobs?)");
    expect_load_error("\nbacth = { };", NULL,
                      "kjobs.cfg:2: bacth: unknown setting (did you mean batch?)");
    expect_load_error("max_attempts = 3;", NULL,
                      "kjobs.cfg:1: max_attempts: unknown setting (did you mean "
                      "retry.max_attempts?)");
    expect_load_error("kafka = { frobnicate = 1; };", NULL,
                      "kjobs.cfg:1: kafka.frobnicate: unknown setting");
    /* libconfig syntax errors keep libconfig's line and text. */
    expect_load_error("workers = 2;\nbatch = { max_jobs = ; };\n", NULL,
                      "kjobs.cfg:2: syntax error");
    expect_load_error("workers = 2;\nworkers = 3;\n", NULL, "kjobs.cfg:2: duplicate setting name");
    /* @include is refused for in-memory text. */
    expect_load_error_containing("@include \"/etc/passwd\"\n", NULL, "@include is not supported");
}

static void test_bad_group_suggestion_is_a_guess_only(void **state) {
    (void)state;
    /* "batch" is the one group within edit distance 2 of "bacth"; that case is above. A name
     * far from everything gets no suggestion. */
    expect_load_error("zzzzzzzzzz = 1;", NULL, "kjobs.cfg:1: zzzzzzzzzz: unknown setting");
}

static void test_env_errors(void **state) {
    (void)state;
    char *e1[] = {"KJOBS_BATCH_MAX_JOBS=0", NULL};
    expect_load_error("", e1,
                      "environment KJOBS_BATCH_MAX_JOBS: expected an integer from 1 to 100000, "
                      "got 0");
    char *e2[] = {"KJOBS_WORKERS=lots", NULL};
    expect_load_error("", e2,
                      "environment KJOBS_WORKERS: expected an integer from 1 to 1024, got "
                      "\"lots\"");
    char *e3[] = {"KJOBS_BATCH_MAX_JOB=5", NULL};
    expect_load_error("", e3,
                      "environment KJOBS_BATCH_MAX_JOB: not a kjobs setting (did you mean "
                      "KJOBS_BATCH_MAX_JOBS?)");
    char *e4[] = {"KJOBS_LOG=debug", NULL};
    expect_load_error_containing("", e4, "environment KJOBS_LOG: not a kjobs setting");
    char *e5[] = {"KJOBS_RETRY_DELAYS=1s,,2s", NULL};
    expect_load_error("", e5,
                      "environment KJOBS_RETRY_DELAYS: item 1: empty (expected "
                      "comma-separated items)");
    char *e6[] = {"KJOBS_RETRY_DELAYS=1s,2x", NULL};
    expect_load_error_containing("", e6,
                                 "environment KJOBS_RETRY_DELAYS: item 1: expected a "
                                 "duration");
    char *e7[] = {"KJOBS_RETRY_EXACTLY_ONCE=maybe", NULL};
    expect_load_error_containing("", e7,
                                 "environment KJOBS_RETRY_EXACTLY_ONCE: expected true "
                                 "or false");
    char *e8[] = {"KJOBS_HANDLERS_EXEC=[\"a\", 5]", NULL};
    expect_load_error("", e8, "environment KJOBS_HANDLERS_EXEC: item 1: expected a string");
    char *e9[] = {"KJOBS_WORKERS= 4", NULL};
    expect_load_error_containing("", e9, "environment KJOBS_WORKERS: expected an integer");

    /* Not ours, allowlisted, or passthrough: ignored. */
    kj_config cfg;
    char *ok[] = {"KJOBS_TEST_BROKERS=x",
                  "KJOBS_CONFIG=",
                  "KJOBSX_WORKERS=9",
                  "PATH=/bin",
                  "KJOBS_WORKERS=3",
                  "KJOBS_KAFKA_GROUP_INSTANCE_ID=",
                  NULL};
    assert_int_equal(load(&cfg, "", ok), 0);
    assert_int_equal(cfg.workers, 3);
    kj_config_free(&cfg);

    /* JSON array and words for handlers.exec; JSON array with integers for delays. */
    char *ex[] = {"KJOBS_HANDLERS_EXEC=[\"python3\", \"my handler.py\"]",
                  "KJOBS_RETRY_DELAYS=[\"1s\", 500]", NULL};
    assert_int_equal(load(&cfg, "", ex), 0);
    assert_int_equal(cfg.handlers_exec_count, 2);
    assert_string_equal(cfg.handlers_exec[1], "my handler.py");
    assert_int_equal(cfg.retry_delay_count, 2);
    assert_int_equal(cfg.retry_delays_ms[1], 500);
    kj_config_free(&cfg);

    /* Empty ladder from the file and from the environment. */
    assert_int_equal(load(&cfg, "retry = { delays = [ ]; };", NULL), 0);
    assert_int_equal(cfg.retry_delay_count, 0);
    assert_null(kj_config_retry_topic(&cfg, 1));
    kj_config_free(&cfg);
    char *none[] = {"KJOBS_RETRY_DELAYS=", NULL};
    assert_int_equal(load(&cfg, "", none), 0);
    assert_int_equal(cfg.retry_delay_count, 0);
    kj_config_free(&cfg);
}

static void test_cross_setting_rules(void **state) {
    (void)state;
    expect_load_error("batch = {\n  max_jobs = 500;\n  max_pending = 200;\n};", NULL,
                      "kjobs.cfg:3: batch.max_pending: batch.max_pending (200) must be at least "
                      "batch.max_jobs (500)");
    /* Only max_jobs was configured (in the environment): blame it. */
    char *e1[] = {"KJOBS_BATCH_MAX_JOBS=20000", NULL};
    expect_load_error("", e1,
                      "environment KJOBS_BATCH_MAX_JOBS: batch.max_pending (10000) must be at "
                      "least batch.max_jobs (20000)");
    expect_load_error("dlq = { breaker_window = 50; };", NULL,
                      "kjobs.cfg:1: dlq.breaker_window: dlq.breaker_min_window (100) must be at "
                      "most dlq.breaker_window (50)");
    expect_load_error("handlers = { exec_types = [ \"a\" ]; };", NULL,
                      "kjobs.cfg:1: handlers.exec_types: handlers.exec_types is set but "
                      "handlers.exec is empty");
    expect_load_error("topics = { main = \"x\"; dlq = \"x\"; };", NULL,
                      "kjobs.cfg:1: topics.dlq: the dead-letter topic must differ from "
                      "topics.main (\"x\")");
    expect_load_error("topics = { main = \"r1\"; retry_prefix = \"r\"; };", NULL,
                      "kjobs.cfg:1: topics.retry_prefix: retry topic \"r1\" is the same as "
                      "topics.main");
    /* A long main name makes the derived ladder names invalid. */
    char text[600] = "topics = { main = \"";
    for (int i = 0; i < 245; i++)
        strcat(text, "t");
    strcat(text, "\"; };");
    expect_load_error_containing(text, NULL,
                                 "kjobs.cfg:1: topics.main: retry topic 1: expected a Kafka "
                                 "topic name");

    /* schedule.max_delay: at most topics.retention when set; the default follows a shorter one */
    expect_load_error_containing("schedule = { max_delay = \"10d\"; };", NULL,
                                 "schedule.max_delay (864000000 ms) must be at most "
                                 "topics.retention (604800000 ms)");
    kj_config cfg;
    assert_int_equal(load(&cfg, "topics = { retention = \"2d\"; };", NULL), 0);
    assert_int_equal(kj_config_schedule_max_delay(&cfg), 2LL * 86400000);
    kj_config_free(&cfg);
    assert_int_equal(load(&cfg, "schedule = { max_delay = \"1h\"; };", NULL), 0);
    assert_int_equal(kj_config_schedule_max_delay(&cfg), 3600000);
    kj_config_free(&cfg);

    /* Derived names follow topics.main, explicit ones do not. */
    assert_int_equal(load(&cfg, "topics = { main = \"orders\"; dlq = \"dead\"; };", NULL), 0);
    assert_string_equal(cfg.retry_prefix, "orders.retry.");
    assert_string_equal(cfg.dlq_topic, "dead");
    char *t = kj_config_retry_topic(&cfg, 3);
    assert_string_equal(t, "orders.retry.3");
    free(t);
    assert_null(kj_config_retry_topic(&cfg, 0));
    assert_null(kj_config_retry_topic(&cfg, 4));
    kj_config_free(&cfg);
}

static void test_secrets_never_in_errors(void **state) {
    (void)state;
    const char *secret = "hunter2-s3cret";
    char text[512];
    kj_config cfg;

    /* A value librdkafka rejects (enum property), from the file. */
    snprintf(text, sizeof(text), "kafka = {\n  properties = [ \"security.protocol=%s\" ];\n};",
             secret);
    assert_int_equal(load(&cfg, text, NULL), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_string_equal(err, "kjobs.cfg:2: kafka.properties[0]: librdkafka rejects the value of "
                             "property \"security.protocol\" (value not shown)");

    /* An integer property with a unit: librdkafka would keep "64" of "64Ki"; refused, file and
     * line named, the value not shown. A plain number and a string starting with digits pass. */
    assert_int_equal(
        load(&cfg, "kafka = {\n  properties = [ \"fetch.max.bytes=64Ki\" ];\n};", NULL), -1);
    kj_config_free(&cfg);
    assert_string_equal(err, "kjobs.cfg:2: kafka.properties[0]: librdkafka property "
                             "\"fetch.max.bytes\" takes a number, with no unit or other "
                             "characters after it (librdkafka would read only its leading part; "
                             "value not shown)");
    /* one it would store as another number (an int wraps; a leading 0 is octal) */
    assert_int_equal(load(&cfg, "kafka = { properties = [ \"fetch.max.bytes=0100000\" ]; };", NULL),
                     -1);
    kj_config_free(&cfg);
    assert_non_null(strstr(err, "would read the number as another"));
    /* numbers as librdkafka reads them, floats, enums and strings starting with digits pass */
    assert_int_equal(load(&cfg,
                          "kafka = { properties = [ \"fetch.max.bytes=65536\", "
                          "\"fetch.max.bytes=0x40000\", \"linger.ms=5.0\", \"acks=all\", "
                          "\"client.rack=1a\" ]; };",
                          NULL),
                     0);
    kj_config_free(&cfg);

    /* Missing '=' (the whole item might be a secret). */
    snprintf(text, sizeof(text), "kafka = { properties = [ \"%s\" ]; };", secret);
    assert_int_equal(load(&cfg, text, NULL), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_non_null(strstr(err, "kafka.properties[0]"));

    /* Wrong type: a string where a list belongs. */
    snprintf(text, sizeof(text), "kafka = { properties = \"sasl.password=%s\"; };", secret);
    assert_int_equal(load(&cfg, text, NULL), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_non_null(strstr(err, "kafka.properties"));

    /* Environment passthrough with an unknown property name, and a rejected value. */
    char e1[128], e2[128], e3[128], e4[128];
    snprintf(e1, sizeof(e1), "KJOBS_RDKAFKA_SASL_PASSWORDD=%s", secret);
    char *env1[] = {e1, NULL};
    assert_int_equal(load(&cfg, "", env1), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_string_equal(err, "environment KJOBS_RDKAFKA_SASL_PASSWORDD: unknown librdkafka "
                             "property \"sasl.passwordd\"");
    snprintf(e2, sizeof(e2), "KJOBS_RDKAFKA_SECURITY_PROTOCOL=%s", secret);
    char *env2[] = {e2, NULL};
    assert_int_equal(load(&cfg, "", env2), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_non_null(strstr(err, "environment KJOBS_RDKAFKA_SECURITY_PROTOCOL"));
    snprintf(e3, sizeof(e3), "KJOBS_RDKAFKA_SASL__PASSWORD=%s", secret);
    char *env3[] = {e3, NULL};
    assert_int_equal(load(&cfg, "", env3), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    snprintf(e4, sizeof(e4), "KJOBS_KAFKA_PROPERTIES=sasl.password=%s", secret);
    char *env4[] = {e4, NULL};
    assert_int_equal(load(&cfg, "", env4), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, secret));
    assert_non_null(strstr(err, "environment KJOBS_KAFKA_PROPERTIES"));

    /* -X */
    kj_config_defaults(&cfg);
    snprintf(text, sizeof(text), "security.protocol=%s", secret);
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, text, err, sizeof(err)), -1);
    assert_null(strstr(err, secret));
    snprintf(text, sizeof(text), "%s", secret);
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, text, err, sizeof(err)), -1);
    assert_null(strstr(err, secret));
    assert_int_equal(cfg.rdkafka_prop_count, 0);

    /* A good secret is stored but hidden from the effective-config dump. */
    snprintf(text, sizeof(text), "sasl.password=%s", secret);
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, text, err, sizeof(err)), 0);
    assert_string_equal(cfg.rdkafka_props[0], text);
    char *dump = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&dump, &len);
    kj_config_write_effective(&cfg, mem);
    fclose(mem);
    assert_null(strstr(dump, secret));
    assert_non_null(strstr(dump, "sasl.password=<hidden>"));
    free(dump);
    kj_config_free(&cfg);
}

static void test_rdkafka_prop_order(void **state) {
    (void)state;
    kj_config cfg;
    /* Environment order is scrambled on purpose: KJOBS_RDKAFKA_* apply sorted by name. */
    char *env[] = {"KJOBS_RDKAFKA_SOCKET_TIMEOUT_MS=2000", "KJOBS_RDKAFKA_CLIENT_RACK=b", NULL};
    assert_int_equal(load(&cfg,
                          "kafka = { properties = [ \"socket.timeout.ms=1000\", "
                          "\"client.rack=a\" ]; };",
                          env),
                     0);
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, "socket.timeout.ms=3000", err, sizeof(err)),
                     0);
    static const char *const want[] = {"socket.timeout.ms=1000", "client.rack=a", "client.rack=b",
                                       "socket.timeout.ms=2000", "socket.timeout.ms=3000"};
    assert_int_equal(cfg.rdkafka_prop_count, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(cfg.rdkafka_props[i], want[i]);
    kj_config_free(&cfg);

    /* KJOBS_KAFKA_PROPERTIES replaces the file's list; KJOBS_RDKAFKA_* still append after it. */
    char *env2[] = {"KJOBS_RDKAFKA_CLIENT_RACK=z", "KJOBS_KAFKA_PROPERTIES=[\"client.rack=y\"]",
                    NULL};
    assert_int_equal(load(&cfg, "kafka = { properties = [ \"client.rack=x\" ]; };", env2), 0);
    assert_int_equal(cfg.rdkafka_prop_count, 2);
    assert_string_equal(cfg.rdkafka_props[0], "client.rack=y");
    assert_string_equal(cfg.rdkafka_props[1], "client.rack=z");
    kj_config_free(&cfg);

    /* Properties kjobs owns are refused with the setting to use instead. */
    expect_load_error("kafka = { properties = [ \"group.id=x\" ]; };", NULL,
                      "kjobs.cfg:1: kafka.properties[0]: librdkafka property \"group.id\" is set "
                      "by kjobs: use kafka.group (-G) instead");
    char *env3[] = {"KJOBS_RDKAFKA_ENABLE_AUTO_COMMIT=true", NULL};
    expect_load_error_containing("", env3,
                                 "environment KJOBS_RDKAFKA_ENABLE_AUTO_COMMIT: "
                                 "librdkafka property \"enable.auto.commit\" is set by "
                                 "kjobs");
    kj_config_defaults(&cfg);
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, "bootstrap.servers=h:1", err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "kafka.bootstrap (-b)"));
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, "no.such.property=1", err, sizeof(err)), -1);
    assert_string_equal(err, "unknown librdkafka property \"no.such.property\"");
    assert_int_equal(kj_config_add_rdkafka_prop(&cfg, "=1", err, sizeof(err)), -1);
    kj_config_free(&cfg);
}

static void test_set_like_cli(void **state) {
    (void)state;
    kj_config cfg;
    assert_int_equal(load(&cfg, "kafka = { bootstrap = \"file:9092\"; };", NULL), 0);
    assert_int_equal(kj_config_set(&cfg, "kafka.bootstrap", "cli:9092", err, sizeof(err)), 0);
    assert_string_equal(cfg.bootstrap, "cli:9092");
    assert_int_equal(kj_config_origin_of(&cfg, "kafka.bootstrap", NULL), KJ_CONFIG_FROM_CLI);
    assert_int_equal(kj_config_set(&cfg, "kafka.group", "cli-group", err, sizeof(err)), 0);
    assert_string_equal(cfg.group, "cli-group");
    /* Changing the main topic re-derives the ladder and DLQ names. */
    assert_int_equal(kj_config_set(&cfg, "topics.main", "orders", err, sizeof(err)), 0);
    assert_string_equal(cfg.retry_prefix, "orders.retry.");
    assert_string_equal(cfg.dlq_topic, "orders.dlq");
    assert_int_equal(kj_config_set(&cfg, "retry.delays", "1s,2s", err, sizeof(err)), 0);
    assert_int_equal(cfg.retry_delay_count, 2);
    /* Bad values are refused and leave the old value. */
    assert_int_equal(kj_config_set(&cfg, "workers", "0", err, sizeof(err)), -1);
    assert_string_equal(err, "workers: expected an integer from 1 to 1024, got 0");
    assert_int_equal(cfg.workers, 2);
    assert_int_equal(kj_config_set(&cfg, "kafka.bootstrap", "", err, sizeof(err)), -1);
    assert_string_equal(cfg.bootstrap, "cli:9092");
    assert_int_equal(kj_config_set(&cfg, "kafka.bootstrp", "x", err, sizeof(err)), -1);
    assert_string_equal(err, "kafka.bootstrp: unknown setting (did you mean kafka.bootstrap?)");
    /* Cross-setting rules are checked on request. */
    assert_int_equal(kj_config_set(&cfg, "batch.max_jobs", "50000", err, sizeof(err)), 0);
    assert_int_equal(kj_config_validate(&cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "batch.max_jobs: batch.max_pending (10000) must be at least "
                             "batch.max_jobs (50000)");
    kj_config_free(&cfg);
}

static void test_example_file_matches_table(void **state) {
    (void)state;
    char *generated = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&generated, &len);
    kj_config_write_example(mem);
    fclose(mem);

    char *checked_in = read_whole_file(KJOBS_SOURCE_DIR "/kjobs.cfg.example");
    if (!checked_in || strcmp(checked_in, generated) != 0) {
        FILE *out = fopen(KJOBS_BINARY_DIR "/kjobs.cfg.example.generated", "w");
        if (out) {
            fputs(generated, out);
            fclose(out);
        }
        fail_msg("kjobs.cfg.example is out of date with the table in processor/config.c; "
                 "review and run: cp %s/kjobs.cfg.example.generated %s/kjobs.cfg.example",
                 KJOBS_BINARY_DIR, KJOBS_SOURCE_DIR);
    }
    free(checked_in);
    free(generated);

    /* And it loads cleanly, every setting read from it, to the same values as the defaults. */
    kj_config cfg, def;
    int rc =
        kj_config_load_env(&cfg, KJOBS_SOURCE_DIR "/kjobs.cfg.example", NULL, err, sizeof(err));
    if (rc != 0) fail_msg("kjobs.cfg.example does not load: %s", err);
    kj_config_defaults(&def);
    for (size_t i = 0; i < kj_config_setting_count(); i++) {
        const char *key = kj_config_setting_name(i);
        char a[1024], b[1024];
        assert_int_equal(kj_config_origin_of(&cfg, key, NULL), KJ_CONFIG_FROM_FILE);
        kj_config_format_value(&cfg, key, a, sizeof(a));
        kj_config_format_value(&def, key, b, sizeof(b));
        if (strcmp(a, b) != 0) fail_msg("%s: example gives %s, default is %s", key, a, b);
    }
    kj_config_free(&cfg);
    kj_config_free(&def);
}

#define REF_BEGIN "<!-- BEGIN GENERATED: kj_config_write_reference() -->\n"
#define REF_END   "<!-- END GENERATED -->\n"

static void test_docs_reference_matches_table(void **state) {
    (void)state;
    char *generated = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&generated, &len);
    kj_config_write_reference(mem);
    fclose(mem);

    char *doc = read_whole_file(KJOBS_SOURCE_DIR "/docs/configuration.md");
    assert_non_null(doc);
    char *begin = strstr(doc, REF_BEGIN), *end = begin ? strstr(begin, REF_END) : NULL;
    bool same = begin && end;
    if (same) {
        begin += strlen(REF_BEGIN);
        same = (size_t)(end - begin) == len && memcmp(begin, generated, len) == 0;
    }
    if (!same) {
        FILE *out = fopen(KJOBS_BINARY_DIR "/configuration-reference.md.generated", "w");
        if (out) {
            fputs(generated, out);
            fclose(out);
        }
        fail_msg("docs/configuration.md reference is out of date; replace the text between the "
                 "GENERATED markers with %s/configuration-reference.md.generated",
                 KJOBS_BINARY_DIR);
    }
    /* Every environment variable is documented (in the table, at least). */
    for (size_t i = 0; i < kj_config_setting_count(); i++)
        assert_non_null(strstr(doc, kj_config_setting_env(i)));
    free(doc);
    free(generated);
}

static void test_file_include_is_relative_to_file(void **state) {
    (void)state;
    char dir[] = "/tmp/kjobs-config-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char main_path[256], inc_path[256];
    snprintf(main_path, sizeof(main_path), "%s/main.cfg", dir);
    snprintf(inc_path, sizeof(inc_path), "%s/secret.cfg", dir);
    FILE *f = fopen(inc_path, "w");
    fputs("kafka = {\n  bootstrap = \"inc:9092\";\n  group = 7;\n};\n", f);
    fclose(f);
    f = fopen(main_path, "w");
    fputs("workers = 3;\n@include \"secret.cfg\"\n", f);
    fclose(f);
    kj_config cfg;
    int rc = kj_config_load_env(&cfg, main_path, NULL, err, sizeof(err));
    kj_config_free(&cfg);
    unlink(inc_path);
    unlink(main_path);
    rmdir(dir);
    assert_int_equal(rc, -1);
    /* The error names the included file and its line. */
    char want[512];
    snprintf(want, sizeof(want), "%s:3: kafka.group: expected a non-empty string, got 7", inc_path);
    assert_string_equal(err, want);
}

/* Issue #10 item 14: blame, directories, and exec arguments kept out of echoes. */
static void test_item14_blame_directory_and_exec_arguments(void **state) {
    (void)state;
    /* a DLQ named like a ladder step is the DLQ's fault, not topics.main's */
    expect_load_error("topics = {\n  main = \"x\";\n  dlq = \"x.retry.1\";\n};", NULL,
                      "kjobs.cfg:3: topics.dlq: the dead-letter topic \"x.retry.1\" is the same "
                      "as retry topic 1");
    /* -c naming a directory says so and names it */
    char dir[] = "/tmp/kjobs-config-dir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    kj_config cfg;
    assert_int_equal(kj_config_load_env(&cfg, dir, NULL, err, sizeof(err)), -1);
    kj_config_free(&cfg);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "directory"));
    rmdir(dir);
    /* handlers.exec arguments: "<hidden>" in the effective configuration */
    assert_int_equal(
        load(&cfg, "handlers = { exec = [ \"/bin/cat\", \"--token=s3cr3t\" ]; };", NULL), 0);
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    kj_config_write_effective(&cfg, mem);
    fclose(mem);
    kj_config_free(&cfg);
    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strstr(out, "handlers.exec = [ \"/bin/cat\", \"<hidden>\" ];"));
    free(out);
    /* ... and in errors about them */
    char *env[] = {"KJOBS_HANDLERS_EXEC=[\"/bin/cat\", \"--token=s3cr3t\"", NULL};
    assert_int_equal(load(&cfg, "", env), -1);
    kj_config_free(&cfg);
    assert_null(strstr(err, "s3cr3t"));
    assert_non_null(strstr(err, "KJOBS_HANDLERS_EXEC"));
}

/* `limits` (processor/config_limits.h): file and KJOBS_LIMITS mean the same, defaults, the
 * rate syntax, and every error names its place and field. */
static void test_limits(void **state) {
    (void)state;
    kj_config cfg;
    assert_int_equal(
        load(&cfg,
             "limits = (\n"
             "  { type = \"partner.call\"; rate = \"100/1m\"; burst = 10; scope = \"group\"; },\n"
             "  { type = \"image.resize\"; concurrency = 2; },\n"
             "  { type = \"email.send\"; rate = 50; concurrency = 4; }\n"
             ");\n",
             NULL),
        0);
    assert_int_equal(cfg.limit_count, 3);
    assert_string_equal(cfg.limits[0].type, "partner.call");
    assert_true(cfg.limits[0].rate > 1.6666 && cfg.limits[0].rate < 1.6667);
    assert_true(cfg.limits[0].burst == 10);
    assert_true(cfg.limits[0].group_scope);
    assert_int_equal(cfg.limits[0].concurrency, 0);
    assert_true(cfg.limits[1].rate == 0);
    assert_int_equal(cfg.limits[1].concurrency, 2);
    assert_false(cfg.limits[1].group_scope);
    assert_true(cfg.limits[2].rate == 50);
    assert_true(cfg.limits[2].burst == 5); /* default: a tenth of a second's worth */
    kj_config_free(&cfg);

    /* the environment replaces the file's list */
    char *env[] = {"KJOBS_LIMITS=[{\"type\":\"x\",\"rate\":\"5/s\"}]", NULL};
    assert_int_equal(load(&cfg, "limits = ( { type = \"a\"; concurrency = 1; } );", env), 0);
    assert_int_equal(cfg.limit_count, 1);
    assert_string_equal(cfg.limits[0].type, "x");
    assert_true(cfg.limits[0].rate == 5);
    assert_true(cfg.limits[0].burst == 1);
    kj_config_free(&cfg);

    double r;
    char why[256];
    assert_int_equal(kj_config_rate_parse("1/500ms", &r, why, sizeof why), 0);
    assert_true(r == 2);
    assert_int_equal(kj_config_rate_parse("3/h", &r, why, sizeof why), 0);
    assert_true(r > 0.000833 && r < 0.000834);
    assert_int_equal(kj_config_rate_parse("0.5", &r, why, sizeof why), 0);
    assert_true(r == 0.5);
    const char *bad_rates[] = {"",    "/s",   "5/", "5/0s",   "5/100",  "-5/s", "5 /s",
                               "x/s", "5/1x", "0",  "0x10/s", "1e2/1m", ".5/s", "5./s"};
    for (size_t i = 0; i < sizeof bad_rates / sizeof *bad_rates; i++)
        if (kj_config_rate_parse(bad_rates[i], &r, why, sizeof why) == 0)
            fail_msg("rate \"%s\" was accepted", bad_rates[i]);

    expect_load_error("\nlimits = (\n  { type = \"a\"; rate = \"5/1x\"; }\n);\n", NULL,
                      "kjobs.cfg:3: limits[0].rate: expected a rate like \"100/1m\", \"5/s\" or "
                      "\"1/500ms\" (jobs per duration), or a number of jobs per second, got "
                      "\"5/1x\"");
    /* the line of the field at fault, not of the entry */
    expect_load_error_containing("limits = (\n  { type = \"a\";\n    rate = \"1/40d\"; }\n);", NULL,
                                 "kjobs.cfg:3: limits[0].rate: ");
    expect_load_error_containing("limits = (\n  { type = \"a\"; rate = 1;\n    burst = 0; }\n);",
                                 NULL,
                                 "kjobs.cfg:3: limits[0].burst: expected a whole number of jobs "
                                 "from 1 to 1000000, got 0");
    expect_load_error_containing("limits = ( { type = \" a\"; rate = 1; } );", NULL,
                                 "limits[0].type: \" a\" starts or ends with a space");
    char *empty_env[] = {"KJOBS_LIMITS=", NULL};
    assert_int_equal(load(&cfg, "limits = ( { type = \"a\"; concurrency = 1; } );", empty_env), 0);
    assert_int_equal(cfg.limit_count, 0);
    kj_config_free(&cfg);
    expect_load_error_containing("limits = ( { type = \"a\"; } );", NULL,
                                 "kjobs.cfg:1: limits[0]: set rate, concurrency or both");
    expect_load_error_containing("limits = ( { type = \"a\"; concurrency = 1; },\n"
                                 "{ type = \"a\"; rate = 1; } );",
                                 NULL, "kjobs.cfg:2: limits[1].type: \"a\" has a limit already");
    expect_load_error_containing("limits = ( { type = \"a\"; concurrency = 0; } );", NULL,
                                 "limits[0].concurrency: expected 1..10000 jobs, got 0");
    expect_load_error_containing("limits = ( { type = \"a\"; concurency = 1; } );", NULL,
                                 "limits[0].concurency: unknown setting");
    expect_load_error_containing("limits = ( { type = \"a\"; concurrency = 1; burst = 3; } );",
                                 NULL, "limits[0].burst: only meaningful with a rate");
    expect_load_error_containing(
        "limits = ( { type = \"a\"; concurrency = 1; scope = \"group\"; } );", NULL,
        "limits[0].scope: \"group\" scales the rate");
    expect_load_error_containing("limits = ( { type = \"a\"; rate = 1; scope = \"cluster\"; } );",
                                 NULL, "limits[0].scope: expected \"process\" or \"group\"");
    expect_load_error_containing("limits = { type = \"a\"; };", NULL,
                                 "kjobs.cfg:1: limits: expected a list");
    char *bad_env[] = {"KJOBS_LIMITS={\"type\":\"x\"}", NULL};
    expect_load_error_containing("", bad_env, "environment KJOBS_LIMITS: expected a JSON array");
    char *bad_env2[] = {"KJOBS_LIMITS=[{\"type\":\"x\",\"rate\":\"fast\"}]", NULL};
    expect_load_error_containing("", bad_env2, "environment KJOBS_LIMITS: limits[0].rate:");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_without_file),
        cmocka_unit_test(test_default_file_and_explicit_paths),
        cmocka_unit_test(test_every_setting_overridable),
        cmocka_unit_test(test_env_names_follow_rule),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_type_timeout_parse),
        cmocka_unit_test(test_file_errors_name_file_line_setting),
        cmocka_unit_test(test_bad_group_suggestion_is_a_guess_only),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_cross_setting_rules),
        cmocka_unit_test(test_secrets_never_in_errors),
        cmocka_unit_test(test_item14_blame_directory_and_exec_arguments),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_rdkafka_prop_order),
        cmocka_unit_test(test_set_like_cli),
        cmocka_unit_test(test_example_file_matches_table),
        cmocka_unit_test(test_docs_reference_matches_table),
        cmocka_unit_test(test_file_include_is_relative_to_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
