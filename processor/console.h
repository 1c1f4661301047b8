/*
 * console.h — the operator console's HTTP side: routes, authentication, the embedded page, and
 * (behind ui.allow_actions) the actions. It plugs into the HTTP listener as its route hook
 * (processor/http.h), so it runs on the listener's threads; every Kafka read is
 * processor/console_data.h. Served by `kjobs ui` (cli/cmd_ui.c); docs/console.md is the
 * user's page.
 *
 * Routes
 *   GET /, /index.html, /console.js, /console.css   the embedded assets (console/assets.h); no
 *                                                   data in them, so served without the token
 *   GET /api/config      {version, group, main_topic, dlq_topic, allow_actions, token_required}
 *   GET /api/overview    kj_console_overview
 *   GET /api/retries     kj_console_retries
 *   GET /api/dlq         kj_console_dlq_list; query: type, class, q (error text), since, until
 *                        (epoch ms), limit
 *   GET /api/dlq/P:O     kj_console_dlq_show
 *   POST /api/dlq/replay {"refs": ["P:O", ...], "dry_run": false} → kj_console_dlq_replay;
 *                        only with ui.allow_actions (else 405), and only past the CSRF guard
 *                        below; each one logged ("console action") and counted
 *                        (kjobs_console_actions_total{action,result}), refusals too
 *   POST /api/dlq/discard the same body → kj_console_dlq_discard, the same guards
 *   Everything answers JSON; errors are {"error": "..."} with 400/401/403/404/405/502.
 *   The listener's own /metrics, /livez and /readyz (processor/http.h) are served beside them.
 *
 * Security (docs/console.md, "Security")
 *   - Token: with ui.token set, every /api/ request needs "Authorization: Bearer <token>"
 *     (compared in constant time); the token is never logged or echoed. Without one the console
 *     may only listen on a loopback address (cmd_ui.c refuses anything else) and then also
 *     checks that the Host header names a loopback host, so a DNS-rebinding page cannot read it.
 *   - No cookies: the page keeps the token in sessionStorage and sends it as a header, so a
 *     cross-site form or link cannot borrow the operator's credentials.
 *   - CSRF: a POST needs the header "X-Kjobs-Console: 1" and Content-Type application/json
 *     (neither can come from a cross-site form; a cross-origin script would need a CORS
 *     preflight, never granted here), an Origin naming this host when the browser sends one,
 *     and no cross-site Sec-Fetch-Site; plus the token when one is set.
 *   - Response headers: a strict Content-Security-Policy (scripts from 'self' only, no inline),
 *     nosniff, DENY framing, no referrer (processor/http.c). The page renders data with
 *     textContent only.
 *
 * @locality kj_console_route: listener threads (concurrently); new/free: the controlling thread
 */
#ifndef KJOBS_CONSOLE_H
#define KJOBS_CONSOLE_H

#include <stdbool.h>

#include "processor/config.h"
#include "processor/console_data.h"
#include "processor/http.h"

typedef struct kj_console kj_console;

/**
 * The console for `cfg` reading through `data` (both borrowed; they must outlive it).
 * `loopback`: the listener is bound to a loopback address only (enables the Host check when
 * there is no token). Never NULL.
 */
kj_console *kj_console_new(const kj_config *cfg, kj_console_data *data, bool loopback);
void kj_console_free(kj_console *c);

/** The route hook (kj_http_route_fn) with a kj_console * as opaque. */
bool kj_console_route(void *opaque, const kj_http_request *req, kj_http_response *resp);

/** Whether `token` (a request's) equals `expected`, in time independent of where they differ. */
bool kj_console_token_equal(const char *token, const char *expected);

/** Whether a Host header value names a loopback host ("localhost", 127.x.y.z, [::1]), with or
 *  without a port. */
bool kj_console_host_is_loopback(const char *host);

/** Whether a listen address binds a loopback address only ("127.x:port", "localhost:port",
 *  "[::1]:port"); ":port", "0.0.0.0:port", "[::]:port" and other hosts do not. */
bool kj_console_listen_is_loopback(const char *listen);

#endif /* KJOBS_CONSOLE_H */
