/*
 * test_group_control.c — the operator controls' wire form and state (processor/group_control.c):
 * keys and values parsed and formatted both ways, every kind of malformed or oversized record
 * ignored without changing the state, tombstones and "paused": false as resumes, topic and
 * partition pauses held apart, the operator's TOPIC[:PARTITION] argument, and the bound on the
 * number of pauses kept. No Kafka: the follower and the writer are covered by
 * tests/integration/test_group_control.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "processor/group_control.h"

static kj_ctl_change apply_text(kj_ctl_state *s, const char *key, const char *value) {
    return kj_ctl_state_apply(s, key, strlen(key), value, value ? strlen(value) : 0, NULL, NULL);
}

static void test_topic_names(void **state) {
    (void)state;
    assert_true(kj_ctl_topic_valid("jobs", 4));
    assert_true(kj_ctl_topic_valid("jobs.retry-1_x", 14));
    assert_false(kj_ctl_topic_valid("", 0));
    assert_false(kj_ctl_topic_valid(".", 1));
    assert_false(kj_ctl_topic_valid("..", 2));
    assert_false(kj_ctl_topic_valid("a/b", 3));
    assert_false(kj_ctl_topic_valid("a b", 3));
    assert_false(kj_ctl_topic_valid("j\0bs", 4));
    char long_name[251];
    memset(long_name, 'x', sizeof(long_name));
    assert_true(kj_ctl_topic_valid(long_name, 249));
    assert_false(kj_ctl_topic_valid(long_name, 250));
}

static void test_keys(void **state) {
    (void)state;
    kj_ctl_key k;
    assert_int_equal(kj_ctl_key_parse("pause/jobs", 10, &k), 0);
    assert_int_equal(k.kind, KJ_CTL_PAUSE);
    assert_string_equal(k.topic, "jobs");
    assert_int_equal(k.partition, -1);
    assert_int_equal(kj_ctl_key_parse("pause/jobs.retry.1/12", 21, &k), 0);
    assert_string_equal(k.topic, "jobs.retry.1");
    assert_int_equal(k.partition, 12);
    assert_int_equal(kj_ctl_key_parse("pause/jobs/2147483647", 21, &k), 0);
    assert_int_equal(k.partition, 2147483647);
    assert_int_equal(kj_ctl_key_parse("breaker/resume", 14, &k), 0);
    assert_int_equal(k.kind, KJ_CTL_BREAKER_RESUME);
    static const char *const bad[] = {
        "pause/",           "pause/jobs/", "pause/jobs/-1", "pause/jobs/01",         "pause/jobs/x",
        "pause/jobs/1/2",   "pause/../1",  "pause/a b",     "pause/jobs/2147483648", "Pause/jobs",
        "breaker/resume/x", "breaker",     "resume/jobs"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(kj_ctl_key_parse(bad[i], strlen(bad[i]), &k), -1);
    assert_int_equal(kj_ctl_key_parse(NULL, 0, &k), -1);
    char huge[KJ_CTL_MAX_KEY + 2];
    memcpy(huge, "pause/", 6);
    memset(huge + 6, 'x', sizeof(huge) - 6);
    assert_int_equal(kj_ctl_key_parse(huge, sizeof(huge), &k), -1);
    /* a key with a NUL inside is not a topic name */
    assert_int_equal(kj_ctl_key_parse("pause/jo\0bs", 11, &k), -1);

    char buf[KJ_CTL_MAX_KEY + 1];
    kj_ctl_key p = {.kind = KJ_CTL_PAUSE, .topic = "jobs", .partition = 3};
    assert_int_equal(kj_ctl_key_format(&p, buf, sizeof(buf)), 12);
    assert_string_equal(buf, "pause/jobs/3");
    p.partition = -1;
    kj_ctl_key_format(&p, buf, sizeof(buf));
    assert_string_equal(buf, "pause/jobs");
    kj_ctl_key br = {.kind = KJ_CTL_BREAKER_RESUME, .partition = -1};
    kj_ctl_key_format(&br, buf, sizeof(buf));
    assert_string_equal(buf, KJ_CTL_BREAKER_KEY);
    assert_int_equal(kj_ctl_key_format(&br, buf, 4), -1); /* does not fit */
}

static void test_values_round_trip(void **state) {
    (void)state;
    kj_ctl_key k = {.kind = KJ_CTL_PAUSE, .topic = "jobs", .partition = 1};
    kj_ctl_value v = {.paused = true, .at = 1767225600000};
    snprintf(v.by, sizeof(v.by), "ops@host");
    snprintf(v.reason, sizeof(v.reason), "partner API down \"<b>\"");
    char *text = kj_ctl_value_format(KJ_CTL_PAUSE, &v);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"v\":1"));
    kj_ctl_value back;
    assert_int_equal(kj_ctl_value_parse(&k, text, strlen(text), &back), 0);
    assert_true(back.paused);
    assert_int_equal(back.at, 1767225600000);
    assert_string_equal(back.by, "ops@host");
    assert_string_equal(back.reason, v.reason);
    free(text);

    kj_ctl_key bk = {.kind = KJ_CTL_BREAKER_RESUME, .partition = -1};
    text = kj_ctl_value_format(KJ_CTL_BREAKER_RESUME, &v);
    assert_null(strstr(text, "paused"));
    assert_null(strstr(text, "reason"));
    assert_int_equal(kj_ctl_value_parse(&bk, text, strlen(text), &back), 0);
    assert_int_equal(back.at, 1767225600000);
    free(text);
    /* the breaker's key has no tombstone meaning; a pause's tombstone is a resume */
    assert_int_equal(kj_ctl_value_parse(&bk, NULL, 0, &back), -1);
    assert_int_equal(kj_ctl_value_parse(&k, NULL, 0, &back), 0);
    assert_false(back.paused);
    /* a later version with more fields is read; unknown fields are ignored */
    const char *v2 = "{\"v\":2,\"paused\":true,\"at\":5,\"by\":\"x\",\"new\":{\"a\":[1]}}";
    assert_int_equal(kj_ctl_value_parse(&k, v2, strlen(v2), &back), 0);
    assert_int_equal(back.at, 5);
    /* by and reason are cut on a UTF-8 boundary */
    char big[1200];
    size_t n =
        (size_t)snprintf(big, sizeof(big), "{\"v\":1,\"paused\":true,\"at\":1,\"reason\":\"");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "\xc3\xa9");
    snprintf(big + n, sizeof(big) - n, "\"}");
    assert_int_equal(kj_ctl_value_parse(&k, big, strlen(big), &back), 0);
    assert_int_equal(strlen(back.reason), KJ_CTL_MAX_REASON); /* 256 whole two-byte letters */
}

static void test_malformed_values(void **state) {
    (void)state;
    kj_ctl_key k = {.kind = KJ_CTL_PAUSE, .topic = "jobs", .partition = 1};
    kj_ctl_key bk = {.kind = KJ_CTL_BREAKER_RESUME, .partition = -1};
    kj_ctl_value v;
    static const char *const bad[] = {
        "not json",
        "[1,2]",
        "\"text\"",
        "{}",
        "{\"v\":0,\"paused\":true,\"at\":1}",
        "{\"v\":\"1\",\"paused\":true,\"at\":1}",
        "{\"v\":1,\"paused\":\"yes\",\"at\":1}",
        "{\"v\":1,\"at\":1}",
        "{\"v\":1,\"paused\":true}",
        "{\"v\":1,\"paused\":true,\"at\":-5}",
        "{\"v\":1,\"paused\":true,\"at\":1.5}",
        "{\"v\":1,\"paused\":true,\"at\":1,\"by\":7}",
        "{\"v\":1,\"paused\":true,\"at\":1,\"reason\":{}}",
        "{\"v\":1,\"paused\":true,\"at\":1,\"at\":2}",        /* duplicate key */
        "{\"v\":1,\"paused\":true,\"at\":1,\"by\":\"\xff\"}", /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(kj_ctl_value_parse(&k, bad[i], strlen(bad[i]), &v), -1);
    assert_int_equal(kj_ctl_value_parse(&bk, "{\"v\":1}", 7, &v), -1);
    /* over the bound: ignored however valid it is (the same shape within it is read) */
    for (size_t cap = 200; cap <= KJ_CTL_MAX_VALUE + 100; cap += KJ_CTL_MAX_VALUE - 100) {
        char *big = malloc(cap + 1);
        int n = snprintf(big, cap, "{\"v\":1,\"paused\":true,\"at\":1,\"pad\":\"");
        memset(big + n, 'x', cap - (size_t)n - 2);
        memcpy(big + cap - 2, "\"}", 3);
        assert_int_equal(kj_ctl_value_parse(&k, big, cap, &v), cap <= KJ_CTL_MAX_VALUE ? 0 : -1);
        free(big);
    }
}

static void test_state(void **state) {
    (void)state;
    kj_ctl_state *s = kj_ctl_state_new();
    const char *pause = "{\"v\":1,\"paused\":true,\"at\":10,\"by\":\"a\",\"reason\":\"r\"}";
    assert_int_equal(apply_text(s, "pause/jobs/1", pause), KJ_CTL_PAUSED);
    assert_int_equal(apply_text(s, "pause/jobs/1", pause), KJ_CTL_UNCHANGED);
    assert_non_null(kj_ctl_state_paused(s, "jobs", 1));
    assert_null(kj_ctl_state_paused(s, "jobs", 0));
    /* malformed records leave the state as it was */
    assert_int_equal(apply_text(s, "pause/jobs/1", "garbage"), KJ_CTL_IGNORED);
    assert_int_equal(apply_text(s, "pause/jobs/1/x", NULL), KJ_CTL_IGNORED);
    assert_int_equal(apply_text(s, "breaker/resume", NULL), KJ_CTL_IGNORED);
    assert_int_equal(kj_ctl_state_ignored(s), 3);
    assert_non_null(kj_ctl_state_paused(s, "jobs", 1));
    /* the topic's pause covers every partition; each key is ended on its own */
    assert_int_equal(apply_text(s, "pause/jobs", pause), KJ_CTL_PAUSED);
    const kj_ctl_pause *why = kj_ctl_state_paused(s, "jobs", 3);
    assert_non_null(why);
    assert_int_equal(why->partition, -1);
    assert_int_equal(kj_ctl_state_paused(s, "jobs", 1)->partition, 1);     /* its own key first */
    assert_int_equal(apply_text(s, "pause/jobs/1", NULL), KJ_CTL_RESUMED); /* tombstone */
    assert_non_null(kj_ctl_state_paused(s, "jobs", 1));                    /* the topic still */
    const char *off = "{\"v\":1,\"paused\":false,\"at\":11}";
    assert_int_equal(apply_text(s, "pause/jobs", off), KJ_CTL_RESUMED);
    assert_null(kj_ctl_state_paused(s, "jobs", 1));
    assert_int_equal(apply_text(s, "pause/jobs", NULL), KJ_CTL_UNCHANGED);
    /* the list: topics before their partitions, by name */
    apply_text(s, "pause/zeta/2", pause);
    apply_text(s, "pause/alpha/7", pause);
    apply_text(s, "pause/alpha", pause);
    size_t n;
    const kj_ctl_pause *list = kj_ctl_state_list(s, &n);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].topic, "alpha");
    assert_int_equal(list[0].partition, -1);
    assert_int_equal(list[1].partition, 7);
    assert_string_equal(list[2].topic, "zeta");
    json_t *j = kj_ctl_pause_json(&list[0]);
    assert_true(json_is_null(json_object_get(j, "partition")));
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "r");
    json_decref(j);
    /* the breaker's resume is an event with its time */
    assert_int_equal(kj_ctl_state_breaker_resume_at(s), -1);
    kj_ctl_value v;
    const char *br = "{\"v\":1,\"at\":99,\"by\":\"ops\"}";
    assert_int_equal(kj_ctl_state_apply(s, "breaker/resume", 14, br, strlen(br), NULL, &v),
                     KJ_CTL_BREAKER);
    assert_int_equal(v.at, 99);
    assert_int_equal(kj_ctl_state_breaker_resume_at(s), 99);
    kj_ctl_state_free(s);
}

static void test_bound(void **state) {
    (void)state;
    kj_ctl_state *s = kj_ctl_state_new();
    const char *pause = "{\"v\":1,\"paused\":true,\"at\":1}";
    char key[64];
    for (int i = 0; i < KJ_CTL_MAX_PAUSES; i++) {
        snprintf(key, sizeof(key), "pause/jobs/%d", i);
        assert_int_equal(apply_text(s, key, pause), KJ_CTL_PAUSED);
    }
    snprintf(key, sizeof(key), "pause/jobs/%d", KJ_CTL_MAX_PAUSES);
    assert_int_equal(apply_text(s, key, pause), KJ_CTL_IGNORED); /* past the bound */
    assert_null(kj_ctl_state_paused(s, "jobs", KJ_CTL_MAX_PAUSES));
    assert_int_equal(apply_text(s, "pause/jobs/0", NULL), KJ_CTL_RESUMED); /* room again */
    assert_int_equal(apply_text(s, key, pause), KJ_CTL_PAUSED);
    kj_ctl_state_free(s);
}

static void test_targets(void **state) {
    (void)state;
    kj_ctl_key k;
    char err[256];
    assert_int_equal(kj_ctl_target_parse("jobs", &k, err, sizeof(err)), 0);
    assert_int_equal(k.partition, -1);
    assert_int_equal(kj_ctl_target_parse("jobs.retry.2:5", &k, err, sizeof(err)), 0);
    assert_string_equal(k.topic, "jobs.retry.2");
    assert_int_equal(k.partition, 5);
    assert_int_equal(kj_ctl_target_parse("jobs:", &k, err, sizeof(err)), -1);
    assert_int_equal(kj_ctl_target_parse("jobs:-1", &k, err, sizeof(err)), -1);
    assert_int_equal(kj_ctl_target_parse(":1", &k, err, sizeof(err)), -1);
    assert_int_equal(kj_ctl_target_parse("a/b:1", &k, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "TOPIC:PARTITION"));
}

static void test_whoami(void **state) {
    (void)state;
    char buf[KJ_CTL_MAX_BY + 1];
    unsetenv("USER");
    unsetenv("LOGNAME");
    kj_ctl_whoami(buf, sizeof(buf)); /* the passwd entry, or "uid N" */
    assert_non_null(strchr(buf, '@'));
    assert_true(buf[0] != '@');
    setenv("USER", "ops", 1);
    kj_ctl_whoami(buf, sizeof(buf));
    assert_int_equal(strncmp(buf, "ops@", 4), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_names),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_values_round_trip),
        cmocka_unit_test(test_malformed_values),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_whoami),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
