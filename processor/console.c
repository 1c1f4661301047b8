/*
 * console.c — the console's routes and their guards (see console.h).
 */
#include "processor/console.h"

#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "console/assets.h"
#include "processor/dlq_model.h"
#include "processor/group_control.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/topic_layout.h"
#include "processor/version.h"

struct kj_console {
    const kj_config *cfg;
    kj_console_data *data;
    bool loopback;
};

kj_console *kj_console_new(const kj_config *cfg, kj_console_data *data, bool loopback) {
    kj_console *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->cfg = cfg;
    c->data = data;
    c->loopback = loopback;
    return c;
}

void kj_console_free(kj_console *c) {
    free(c);
}

/* ---- guards --------------------------------------------------------------------------------- */

bool kj_console_token_equal(const char *token, const char *expected) {
    size_t a = strlen(token), b = strlen(expected);
    unsigned char diff = a != b;
    for (size_t i = 0; i < b; i++) /* as long as the secret, whatever the guess */
        diff |= (unsigned char)(expected[i] ^ (i < a ? token[i] : 0));
    return diff == 0;
}

bool kj_console_host_is_loopback(const char *host) {
    if (!host) return false;
    char name[256];
    size_t n = strlen(host);
    if (n == 0 || n >= sizeof(name)) return false;
    if (host[0] == '[') { /* [v6]:port */
        const char *close = strchr(host, ']');
        if (!close || (close[1] && close[1] != ':')) return false;
        return (size_t)(close - host) == 4 && strncmp(host, "[::1]", 5) == 0;
    }
    const char *colon = strchr(host, ':');
    n = colon ? (size_t)(colon - host) : n;
    memcpy(name, host, n);
    name[n] = '\0';
    if (strcasecmp(name, "localhost") == 0) return true;
    /* strict dotted decimal (inet_pton): "0127.0.0.1" is not 127.0.0.1 — the resolver would
     * read it as octal 87.0.0.1 (adversarial review) */
    struct in_addr addr;
    return inet_pton(AF_INET, name, &addr) == 1 && ((const unsigned char *)&addr)[0] == 127;
}

/* ---- answers -------------------------------------------------------------------------------- */

static bool answer_json(kj_http_response *resp, unsigned status, json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        resp->status = 500;
        resp->content_type = "application/json";
        resp->body = (char *)"{\"error\":\"out of memory\"}";
        resp->len = strlen(resp->body);
        resp->static_body = true;
        return true;
    }
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = text;
    resp->len = strlen(text);
    return true;
}

static bool answer_error(kj_http_response *resp, unsigned status, const char *why) {
    return answer_json(resp, status, json_pack("{s:s}", "error", why));
}

static bool serve_asset(kj_http_response *resp, const char *path) {
    if (strcmp(path, "/") == 0) path = "/index.html";
    for (size_t i = 0; i < kj_console_asset_count; i++) {
        if (strcmp(kj_console_assets[i].path, path) != 0) continue;
        resp->status = 200;
        resp->content_type = kj_console_assets[i].content_type;
        resp->body = (char *)kj_console_assets[i].data;
        resp->len = kj_console_assets[i].len;
        resp->static_body = true;
        return true;
    }
    if (strcmp(path, "/favicon.ico") == 0) { /* browsers ask on every load: no icon, no error */
        resp->status = 204;
        resp->content_type = "image/x-icon";
        resp->body = (char *)"";
        resp->len = 0;
        resp->static_body = true;
        return true;
    }
    return false;
}

static int64_t arg_ms(const kj_http_request *req, const char *name) {
    const char *v = kj_http_request_arg(req, name);
    if (!v || !*v) return 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    return *end || n < 0 ? -1 : (int64_t)n;
}

/* ---- the routes ----------------------------------------------------------------------------- */

static bool api_get(kj_console *c, const kj_http_request *req, kj_http_response *resp) {
    const char *url = req->url;
    if (strcmp(url, "/api/config") == 0)
        return answer_json(resp, 200,
                           json_pack("{s:s,s:s,s:s,s:s,s:b,s:b}", "version", kj_version(), "group",
                                     c->cfg->group, "main_topic", c->cfg->main_topic, "dlq_topic",
                                     c->cfg->dlq_topic, "allow_actions", c->cfg->ui_allow_actions,
                                     "token_required", c->cfg->ui_token[0] != '\0'));
    if (strcmp(url, "/api/overview") == 0)
        return answer_json(resp, 200, kj_console_overview(c->data));
    if (strcmp(url, "/api/retries") == 0)
        return answer_json(resp, 200, kj_console_retries(c->data));
    if (strcmp(url, "/api/controls") == 0)
        return answer_json(resp, 200, kj_console_controls(c->data));
    if (strcmp(url, "/api/dlq") == 0) {
        kj_console_dlq_query q = {.type = kj_http_request_arg(req, "type"),
                                  .error_class = kj_http_request_arg(req, "class"),
                                  .text = kj_http_request_arg(req, "q"),
                                  .since_ms = arg_ms(req, "since"),
                                  .until_ms = arg_ms(req, "until"),
                                  .limit = (long)arg_ms(req, "limit")};
        if (q.since_ms < 0 || q.until_ms < 0 || q.limit < 0)
            return answer_error(resp, 400, "since, until and limit are non-negative integers");
        return answer_json(resp, 200, kj_console_dlq_list(c->data, &q));
    }
    if (strncmp(url, "/api/dlq/", 9) == 0) {
        char err[512] = "";
        json_t *rec = NULL;
        int rc = kj_console_dlq_show(c->data, url + 9, &rec, err, sizeof(err));
        if (rc == 0) return answer_json(resp, 200, rec);
        return answer_error(resp, (unsigned)rc,
                            rc == 404 ? "no such dead letter" : (err[0] ? err : "unreadable"));
    }
    return answer_error(resp, 404, "no such API route");
}

/* ---- actions (ui.allow_actions) ---------------------------------------------------------------
 */

/* Why a state-changing request must be refused, or NULL. A browser sends a custom header only
 * for a same-origin script (cross-origin it needs a CORS preflight, which this server never
 * grants), and a form cannot send JSON; Origin, when present, must be this server's. */
static const char *csrf_refusal(const kj_http_request *req) {
    const char *marker = kj_http_request_header(req, "X-Kjobs-Console");
    if (!marker || strcmp(marker, "1") != 0) return "header X-Kjobs-Console: 1 required";
    const char *ctype = kj_http_request_header(req, "Content-Type");
    if (!ctype || strncasecmp(ctype, "application/json", 16) != 0)
        return "Content-Type application/json required";
    const char *site = kj_http_request_header(req, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
        return "cross-site request refused";
    const char *origin = kj_http_request_header(req, "Origin");
    if (origin) {
        const char *host = kj_http_request_header(req, "Host");
        const char *rest = strncmp(origin, "http://", 7) == 0    ? origin + 7
                           : strncmp(origin, "https://", 8) == 0 ? origin + 8
                                                                 : NULL;
        if (!host || !rest || strcmp(rest, host) != 0) return "Origin is not this console";
    }
    return NULL;
}

/* One JSON log line and one count per action, whatever its result. */
static void record_action(const char *action, const char *result, json_t *detail) {
    kj_metrics_console_action(action, result);
    char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    kj_log(KJ_LOG_INFO, "console action", "{s:s,s:s,s:s?}", "action", action, "result", result,
           "detail", text);
    free(text);
}

/* POST /api/dlq/replay and /api/dlq/discard: the same body, the same checks. */
static bool api_dlq_action(kj_console *c, const kj_http_request *req, kj_http_response *resp,
                           bool discard) {
    const char *action = discard ? "discard" : "replay";
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *refs = json_object_get(body, "refs");
    json_t *dry = json_object_get(body, "dry_run");
    size_t n = json_array_size(refs);
    const char *why = NULL;
    if (!json_is_object(body) || !json_is_array(refs) || n == 0)
        why = "body must be {\"refs\": [\"PARTITION:OFFSET\", ...]}";
    else if (n > KJ_CONSOLE_REPLAY_MAX)
        why = "too many dead letters in one request";
    else if (dry && !json_is_boolean(dry))
        why = "dry_run must be true or false";
    const char **list = calloc(n ? n : 1, sizeof(*list));
    if (!list) abort();
    for (size_t i = 0; !why && i < n; i++) {
        int32_t p;
        int64_t o;
        list[i] = json_string_value(json_array_get(refs, i));
        if (!list[i] || !kj_dlq_parse_handle(list[i], &p, &o))
            why = "every ref must be PARTITION:OFFSET";
    }
    if (why) {
        free(list);
        json_decref(body);
        record_action(action, "refused", NULL);
        return answer_error(resp, 400, why);
    }
    json_t *out = NULL;
    int rc = discard ? kj_console_dlq_discard(c->data, list, n, json_is_true(dry), &out)
                     : kj_console_dlq_replay(c->data, list, n, json_is_true(dry), &out);
    free(list);
    json_decref(body);
    const char *result = rc == KJ_DLQ_OK ? "ok" : rc == KJ_DLQ_ERR_NOT_ACKED ? "partial" : "error";
    json_t *detail = json_pack(
        "{s:O,s:O,s:O,s:O*,s:O*,s:O*,s:O}", "dry_run", json_object_get(out, "dry_run"), "requested",
        json_object_get(out, "requested"), "selected", json_object_get(out, "selected"), "replayed",
        json_object_get(out, "replayed"), "failed", json_object_get(out, "failed"), "discarded",
        json_object_get(out, "discarded"), "skipped", json_object_get(out, "skipped"));
    record_action(action, result, detail);
    json_decref(detail);
    return answer_json(resp, rc == KJ_DLQ_OK ? 200 : 502, out);
}

/* The action a POST route names (for its count and log line), or "unknown". */
static const char *action_of(const char *url) {
    if (strcmp(url, "/api/dlq/replay") == 0) return "replay";
    if (strcmp(url, "/api/dlq/discard") == 0) return "discard";
    if (strcmp(url, "/api/controls/pause") == 0) return "pause";
    if (strcmp(url, "/api/controls/resume") == 0) return "resume";
    if (strcmp(url, "/api/controls/breaker-resume") == 0) return "breaker-resume";
    return "unknown";
}

/* POST /api/controls/{pause,resume,breaker-resume}: {"topic": T, "partition": P or null,
 * "reason": "..."} (pause, resume) or {} (breaker-resume); processor/group_control.h. */
static bool api_control(kj_console *c, const kj_http_request *req, kj_http_response *resp,
                        const char *action) {
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    bool breaker = strcmp(action, "breaker-resume") == 0, pause = strcmp(action, "pause") == 0;
    kj_ctl_key k;
    memset(&k, 0, sizeof(k));
    k.kind = breaker ? KJ_CTL_BREAKER_RESUME : KJ_CTL_PAUSE;
    k.partition = -1;
    kj_ctl_value v;
    memset(&v, 0, sizeof(v));
    v.paused = pause;
    v.at = kj_now_ms();
    char who[KJ_CTL_MAX_BY - 8]; /* "console " + it fits "by" */
    kj_ctl_whoami(who, sizeof(who));
    snprintf(v.by, sizeof(v.by), "console %s", who);
    const char *why = NULL;
    json_t *topic = json_object_get(body, "topic"), *part = json_object_get(body, "partition");
    json_t *reason = json_object_get(body, "reason");
    if (!json_is_object(body)) {
        why = "body must be a JSON object";
    } else if (!breaker) {
        const char *t = json_string_value(topic);
        if (!t || !kj_ctl_topic_valid(t, strlen(t)))
            why = "topic must be a topic name";
        else if (!kj_topic_is_consumed(c->cfg, t))
            why = "topic is not the main topic or a retry-ladder topic of this console's "
                  "configuration";
        else if (part && !json_is_null(part) &&
                 (!json_is_integer(part) || json_integer_value(part) < 0 ||
                  json_integer_value(part) > INT32_MAX))
            why = "partition must be a non-negative integer, or null for the whole topic";
        else if (reason && (!json_is_string(reason) || !pause ||
                            json_string_length(reason) > KJ_CTL_MAX_REASON))
            why = "reason: a string of at most 512 bytes, for a pause";
        if (!why) {
            snprintf(k.topic, sizeof(k.topic), "%s", t);
            if (json_is_integer(part)) k.partition = (int32_t)json_integer_value(part);
            if (reason) snprintf(v.reason, sizeof(v.reason), "%s", json_string_value(reason));
        }
    }
    json_decref(body);
    json_t *detail = breaker
                         ? json_object()
                         : json_pack("{s:s,s:o}", "topic", k.topic, "partition",
                                     k.partition >= 0 ? json_integer(k.partition) : json_null());
    if (why) {
        record_action(action, "refused", detail);
        json_decref(detail);
        return answer_error(resp, 400, why);
    }
    char err[512] = "";
    int rc = kj_console_control(c->data, &k, pause || breaker ? &v : NULL, err, sizeof(err));
    record_action(action, rc == 0 ? "ok" : rc == 2 ? "refused" : "error", detail);
    if (rc != 0) {
        json_decref(detail);
        return answer_error(resp, rc == 2 ? 400 : 502, err);
    }
    json_object_set_new(detail, "ok", json_true());
    json_object_set_new(detail, "action", json_string(action));
    return answer_json(resp, 200, detail);
}

static bool api_post(kj_console *c, const kj_http_request *req, kj_http_response *resp) {
    const char *action = action_of(req->url);
    const char *why = csrf_refusal(req);
    if (why) {
        record_action(action, "refused", NULL);
        return answer_error(resp, 403, why);
    }
    if (strcmp(action, "replay") == 0) return api_dlq_action(c, req, resp, false);
    if (strcmp(action, "discard") == 0) return api_dlq_action(c, req, resp, true);
    if (strcmp(action, "unknown") != 0) return api_control(c, req, resp, action);
    return answer_error(resp, 404, "no such action");
}

bool kj_console_route(void *opaque, const kj_http_request *req, kj_http_response *resp) {
    kj_console *c = opaque;
    bool api = strncmp(req->url, "/api/", 5) == 0;
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (!c->cfg->ui_token[0] && c->loopback &&
        !kj_console_host_is_loopback(kj_http_request_header(req, "Host")))
        return answer_error(resp, 403, "this console answers loopback host names only");
    if (!api) {
        if (!get) {
            resp->allow = "GET, HEAD";
            return answer_error(resp, 405, "method not allowed");
        }
        return serve_asset(resp, req->url);
    }
    if (c->cfg->ui_token[0]) {
        const char *auth = kj_http_request_header(req, "Authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 ||
            !kj_console_token_equal(auth + 7, c->cfg->ui_token)) {
            if (!get) record_action(action_of(req->url), "refused", NULL); /* counted too */
            return answer_error(resp, 401,
                                auth ? "wrong token"
                                     : "token required (Authorization: Bearer "
                                       "<ui.token>)");
        }
    }
    if (get) return api_get(c, req, resp);
    if (c->cfg->ui_allow_actions && strcmp(req->method, "POST") == 0) return api_post(c, req, resp);
    record_action(action_of(req->url), "refused", NULL); /* read-only, or not a POST */
    resp->allow = c->cfg->ui_allow_actions ? "GET, HEAD, POST" : "GET, HEAD";
    return answer_error(resp, 405,
                        c->cfg->ui_allow_actions ? "method not allowed"
                                                 : "read-only console (ui.allow_actions = false)");
}

bool kj_console_listen_is_loopback(const char *listen) {
    return listen[0] != ':' && kj_console_host_is_loopback(listen);
}
