/*
 * test_metrics.c — the metrics registry: exact totals under concurrent increments (with a
 * scraper rendering at the same time), histogram bucket placement and cumulative rendering,
 * label escaping and sanitising, label-set removal and revival, collect callbacks, the
 * cardinality cap, the kjobs metric set, and the rendered text checked twice: by a tiny parser
 * here and by the reference Python parser (tests/integration/prom_parse.py, /usr/bin/python3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "processor/metrics.h"

/* ---- A tiny exposition checker --------------------------------------------------------------
 * Every non-comment line must be `series value` where the series' family (name minus _bucket/
 * _sum/_count) had a # TYPE line earlier; returns the value of the line whose series is exactly
 * `series`, or NAN when absent. Fails the test on a malformed line. */
static double sample_value(const char *text, const char *series) {
    char declared[64][128];
    size_t ndeclared = 0;
    double found = NAN;
    const char *line = text;
    while (*line) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol); /* every line, the last included, ends in \n */
        size_t n = (size_t)(eol - line);
        if (n > 7 && strncmp(line, "# TYPE ", 7) == 0) {
            const char *sp = memchr(line + 7, ' ', n - 7);
            assert_non_null(sp);
            assert_true(ndeclared < 64);
            snprintf(declared[ndeclared++], 128, "%.*s", (int)(sp - line - 7), line + 7);
        } else if (n > 0 && line[0] != '#') {
            /* the value follows the last space (label values may contain spaces) */
            const char *sp = line + n;
            while (sp > line && sp[-1] != ' ')
                sp--;
            assert_true(sp > line + 1);
            char *end;
            double v = strtod(sp, &end);
            assert_ptr_equal(end, eol);
            size_t namelen = strcspn(line, "{ ");
            bool owned = false;
            for (size_t i = 0; i < ndeclared && !owned; i++) {
                size_t dl = strlen(declared[i]);
                if (namelen < dl || strncmp(line, declared[i], dl) != 0) continue;
                const char *rest = line + dl;
                size_t rl = namelen - dl;
                owned = rl == 0 || (rl == 7 && !strncmp(rest, "_bucket", 7)) ||
                        (rl == 4 && !strncmp(rest, "_sum", 4)) ||
                        (rl == 6 && !strncmp(rest, "_count", 6));
            }
            if (!owned) fail_msg("sample line without a # TYPE: %.*s", (int)n, line);
            size_t sl = strlen(series);
            if ((size_t)(sp - 1 - line) == sl && strncmp(line, series, sl) == 0) found = v;
        }
        line = eol + 1;
    }
    return found;
}

static char *render(kj_registry *reg) {
    size_t len = 0;
    char *text = kj_registry_render(reg, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void assert_sample(const char *text, const char *series, double want) {
    double got = sample_value(text, series);
    if (!(got == want)) fail_msg("%s: got %g, want %g\n%s", series, got, want, text);
}

static void assert_no_sample(const char *text, const char *series) {
    double got = sample_value(text, series);
    if (!isnan(got)) fail_msg("%s: present (%g), want absent\n%s", series, got, text);
}

/* ---- The reference parser -------------------------------------------------------------------
 * Pipes `text` into prom_parse.py with `args` (already shell-quoted); returns its exit status
 * and keeps its output (JSON summary + problems) in `out`. */
static int prom_parse(const char *text, const char *args, char *out, size_t outsz) {
    char path[] = "/tmp/kjobs_test_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/tests/integration/prom_parse.py %s < %s 2>&1",
             KJOBS_SOURCE_DIR, args, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outsz - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(path);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* ---- Tests --------------------------------------------------------------------------------- */

#define NTHREADS 8
#define NITER    200000

typedef struct {
    kj_metric_handle *counter, *gauge, *hist;
    kj_metric_family *fam;
    pthread_barrier_t *start;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    pthread_barrier_wait(a->start);
    for (int i = 0; i < NITER; i++) {
        kj_counter_inc(a->counter);
        kj_gauge_add(a->gauge, 1);
        kj_histogram_observe(a->hist, (i % 2) ? 0.5 : 2.0);
        kj_gauge_add(a->gauge, -1);
    }
    /* resolving the same label set from many threads must give one series */
    kj_metric_handle *again = kj_family_series(a->fam, (const char *[]){"x"});
    kj_counter_add(again, 1);
    return NULL;
}

typedef struct {
    kj_registry *reg;
    atomic_bool stop;
    int renders, inconsistent;
} scraper_arg;

/* The value after `series ` in text, or NAN. No cmocka asserts: this runs on another thread. */
static double raw_value(const char *text, const char *series) {
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", series);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

static void *scraper(void *p) {
    scraper_arg *s = p;
    while (!atomic_load(&s->stop)) {
        char *text = kj_registry_render(s->reg, NULL);
        if (!text) {
            s->inconsistent++;
            break;
        }
        /* mid-flight consistency: +Inf bucket == _count in every scrape */
        if (raw_value(text, "t_hist_bucket{le=\"+Inf\"}") != raw_value(text, "t_hist_count"))
            s->inconsistent++;
        free(text);
        s->renders++;
    }
    return NULL;
}

static void test_concurrent_increments_exact(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *c = kj_registry_add(reg, "t_ops_total", KJ_METRIC_COUNTER, "ops",
                                          (const char *[]){"k"}, 1, NULL, 0);
    kj_metric_family *g = kj_registry_add(reg, "t_level", KJ_METRIC_GAUGE, "lvl", NULL, 0, NULL, 0);
    kj_metric_family *h =
        kj_registry_add(reg, "t_hist", KJ_METRIC_HISTOGRAM, "h", NULL, 0, (const double[]){1}, 1);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);
    kj_metric_handle *hc = kj_family_series(c, (const char *[]){"x"});

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NTHREADS + 1);
    pthread_t th[NTHREADS], sc;
    worker_arg wa = {hc, kj_family_default(g), kj_family_default(h), c, &start};
    scraper_arg sa = {.reg = reg};
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, &wa), 0);
    assert_int_equal(pthread_create(&sc, NULL, scraper, &sa), 0);
    pthread_barrier_wait(&start);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&sa.stop, true);
    pthread_join(sc, NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(sa.inconsistent, 0);
    assert_true(sa.renders > 0);

    const uint64_t total = (uint64_t)NTHREADS * NITER;
    assert_int_equal(kj_counter_value(hc), total + NTHREADS);
    assert_true(kj_gauge_value(kj_family_default(g)) == 0.0);
    assert_int_equal(kj_histogram_count(kj_family_default(h)), total);
    assert_int_equal(kj_histogram_bucket(kj_family_default(h), 0), total / 2);
    assert_true(kj_histogram_sum(kj_family_default(h)) == (double)(total / 2) * 2.5);

    char *text = render(reg);
    char want[64];
    snprintf(want, sizeof(want), "%llu", (unsigned long long)(total + NTHREADS));
    assert_sample(text, "t_ops_total{k=\"x\"}", (double)(total + NTHREADS));
    assert_non_null(strstr(text, want)); /* printed as an exact integer, not 1.6e+06 */
    assert_sample(text, "t_hist_count", (double)total);
    free(text);
    kj_registry_free(reg);
}

static void test_histogram_buckets(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f =
        kj_registry_add(reg, "t_dur_seconds", KJ_METRIC_HISTOGRAM, "d", (const char *[]){"type"}, 1,
                        (const double[]){0.1, 1, 10}, 3);
    assert_non_null(f);
    kj_metric_handle *h = kj_family_series(f, (const char *[]){"a"});
    const double obs[] = {0.05, 0.1 /* on the bound: le is inclusive */, 0.5, 1, 5, 100};
    double sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        kj_histogram_observe(h, obs[i]);
        sum += obs[i];
    }
    assert_int_equal(kj_histogram_bucket(h, 0), 2);
    assert_int_equal(kj_histogram_bucket(h, 1), 4);
    assert_int_equal(kj_histogram_bucket(h, 2), 5);
    assert_int_equal(kj_histogram_bucket(h, 3), 6);
    assert_int_equal(kj_histogram_count(h), 6);
    assert_true(fabs(kj_histogram_sum(h) - sum) < 1e-12);

    char *text = render(reg);
    assert_non_null(strstr(text, "# HELP t_dur_seconds d\n# TYPE t_dur_seconds histogram\n"));
    assert_sample(text, "t_dur_seconds_bucket{type=\"a\",le=\"0.1\"}", 2);
    assert_sample(text, "t_dur_seconds_bucket{type=\"a\",le=\"1\"}", 4);
    assert_sample(text, "t_dur_seconds_bucket{type=\"a\",le=\"10\"}", 5);
    assert_sample(text, "t_dur_seconds_bucket{type=\"a\",le=\"+Inf\"}", 6);
    assert_sample(text, "t_dur_seconds_count{type=\"a\"}", 6);
    assert_true(fabs(sample_value(text, "t_dur_seconds_sum{type=\"a\"}") - sum) < 1e-9);
    /* bucket lines come in increasing le order, +Inf last, then _sum and _count */
    const char *b01 = strstr(text, "le=\"0.1\""), *binf = strstr(text, "le=\"+Inf\"");
    const char *bsum = strstr(text, "t_dur_seconds_sum"), *bcnt = strstr(text, "_count{");
    assert_true(b01 < binf && binf < bsum && bsum < bcnt);
    free(text);
    kj_registry_free(reg);
}

static void test_label_escaping_and_sanitising(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f =
        kj_registry_add(reg, "t_esc_total", KJ_METRIC_COUNTER, "help with \\ and\nnewline",
                        (const char *[]){"v"}, 1, NULL, 0);
    assert_non_null(f);
    kj_counter_add(kj_family_series(f, (const char *[]){"a\\b\"c\nd"}), 3);
    kj_counter_add(kj_family_series(f, (const char *[]){"bad\xff\xc3utf8 \xc3\xa9"}), 4);
    char longv[KJ_METRICS_MAX_LABEL_LEN + 50];
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    kj_counter_add(kj_family_series(f, (const char *[]){longv}), 5);
    kj_counter_add(kj_family_series(f, (const char *[]){NULL}), 6);

    char *text = render(reg);
    assert_non_null(strstr(text, "# HELP t_esc_total help with \\\\ and\\nnewline\n"));
    assert_non_null(strstr(text, "t_esc_total{v=\"a\\\\b\\\"c\\nd\"} 3\n"));
    /* invalid bytes become '?', valid multi-byte characters survive */
    assert_non_null(strstr(text, "t_esc_total{v=\"bad??utf8 \xc3\xa9\"} 4\n"));
    char want[KJ_METRICS_MAX_LABEL_LEN + 64];
    snprintf(want, sizeof(want), "t_esc_total{v=\"%.*s\"} 5\n", KJ_METRICS_MAX_LABEL_LEN, longv);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "t_esc_total{v=\"\"} 6\n"));
    free(text);
    kj_registry_free(reg);
}

static void test_remove_label_set(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f = kj_registry_add(reg, "t_lag", KJ_METRIC_GAUGE, "lag",
                                          (const char *[]){"topic", "partition"}, 2, NULL, 0);
    kj_metric_handle *p0 = kj_family_series(f, (const char *[]){"jobs", "0"});
    kj_metric_handle *p1 = kj_family_series(f, (const char *[]){"jobs", "1"});
    assert_ptr_not_equal(p0, p1);
    assert_ptr_equal(p0, kj_family_series(f, (const char *[]){"jobs", "0"}));
    kj_gauge_set(p0, 42);
    kj_gauge_set(p1, 7);

    assert_int_equal(kj_family_remove(f, (const char *[]){"jobs", "0"}), 1);
    assert_int_equal(kj_family_remove(f, (const char *[]){"jobs", "0"}), 0); /* already gone */
    assert_int_equal(kj_family_remove(f, (const char *[]){"jobs", "9"}), 0); /* never there */
    kj_gauge_set(p0, 99); /* a stale handle: harmless and invisible */
    char *text = render(reg);
    assert_no_sample(text, "t_lag{topic=\"jobs\",partition=\"0\"}");
    assert_sample(text, "t_lag{topic=\"jobs\",partition=\"1\"}", 7);
    free(text);

    /* re-assigned: the same handle comes back, starting from zero */
    assert_ptr_equal(kj_family_series(f, (const char *[]){"jobs", "0"}), p0);
    text = render(reg);
    assert_sample(text, "t_lag{topic=\"jobs\",partition=\"0\"}", 0);
    free(text);
    kj_registry_free(reg);
}

static void emit_two(kj_collect *c, void *opaque) {
    int *calls = opaque;
    (*calls)++;
    kj_collect_emit(c, (const char *[]){"a\"q"}, 1.5);
    kj_collect_emit(c, (const char *[]){"b"}, -3);
}

static void test_collect_callback(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f =
        kj_registry_add(reg, "t_computed", KJ_METRIC_GAUGE, "c", (const char *[]){"k"}, 1, NULL, 0);
    int calls = 0;
    kj_family_set_collector(f, emit_two, &calls);
    char *text = render(reg);
    assert_int_equal(calls, 1);
    assert_sample(text, "t_computed{k=\"a\\\"q\"}", 1.5);
    assert_sample(text, "t_computed{k=\"b\"}", -3);
    free(text);
    kj_family_set_collector(f, NULL, NULL);
    text = render(reg);
    assert_int_equal(calls, 1);
    assert_no_sample(text, "t_computed{k=\"b\"}");
    assert_non_null(strstr(text, "# TYPE t_computed gauge\n")); /* family still declared */
    free(text);
    kj_registry_free(reg);
}

static void test_cardinality_cap(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f = kj_registry_add(reg, "t_card_total", KJ_METRIC_COUNTER, "c",
                                          (const char *[]){"type"}, 1, NULL, 0);
    char v[32];
    for (int i = 0; i < KJ_METRICS_MAX_SERIES; i++) {
        snprintf(v, sizeof(v), "t%d", i);
        kj_counter_inc(kj_family_series(f, (const char *[]){v}));
    }
    kj_metric_handle *o1 = kj_family_series(f, (const char *[]){"one-too-many"});
    kj_metric_handle *o2 = kj_family_series(f, (const char *[]){"two-too-many"});
    assert_ptr_equal(o1, o2);
    kj_counter_add(o1, 5);
    /* existing label sets still resolve to their own series */
    assert_int_equal(kj_counter_value(kj_family_series(f, (const char *[]){"t7"})), 1);
    char *text = render(reg);
    assert_sample(text, "t_card_total{type=\"" KJ_METRICS_OVERFLOW_VALUE "\"}", 5);
    assert_no_sample(text, "t_card_total{type=\"one-too-many\"}");
    free(text);
    kj_registry_free(reg);
}

static void test_registration_rejects_bad_definitions(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    assert_non_null(kj_registry_add(reg, "t_ok", KJ_METRIC_GAUGE, "", NULL, 0, NULL, 0));
    assert_null(kj_registry_add(reg, "t_ok", KJ_METRIC_GAUGE, "", NULL, 0, NULL, 0));
    assert_null(kj_registry_add(reg, "9bad", KJ_METRIC_GAUGE, "", NULL, 0, NULL, 0));
    assert_null(
        kj_registry_add(reg, "t_x", KJ_METRIC_GAUGE, "", (const char *[]){"a-b"}, 1, NULL, 0));
    assert_null(
        kj_registry_add(reg, "t_x", KJ_METRIC_GAUGE, "", (const char *[]){"a", "a"}, 2, NULL, 0));
    assert_null(kj_registry_add(reg, "t_h", KJ_METRIC_HISTOGRAM, "", (const char *[]){"le"}, 1,
                                (const double[]){1}, 1));
    assert_null(
        kj_registry_add(reg, "t_h", KJ_METRIC_HISTOGRAM, "", NULL, 0, (const double[]){1, 1}, 2));
    assert_null(kj_registry_add(reg, "t_h", KJ_METRIC_HISTOGRAM, "", NULL, 0, NULL, 0));
    char *text = render(reg);
    assert_string_equal(text, "# HELP t_ok \n# TYPE t_ok gauge\nt_ok 0\n");
    free(text);
    kj_registry_free(reg);
}

static const char *const kjobs_families[][2] = {
    {"kjobs_jobs_total", "counter"},         {"kjobs_job_duration_seconds", "histogram"},
    {"kjobs_batch_size", "histogram"},       {"kjobs_consumer_lag", "gauge"},
    {"kjobs_commits_total", "counter"},      {"kjobs_rebalances_total", "counter"},
    {"kjobs_in_flight_jobs", "gauge"},       {"kjobs_offset_resets_total", "counter"},
    {"kjobs_retry_routed_total", "counter"}, {"kjobs_dlq_routed_total", "counter"},
    {"kjobs_route_errors_total", "counter"}, {"kjobs_decode_errors_total", "counter"},
    {"kjobs_circuit_breaker_open", "gauge"}, {"kjobs_ready", "gauge"},
    {"kjobs_build_info", "gauge"},
};
#define KJOBS_NFAMILIES (sizeof(kjobs_families) / sizeof(kjobs_families[0]))

static void lag_collector(kj_collect *c, void *opaque) {
    (void)opaque;
    kj_metrics_lag_emit(c, "jobs.retry.1", 3, 12);
}

/* Drive the kjobs set through its convenience API (process-wide registry). */
static void populate_kjobs_set(void) {
    kj_metrics_set_version("9.9.9-test");
    kj_metric_handle *ok = kj_metrics_jobs_handle("jobs", "kjobs.noop", KJ_JOB_OK);
    kj_counter_add(ok, 40);
    kj_metrics_job_done("jobs", "kjobs.noop", KJ_JOB_OK, 0.002);
    kj_metrics_job_done("jobs", "kjobs.fail", KJ_JOB_RETRY, 0.3);
    kj_metrics_job_done("jobs.retry.2", "kjobs.fail", KJ_JOB_DEAD_LETTERED, 0.3);
    kj_metrics_job_done("jobs", KJ_METRICS_TYPE_UNDECODABLE, KJ_JOB_DEAD_LETTERED, -1);
    kj_metrics_batch_size(1);
    kj_metrics_batch_size(64);
    kj_metrics_commit(true);
    kj_metrics_commit(true);
    kj_metrics_commit(false);
    kj_metrics_rebalance();
    kj_metrics_in_flight_add(5);
    kj_metrics_in_flight_add(-2);
    kj_metrics_offset_reset();
    kj_metrics_retry_routed(1);
    kj_metrics_retry_routed(1);
    kj_metrics_retry_routed(3);
    kj_metrics_dlq_routed("permanent");
    kj_metrics_dlq_routed("decode");
    kj_metrics_route_error();
    kj_metrics_decode_error();
    kj_metrics_circuit_breaker_set(true);
    kj_metrics_ready_set(true);
    kj_metrics_lag_set("jobs", 0, 100);
    kj_metrics_lag_set("jobs", 1, 5);
    kj_metrics_lag_remove("jobs", 1); /* revoked */
    kj_metrics_lag_set_collector(lag_collector, NULL);
}

static int populate_group(void **state) {
    (void)state;
    populate_kjobs_set();
    return 0;
}

static void test_kjobs_metric_set(void **state) {
    (void)state;
    char *text = render(kj_metrics_registry());
    for (size_t i = 0; i < KJOBS_NFAMILIES; i++) {
        char want[160];
        snprintf(want, sizeof(want), "\n# TYPE %s %s\n", kjobs_families[i][0],
                 kjobs_families[i][1]);
        if (!strstr(text, want) && strncmp(text, want + 1, strlen(want + 1)) != 0)
            fail_msg("missing %s", want + 1);
    }
    assert_sample(text, "kjobs_jobs_total{topic=\"jobs\",type=\"kjobs.noop\",outcome=\"ok\"}", 41);
    assert_sample(
        text, "kjobs_jobs_total{topic=\"jobs\",type=\"_undecodable\",outcome=\"dead_lettered\"}",
        1);
    assert_sample(text, "kjobs_job_duration_seconds_count{type=\"kjobs.fail\"}", 2);
    assert_no_sample(text, "kjobs_job_duration_seconds_count{type=\"_undecodable\"}");
    assert_sample(text, "kjobs_job_duration_seconds_bucket{type=\"kjobs.noop\",le=\"0.0025\"}", 1);
    assert_sample(text, "kjobs_batch_size_bucket{le=\"50\"}", 1);
    assert_sample(text, "kjobs_batch_size_bucket{le=\"100\"}", 2);
    assert_sample(text, "kjobs_batch_size_sum", 65);
    assert_sample(text, "kjobs_commits_total{result=\"ok\"}", 2);
    assert_sample(text, "kjobs_commits_total{result=\"error\"}", 1);
    assert_sample(text, "kjobs_rebalances_total", 1);
    assert_sample(text, "kjobs_in_flight_jobs", 3);
    assert_sample(text, "kjobs_offset_resets_total", 1);
    assert_sample(text, "kjobs_retry_routed_total{step=\"1\"}", 2);
    assert_sample(text, "kjobs_retry_routed_total{step=\"3\"}", 1);
    assert_sample(text, "kjobs_dlq_routed_total{class=\"permanent\"}", 1);
    assert_sample(text, "kjobs_route_errors_total", 1);
    assert_sample(text, "kjobs_decode_errors_total", 1);
    assert_sample(text, "kjobs_circuit_breaker_open", 1);
    assert_sample(text, "kjobs_ready", 1);
    assert_sample(text, "kjobs_consumer_lag{topic=\"jobs\",partition=\"0\"}", 100);
    assert_no_sample(text, "kjobs_consumer_lag{topic=\"jobs\",partition=\"1\"}");
    assert_sample(text, "kjobs_consumer_lag{topic=\"jobs.retry.1\",partition=\"3\"}", 12);
    assert_sample(text, "kjobs_build_info{version=\"9.9.9-test\"}", 1);
    assert_no_sample(text, "kjobs_build_info{version=\"unknown\"}");
    assert_string_equal(kj_job_outcome_name(KJ_JOB_DEAD_LETTERED), "dead_lettered");
    assert_string_equal(kj_job_outcome_name(KJ_JOB_SCHEDULED), "scheduled");
    free(text);
}

static void test_reference_parser_accepts_render(void **state) {
    (void)state;
    char *text = render(kj_metrics_registry());
    char out[65536];
    char args[4096];
    snprintf(args, sizeof(args), "--prefix kjobs_ %s",
             "--type kjobs_jobs_total=counter --type kjobs_job_duration_seconds=histogram "
             "--type kjobs_consumer_lag=gauge --type kjobs_build_info=gauge "
             "'kjobs_jobs_total{topic=\"jobs\",type=\"kjobs.noop\",outcome=\"ok\"}=41' "
             "'kjobs_job_duration_seconds_count{type=\"kjobs.fail\"}=2' "
             "'kjobs_job_duration_seconds_bucket{type=\"kjobs.fail\",le=\"0.25\"}=0' "
             "'kjobs_job_duration_seconds_bucket{type=\"kjobs.fail\",le=\"0.5\"}=2' "
             "'kjobs_job_duration_seconds_sum{type=\"kjobs.fail\"}=0.6' "
             "'kjobs_batch_size_count=2' 'kjobs_commits_total{result=\"error\"}=1' "
             "'kjobs_in_flight_jobs=3' 'kjobs_circuit_breaker_open=1' "
             "'kjobs_consumer_lag{topic=\"jobs\",partition=\"0\"}=100' "
             "'!kjobs_consumer_lag{topic=\"jobs\",partition=\"1\"}' "
             "'kjobs_consumer_lag{topic=\"jobs.retry.1\",partition=\"3\"}=12' "
             "'kjobs_build_info{version=\"9.9.9-test\"}=1'");
    int rc = prom_parse(text, args, out, sizeof(out));
    if (rc != 0) fail_msg("prom_parse.py exit %d:\n%s\n--- input ---\n%s", rc, out, text);
    assert_non_null(strstr(out, "\"ok\": true"));
    free(text);

    /* escaping as the reference parser reads it back */
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f = kj_registry_add(reg, "t_esc_total", KJ_METRIC_COUNTER, "a\\b\nc",
                                          (const char *[]){"v"}, 1, NULL, 0);
    kj_counter_add(kj_family_series(f, (const char *[]){"a\\b\"c\nd"}), 3);
    text = render(reg);
    rc = prom_parse(text, "'t_esc_total{v=\"a\\\\b\\\"c\\nd\"}=3'", out, sizeof(out));
    if (rc != 0) fail_msg("prom_parse.py exit %d:\n%s\n--- input ---\n%s", rc, out, text);
    /* and the checker is able to fail: a wrong value and a broken histogram are caught */
    assert_int_equal(prom_parse(text, "'t_esc_total{v=\"x\"}=3'", out, sizeof(out)), 1);
    free(text);
    kj_registry_free(reg);
    rc = prom_parse("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                    "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                    "", out, sizeof(out));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "not cumulative"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_increments_exact),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_label_escaping_and_sanitising),
        cmocka_unit_test(test_remove_label_set),
        cmocka_unit_test(test_collect_callback),
        cmocka_unit_test(test_cardinality_cap),
        cmocka_unit_test(test_registration_rejects_bad_definitions),
        cmocka_unit_test(test_kjobs_metric_set),
        cmocka_unit_test(test_reference_parser_accepts_render),
    };
    return cmocka_run_group_tests(tests, populate_group, NULL);
}
