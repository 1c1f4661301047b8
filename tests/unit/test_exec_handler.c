/*
 * test_exec_handler.c — the exec handler driven directly, with /bin/sh -c scripts as children:
 * result mapping by id (missing → retry "no result from handler", unknown ids ignored,
 * retry_after_ms), the request line's shape, garbage replies and restart backoff, a child
 * exiting mid-batch (stderr relayed, "exec child exited" logged), per-batch timeout (class
 * timeout, process group killed, prompt restart), the reply size bound, EPIPE on a child that
 * closed stdin, one child per thread, shutdown of a child that ignores EOF, a missing
 * program refused without quoting the command; binary framing: results by position, and random
 * replies from an untrusted child never crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/exec_handler.h"
#include "processor/handlers.h"
#include "processor/log.h"
#include "processor/metrics.h"

#define MAX_JOBS 8

typedef struct {
    struct kjobs_job jobs[MAX_JOBS];
    kjobs_result_t results[MAX_JOBS];
    const kjobs_job_t *jp[MAX_JOBS];
    kjobs_result_t *rp[MAX_JOBS];
    size_t count;
} batch;

static char tmpdir[256];
static char logpath[512];

static void batch_init(batch *b, size_t n, const char *const *ids, const char *type,
                       const char *payload) {
    memset(b, 0, sizeof(*b));
    b->count = n;
    for (size_t i = 0; i < n; i++) {
        b->jobs[i].record.id = ids[i];
        b->jobs[i].record.type = type;
        b->jobs[i].record.payload = (const uint8_t *)payload;
        b->jobs[i].record.payload_len = strlen(payload);
        b->jobs[i].msg = NULL;
        b->jobs[i].topic = "jobs";
        b->jobs[i].attempt = 1;
        kj_result_reset(&b->results[i]);
        b->jp[i] = &b->jobs[i];
        b->rp[i] = &b->results[i];
    }
}

static void run(kj_exec_handler *h, batch *b) {
    for (size_t i = 0; i < b->count; i++)
        kj_result_reset(&b->results[i]);
    kj_exec_handler_batch(b->jp, b->rp, b->count, h);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static kj_exec_handler *sh_handler(const char *script, int64_t timeout_ms, size_t max_reply) {
    char *argv[] = {"/bin/sh", "-c", (char *)script};
    kj_exec_options o = {.argv = argv,
                         .argc = 3,
                         .timeout_ms = timeout_ms,
                         .backoff_initial_ms = 150,
                         .backoff_max_ms = 1000,
                         .max_reply_bytes = max_reply,
                         .shutdown_wait_ms = 500};
    char err[256];
    kj_exec_handler *h = kj_exec_handler_new_opts(&o, err, sizeof(err));
    assert_non_null(h);
    return h;
}

/* Everything logged so far (the log fd points at logpath). */
static char *log_text(void) {
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kjobs-exec-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(fd >= 0);
    kj_log_set_fd(fd);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_results_mapped_by_id(void **state) {
    (void)state;
    kj_exec_handler *h = sh_handler(
        "while read -r l; do echo '{\"results\":[{\"id\":\"b\",\"status\":\"fail\",\"error\":"
        "\"bad b\"},{\"id\":\"a\",\"status\":\"ok\"},{\"id\":\"c\",\"status\":\"retry\","
        "\"error\":\"later\",\"retry_after_ms\":1234},{\"id\":\"zzz\",\"status\":\"ok\"},"
        "{\"id\":\"e\",\"status\":\"retry\",\"retry_after_ms\":null}]}'; done",
        5000, 0);
    const char *ids[] = {"a", "b", "c", "d", "e"};
    batch b;
    batch_init(&b, 5, ids, "t", "x");
    for (int round = 0; round < 2; round++) { /* the second batch reuses the same child */
        run(h, &b);
        assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
        assert_int_equal(b.results[1].outcome, KJ_OUTCOME_FAIL);
        assert_string_equal(b.results[1].error, "bad b");
        assert_int_equal(b.results[2].outcome, KJ_OUTCOME_RETRY);
        assert_int_equal(b.results[2].delay_ms, 1234);
        assert_string_equal(b.results[2].error, "later");
        assert_int_equal(b.results[3].outcome, KJ_OUTCOME_RETRY);
        assert_int_equal(b.results[3].delay_ms, -1);
        assert_string_equal(b.results[3].error, "no result from handler");
        assert_int_equal(b.results[4].outcome, KJ_OUTCOME_RETRY);
        assert_int_equal(b.results[4].delay_ms, -1);
    }
    int pid = kj_exec_handler_child_pid(h);
    assert_true(pid > 0);
    kj_exec_handler_free(h);
    assert_int_equal(kill(pid, 0), -1); /* reaped */
}

static void test_wrong_shapes_are_invalid_replies(void **state) {
    (void)state;
    static const char *const replies[] = {
        "not json",
        "[1,2]",
        "{\\\"results\\\":{}}",
        "{\\\"results\\\":[{\\\"id\\\":\\\"a\\\",\\\"status\\\":\\\"done\\\"}]}",
        "{\\\"results\\\":[{\\\"id\\\":1,\\\"status\\\":\\\"ok\\\"}]}",
        "{\\\"results\\\":[{\\\"id\\\":\\\"a\\\",\\\"status\\\":\\\"retry\\\",\\\"retry_after_"
        "ms\\\":-5}]}",
        "",
    };
    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        char script[512];
        snprintf(script, sizeof(script), "read -r l; echo \"%s\"; sleep 30", replies[i]);
        kj_exec_handler *h = sh_handler(script, 5000, 0);
        const char *ids[] = {"a"};
        batch b;
        batch_init(&b, 1, ids, "t", "");
        run(h, &b);
        assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
        if (!strstr(b.results[0].error, "invalid reply"))
            fail_msg("reply %zu: %s", i, b.results[0].error);
        kj_exec_handler_free(h);
    }
    /* a fractional retry_after_ms is accepted (fraction dropped), extra fields ignored */
    kj_exec_handler *h =
        sh_handler("read -r l; echo '{\"results\":[{\"id\":\"a\",\"status\":\"retry\","
                   "\"retry_after_ms\":250.7,\"extra\":true}],\"v\":2}'; exec cat >/dev/null",
                   5000, 0);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    run(h, &b);
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
    assert_int_equal(b.results[0].delay_ms, 250);
    assert_string_equal(b.results[0].error, "retry requested by exec handler");
    kj_exec_handler_free(h);
}

static void test_request_shape(void **state) {
    (void)state;
    char script[1024], path[600];
    snprintf(path, sizeof(path), "%s/request", tmpdir);
    snprintf(script, sizeof(script),
             "read -r l; printf '%%s\\n' \"$l\" > %s; echo '{\"results\":[]}'", path);
    kj_exec_handler *h = sh_handler(script, 5000, 0);
    const char *ids[] = {"job-1"};
    batch b;
    batch_init(&b, 1, ids, "email.send", "hello");
    kj_meta_entry meta[] = {{.key = "traceparent", .value = "00-abc"}};
    b.jobs[0].record.meta = meta;
    b.jobs[0].record.meta_count = 1;
    b.jobs[0].attempt = 3;
    run(h, &b);
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY); /* no result for it */
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    assert_non_null(root);
    json_t *jobs = json_object_get(root, "batch");
    assert_int_equal(json_array_size(jobs), 1);
    json_t *j = json_array_get(jobs, 0);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "job-1");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "email.send");
    assert_true(json_is_null(json_object_get(j, "key")));
    assert_string_equal(json_string_value(json_object_get(j, "topic")), "jobs");
    assert_int_equal(json_integer_value(json_object_get(j, "partition")), -1);
    assert_int_equal(json_integer_value(json_object_get(j, "offset")), -1);
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "meta"), "traceparent")), "00-abc");
    assert_string_equal(json_string_value(json_object_get(j, "payload_b64")), "aGVsbG8=");
    json_decref(root);
    kj_exec_handler_free(h);
}

/* A counter file makes the first `bad` children misbehave and later ones answer "ok". */
static void counter_script(char *out, size_t size, const char *name, int bad,
                           const char *misbehave) {
    snprintf(out, size,
             "f=%s/%s; n=$(cat $f 2>/dev/null || echo 0); echo $((n+1)) > $f; "
             "if [ $n -lt %d ]; then read -r l; %s; fi; "
             "while read -r l; do echo '{\"results\":[{\"id\":\"a\",\"status\":\"ok\"}]}'; done",
             tmpdir, name, bad, misbehave);
}

static void test_garbage_restarts_with_backoff(void **state) {
    (void)state;
    char script[1024];
    counter_script(script, sizeof(script), "garbage", 2, "echo 'not json'; sleep 30");
    kj_exec_handler *h = sh_handler(script, 5000, 0);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    run(h, &b); /* garbage: retry, killed, next start after 150 ms */
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
    assert_non_null(strstr(b.results[0].error, "invalid reply"));
    assert_int_equal(kj_exec_handler_child_pid(h), -1);
    double t0 = now_s();
    run(h, &b); /* waits the backoff, garbage again: next start after 300 ms */
    double t1 = now_s();
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
    assert_true(t1 - t0 >= 0.14);
    run(h, &b); /* waits 300 ms, then a good child */
    double t2 = now_s();
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
    assert_true(t2 - t1 >= 0.29);
    run(h, &b); /* success reset the backoff and kept the child: no wait */
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
    assert_true(now_s() - t2 < 0.14);
    kj_exec_handler_free(h);
}

static void test_crash_mid_batch(void **state) {
    (void)state;
    char script[1024];
    counter_script(script, sizeof(script), "crash", 1, "echo 'crashing now' >&2; exit 3");
    kj_exec_handler *h = sh_handler(script, 5000, 0);
    const char *ids[] = {"a", "b"};
    batch b;
    batch_init(&b, 2, ids, "t", "");
    run(h, &b);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(b.results[i].outcome, KJ_OUTCOME_RETRY);
        assert_non_null(strstr(b.results[i].error, "exit 3"));
    }
    char *logs = log_text();
    assert_non_null(strstr(logs, "\"msg\":\"exec child exited\""));
    assert_non_null(strstr(logs, "\"stream\":\"stderr\",\"line\":\"crashing now\""));
    run(h, &b); /* restarted after the backoff */
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
    assert_int_equal(b.results[1].outcome, KJ_OUTCOME_RETRY); /* "b" got no result */
    kj_exec_handler_free(h);
}

static void test_timeout_kills_and_restarts(void **state) {
    (void)state;
    char script[1024];
    counter_script(script, sizeof(script), "timeout", 1, "sleep 30");
    kj_exec_handler *h = sh_handler(script, 300, 0);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    double t0 = now_s();
    run(h, &b);
    double t1 = now_s();
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_TIMEOUT);
    assert_non_null(strstr(b.results[0].error, "no reply within 300 ms"));
    assert_true(t1 - t0 >= 0.29 && t1 - t0 < 5);
    run(h, &b); /* a new child at once (no backoff after a timeout) */
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
    assert_true(now_s() - t1 < 0.14 + 1);
    kj_exec_handler_free(h);
}

static void test_reply_size_bounded(void **state) {
    (void)state;
    kj_exec_handler *h = sh_handler("read -r l; head -c 100000 /dev/zero | tr '\\0' a; echo; "
                                    "sleep 30",
                                    5000, 1024);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    run(h, &b);
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
    assert_non_null(strstr(b.results[0].error, "longer than 1024 bytes"));
    kj_exec_handler_free(h);
}

static void test_epipe_when_child_closes_stdin(void **state) {
    (void)state;
    kj_exec_handler *h = sh_handler("exec 0<&-; sleep 0.2; exit 0", 5000, 0);
    static char big[1 << 20];
    memset(big, 'x', sizeof(big) - 1);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", big);
    run(h, &b);
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
    assert_non_null(strstr(b.results[0].error, "exited during the batch"));
    kj_exec_handler_free(h);
}

typedef struct {
    kj_exec_handler *h;
    char error[2][KJ_ERROR_MAX];
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    for (int i = 0; i < 2; i++) {
        run(a->h, &b);
        snprintf(a->error[i], sizeof(a->error[i]), "%s", b.results[0].error);
    }
    return NULL;
}

static void test_one_child_per_thread(void **state) {
    (void)state;
    kj_exec_handler *h = sh_handler(
        "while read -r l; do echo \"{\\\"results\\\":[{\\\"id\\\":\\\"a\\\",\\\"status\\\":"
        "\\\"retry\\\",\\\"error\\\":\\\"pid $$\\\"}]}\"; done",
        5000, 0);
    thread_arg a1 = {.h = h}, a2 = {.h = h};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, thread_main, &a1);
    pthread_create(&t2, NULL, thread_main, &a2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_memory_equal(a1.error[0], "pid ", 4);
    assert_string_equal(a1.error[0], a1.error[1]); /* same child within a thread */
    assert_string_equal(a2.error[0], a2.error[1]);
    assert_string_not_equal(a1.error[0], a2.error[0]); /* different children across threads */
    kj_exec_handler_free(h);
}

static void test_shutdown_kills_child_ignoring_eof(void **state) {
    (void)state;
    kj_exec_handler *h = sh_handler(
        "trap '' TERM; read -r l; echo '{\"results\":[]}'; exec 0<&-; exec sleep 100", 5000, 0);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    run(h, &b);
    int pid = kj_exec_handler_child_pid(h);
    assert_true(pid > 0);
    double t0 = now_s();
    kj_exec_handler_free(h); /* waits shutdown_wait_ms (500), then SIGKILL */
    double dt = now_s() - t0;
    assert_true(dt >= 0.45 && dt < 3);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void test_missing_program_not_quoted(void **state) {
    (void)state;
    char *argv[] = {"/nonexistent/handler-secret", "--token=s3cret"};
    kj_exec_options o = {.argv = argv, .argc = 2, .timeout_ms = 1000};
    char err[256];
    assert_null(kj_exec_handler_new_opts(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "handlers.exec"));
    assert_null(strstr(err, "secret"));
    char *bare[] = {"no-such-program-kjobs-test"};
    o.argv = bare;
    o.argc = 1;
    assert_null(kj_exec_handler_new_opts(&o, err, sizeof(err)));
}

/* A child script kept in a file (no C-string quoting of shell quoting); returns sh_handler's. */
static kj_exec_handler *file_handler(const char *name, const char *text) {
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    static char script[700];
    snprintf(script, sizeof(script), ". %s", path);
    return sh_handler(script, 5000, 0);
}

static uint64_t stray_count(void) {
    char *text = kj_registry_render(kj_metrics_registry(), NULL);
    assert_non_null(text);
    const char *p = strstr(text, "\nkjobs_exec_stray_replies_total ");
    assert_non_null(p);
    uint64_t v = strtoull(p + strlen("\nkjobs_exec_stray_replies_total "), NULL, 10);
    free(text);
    return v;
}

/*
 * Issue #10 item 8: a child that repeats its reply to batch 3 (whole, and split across the idle
 * gap) must not make that reply count for batch 4 or any later batch. Every batch has the same
 * job id, so only batch_id can tell the replies apart; each reply names its batch in `error`.
 */
static void test_repeated_reply_matched_by_batch_id(void **state) {
    (void)state;
    kj_exec_handler *h = file_handler(
        "echo-child.sh",
        "n=0\n"
        "while read -r l; do\n"
        "  n=$((n+1))\n"
        "  bid=$(printf '%s\\n' \"$l\" | sed 's/^{\"batch_id\":\\([0-9]*\\),.*/\\1/')\n"
        "  r=\"{\\\"batch_id\\\":$bid,\\\"results\\\":[{\\\"id\\\":\\\"a\\\",\\\"status\\\":"
        "\\\"retry\\\",\\\"error\\\":\\\"batch $n\\\"}]}\"\n"
        "  if [ $n -eq 4 ]; then printf '%s\\n%s\\n' \"${prev#\\{\\\"batch_id}\" \"$prev\"; fi\n"
        "  printf '%s\\n' \"$r\"\n"
        "  if [ $n -eq 3 ]; then printf '{\"batch_id'; prev=$r; fi\n"
        "done\n");
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    uint64_t stray0 = stray_count();
    for (int k = 1; k <= 6; k++) {
        run(h, &b);
        char want[32];
        snprintf(want, sizeof(want), "batch %d", k);
        assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
        if (strcmp(b.results[0].error, want) != 0)
            fail_msg("batch %d took the reply \"%s\"", k, b.results[0].error);
    }
    assert_int_equal(stray_count() - stray0, 2); /* the split copy and the whole copy */
    assert_non_null(strstr(log_text(), "\"msg\":\"exec child reply discarded\""));
    kj_exec_handler_free(h);
}

/* The same for a child that does not echo batch_id: its stale reply names no job of batch 4. */
static void test_repeated_reply_without_batch_id_matched_by_job_ids(void **state) {
    (void)state;
    kj_exec_handler *h = file_handler(
        "legacy-child.sh",
        "n=0\n"
        "while read -r l; do\n"
        "  n=$((n+1))\n"
        "  id=$(printf '%s\\n' \"$l\" | sed 's/.*\"batch\":\\[{\"id\":\"\\([^\"]*\\)\".*/\\1/')\n"
        "  r=\"{\\\"results\\\":[{\\\"id\\\":\\\"$id\\\",\\\"status\\\":\\\"retry\\\","
        "\\\"error\\\":\\\"reply to $id\\\"}]}\"\n"
        "  if [ $n -eq 4 ]; then printf '%s\\n' \"$prev\"; fi\n"
        "  printf '%s\\n' \"$r\"\n"
        "  prev=$r\n"
        "done\n");
    uint64_t stray0 = stray_count();
    for (int k = 1; k <= 6; k++) {
        char id[16], want[32];
        snprintf(id, sizeof(id), "j%d", k);
        const char *ids[] = {id};
        batch b;
        batch_init(&b, 1, ids, "t", "");
        run(h, &b);
        snprintf(want, sizeof(want), "reply to j%d", k);
        assert_int_equal(b.results[0].outcome, KJ_OUTCOME_RETRY);
        if (strcmp(b.results[0].error, want) != 0)
            fail_msg("batch %d took the reply \"%s\"", k, b.results[0].error);
    }
    assert_int_equal(stray_count() - stray0, 1);
    kj_exec_handler_free(h);
}

/* A reply for a batch_id never sent is not the pending batch's: no reply → timeout. */
static void test_unknown_batch_id_is_not_a_reply(void **state) {
    (void)state;
    kj_exec_handler *h =
        sh_handler("read -r l; echo '{\"batch_id\":999,\"results\":[{\"id\":\"a\",\"status\":"
                   "\"ok\"}]}'; sleep 30",
                   300, 0);
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    run(h, &b);
    if (b.results[0].outcome != KJ_OUTCOME_TIMEOUT) fail_msg("%s", b.results[0].error);
    kj_exec_handler_free(h);
}

/*
 * A reply written twice in one write (both copies read with the reply) leaves a complete stale
 * line in the buffer; it is discarded before the next request even when, as here, the child
 * does not echo batch_id and every batch has the same job id (so nothing else could tell).
 */
static void test_leftover_line_discarded_before_next_request(void **state) {
    (void)state;
    kj_exec_handler *h =
        file_handler("double-child.sh",
                     "n=0\n"
                     "while read -r l; do\n"
                     "  n=$((n+1))\n"
                     "  r=\"{\\\"results\\\":[{\\\"id\\\":\\\"a\\\",\\\"status\\\":\\\"retry\\\","
                     "\\\"error\\\":\\\"batch $n\\\"}]}\"\n"
                     "  if [ $n -eq 3 ]; then printf '%s\\n%s\\n' \"$r\" \"$r\"; else printf "
                     "'%s\\n' \"$r\"; fi\n"
                     "done\n");
    const char *ids[] = {"a"};
    batch b;
    batch_init(&b, 1, ids, "t", "");
    for (int k = 1; k <= 5; k++) {
        run(h, &b);
        char want[32];
        snprintf(want, sizeof(want), "batch %d", k);
        if (strcmp(b.results[0].error, want) != 0)
            fail_msg("batch %d took the reply \"%s\"", k, b.results[0].error);
    }
    assert_non_null(strstr(log_text(), "exec child wrote output between batches; discarded"));
    kj_exec_handler_free(h);
}

/* Binary framing: a child announcing it and answering one batch with the bytes of `reply_path`
 * (then reading stdin to its end), under handlers.exec_protocol = binary. */
static kj_exec_handler *bin_handler(const char *reply_path, int64_t timeout_ms) {
    static char script[700];
    snprintf(script, sizeof(script),
             "printf 'kjobs-exec binary 1\\n'; head -c 4 >/dev/null; cat %s; cat >/dev/null",
             reply_path);
    char *argv[] = {"/bin/sh", "-c", script};
    kj_exec_options o = {.argv = argv,
                         .argc = 3,
                         .timeout_ms = timeout_ms,
                         .backoff_initial_ms = 1,
                         .backoff_max_ms = 1,
                         .shutdown_wait_ms = 200,
                         .protocol = KJ_EXEC_BINARY};
    char err[256];
    kj_exec_handler *h = kj_exec_handler_new_opts(&o, err, sizeof(err));
    assert_non_null(h);
    return h;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A well-formed reply: ok, retry after 250 ms with an error, fail with an error; the 4th job
 * has no result. */
static void test_binary_reply_applied_by_position(void **state) {
    (void)state;
    uint8_t r[128];
    size_t n = 4;
    r[n++] = 'R';
    put32(r + n, 1), put32(r + n + 4, 0), n += 8; /* batch_id 1: a fresh child's first */
    put32(r + n, 3), n += 4;
    r[n++] = 0;
    r[n++] = 1;
    put32(r + n, 250), put32(r + n + 4, 0), put32(r + n + 8, 4), n += 12;
    memcpy(r + n, "busy", 4), n += 4;
    r[n++] = 2;
    put32(r + n, 0xFFFFFFFF), put32(r + n + 4, 0xFFFFFFFF), put32(r + n + 8, 3), n += 12;
    memcpy(r + n, "bad", 3), n += 3;
    put32(r, (uint32_t)(n - 4));
    char path[600];
    snprintf(path, sizeof(path), "%s/reply.bin", tmpdir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(r, 1, n, f), n);
    fclose(f);
    kj_exec_handler *h = bin_handler(path, 5000);
    const char *ids[] = {"a", "b", "c", "d"};
    batch b;
    batch_init(&b, 4, ids, "t", "payload");
    run(h, &b);
    assert_int_equal(b.results[0].outcome, KJ_OUTCOME_OK);
    assert_int_equal(b.results[1].outcome, KJ_OUTCOME_RETRY);
    assert_int_equal(b.results[1].delay_ms, 250);
    assert_string_equal(b.results[1].error, "busy");
    assert_int_equal(b.results[2].outcome, KJ_OUTCOME_FAIL);
    assert_string_equal(b.results[2].error, "bad");
    assert_int_equal(b.results[3].outcome, KJ_OUTCOME_RETRY);
    assert_string_equal(b.results[3].error, "no result from handler");
    kj_exec_handler_free(h);
}

/*
 * The child is untrusted: 200 replies, a third of them random bytes, the rest well-formed
 * replies of random results (random delays, error bytes that need not be UTF-8) of which half
 * carry one defect (a random byte, or a length one too long). Every job ends with a result
 * from a well-formed reply or a retryable/timeout failure; both paths are taken; nothing
 * crashes (the ASan build checks that every read stays in bounds).
 */
static void test_binary_random_replies_never_crash(void **state) {
    (void)state;
    char path[600];
    snprintf(path, sizeof(path), "%s/random.bin", tmpdir);
    srand(18);
    int applied = 0, invalid = 0;
    for (int iter = 0; iter < 200; iter++) {
        uint8_t r[256];
        size_t n = 4 + (size_t)(rand() % 60);
        for (size_t i = 0; i < n; i++)
            r[i] = (uint8_t)rand();
        if (iter % 3 != 0) { /* a well-formed reply of random results, then maybe one defect */
            uint32_t count = (uint32_t)(rand() % 4);
            n = 4;
            r[n++] = 'R';
            put32(r + n, 1), put32(r + n + 4, 0), n += 8;
            put32(r + n, count), n += 4;
            for (uint32_t k = 0; k < count; k++) {
                uint8_t st = (uint8_t)(rand() % 3);
                r[n++] = st;
                if (st == 0) continue;
                uint32_t elen = (uint32_t)(rand() % 9);
                put32(r + n, (uint32_t)rand()), put32(r + n + 4, (uint32_t)rand());
                put32(r + n + 8, elen), n += 12;
                for (uint32_t e = 0; e < elen; e++)
                    r[n++] = (uint8_t)rand(); /* not necessarily UTF-8 */
            }
            put32(r, (uint32_t)(n - 4));
            switch (rand() % 4) {
            case 0: /* a random byte anywhere */
                r[(size_t)rand() % n] = (uint8_t)rand();
                break;
            case 1: /* the length one off */
                put32(r, (uint32_t)(n - 4 + 1));
                break;
            default: /* intact */
                break;
            }
        }
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(r, 1, n, f), n);
        fclose(f);
        kj_exec_handler *h = bin_handler(path, 100);
        const char *ids[] = {"a", "b", "c"};
        batch b;
        batch_init(&b, 3, ids, "t", "x");
        run(h, &b);
        for (size_t i = 0; i < 3; i++) {
            kj_outcome o = b.results[i].outcome;
            assert_true(o == KJ_OUTCOME_OK || o == KJ_OUTCOME_RETRY || o == KJ_OUTCOME_FAIL ||
                        o == KJ_OUTCOME_TIMEOUT);
        }
        if (strstr(b.results[0].error, "invalid reply"))
            invalid++;
        else if (strncmp(b.results[0].error, "exec handler:", 13) != 0)
            applied++; /* a well-formed reply (possibly "no result from handler") */
        kj_exec_handler_free(h);
    }
    /* both paths were exercised: replies applied and replies refused */
    assert_true(applied >= 10);
    assert_true(invalid >= 50);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* as kjobs does */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_mapped_by_id),
        cmocka_unit_test(test_wrong_shapes_are_invalid_replies),
        cmocka_unit_test(test_request_shape),
        cmocka_unit_test(test_garbage_restarts_with_backoff),
        cmocka_unit_test(test_crash_mid_batch),
        cmocka_unit_test(test_timeout_kills_and_restarts),
        cmocka_unit_test(test_reply_size_bounded),
        cmocka_unit_test(test_epipe_when_child_closes_stdin),
        cmocka_unit_test(test_one_child_per_thread),
        cmocka_unit_test(test_shutdown_kills_child_ignoring_eof),
        cmocka_unit_test(test_missing_program_not_quoted),
        cmocka_unit_test(test_repeated_reply_matched_by_batch_id),
        cmocka_unit_test(test_repeated_reply_without_batch_id_matched_by_job_ids),
        cmocka_unit_test(test_unknown_batch_id_is_not_a_reply),
        cmocka_unit_test(test_leftover_line_discarded_before_next_request),
        cmocka_unit_test(test_binary_reply_applied_by_position),
        cmocka_unit_test(test_binary_random_replies_never_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
