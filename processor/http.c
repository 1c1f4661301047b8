/*
 * http.c — the HTTP listener on libmicrohttpd (see http.h for the routes and threading).
 *
 * Shape: MHD binds the socket itself (MHD_OPTION_SOCK_ADDR, resolved here with getaddrinfo so
 * names, IPv4 and IPv6 all work; port 0 is reported back through MHD_DAEMON_INFO_BIND_PORT) and
 * serves each connection on its own MHD thread (MHD_USE_THREAD_PER_CONNECTION with poll(), so
 * a listen fd above FD_SETSIZE is fine). One access handler routes by path; a request body is
 * kept (up to KJ_HTTP_MAX_BODY) only for the route hook, else drained and ignored. All state the
 * handler reads is the immutable copy of the hooks taken at start, plus whatever the hooks
 * themselves read (their job to keep thread-safe).
 */
#include "processor/http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "processor/log.h"

#define KJ_HTTP_CONNECTION_LIMIT 64
/* One client address holds at most this many connections, so one misbehaving client (or a slow
 * one trickling bytes: the idle timeout restarts with each) cannot take all 64 and lock the
 * kubelet's probes and Prometheus out. */
#define KJ_HTTP_PER_IP_LIMIT         8
#define KJ_HTTP_CONNECTION_TIMEOUT_S 10
#define KJ_HTTP_REASON_MAX           256

struct kj_http {
    struct MHD_Daemon *daemon;
    kj_http_hooks hooks;
    int port;
    _Atomic bool starting; /* while true, MHD messages go to start_err, not the log */
    char start_err[256];   /* last MHD message during start (bind errors) */
};

/* MHD's messages: kept for the start error while starting, logged afterwards. */
static void kj_http_mhd_log(void *cls, const char *fmt, va_list ap) {
    kj_http *http = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (atomic_load(&http->starting))
        snprintf(http->start_err, sizeof(http->start_err), "%s", msg);
    else
        kj_log(KJ_LOG_WARN, "http server", "{s:s}", "error", msg);
}

/* ---- Routing ------------------------------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype,
                               char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

#define KJ_TEXT "text/plain; charset=utf-8"

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status,
                                    const char *text) {
    char body[KJ_HTTP_REASON_MAX + 2];
    int n = snprintf(body, sizeof(body), "%s\n", text);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof(body)) n = (int)sizeof(body) - 1;
    return respond(conn, status, KJ_TEXT, body, (size_t)n, MHD_RESPMEM_MUST_COPY);
}

/* Run a probe hook: status 200/503 and the reason, defaulting to `yes` / `no`. */
static enum MHD_Result probe(struct MHD_Connection *conn, bool (*fn)(void *, char *, size_t),
                             void *opaque, const char *yes, const char *no) {
    char reason[KJ_HTTP_REASON_MAX] = "";
    bool ok = fn(opaque, reason, sizeof(reason));
    reason[sizeof(reason) - 1] = '\0';
    return respond_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                        reason[0] ? reason : (ok ? yes : no));
}

static enum MHD_Result route_livez(kj_http *http, struct MHD_Connection *conn) {
    const kj_http_hooks *h = &http->hooks;
    if (h->live) return probe(conn, h->live, h->opaque, "ok", "not alive");
    if (!h->heartbeat) return respond_text(conn, MHD_HTTP_OK, "ok");
    int64_t last = atomic_load_explicit(&h->heartbeat->last_ms, memory_order_relaxed);
    if (last == 0)
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "main loop has not started");
    int64_t age = kj_mono_ms() - last;
    int64_t max_age =
        h->heartbeat_max_age_ms > 0 ? h->heartbeat_max_age_ms : KJ_HTTP_HEARTBEAT_MAX_AGE_MS;
    if (age > max_age) {
        char msg[KJ_HTTP_REASON_MAX];
        snprintf(msg, sizeof(msg), "main loop stalled: no heartbeat for %lld ms", (long long)age);
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, msg);
    }
    return respond_text(conn, MHD_HTTP_OK, "ok");
}

static enum MHD_Result route_metrics(kj_http *http, struct MHD_Connection *conn) {
    kj_registry *reg = http->hooks.registry ? http->hooks.registry : kj_metrics_registry();
    size_t len = 0;
    char *text = kj_registry_render(reg, &len);
    if (!text) return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                   MHD_RESPMEM_MUST_FREE);
}

/* Per-request state of the access handler: created on its first call, freed by
 * kj_http_completed. Bodies are kept only for route hooks, up to KJ_HTTP_MAX_BODY. */
typedef struct request_state {
    char *body;
    size_t len;
    bool too_large;
} request_state;

const char *kj_http_request_header(const kj_http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *kj_http_request_arg(const kj_http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result route_hook(kj_http *http, struct MHD_Connection *conn, const char *url,
                                  const char *method, request_state *st) {
    if (st->too_large) return respond_text(conn, 413, "body too large");
    kj_http_request req = {.method = method,
                           .url = url,
                           .body = st->body ? st->body : "",
                           .body_len = st->len,
                           .conn = conn};
    kj_http_response resp = {0};
    if (!http->hooks.route(http->hooks.route_opaque, &req, &resp))
        return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found");
    struct MHD_Response *r = MHD_create_response_from_buffer(
        resp.len, resp.body, resp.static_body ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
    if (!r) {
        if (!resp.static_body) free(resp.body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp.content_type ? resp.content_type : KJ_TEXT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (resp.allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp.allow);
    enum MHD_Result rc = MHD_queue_response(conn, resp.status ? resp.status : MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

static void kj_http_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    (void)toe;
    request_state *st = *req_cls;
    if (st) {
        free(st->body);
        free(st);
    }
    *req_cls = NULL;
}

static enum MHD_Result kj_http_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls) {
    kj_http *http = cls;
    (void)version;
    if (*req_cls == NULL) { /* headers only so far: answer once any body has been received */
        request_state *st = calloc(1, sizeof(*st));
        if (!st) return MHD_NO;
        *req_cls = st;
        return MHD_YES;
    }
    request_state *st = *req_cls;
    if (*upload_data_size) { /* kept for a route hook, up to its limit; else discarded */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!http->hooks.route || st->too_large) return MHD_YES;
        if (st->len + n > KJ_HTTP_MAX_BODY) {
            st->too_large = true;
            return MHD_YES;
        }
        char *grown = realloc(st->body, st->len + n + 1);
        if (!grown) return MHD_NO;
        memcpy(grown + st->len, upload_data, n);
        st->len += n;
        grown[st->len] = '\0';
        st->body = grown;
        return MHD_YES;
    }

    enum { R_NONE, R_METRICS, R_LIVEZ, R_READYZ } route = R_NONE;
    if (strcmp(url, "/metrics") == 0)
        route = R_METRICS;
    else if (strcmp(url, "/livez") == 0 || strcmp(url, "/healthz") == 0)
        route = R_LIVEZ;
    else if (strcmp(url, "/readyz") == 0)
        route = R_READYZ;
    if (route == R_NONE) {
        if (http->hooks.route) return route_hook(http, conn, url, method, st);
        return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found");
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");

    switch (route) {
    case R_METRICS:
        return route_metrics(http, conn);
    case R_LIVEZ:
        return route_livez(http, conn);
    case R_READYZ:
        if (!http->hooks.ready) return respond_text(conn, MHD_HTTP_OK, "ready");
        return probe(conn, http->hooks.ready, http->hooks.opaque, "ready", "not ready");
    case R_NONE:
        break;
    }
    return MHD_NO;
}

/* ---- Start / stop -------------------------------------------------------------------------- */

/* Split "host:port", "[v6]:port", ":port" into host (NULL = any) and port. -1 on bad syntax. */
static int parse_listen(const char *listen, char *host, size_t hostsz, char *port, size_t portsz,
                        bool *any) {
    const char *colon;
    *any = false;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') return -1;
        size_t n = (size_t)(close - listen - 1);
        if (n == 0 || n >= hostsz) return -1;
        memcpy(host, listen + 1, n);
        host[n] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || memchr(listen, ':', (size_t)(colon - listen))) return -1;
        size_t n = (size_t)(colon - listen);
        if (n >= hostsz) return -1;
        memcpy(host, listen, n);
        host[n] = '\0';
        if (n == 0 || strcmp(host, "*") == 0) *any = true;
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= portsz) return -1;
    unsigned v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9') return -1;
        v = v * 10 + (unsigned)(*q - '0');
        if (v > 65535) return -1;
    }
    snprintf(port, portsz, "%u", v & 0xFFFFu);
    return 0;
}

kj_http *kj_http_start(const char *listen, const kj_http_hooks *hooks, char *err, size_t errsz) {
    char host[256], port[16];
    bool any;
    if (!listen || parse_listen(listen, host, sizeof(host), port, sizeof(port), &any) != 0) {
        snprintf(err, errsz, "http.listen \"%s\": expected host:port, [ipv6]:port or :port",
                 listen ? listen : "");
        return NULL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(any ? NULL : host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errsz, "http.listen \"%s\": %s", listen, gai_strerror(gai));
        return NULL;
    }

    kj_http *http = calloc(1, sizeof(*http));
    if (!http) {
        freeaddrinfo(res);
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    if (hooks) http->hooks = *hooks;
    atomic_store(&http->starting, true);

    /* For a wildcard, try IPv6 dual-stack (IPv4 too) before plain IPv4; else resolver order. */
    struct addrinfo *ai = NULL;
    uint16_t portnum = (uint16_t)atoi(port); /* only for MHD's messages; SOCK_ADDR rules */
    for (int pass = any ? 0 : 1; pass < 2 && !http->daemon; pass++) {
        for (ai = res; ai; ai = ai->ai_next) {
            if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
            if (pass == 0 && ai->ai_family != AF_INET6) continue;
            unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                             MHD_USE_POLL | MHD_USE_ERROR_LOG;
            if (ai->ai_family == AF_INET6) flags |= any ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
            http->daemon = MHD_start_daemon(
                flags, portnum, NULL, NULL, kj_http_handle, http, MHD_OPTION_EXTERNAL_LOGGER,
                kj_http_mhd_log, http, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)KJ_HTTP_CONNECTION_LIMIT,
                MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)KJ_HTTP_PER_IP_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KJ_HTTP_CONNECTION_TIMEOUT_S,
                MHD_OPTION_NOTIFY_COMPLETED, kj_http_completed, http, MHD_OPTION_END);
            if (http->daemon) break;
        }
    }
    if (!http->daemon) {
        freeaddrinfo(res);
        snprintf(err, errsz, "http.listen \"%s\": cannot listen: %s", listen,
                 http->start_err[0] ? http->start_err : "libmicrohttpd failed to start");
        free(http);
        return NULL;
    }
    atomic_store(&http->starting, false);

    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : 0;
    char addr[NI_MAXHOST] = "?";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
    char shown[NI_MAXHOST + 16];
    snprintf(shown, sizeof(shown), ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", addr,
             http->port);
    freeaddrinfo(res);
    kj_log(KJ_LOG_INFO, "http listening", "{s:s,s:i}", "address", shown, "port", http->port);
    return http;
}

int kj_http_port(const kj_http *http) {
    return http ? http->port : 0;
}

void kj_http_stop(kj_http *http) {
    if (!http) return;
    MHD_stop_daemon(http->daemon); /* joins the connection threads */
    free(http);
}
