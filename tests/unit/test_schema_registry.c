/*
 * test_schema_registry.c — the Schema Registry path (processor/schema_registry.h,
 * processor/schema_cache.h): how registry answers are classified, the verdict cache's policy,
 * and kj_sr_decode end to end against a fake registry (libmicrohttpd on 127.0.0.1, an
 * ephemeral port: no network beyond loopback) — caching, "unknown" and "incompatible"
 * verdicts, outages that must not become verdicts, basic auth, and URL failover.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/config.h"
#include "processor/schema_cache.h"
#include "processor/schema_registry.h"
#include "schemas/codec.h"

/* ---- answers ---------------------------------------------------------------------------- */

static kj_sr_answer parse(long status, const char *body, int truncated, char **schema, char *why,
                          size_t why_size) {
    return kj_sr_parse_answer(status, body, body ? strlen(body) : 0, truncated, schema, why,
                              why_size);
}

static void test_answers(void **state) {
    (void)state;
    char why[512], *schema = NULL;
    assert_int_equal(parse(200, "{\"schema\":\"\\\"string\\\"\"}", 0, &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_SCHEMA);
    assert_string_equal(schema, "\"string\"");
    free(schema);
    assert_int_equal(
        parse(200, "{\"schema\":\"{}\",\"schemaType\":\"AVRO\"}", 0, &schema, why, sizeof(why)),
        KJ_SR_ANSWER_SCHEMA);
    free(schema);
    /* a protobuf or JSON schema is a verdict about the id */
    assert_int_equal(parse(200, "{\"schema\":\"syntax = 1\",\"schemaType\":\"PROTOBUF\"}", 0,
                           &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_NOT_AVRO);
    assert_null(schema);
    assert_string_equal(why, "its schemaType is PROTOBUF, not AVRO");
    assert_int_equal(parse(200, "x", 1, &schema, why, sizeof(why)), KJ_SR_ANSWER_NOT_AVRO);
    assert_non_null(strstr(why, "larger than"));
    /* 40403 (schema id not found) is the one "unknown" answer */
    assert_int_equal(parse(404, "{\"error_code\":40403,\"message\":\"Schema 9 not found\"}", 0,
                           &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_NOT_FOUND);
    assert_string_equal(why, "the registry does not know it (HTTP 404, error code 40403: Schema 9 "
                             "not found)");
    /* everything else says nothing about the id */
    assert_int_equal(parse(404, "<html>no</html>", 0, &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_ERROR);
    assert_non_null(strstr(why, "without the registry error code 40403"));
    assert_non_null(strstr(why, "<html>no</html>"));
    assert_int_equal(parse(401, "", 0, &schema, why, sizeof(why)), KJ_SR_ANSWER_ERROR);
    assert_non_null(strstr(why, "HTTP 401: check kafka.schema_registry_user"));
    assert_int_equal(parse(500, "{\"error_code\":50001,\"message\":\"store down\"}", 0, &schema,
                           why, sizeof(why)),
                     KJ_SR_ANSWER_ERROR);
    assert_string_equal(why, "HTTP 500: store down");
    assert_int_equal(parse(200, "{\"id\":1}", 0, &schema, why, sizeof(why)), KJ_SR_ANSWER_ERROR);
    assert_int_equal(parse(200, "[1,2", 0, &schema, why, sizeof(why)), KJ_SR_ANSWER_ERROR);
    assert_int_equal(parse(200, NULL, 0, &schema, why, sizeof(why)), KJ_SR_ANSWER_ERROR);
    assert_int_equal(
        parse(200, "{\"schema\":\"a\",\"schema\":\"b\"}", 0, &schema, why, sizeof(why)),
        KJ_SR_ANSWER_ERROR); /* duplicate keys: which one would a registry mean? */
    /* untrusted bytes are quoted as printable ASCII */
    const char bin[] = "\x01\xff\"x";
    assert_int_equal(kj_sr_parse_answer(503, bin, 4, 0, &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_ERROR);
    assert_string_equal(why, "HTTP 503: \\x01\\xff\"x");
    /* embedded NUL in the schema text (JSON \u0000) */
    assert_int_equal(parse(200, "{\"schema\":\"a\\u0000b\"}", 0, &schema, why, sizeof(why)),
                     KJ_SR_ANSWER_NOT_AVRO);
    /* a tiny buffer still gets a terminated message */
    char tiny[8];
    assert_int_equal(parse(500, "{\"message\":\"long long long\"}", 0, &schema, tiny, sizeof(tiny)),
                     KJ_SR_ANSWER_ERROR);
    assert_true(strlen(tiny) < sizeof(tiny));
}

static void test_redact_url(void **state) {
    (void)state;
    char buf[128];
    kj_sr_redact_url("https://user:pw@host:8081/x@y", buf, sizeof(buf));
    assert_string_equal(buf, "https://host:8081/x@y");
    kj_sr_redact_url("http://host:8081/apis/ccompat/v7", buf, sizeof(buf));
    assert_string_equal(buf, "http://host:8081/apis/ccompat/v7");
}

/* ---- cache ------------------------------------------------------------------------------ */

static kj_writer *job_writer(void) {
    char err[256];
    kj_writer *w = kj_writer_resolve(
        "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
        "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
        "{\"name\":\"payload\",\"type\":\"bytes\"},{\"name\":\"created_at\",\"type\":\"long\"}]}",
        err, sizeof(err));
    if (!w) fail_msg("%s", err);
    return w;
}

static void test_cache_policy(void **state) {
    (void)state;
    kj_schema_cache *c = kj_schema_cache_new(3, 1000);
    kj_schema_entry *e = kj_schema_cache_put(c, 5, KJ_SCHEMA_FOUND, job_writer(), NULL, 0);
    assert_non_null(e);
    assert_int_equal(kj_schema_entry_verdict(e), KJ_SCHEMA_FOUND);
    assert_non_null(kj_schema_entry_writer(e));
    assert_string_equal(kj_schema_entry_reason(e), "");
    kj_schema_entry_release(e);
    kj_schema_entry_release(kj_schema_cache_put(c, 6, KJ_SCHEMA_UNKNOWN, NULL, "nope", 0));
    kj_schema_entry_release(kj_schema_cache_put(c, 7, KJ_SCHEMA_INCOMPATIBLE, NULL, "bad", 0));
    /* found/incompatible forever; unknown until its TTL */
    e = kj_schema_cache_get(c, 6, 999);
    assert_non_null(e);
    assert_string_equal(kj_schema_entry_reason(e), "nope");
    kj_schema_entry_release(e);
    assert_null(kj_schema_cache_get(c, 6, 1000));
    assert_non_null(e = kj_schema_cache_get(c, 5, INT64_C(1) << 50));
    kj_schema_entry_release(e);
    assert_null(kj_schema_cache_get(c, 4, 0));
    /* a second answer for a found id keeps the first (the new writer is freed) */
    kj_schema_entry *first = kj_schema_cache_get(c, 5, 0);
    e = kj_schema_cache_put(c, 5, KJ_SCHEMA_FOUND, job_writer(), NULL, 0);
    assert_ptr_equal(e, first);
    kj_schema_entry_release(e);
    /* full: the expired unknown goes first, then unknowns, then the oldest; a reference handed
     * out stays valid after its entry is evicted */
    kj_schema_entry_release(kj_schema_cache_put(c, 8, KJ_SCHEMA_UNKNOWN, NULL, "n8", 2000));
    assert_int_equal(kj_schema_cache_size(c), 3);
    assert_null(kj_schema_cache_get(c, 6, 0)); /* 6 dropped as expired */
    kj_schema_entry_release(kj_schema_cache_put(c, 9, KJ_SCHEMA_INCOMPATIBLE, NULL, "i9", 2000));
    assert_null(kj_schema_cache_get(c, 8, 2000)); /* the unknown went before older found ones */
    assert_non_null(e = kj_schema_cache_get(c, 7, 2000));
    kj_schema_entry_release(e);
    kj_schema_entry_release(kj_schema_cache_put(c, 10, KJ_SCHEMA_INCOMPATIBLE, NULL, "i10", 2000));
    assert_null(kj_schema_cache_get(c, 5, 2000)); /* then the oldest */
    assert_int_equal(kj_schema_entry_verdict(first), KJ_SCHEMA_FOUND);
    assert_non_null(kj_schema_entry_writer(first));
    assert_int_equal(kj_schema_cache_size(c), 3);
    /* an unknown id that later resolves is replaced, not kept */
    kj_schema_entry_release(kj_schema_cache_put(c, 11, KJ_SCHEMA_UNKNOWN, NULL, "n", 2000));
    kj_schema_entry_release(kj_schema_cache_put(c, 11, KJ_SCHEMA_FOUND, job_writer(), NULL, 2001));
    assert_non_null(e = kj_schema_cache_get(c, 11, INT64_C(1) << 50));
    assert_int_equal(kj_schema_entry_verdict(e), KJ_SCHEMA_FOUND);
    kj_schema_entry_release(e);
    kj_schema_cache_free(c);
    kj_schema_entry_release(first); /* outlives the cache */
}

/* ---- a fake registry -------------------------------------------------------------------- */

static const char *job_v2_json =
    "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
    "{\"name\":\"payload\",\"type\":\"bytes\"},"
    "{\"name\":\"created_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}},"
    "{\"name\":\"meta\",\"type\":{\"type\":\"map\",\"values\":\"string\"},\"default\":{}},"
    "{\"name\":\"priority\",\"type\":\"int\",\"default\":0}]}";

static struct {
    atomic_int requests;
    atomic_int down;  /* answer 503 */
    const char *auth; /* required "user:password", or NULL */
} fake;

static enum MHD_Result fake_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls) {
    (void)cls, (void)method, (void)version, (void)upload, (void)upload_size, (void)con_cls;
    atomic_fetch_add(&fake.requests, 1);
    unsigned status = 200;
    char body[2048];
    unsigned id = 0;
    if (fake.auth) {
        char *pass = NULL;
        char *user = MHD_basic_auth_get_username_password(conn, &pass);
        char got[256];
        snprintf(got, sizeof(got), "%s:%s", user ? user : "", pass ? pass : "");
        if (user) MHD_free(user);
        if (pass) MHD_free(pass);
        if (strcmp(got, fake.auth) != 0) {
            struct MHD_Response *r = MHD_create_response_from_buffer(strlen("{\"error_code\":401}"),
                                                                     (void *)"{\"error_code\":401}",
                                                                     MHD_RESPMEM_PERSISTENT);
            enum MHD_Result rc = MHD_queue_basic_auth_fail_response(conn, "registry", r);
            MHD_destroy_response(r);
            return rc;
        }
    }
    if (atomic_load(&fake.down)) {
        status = 503;
        snprintf(body, sizeof(body), "{\"error_code\":50301,\"message\":\"backend down\"}");
    } else if (sscanf(url, "/api/schemas/ids/%u", &id) != 1) {
        status = 404;
        snprintf(body, sizeof(body), "<html>not here</html>");
    } else if (id == 7) {
        char *quoted = NULL;
        size_t n = strlen(job_v2_json);
        quoted = calloc(1, 2 * n + 1);
        for (size_t i = 0, o = 0; i < n; i++) {
            if (job_v2_json[i] == '"') quoted[o++] = '\\';
            quoted[o++] = job_v2_json[i];
        }
        snprintf(body, sizeof(body), "{\"schema\":\"%s\"}", quoted);
        free(quoted);
    } else if (id == 8) {
        snprintf(body, sizeof(body),
                 "{\"schema\":\"syntax = \\\"proto3\\\";\",\"schemaType\":\"PROTOBUF\"}");
    } else if (id == 9) {
        snprintf(body, sizeof(body),
                 "{\"schema\":\"{\\\"type\\\":\\\"record\\\",\\\"name\\\":\\\"Order\\\","
                 "\\\"fields\\\":[]}\"}");
    } else {
        status = 404;
        snprintf(body, sizeof(body), "{\"error_code\":40403,\"message\":\"Schema %u not found\"}",
                 id);
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/vnd.schemaregistry.v1+json");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static struct MHD_Daemon *fake_start(unsigned *port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_answer, NULL,
                         MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info->port;
    return d;
}

/* 00 | id | a job body written with job_v2_json: "j1" "t" "p" created_at=5 meta{} priority=3 */
static size_t framed(uint32_t id, uint8_t *out) {
    const uint8_t v[] = {0x00,
                         (uint8_t)(id >> 24),
                         (uint8_t)(id >> 16),
                         (uint8_t)(id >> 8),
                         (uint8_t)id,
                         0x04,
                         'j',
                         '1',
                         0x02,
                         't',
                         0x02,
                         'p',
                         0x0a,
                         0x00,
                         0x06};
    memcpy(out, v, sizeof(v));
    return sizeof(v);
}

static int cancel_always(void *opaque) {
    (void)opaque;
    return 1;
}

static kj_sr_client *client_for(const char *urls, const char *user, const char *password) {
    kj_config cfg;
    char err[512];
    kj_config_defaults(&cfg);
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_url", urls, err, sizeof(err)), 0);
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_timeout", "2s", err, sizeof(err)),
                     0);
    if (user) {
        assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_user", user, err, sizeof(err)),
                         0);
        assert_int_equal(
            kj_config_set(&cfg, "kafka.schema_registry_password", password, err, sizeof(err)), 0);
    }
    kj_sr_client *c = kj_sr_client_new(&cfg, err, sizeof(err));
    if (!c) fail_msg("%s", err);
    kj_config_free(&cfg);
    return c;
}

static void test_decode_with_fake_registry(void **state) {
    (void)state;
    unsigned port;
    struct MHD_Daemon *d = fake_start(&port);
    char url[128], err[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/api/", port); /* trailing '/' is dropped */
    kj_sr_client *c = client_for(url, NULL, NULL);
    uint8_t v[32];
    size_t n = framed(7, v);
    kj_job_record r;
    kj_encoding enc = KJ_ENCODING_BINARY;

    /* found: decoded with the registry's writer (an extra field skipped), asked once */
    atomic_store(&fake.requests, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kj_sr_decode(c, v, n, &r, &enc, NULL, NULL, err, sizeof(err)), 0);
        assert_string_equal(r.id, "j1");
        assert_string_equal(r.type, "t");
        assert_int_equal(r.created_at, 5);
        assert_int_equal(enc, KJ_ENCODING_CONFLUENT);
        kj_job_record_free(&r);
    }
    assert_int_equal(atomic_load(&fake.requests), 1);

    /* a cache hit needs no request, so even a cancelled caller decodes it */
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, cancel_always, NULL, err, sizeof(err)), 0);
    kj_job_record_free(&r);
    /* a body that does not decode with the writer: a verdict naming the id */
    assert_int_equal(kj_sr_decode(c, v, n - 1, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "schema id 7: the body does not decode with that schema"));

    /* unknown id: dead-letter reason names it; remembered (no second request) */
    n = framed(4242, v);
    atomic_store(&fake.requests, 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
        assert_string_equal(err, "Confluent Schema Registry framing, schema id 4242: the registry "
                                 "does not know it (HTTP 404, error code 40403: Schema 4242 not "
                                 "found)");
    }
    assert_int_equal(atomic_load(&fake.requests), 1);

    /* incompatible ids: not Avro, or not a kjobs.Job */
    n = framed(8, v);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "schema id 8: not a kjobs.Job schema: its schemaType is PROTOBUF"));
    n = framed(9, v);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(
        strstr(err, "schema id 9: not a kjobs.Job schema: its schema does not resolve"));

    /* an outage is never a verdict: unavailable now, decoded once the registry is back */
    n = framed(10, v);
    atomic_store(&fake.down, 1);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)),
                     KJ_SR_UNAVAILABLE);
    assert_non_null(strstr(err, "Schema Registry unavailable for schema id 10"));
    assert_non_null(strstr(err, "HTTP 503: backend down"));
    atomic_store(&fake.down, 0);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "schema id 10: the registry does not know it"));

    /* a cancelled caller never starts a request */
    n = framed(11, v);
    atomic_store(&fake.requests, 0);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, cancel_always, NULL, err, sizeof(err)),
                     KJ_SR_UNAVAILABLE);
    assert_int_equal(atomic_load(&fake.requests), 0);

    /* plain binary needs no registry */
    kj_job_record job = {.id = "x", .type = "y", .created_at = 1};
    uint8_t *plain;
    size_t plain_len;
    assert_int_equal(kj_job_encode(&job, KJ_ENCODING_BINARY, &plain, &plain_len, err, sizeof(err)),
                     0);
    assert_int_equal(kj_sr_decode(c, plain, plain_len, &r, &enc, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(enc, KJ_ENCODING_BINARY);
    kj_job_record_free(&r);
    assert_int_equal(atomic_load(&fake.requests), 0);
    free(plain);
    kj_sr_client_free(c);

    /* no registry configured */
    n = framed(7, v);
    assert_int_equal(kj_sr_decode(NULL, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "schema id 7, but kafka.schema_registry_url is not set"));

    /* a wrong API root (404 without 40403) is an outage, not a verdict */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/wrong", port);
    c = client_for(url, NULL, NULL);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)),
                     KJ_SR_UNAVAILABLE);
    assert_non_null(strstr(err, "without the registry error code 40403"));
    kj_sr_client_free(c);
    MHD_stop_daemon(d);
}

static void test_auth_and_failover(void **state) {
    (void)state;
    unsigned port;
    struct MHD_Daemon *d = fake_start(&port);
    char url[256], err[512];
    uint8_t v[32];
    size_t n = framed(7, v);
    kj_job_record r;
    fake.auth = "kjobs:s3cret";
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/api", port);
    kj_sr_client *c = client_for(url, "kjobs", "wrong");
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)),
                     KJ_SR_UNAVAILABLE);
    assert_non_null(strstr(err, "HTTP 401"));
    assert_null(strstr(err, "wrong")); /* the password is never in an error */
    kj_sr_client_free(c);
    c = client_for(url, "kjobs", "s3cret");
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), 0);
    kj_job_record_free(&r);
    kj_sr_client_free(c);
    fake.auth = NULL;

    /* first URL refuses connections (a port nobody listens on: the daemon's, once stopped) */
    unsigned port2;
    struct MHD_Daemon *d2 = fake_start(&port2);
    MHD_stop_daemon(d2);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/api,http://127.0.0.1:%u/api", port2, port);
    c = client_for(url, NULL, NULL);
    assert_int_equal(kj_sr_decode(c, v, n, &r, NULL, NULL, NULL, err, sizeof(err)), 0);
    kj_job_record_free(&r);
    kj_sr_client_free(c);
    MHD_stop_daemon(d);
}

static void test_config_rules(void **state) {
    (void)state;
    kj_config cfg;
    char err[512];
    kj_config_defaults(&cfg);
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_url", "ftp://x", err, sizeof(err)),
                     -1);
    assert_int_equal(
        kj_config_set(&cfg, "kafka.schema_registry_url", "http://a,,http://b", err, sizeof(err)),
        -1);
    assert_int_equal(
        kj_config_set(&cfg, "kafka.schema_registry_url", "https://u:hunter2@h/x", err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "credentials in a Schema Registry URL are not accepted"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_url",
                                   "http://a:8081,http://h/x?token=hunter2", err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "no query string"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_url", "http://", err, sizeof(err)),
                     -1);
    assert_int_equal(kj_config_set(&cfg, "kafka.schema_registry_password", "pw", err, sizeof(err)),
                     0);
    assert_int_equal(kj_config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "kafka.schema_registry_user is empty"));
    assert_null(strstr(err, "pw\""));
    kj_config_free(&cfg);
    /* the password is hidden in the effective configuration */
    const char *env[] = {"KJOBS_KAFKA_SCHEMA_REGISTRY_URL=http://h:1",
                         "KJOBS_KAFKA_SCHEMA_REGISTRY_USER=u",
                         "KJOBS_KAFKA_SCHEMA_REGISTRY_PASSWORD=topsecret-value", NULL};
    assert_int_equal(kj_config_load_string(&cfg, "", "t.cfg", (char *const *)env, err, sizeof(err)),
                     0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    kj_config_write_effective(&cfg, f);
    fclose(f);
    assert_null(strstr(text, "topsecret-value"));
    assert_non_null(strstr(text, "schema_registry_url = \"http://h:1\""));
    free(text);
    kj_config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers),           cmocka_unit_test(test_redact_url),
        cmocka_unit_test(test_cache_policy),      cmocka_unit_test(test_decode_with_fake_registry),
        cmocka_unit_test(test_auth_and_failover), cmocka_unit_test(test_config_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
