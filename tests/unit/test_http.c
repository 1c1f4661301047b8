/*
 * test_http.c — the HTTP listener over real sockets: a plain HTTP/1.0 client below talks to a
 * listener on 127.0.0.1:0 and checks status codes, headers and bodies of /metrics, /livez,
 * /healthz, /readyz (readiness flipping 503 -> 200 -> 503 through the hook), 404/405, HEAD,
 * bad listen addresses, a port clash, the startup log line, and that a probe is answered while
 * a scrape is stuck in a collect callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "processor/http.h"
#include "processor/log.h"
#include "processor/metrics.h"

typedef struct {
    int status;
    char headers[4096];
    char body[65536];
    size_t body_len;
} http_reply;

/* One HTTP/1.0 request (`extra` is sent verbatim after the headers, e.g. a body); reads until
 * the server closes. Returns 0, or -1 on a socket error / timeout. */
static int http_request(int port, const char *method, const char *path, const char *extra,
                        http_reply *r) {
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n", method, path);
    const char *tail = extra ? extra : "\r\n"; /* written on its own: it may be a large body */
    size_t tail_len = strlen(tail);
    if (write(fd, req, (size_t)n) != n || write(fd, tail, tail_len) != (ssize_t)tail_len) {
        close(fd);
        return -1;
    }
    const size_t bufsz = sizeof(r->headers) + sizeof(r->body);
    char *buf = malloc(bufsz); /* not static: requests run on several threads at once */
    size_t len = 0;
    ssize_t got = 0;
    while (buf && len < bufsz - 1 && (got = read(fd, buf + len, bufsz - 1 - len)) > 0)
        len += (size_t)got;
    close(fd);
    int rc = -1;
    if (buf && got >= 0) {
        buf[len] = '\0';
        char *sep = strstr(buf, "\r\n\r\n");
        if (sep && sscanf(buf, "HTTP/1.%*d %d", &r->status) == 1 &&
            len - (size_t)(sep + 4 - buf) < sizeof(r->body)) {
            snprintf(r->headers, sizeof(r->headers), "%.*s", (int)(sep - buf), buf);
            r->body_len = len - (size_t)(sep + 4 - buf);
            memcpy(r->body, sep + 4, r->body_len);
            r->body[r->body_len] = '\0';
            rc = 0;
        }
    }
    free(buf);
    return rc;
}

static void get(int port, const char *path, http_reply *r) {
    assert_int_equal(http_request(port, "GET", path, NULL, r), 0);
}

static void assert_reply(int port, const char *path, int status, const char *body) {
    http_reply r;
    get(port, path, &r);
    if (r.status != status || strcmp(r.body, body) != 0)
        fail_msg("GET %s: %d \"%s\", want %d \"%s\"", path, r.status, r.body, status, body);
}

/* ---- Hooks --------------------------------------------------------------------------------- */

typedef struct {
    atomic_int state; /* 0 = no assignment, 1 = ready, 2 = draining */
    atomic_int ready_calls;
} fake_runtime;

static bool fake_ready(void *opaque, char *reason, size_t reasonsz) {
    fake_runtime *rt = opaque;
    atomic_fetch_add(&rt->ready_calls, 1);
    switch (atomic_load(&rt->state)) {
    case 1:
        snprintf(reason, reasonsz, "ready");
        return true;
    case 2:
        snprintf(reason, reasonsz, "draining");
        return false;
    default:
        snprintf(reason, reasonsz, "not ready: no assignment");
        return false;
    }
}

static kj_http *start_or_fail(const char *listen, const kj_http_hooks *hooks) {
    char err[256] = "";
    kj_http *http = kj_http_start(listen, hooks, err, sizeof(err));
    if (!http) fail_msg("kj_http_start(%s): %s", listen, err);
    assert_true(kj_http_port(http) > 0);
    return http;
}

/* ---- Tests --------------------------------------------------------------------------------- */

static void test_metrics_route(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f = kj_registry_add(reg, "t_requests_total", KJ_METRIC_COUNTER, "r",
                                          (const char *[]){"code"}, 1, NULL, 0);
    kj_counter_add(kj_family_series(f, (const char *[]){"200"}), 17);
    kj_http_hooks hooks = {.registry = reg};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);
    int port = kj_http_port(http);

    http_reply r;
    get(port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    char *direct = kj_registry_render(reg, NULL);
    assert_string_equal(r.body, direct);
    free(direct);
    assert_non_null(strstr(r.body, "t_requests_total{code=\"200\"} 17\n"));
    get(port, "/metrics?name[]=x", &r); /* a query string does not change the route */
    assert_int_equal(r.status, 200);

    /* HEAD: same status and headers, no body */
    assert_int_equal(http_request(port, "HEAD", "/metrics", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);

    kj_http_stop(http);
    kj_registry_free(reg);
}

static void test_default_registry_parses(void **state) {
    (void)state;
    kj_metrics_job_done("jobs", "kjobs.noop", KJ_JOB_OK, 0.004);
    kj_http *http = start_or_fail("127.0.0.1:0", NULL);
    http_reply r;
    get(kj_http_port(http), "/metrics", &r);
    kj_http_stop(http);
    assert_int_equal(r.status, 200);

    /* the body as a Prometheus server would read it: the reference parser */
    char path[] = "/tmp/kjobs_test_http_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, r.body, r.body_len), (ssize_t)r.body_len);
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 %s/tests/integration/prom_parse.py --prefix kjobs_ "
             "'kjobs_jobs_total{topic=\"jobs\",type=\"kjobs.noop\",outcome=\"ok\"}=1' "
             "'kjobs_job_duration_seconds_bucket{type=\"kjobs.noop\",le=\"0.005\"}=1' "
             "'kjobs_job_duration_seconds_bucket{type=\"kjobs.noop\",le=\"0.0025\"}=0' "
             "< %s > /dev/null",
             KJOBS_SOURCE_DIR, path);
    int status = system(cmd);
    unlink(path);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) fail_msg("prom_parse.py rejected /metrics:\n%s", r.body);
}

static void test_readiness_follows_hook(void **state) {
    (void)state;
    fake_runtime rt = {0};
    kj_http_hooks hooks = {.ready = fake_ready, .opaque = &rt};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);
    int port = kj_http_port(http);

    assert_reply(port, "/readyz", 503, "not ready: no assignment\n");
    atomic_store(&rt.state, 1);
    assert_reply(port, "/readyz", 200, "ready\n");
    atomic_store(&rt.state, 2);
    assert_reply(port, "/readyz", 503, "draining\n");
    assert_int_equal(atomic_load(&rt.ready_calls), 3);
    /* no liveness hook and no heartbeat: alive as long as it answers */
    assert_reply(port, "/livez", 200, "ok\n");
    kj_http_stop(http);

    http = start_or_fail("127.0.0.1:0", NULL); /* no readiness hook: ready */
    assert_reply(kj_http_port(http), "/readyz", 200, "ready\n");
    kj_http_stop(http);
}

static void test_liveness_heartbeat(void **state) {
    (void)state;
    kj_heartbeat hb = {0};
    kj_http_hooks hooks = {.heartbeat = &hb, .heartbeat_max_age_ms = 5000};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);
    int port = kj_http_port(http);

    assert_reply(port, "/livez", 503, "main loop has not started\n");
    kj_heartbeat_beat(&hb);
    assert_reply(port, "/livez", 200, "ok\n");
    assert_reply(port, "/healthz", 200, "ok\n");
    kj_heartbeat_beat_at(&hb, kj_mono_ms() - 60000); /* the loop stopped a minute ago */
    http_reply r;
    get(port, "/livez", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "main loop stalled"));
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 503);
    kj_heartbeat_beat(&hb);
    assert_reply(port, "/healthz", 200, "ok\n");
    kj_http_stop(http);
}

static bool dead(void *opaque, char *reason, size_t reasonsz) {
    (void)opaque;
    snprintf(reason, reasonsz, "worker threads wedged");
    return false;
}

static void test_liveness_callback(void **state) {
    (void)state;
    kj_heartbeat hb = {0}; /* ignored when a callback is given */
    kj_http_hooks hooks = {.live = dead, .heartbeat = &hb};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);
    assert_reply(kj_http_port(http), "/livez", 503, "worker threads wedged\n");
    kj_http_stop(http);
}

static void test_not_found_and_method_not_allowed(void **state) {
    (void)state;
    kj_http *http = start_or_fail("127.0.0.1:0", NULL);
    int port = kj_http_port(http);
    assert_reply(port, "/", 404, "not found\n");
    assert_reply(port, "/metrics/", 404, "not found\n");
    assert_reply(port, "/READYZ", 404, "not found\n");

    http_reply r;
    assert_int_equal(http_request(port, "POST", "/metrics", "Content-Length: 5\r\n\r\nhello", &r),
                     0);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD"));
    assert_int_equal(http_request(port, "DELETE", "/readyz", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_int_equal(http_request(port, "POST", "/nowhere", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    kj_http_stop(http);
}

/* A route hook that echoes what it was given: method, path, a header, a query argument, body. */
static bool echo_route(void *opaque, const kj_http_request *req, kj_http_response *resp) {
    atomic_int *calls = opaque;
    atomic_fetch_add(calls, 1);
    if (strcmp(req->url, "/mine") != 0) return false;
    const char *h = kj_http_request_header(req, "X-Test");
    const char *q = kj_http_request_arg(req, "q");
    char *body = malloc(KJ_HTTP_MAX_BODY + 256);
    int n = snprintf(body, KJ_HTTP_MAX_BODY + 256, "%s|%s|%s|%zu|%s", req->method, h ? h : "-",
                     q ? q : "-", req->body_len, req->body);
    resp->status = 201;
    resp->content_type = "text/x-echo";
    resp->body = body;
    resp->len = (size_t)n;
    resp->allow = "GET, POST";
    return true;
}

static void test_route_hook(void **state) {
    (void)state;
    atomic_int calls = 0;
    kj_http_hooks hooks = {.route = echo_route, .route_opaque = &calls};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);
    int port = kj_http_port(http);
    http_reply r;
    /* the listener's own routes are still its own */
    get(port, "/livez", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&calls), 0);
    /* a GET with a header and a URL-encoded argument */
    assert_int_equal(http_request(port, "GET", "/mine?q=a%20b", "X-Test: yes\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "GET|yes|a b|0|");
    assert_non_null(strstr(r.headers, "Content-Type: text/x-echo"));
    assert_non_null(strstr(r.headers, "Allow: GET, POST"));
    assert_non_null(strstr(r.headers, "Content-Security-Policy: default-src 'self'"));
    assert_non_null(strstr(r.headers, "X-Content-Type-Options: nosniff"));
    /* a POST body reaches the hook */
    assert_int_equal(
        http_request(port, "POST", "/mine", "Content-Length: 11\r\n\r\n{\"refs\":[]}", &r), 0);
    assert_string_equal(r.body, "POST|-|-|11|{\"refs\":[]}");
    /* "not mine" is a 404 */
    get(port, "/other", &r);
    assert_int_equal(r.status, 404);
    /* a body over KJ_HTTP_MAX_BODY is refused before the hook runs */
    int before = atomic_load(&calls);
    size_t big = KJ_HTTP_MAX_BODY + 1;
    char *extra = malloc(big + 64);
    int n = snprintf(extra, big + 64, "Content-Length: %zu\r\n\r\n", big);
    memset(extra + n, 'x', big);
    extra[n + (int)big] = '\0';
    assert_int_equal(http_request(port, "POST", "/mine", extra, &r), 0);
    free(extra);
    assert_int_equal(r.status, 413);
    assert_int_equal(atomic_load(&calls), before);
    kj_http_stop(http);
}

static void test_bad_listen_addresses(void **state) {
    (void)state;
    const char *bad[] = {"",     "9090", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
                         ":abc", "[::1", "[::1]9090", "::1:9090"};
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        kj_http *http = kj_http_start(bad[i], NULL, err, sizeof(err));
        if (http) fail_msg("\"%s\" accepted", bad[i]);
        assert_non_null(strstr(err, "http.listen"));
    }
    assert_null(kj_http_start(NULL, NULL, err, sizeof(err)));

    /* a port already taken is an error with the reason, not a silent success */
    kj_http *first = start_or_fail("127.0.0.1:0", NULL);
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", kj_http_port(first));
    err[0] = '\0';
    assert_null(kj_http_start(taken, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen"));
    kj_http_stop(first);
    kj_http_stop(NULL);
}

static void test_logs_listening_address(void **state) {
    (void)state;
    char path[] = "/tmp/kjobs_test_http_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    kj_log_set_fd(fd);
    kj_http *http = start_or_fail("localhost:0", NULL);
    kj_log_set_fd(2);
    char want[96];
    snprintf(want, sizeof(want), "\"address\":\"127.0.0.1:%d\"", kj_http_port(http));
    char buf[4096] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    if (!strstr(buf, "\"msg\":\"http listening\"") ||
        (!strstr(buf, want) && !strstr(buf, "\"address\":\"[::1]:")))
        fail_msg("log does not name the address: %s", buf);
    /* localhost may resolve to ::1 first; the 127.0.0.1 client only works on IPv4 */
    if (strstr(buf, want)) assert_reply(kj_http_port(http), "/livez", 200, "ok\n");
    kj_http_stop(http);
}

static void test_wildcard_listen_reachable_over_ipv4(void **state) {
    (void)state;
    kj_http *http = start_or_fail(":0", NULL); /* all interfaces (IPv6 dual-stack if present) */
    assert_reply(kj_http_port(http), "/livez", 200, "ok\n");
    kj_http_stop(http);
}

/* A collect callback that blocks until released: a stuck scrape. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
} gate;

static void blocking_collect(kj_collect *c, void *opaque) {
    gate *g = opaque;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    kj_collect_emit(c, (const char *[]){"x"}, 1);
}

typedef struct {
    int port;
    http_reply reply;
    int rc;
} scrape_arg;

static void *scrape(void *p) {
    scrape_arg *a = p;
    a->rc = http_request(a->port, "GET", "/metrics", NULL, &a->reply);
    return NULL;
}

static void test_probe_not_blocked_by_scrape(void **state) {
    (void)state;
    kj_registry *reg = kj_registry_new();
    kj_metric_family *f =
        kj_registry_add(reg, "t_slow", KJ_METRIC_GAUGE, "s", (const char *[]){"k"}, 1, NULL, 0);
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    kj_family_set_collector(f, blocking_collect, &g);
    kj_http_hooks hooks = {.registry = reg};
    kj_http *http = start_or_fail("127.0.0.1:0", &hooks);

    scrape_arg sa = {.port = kj_http_port(http)};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, scrape, &sa), 0);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu); /* the scrape is inside the callback */
    pthread_mutex_unlock(&g.mu);

    assert_reply(kj_http_port(http), "/livez", 200, "ok\n");
    assert_reply(kj_http_port(http), "/readyz", 200, "ready\n");

    pthread_mutex_lock(&g.mu);
    g.released = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(th, NULL);
    assert_int_equal(sa.rc, 0);
    assert_int_equal(sa.reply.status, 200);
    assert_non_null(strstr(sa.reply.body, "t_slow{k=\"x\"} 1\n"));
    kj_http_stop(http);
    kj_registry_free(reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_route),
        cmocka_unit_test(test_default_registry_parses),
        cmocka_unit_test(test_readiness_follows_hook),
        cmocka_unit_test(test_liveness_heartbeat),
        cmocka_unit_test(test_liveness_callback),
        cmocka_unit_test(test_not_found_and_method_not_allowed),
        cmocka_unit_test(test_route_hook),
        cmocka_unit_test(test_bad_listen_addresses),
        cmocka_unit_test(test_logs_listening_address),
        cmocka_unit_test(test_wildcard_listen_reachable_over_ipv4),
        cmocka_unit_test(test_probe_not_blocked_by_scrape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
