/*
 * schema_registry.c — the Schema Registry client and the decode entry point for record values
 * (design in schema_registry.h): one GET per schema id, its answer classified, the verdict
 * cached, framed bodies decoded with the resolved writer.
 */
#include "processor/schema_registry.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/schema_cache.h"

struct kj_sr_client {
    char **urls; /* API roots, without a trailing '/' */
    size_t nurls;
    atomic_size_t preferred; /* the URL that answered last */
    char *user, *password, *ca_file, *cert_file, *key_file, *key_password;
    long timeout_ms;
    kj_schema_cache *cache;
    bool curl_ready; /* curl_global_init succeeded */
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void seterr(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errstr, size_t size, const char *fmt, ...) {
    if (!errstr || size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

/* ---- answers ------------------------------------------------------------------------------ */

/* Append `n` bytes of untrusted text as printable ASCII (others as \xNN), at most `max`. */
static void put_printable(char *buf, size_t size, const char *s, size_t n, size_t max) {
    size_t o = strlen(buf);
    for (size_t i = 0; i < n && i < max && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
    }
    if (n > max && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

kj_sr_answer kj_sr_parse_answer(long status, const char *body, size_t len, int truncated,
                                char **schema_out, char *why, size_t why_size) {
    *schema_out = NULL;
    if (why_size) why[0] = '\0';
    if (status == 200 && truncated) {
        seterr(why, why_size, "the registry's answer is larger than %d bytes", KJ_SR_MAX_ANSWER);
        return KJ_SR_ANSWER_NOT_AVRO;
    }
    json_error_t jerr;
    json_t *j = body && !truncated
                    ? json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr)
                    : NULL;
    kj_sr_answer verdict = KJ_SR_ANSWER_ERROR;
    if (status == 200) {
        json_t *schema = json_object_get(j, "schema");
        json_t *type = json_object_get(j, "schemaType");
        if (!json_is_object(j) || !json_is_string(schema)) {
            seterr(why, why_size, "HTTP 200, but not a JSON object with a \"schema\" string: ");
            put_printable(why, why_size, body ? body : "", body ? len : 0, 120);
        } else if (type &&
                   (!json_is_string(type) || strcmp(json_string_value(type), "AVRO") != 0)) {
            seterr(why, why_size, "its schemaType is ");
            if (json_is_string(type))
                put_printable(why, why_size, json_string_value(type), json_string_length(type), 40);
            else
                put_printable(why, why_size, "(not a string)", 14, 40);
            put_printable(why, why_size, ", not AVRO", 10, 10);
            verdict = KJ_SR_ANSWER_NOT_AVRO;
        } else if (memchr(json_string_value(schema), '\0', json_string_length(schema))) {
            seterr(why, why_size, "its schema text contains a NUL character");
            verdict = KJ_SR_ANSWER_NOT_AVRO;
        } else {
            *schema_out = strdup(json_string_value(schema));
            if (!*schema_out)
                seterr(why, why_size, "out of memory");
            else
                verdict = KJ_SR_ANSWER_SCHEMA;
        }
        json_decref(j);
        return verdict;
    }
    json_t *code = json_object_get(j, "error_code");
    json_t *msg = json_object_get(j, "message");
    json_int_t c = json_is_integer(code) ? json_integer_value(code) : 0;
    if (status == 404 && (c == 40403 || c == 40401)) {
        seterr(why, why_size, "the registry does not know it (HTTP 404, error code %d", (int)c);
        verdict = KJ_SR_ANSWER_NOT_FOUND;
    } else if (status == 404) {
        seterr(why, why_size,
               "HTTP 404 without the registry error code 40403: is the URL the registry's API "
               "root (Apicurio Registry: .../apis/ccompat/v7)?");
        if (!json_is_string(msg)) {
            put_printable(why, why_size, " Answer: ", 9, 9);
            put_printable(why, why_size, body ? body : "", body ? len : 0, 120);
        }
    } else if (status == 401 || status == 403) {
        seterr(why, why_size, "HTTP %ld: check kafka.schema_registry_user/_password", status);
    } else {
        seterr(why, why_size, "HTTP %ld", status);
        if (!json_is_string(msg) && body && len) {
            put_printable(why, why_size, ": ", 2, 2);
            put_printable(why, why_size, body, len, 120);
        }
    }
    if (json_is_string(msg)) {
        put_printable(why, why_size, ": ", 2, 2);
        put_printable(why, why_size, json_string_value(msg), json_string_length(msg), 200);
    }
    if (verdict == KJ_SR_ANSWER_NOT_FOUND) put_printable(why, why_size, ")", 1, 1);
    json_decref(j);
    return verdict;
}

void kj_sr_redact_url(const char *url, char *buf, size_t size) {
    if (!size) return;
    const char *rest = strstr(url, "://");
    const char *host = rest ? rest + 3 : url;
    const char *slash = strchr(host, '/');
    const char *at = memchr(host, '@', slash ? (size_t)(slash - host) : strlen(host));
    if (!at) {
        snprintf(buf, size, "%s", url);
        return;
    }
    snprintf(buf, size, "%.*s%s", (int)(host - url), url, at + 1);
}

/* ---- HTTP --------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    int truncated;
    kj_sr_cancel_fn cancel;
    void *cancel_opaque;
} kj_sr_body;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *opaque) {
    kj_sr_body *b = opaque;
    size_t n = size * nmemb;
    if (b->len + n > KJ_SR_MAX_ANSWER) {
        b->truncated = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, ptr, n);
    b->data = d;
    b->len += n;
    d[b->len] = '\0';
    return n;
}

static int on_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    kj_sr_body *b = opaque;
    return b->cancel && b->cancel(b->cancel_opaque) ? 1 : 0;
}

/* One GET of <base>/schemas/ids/<id>, classified. */
static kj_sr_answer fetch_one(kj_sr_client *c, const char *base, uint32_t id,
                              kj_sr_cancel_fn cancel, void *cancel_opaque, char **schema_out,
                              char *why, size_t why_size) {
    *schema_out = NULL;
    CURL *h = curl_easy_init();
    if (!h) {
        seterr(why, why_size, "cannot create an HTTP request (out of memory?)");
        return KJ_SR_ANSWER_ERROR;
    }
    size_t url_len = strlen(base) + 32;
    char *url = malloc(url_len);
    if (!url) {
        curl_easy_cleanup(h);
        seterr(why, why_size, "out of memory");
        return KJ_SR_ANSWER_ERROR;
    }
    snprintf(url, url_len, "%s/schemas/ids/%" PRIu32, base, id);
    kj_sr_body body = {.cancel = cancel, .cancel_opaque = cancel_opaque};
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers =
        curl_slist_append(NULL, "Accept: application/vnd.schemaregistry.v1+json, "
                                "application/vnd.schemaregistry+json, application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kjobs/" KJOBS_VERSION_STRING);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &body);
    if (c->user) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    if (c->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file) curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file) curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
    if (c->key_password) curl_easy_setopt(h, CURLOPT_KEYPASSWD, c->key_password);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    kj_sr_answer verdict;
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && body.truncated)) {
        verdict = kj_sr_parse_answer(status, body.data, body.len, body.truncated, schema_out, why,
                                     why_size);
    } else {
        seterr(why, why_size, "%s",
               rc == CURLE_ABORTED_BY_CALLBACK ? "request cancelled"
               : curl_err[0]                   ? curl_err
                                               : curl_easy_strerror(rc));
        verdict = KJ_SR_ANSWER_ERROR;
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    free(body.data);
    free(url);
    return verdict;
}

/* The verdict for `id`: from the cache, else asked of the URLs in turn. NULL with errstr when
 * no URL gave a definite answer. */
static kj_schema_entry *lookup(kj_sr_client *c, uint32_t id, kj_sr_cancel_fn cancel,
                               void *cancel_opaque, char *errstr, size_t errstr_size) {
    kj_schema_entry *e = kj_schema_cache_get(c->cache, id, mono_ms());
    if (e) return e;
    if (cancel && cancel(cancel_opaque)) {
        seterr(errstr, errstr_size, "schema id %" PRIu32 " not fetched: cancelled", id);
        return NULL;
    }
    size_t first = atomic_load(&c->preferred);
    char why[512] = "", url_shown[256];
    for (size_t k = 0; k < c->nurls; k++) {
        size_t u = (first + k) % c->nurls;
        char *schema = NULL;
        kj_sr_answer a =
            fetch_one(c, c->urls[u], id, cancel, cancel_opaque, &schema, why, sizeof(why));
        kj_sr_redact_url(c->urls[u], url_shown, sizeof(url_shown));
        if (a == KJ_SR_ANSWER_ERROR) {
            kj_metrics_schema_registry_request("error");
            kj_log(KJ_LOG_DEBUG, "schema registry request failed", "{s:s,s:I,s:s}", "url",
                   url_shown, "schema_id", (json_int_t)id, "error", why);
            if (cancel && cancel(cancel_opaque)) break;
            continue;
        }
        atomic_store(&c->preferred, u);
        if (a == KJ_SR_ANSWER_NOT_FOUND) {
            kj_metrics_schema_registry_request("unknown");
            return kj_schema_cache_put(c->cache, id, KJ_SCHEMA_UNKNOWN, NULL, why, mono_ms());
        }
        if (a == KJ_SR_ANSWER_NOT_AVRO) {
            kj_metrics_schema_registry_request("incompatible");
            return kj_schema_cache_put(c->cache, id, KJ_SCHEMA_INCOMPATIBLE, NULL, why, mono_ms());
        }
        char rwhy[400];
        kj_writer *w = kj_writer_resolve(schema, rwhy, sizeof(rwhy));
        free(schema);
        if (!w) {
            kj_metrics_schema_registry_request("incompatible");
            snprintf(why, sizeof(why), "its schema does not resolve to kjobs.Job: %s", rwhy);
            kj_log(KJ_LOG_WARN, "schema id does not resolve to kjobs.Job", "{s:s,s:I,s:s}", "url",
                   url_shown, "schema_id", (json_int_t)id, "error", rwhy);
            return kj_schema_cache_put(c->cache, id, KJ_SCHEMA_INCOMPATIBLE, NULL, why, mono_ms());
        }
        kj_metrics_schema_registry_request("found");
        char fp[24];
        snprintf(fp, sizeof(fp), "%016" PRIx64, kj_writer_fingerprint(w));
        kj_log(KJ_LOG_INFO, "schema id resolved to kjobs.Job", "{s:s,s:I,s:s}", "url", url_shown,
               "schema_id", (json_int_t)id, "fingerprint", fp);
        return kj_schema_cache_put(c->cache, id, KJ_SCHEMA_FOUND, w, NULL, mono_ms());
    }
    seterr(errstr, errstr_size, "Schema Registry unavailable for schema id %" PRIu32 " (%s: %s)",
           id, url_shown, why);
    return NULL;
}

int kj_sr_decode(kj_sr_client *c, const void *buf, size_t len, kj_job_record *out,
                 kj_encoding *enc_out, kj_sr_cancel_fn cancel, void *cancel_opaque, char *errstr,
                 size_t errstr_size) {
    uint32_t id = 0;
    kj_encoding enc = KJ_ENCODING_BINARY;
    int rc = kj_job_decode_ex(buf, len, out, &enc, &id, errstr, errstr_size);
    if (rc == 0 && enc_out) *enc_out = enc;
    if (rc != KJ_DECODE_CONFLUENT) return rc == 0 ? 0 : -1;
    if (!c) return -1; /* errstr: "... but kafka.schema_registry_url is not set" */
    kj_schema_entry *e = lookup(c, id, cancel, cancel_opaque, errstr, errstr_size);
    if (!e) return KJ_SR_UNAVAILABLE;
    int result = -1;
    switch (kj_schema_entry_verdict(e)) {
    case KJ_SCHEMA_FOUND: {
        char why[256];
        if (kj_job_decode_confluent(kj_schema_entry_writer(e), buf, len, out, why, sizeof(why)) ==
            0) {
            if (enc_out) *enc_out = KJ_ENCODING_CONFLUENT;
            result = 0;
        } else {
            seterr(errstr, errstr_size,
                   "Confluent Schema Registry framing, schema id %" PRIu32
                   ": the body does not decode with that schema: %s",
                   id, why);
        }
        break;
    }
    case KJ_SCHEMA_UNKNOWN:
        seterr(errstr, errstr_size, "Confluent Schema Registry framing, schema id %" PRIu32 ": %s",
               id, kj_schema_entry_reason(e));
        break;
    case KJ_SCHEMA_INCOMPATIBLE:
        seterr(errstr, errstr_size,
               "Confluent Schema Registry framing, schema id %" PRIu32 ": not a kjobs.Job "
               "schema: %s",
               id, kj_schema_entry_reason(e));
        break;
    }
    kj_schema_entry_release(e);
    return result;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static char *dup_or_null(const char *s) {
    return s && *s ? strdup(s) : NULL;
}

void kj_sr_client_free(kj_sr_client *c) {
    if (!c) return;
    for (size_t i = 0; i < c->nurls; i++)
        free(c->urls[i]);
    free(c->urls);
    free(c->user);
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    if (c->key_password) {
        memset(c->key_password, 0, strlen(c->key_password));
        free(c->key_password);
    }
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    kj_schema_cache_free(c->cache);
    if (c->curl_ready) curl_global_cleanup();
    free(c);
}

kj_sr_client *kj_sr_client_new(const kj_config *cfg, char *errstr, size_t errstr_size) {
    if (!cfg->sr_url || !*cfg->sr_url) {
        seterr(errstr, errstr_size, "kafka.schema_registry_url is not set");
        return NULL;
    }
    kj_sr_client *c = calloc(1, sizeof(*c));
    if (!c) goto oom;
    for (const char *p = cfg->sr_url; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && p[n - 1] == '/')
            n--;
        char **urls = realloc(c->urls, (c->nurls + 1) * sizeof(*urls));
        if (!urls) goto oom;
        c->urls = urls;
        if (!(c->urls[c->nurls] = strndup(p, n))) goto oom;
        c->nurls++;
        if (!end) break;
        p = end + 1;
    }
    c->user = dup_or_null(cfg->sr_user);
    c->password = dup_or_null(cfg->sr_password);
    c->ca_file = dup_or_null(cfg->sr_ca_file);
    c->cert_file = dup_or_null(cfg->sr_cert_file);
    c->key_file = dup_or_null(cfg->sr_key_file);
    c->key_password = dup_or_null(cfg->sr_key_password);
    c->timeout_ms = (long)cfg->sr_timeout_ms;
    c->cache = kj_schema_cache_new((size_t)cfg->sr_cache_size, cfg->sr_unknown_ttl_ms);
    if (!c->cache || c->nurls == 0) goto oom;
    /* reference counted by libcurl; paired with curl_global_cleanup in kj_sr_client_free */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        kj_sr_client_free(c);
        seterr(errstr, errstr_size, "cannot initialise libcurl");
        return NULL;
    }
    c->curl_ready = true;
    return c;
oom:
    kj_sr_client_free(c);
    seterr(errstr, errstr_size, "out of memory");
    return NULL;
}
