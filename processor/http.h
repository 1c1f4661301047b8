/*
 * http.h — the one HTTP listener (`http.listen`): /metrics, /livez (/healthz), /readyz.
 *
 * The listener runs on libmicrohttpd's own threads (one per connection), never on the consumer
 * loop or a job thread: a slow scrape cannot delay a job, and a probe does not wait behind a
 * scrape. The runtime talks to it only through the hooks below, which are read from those
 * threads, so every hook must be thread-safe and quick.
 *
 * Routes (GET and HEAD; any other method on a known path is 405, an unknown path is 404):
 *   /metrics  200, Content-Type "text/plain; version=0.0.4; charset=utf-8", the registry rendered.
 *   /livez    200 "ok" while the main loop is alive, else 503 with a reason. /healthz is an alias.
 *             Alive means: the `live` callback says so; or, without one, the heartbeat was
 *             bumped within heartbeat_max_age_ms; or, with neither, always (the process answers).
 *             No dependency (Kafka) checks: a broker outage must not get the pod restarted.
 *   /readyz   200 or 503 from the `ready` callback, body = its reason ("ready",
 *             "not ready: joining the consumer group", "draining", "circuit breaker open", ...).
 * Without a callback: 200 "ready".
 *
 * @locality kj_http_start/kj_http_stop: one controlling thread; hooks: listener threads
 */
#ifndef KJOBS_HTTP_H
#define KJOBS_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "processor/metrics.h"

/** A main-loop heartbeat: the loop calls kj_heartbeat_beat() every iteration (one store). */
typedef struct {
    _Atomic int64_t last_ms; /* CLOCK_MONOTONIC milliseconds; 0 = never beaten */
} kj_heartbeat;

/* the heartbeat's clock: kj_mono_ms() (clock.h) */
static inline void kj_heartbeat_beat_at(kj_heartbeat *hb, int64_t mono_ms) {
    atomic_store_explicit(&hb->last_ms, mono_ms, memory_order_relaxed);
}
static inline void kj_heartbeat_beat(kj_heartbeat *hb) {
    kj_heartbeat_beat_at(hb, kj_mono_ms());
}

/** Default bound on heartbeat age before /livez says 503. */
#define KJ_HTTP_HEARTBEAT_MAX_AGE_MS 30000

/** Largest request body a route hook is given (bytes); a longer one is answered 413. */
#define KJ_HTTP_MAX_BODY 65536

/** A request as a route hook sees it; everything is borrowed for the hook's call. */
typedef struct kj_http_request {
    const char *method; /* "GET", "POST", ... */
    const char *url;    /* the path, without the query string, not decoded */
    const char *body;   /* NUL-terminated; "" without one */
    size_t body_len;
    void *conn; /* for kj_http_request_header / _arg only */
} kj_http_request;

/** A request header (case-insensitive name) or NULL. */
const char *kj_http_request_header(const kj_http_request *req, const char *name);
/** A query-string argument, URL-decoded, or NULL. */
const char *kj_http_request_arg(const kj_http_request *req, const char *name);

/** What a route hook answers. `body` is malloc'd (the listener frees it) unless `static_body`. */
typedef struct kj_http_response {
    unsigned status;
    const char *content_type; /* a string literal */
    char *body;
    size_t len;
    bool static_body;
    const char *allow; /* Allow header of a 405, or NULL */
} kj_http_response;

/**
 * Routes beyond the listener's own (the console, processor/console.h): called on a listener
 * thread for every path it does not serve itself, with any method. Return false for "not
 * mine" (404). Must be thread-safe: connections are served concurrently.
 */
typedef bool(kj_http_route_fn)(void *opaque, const kj_http_request *req, kj_http_response *resp);

typedef struct {
    /** Readiness: return true when ready; write a short reason (NUL-terminated) either way.
     *  An empty reason reads as "ready" / "not ready". */
    bool (*ready)(void *opaque, char *reason, size_t reasonsz);
    /** Liveness, if the runtime wants to decide itself; same contract as `ready`. */
    bool (*live)(void *opaque, char *reason, size_t reasonsz);
    void *opaque;
    /** Used when `live` is NULL. Must outlive the listener. Never beaten = not alive. */
    const kj_heartbeat *heartbeat;
    int64_t heartbeat_max_age_ms; /* 0 = KJ_HTTP_HEARTBEAT_MAX_AGE_MS */
    /** Registry rendered at /metrics; NULL = kj_metrics_registry(). Must outlive the listener. */
    kj_registry *registry;
    /** Other routes (NULL: none, 404), with their opaque pointer. Must outlive the listener. */
    kj_http_route_fn *route;
    void *route_opaque;
} kj_http_hooks;

typedef struct kj_http kj_http;

/**
 * Listen on `listen` — "host:port", "[v6addr]:port" or ":port" (all interfaces); port 0 picks an
 * ephemeral port — and serve in the background. `hooks` is copied (NULL = all defaults); what
 * it points to must outlive the listener. Logs the bound address once. Returns NULL with a
 * message in err on a bad address or a bind failure.
 */
kj_http *kj_http_start(const char *listen, const kj_http_hooks *hooks, char *err, size_t errsz);
/** The bound TCP port (the real one when started with port 0). */
int kj_http_port(const kj_http *http);
/** Stop listening, wait for in-progress requests to finish, free. NULL is a no-op. */
void kj_http_stop(kj_http *http);

#endif /* KJOBS_HTTP_H */
