/*
 * console.c — the console's routes and their guards (see console.h).
 */
#include "processor/console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "console/assets.h"
#include "processor/log.h"
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
    unsigned a, b, c, d;
    char extra;
    return sscanf(name, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
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
                                     c->cfg->group, "main_topic", c->cfg->main_topic,
                                     "dlq_topic", c->cfg->dlq_topic, "allow_actions",
                                     c->cfg->ui_allow_actions, "token_required",
                                     c->cfg->ui_token[0] != '\0'));
    if (strcmp(url, "/api/overview") == 0)
        return answer_json(resp, 200, kj_console_overview(c->data));
    if (strcmp(url, "/api/retries") == 0)
        return answer_json(resp, 200, kj_console_retries(c->data));
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
            !kj_console_token_equal(auth + 7, c->cfg->ui_token))
            return answer_error(resp, 401, "token required (Authorization: Bearer <ui.token>)");
    }
    if (get) return api_get(c, req, resp);
    resp->allow = "GET, HEAD";
    return answer_error(resp, 405, "method not allowed");
}
