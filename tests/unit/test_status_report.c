/*
 * test_status_report.c — the worker status record (processor/status_report.c): its fields,
 * the size bound cutting the assignment list, the recent-errors ring (bounded, cut, only known
 * fields), and the histogram quantile the p50/p99 come from (processor/metrics.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "processor/metrics.h"
#include "processor/status_report.h"

static kj_status_input sample(kj_status_part *parts, size_t n) {
    kj_status_input in = {.worker_id = "w1",
                          .host = "h",
                          .client_id = "kjobs",
                          .group = "g",
                          .version = "0.1.0",
                          .pid = 42,
                          .started_at_ms = 1000,
                          .reported_at_ms = 2000,
                          .interval_ms = 5000,
                          .state = "running",
                          .parts = parts,
                          .part_count = n};
    in.summary.jobs[KJ_JOB_OK] = 7;
    in.summary.jobs[KJ_JOB_DEAD_LETTERED] = 2;
    in.summary.p50_seconds = 0.01;
    in.summary.p99_seconds = -1; /* renders as null */
    in.summary.in_flight = 3;
    in.summary.rebalances = 1;
    in.summary.retries_in_place = 5;
    return in;
}

static void test_fields(void **state) {
    (void)state;
    kj_status_part parts[] = {{"jobs", 0, false}, {"jobs.retry.1", 3, true}};
    kj_status_input in = sample(parts, 2);
    size_t len;
    char *text = kj_status_render(&in, KJ_STATUS_MAX_BYTES, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    json_error_t e;
    json_t *r = json_loads(text, 0, &e);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "schema")), KJ_STATUS_SCHEMA_VERSION);
    assert_string_equal(json_string_value(json_object_get(r, "worker_id")), "w1");
    assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(r, "pid")), 42);
    json_t *jobs = json_object_get(r, "jobs");
    assert_int_equal(json_integer_value(json_object_get(jobs, "ok")), 7);
    assert_int_equal(json_integer_value(json_object_get(jobs, "dead_lettered")), 2);
    assert_int_equal(json_integer_value(json_object_get(jobs, "parked")), 0);
    json_t *h = json_object_get(r, "handler");
    assert_true(json_is_real(json_object_get(h, "p50_seconds")));
    assert_true(json_is_null(json_object_get(h, "p99_seconds")));
    json_t *a = json_object_get(r, "assignment");
    assert_int_equal(json_integer_value(json_object_get(a, "count")), 2);
    assert_int_equal(json_integer_value(json_object_get(a, "omitted")), 0);
    json_t *p1 = json_array_get(json_object_get(a, "partitions"), 1);
    assert_string_equal(json_string_value(json_object_get(p1, "topic")), "jobs.retry.1");
    assert_int_equal(json_integer_value(json_object_get(p1, "partition")), 3);
    /* an operator's pause is marked; an unpaused partition carries no "paused" at all */
    assert_true(json_is_true(json_object_get(p1, "paused")));
    assert_null(json_object_get(json_array_get(json_object_get(a, "partitions"), 0), "paused"));
    assert_int_equal(json_array_size(json_object_get(r, "errors")), 0);
    json_t *c = json_object_get(r, "counters");
    assert_int_equal(json_integer_value(json_object_get(c, "rebalances")), 1);
    assert_int_equal(json_integer_value(json_object_get(c, "retries_in_place")), 5);
    assert_int_equal(json_integer_value(json_object_get(c, "route_errors")), 0);
    json_decref(r);
    free(text);
}

static void test_size_bound_cuts_the_assignment(void **state) {
    (void)state;
    size_t n = 5000;
    char *topic = malloc(200);
    memset(topic, 't', 199);
    topic[199] = '\0';
    kj_status_part *parts = calloc(n, sizeof(*parts));
    for (size_t i = 0; i < n; i++)
        parts[i] = (kj_status_part){topic, (int32_t)i, false};
    kj_status_input in = sample(parts, n);
    size_t len;
    char *text = kj_status_render(&in, KJ_STATUS_MAX_BYTES, &len);
    assert_non_null(text);
    assert_true(len <= KJ_STATUS_MAX_BYTES);
    json_t *r = json_loads(text, 0, NULL);
    json_t *a = json_object_get(r, "assignment");
    size_t listed = json_array_size(json_object_get(a, "partitions"));
    assert_true(listed > 0 && listed < n);
    assert_int_equal(json_integer_value(json_object_get(a, "count")), n);
    assert_int_equal(json_integer_value(json_object_get(a, "omitted")), n - listed);
    json_decref(r);
    free(text);
    free(parts);
    free(topic);
}

static void test_errors_ring(void **state) {
    (void)state;
    char long_text[2000];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    for (int i = 0; i < KJ_STATUS_MAX_ERRORS + 3; i++) {
        json_t *line = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s}", "ts", "2026-01-01T00:00:00.000Z",
                                 "level", "warn", "msg", "job failed, dead-lettered", "error",
                                 long_text, "partition", i, "secret_field", "hunter2");
        kj_status_note_log(KJ_LOG_WARN, line);
        json_decref(line);
    }
    json_t *errors = kj_status_errors_json();
    assert_int_equal(json_array_size(errors), KJ_STATUS_MAX_ERRORS);
    json_t *oldest = json_array_get(errors, 0),
           *newest = json_array_get(errors, KJ_STATUS_MAX_ERRORS - 1);
    assert_int_equal(json_integer_value(json_object_get(oldest, "partition")), 3);
    assert_int_equal(json_integer_value(json_object_get(newest, "partition")),
                     KJ_STATUS_MAX_ERRORS + 2);
    assert_true(strlen(json_string_value(json_object_get(newest, "error"))) <
                KJ_STATUS_MAX_ERROR_TEXT);
    assert_null(json_object_get(newest, "secret_field"));
    json_decref(errors);
}

static void test_quantile(void **state) {
    (void)state;
    const double bounds[] = {0.1, 1.0, 10.0};
    uint64_t none[] = {0, 0, 0, 0};
    assert_true(kj_metrics_quantile(0.5, bounds, none, 3) < 0);
    uint64_t c[] = {50, 50, 0, 0}; /* half at <= 0.1, half in (0.1, 1] */
    assert_float_equal(kj_metrics_quantile(0.5, bounds, c, 3), 0.1, 1e-9);
    assert_float_equal(kj_metrics_quantile(0.75, bounds, c, 3), 0.55, 1e-9);
    uint64_t inf[] = {1, 0, 0, 99}; /* past the last bound: the largest finite bound */
    assert_float_equal(kj_metrics_quantile(0.99, bounds, inf, 3), 10.0, 1e-9);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_size_bound_cuts_the_assignment),
        cmocka_unit_test(test_errors_ring),
        cmocka_unit_test(test_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
