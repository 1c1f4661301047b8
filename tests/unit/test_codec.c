/*
 * test_codec.c — the job codec (schemas/codec.h): round trips, byte-exact output, a
 * cross-implementation check against avro-c's generic writer and reader, schema resolution
 * (older v1 writer, a writer with extra unknown fields, promotions, unions), and hostile input.
 *
 * Expected bytes are written out by hand from the Avro specification ("Binary Encoding":
 * zig-zag varints, length-prefixed strings/bytes, blocked maps) with the test's own tiny
 * encoder below, never produced by the code under test. Leaks are caught by the ASan build
 * (-DKJOBS_SANITIZE=ON), which runs these same tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>
#include <cmocka.h>
#include <pthread.h>

#include "schemas/codec.h"
#include "schemas/codec_internal.h"

/* --- a test-local Avro byte builder (independent of the codec) --------------------------- */

typedef struct tbuf {
    uint8_t b[8192];
    size_t n;
} tbuf;

static void t_raw(tbuf *t, const void *p, size_t n) {
    assert_true(t->n + n <= sizeof(t->b));
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static void t_byte(tbuf *t, uint8_t b) {
    t_raw(t, &b, 1);
}

static void t_long(tbuf *t, int64_t v) {
    uint64_t z = v >= 0 ? (uint64_t)v * 2 : (uint64_t)(-(v + 1)) * 2 + 1; /* zig-zag */
    do {
        uint8_t b = z & 0x7f;
        z >>= 7;
        t_byte(t, (uint8_t)(b | (z ? 0x80 : 0)));
    } while (z);
}

static void t_bytes(tbuf *t, const void *p, size_t n) {
    t_long(t, (int64_t)n);
    t_raw(t, p, n);
}

static void t_str(tbuf *t, const char *s) {
    t_bytes(t, s, strlen(s));
}

/* id, type, payload, created_at: the fixed head of every test job. */
static void t_head(tbuf *t) {
    t_str(t, "job-1");
    t_str(t, "kjobs.noop");
    t_str(t, "hello");
    t_long(t, INT64_C(1700000000000));
}

/* A complete plain-binary job with meta {"traceparent": "00-abc"}. */
static void t_valid_job(tbuf *t) {
    t_head(t);
    t_long(t, 1);
    t_str(t, "traceparent");
    t_str(t, "00-abc");
    t_long(t, 0);
}

static void t_so_header(tbuf *t, uint64_t fp) {
    t_byte(t, 0xC3);
    t_byte(t, 0x01);
    for (int i = 0; i < 8; i++)
        t_byte(t, (uint8_t)(fp >> (8 * i)));
}

/* The v1 schema's canonical form, written by hand from the spec's rules. */
static const char v1_pcf_by_hand[] =
    "{\"name\":\"kjobs.Job\",\"type\":\"record\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
    "{\"name\":\"payload\",\"type\":\"bytes\"},{\"name\":\"created_at\",\"type\":\"long\"}]}";

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char text[16384];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *copy = strdup(text);
    assert_non_null(copy);
    return copy;
}

/* Decode must fail, say why, and leave the record zeroed. */
static void expect_reject(const void *buf, size_t len, const char *reason_part) {
    kj_job_record rec;
    memset(&rec, 0xAB, sizeof(rec));
    char err[512] = "";
    int rc = kj_job_decode(buf, len, &rec, NULL, err, sizeof(err));
    if (rc != -1 || (reason_part && !strstr(err, reason_part)))
        print_error("len %zu: rc=%d err=\"%s\" (wanted \"%s\")\n", len, rc, err,
                    reason_part ? reason_part : "");
    assert_int_equal(rc, -1);
    assert_true(strlen(err) > 0);
    if (reason_part) assert_non_null(strstr(err, reason_part));
    assert_null(rec.storage_);
    assert_null(rec.id);
    kj_job_record_free(&rec);
}

/* --- round trips -------------------------------------------------------------------------- */

static void test_init_and_encoding_names(void **state) {
    (void)state;
    char err[256] = "";
    assert_int_equal(kj_codec_init(err, sizeof(err)), 0);
    assert_int_equal(kj_codec_init(err, sizeof(err)), 0); /* idempotent */
    kj_encoding e = KJ_ENCODING_BINARY;
    assert_int_equal(kj_encoding_parse("single-object", &e), 0);
    assert_int_equal(e, KJ_ENCODING_SINGLE_OBJECT);
    assert_int_equal(kj_encoding_parse("binary", &e), 0);
    assert_int_equal(e, KJ_ENCODING_BINARY);
    assert_int_equal(kj_encoding_parse("json", &e), -1);
    assert_int_equal(kj_encoding_parse(NULL, &e), -1);
    assert_string_equal(kj_encoding_name(KJ_ENCODING_SINGLE_OBJECT), "single-object");
}

static void round_trip(kj_encoding enc) {
    static const uint8_t payload[] = {0x00, 0xff, 0xC3, 0x01, 'x', 0x00};
    kj_meta_entry meta[] = {
        {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        {"k\xc3\xa9y", "v\xe2\x82\xac"},
        {"empty", ""}};
    kj_job_record in = {.id = "id-\xf0\x9f\x98\x80",
                        .type = "kjobs.sleep",
                        .payload = payload,
                        .payload_len = sizeof(payload),
                        .created_at = INT64_MIN + 1,
                        .meta = meta,
                        .meta_count = 3};
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256] = "";
    assert_int_equal(kj_job_encode(&in, enc, &buf, &len, err, sizeof(err)), 0);
    kj_job_record out;
    kj_encoding got = (kj_encoding)-1;
    assert_int_equal(kj_job_decode(buf, len, &out, &got, err, sizeof(err)), 0);
    assert_int_equal(got, enc);
    assert_string_equal(out.id, in.id);
    assert_string_equal(out.type, in.type);
    assert_int_equal(out.payload_len, sizeof(payload));
    assert_memory_equal(out.payload, payload, sizeof(payload));
    assert_int_equal(out.payload[out.payload_len], 0); /* NUL after the payload */
    assert_true(out.created_at == INT64_MIN + 1);
    assert_int_equal(out.meta_count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(out.meta[i].key, meta[i].key);
        assert_string_equal(out.meta[i].value, meta[i].value);
    }
    /* One allocation: every pointer lies inside storage_. */
    assert_non_null(out.storage_);
    assert_true((const void *)out.id > out.storage_ && (const void *)out.meta == out.storage_);
    kj_job_record_free(&out);
    assert_null(out.storage_);
    free(buf);

    /* Empty payload and meta. */
    kj_job_record small = {.id = "", .type = "t", .created_at = 0};
    assert_int_equal(kj_job_encode(&small, enc, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(kj_job_decode(buf, len, &out, NULL, err, sizeof(err)), 0);
    assert_string_equal(out.id, "");
    assert_non_null(out.payload);
    assert_int_equal(out.payload_len, 0);
    assert_int_equal(out.meta_count, 0);
    assert_null(out.meta);
    kj_job_record_free(&out);
    free(buf);
}

static void test_round_trip_binary(void **state) {
    (void)state;
    round_trip(KJ_ENCODING_BINARY);
}

static void test_round_trip_single_object(void **state) {
    (void)state;
    round_trip(KJ_ENCODING_SINGLE_OBJECT);
}

/* Byte-exact output, spelled out from the spec's binary encoding. */
static void test_encoding_bytes_exact(void **state) {
    (void)state;
    static const uint8_t payload[] = {0x00, 0xff};
    kj_meta_entry meta[] = {{"k", "v"}};
    kj_job_record in = {.id = "a",
                        .type = "t",
                        .payload = payload,
                        .payload_len = 2,
                        .created_at = -1,
                        .meta = meta,
                        .meta_count = 1};
    /* "a" = 02 61, "t" = 02 74, bytes 00 ff = 04 00 ff, long -1 = 01,
     * map: count 1 = 02, "k" = 02 6b, "v" = 02 76, end 00 */
    static const uint8_t want[] = {0x02, 0x61, 0x02, 0x74, 0x04, 0x00, 0xff,
                                   0x01, 0x02, 0x02, 0x6b, 0x02, 0x76, 0x00};
    uint8_t *buf;
    size_t len;
    char err[256];
    assert_int_equal(kj_job_encode(&in, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    free(buf);

    /* Single object: C3 01, fingerprint of the hand-written canonical form, little-endian. */
    const char *pcf = kj_schema_canonical();
    uint64_t fp = kj_crc64_avro(pcf, strlen(pcf));
    assert_int_equal(kj_job_encode(&in, KJ_ENCODING_SINGLE_OBJECT, &buf, &len, err, sizeof(err)),
                     0);
    assert_int_equal(len, 10 + sizeof(want));
    assert_int_equal(buf[0], 0xC3);
    assert_int_equal(buf[1], 0x01);
    for (int i = 0; i < 8; i++)
        assert_int_equal(buf[2 + i], (uint8_t)(fp >> (8 * i)));
    assert_memory_equal(buf + 10, want, sizeof(want));
    free(buf);
}

static void test_encode_rejects_bad_input(void **state) {
    (void)state;
    uint8_t *buf = (uint8_t *)"x";
    size_t len = 7;
    char err[256] = "";
    kj_job_record no_id = {.type = "t"};
    assert_int_equal(kj_job_encode(&no_id, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)), -1);
    assert_null(buf);
    assert_true(strlen(err) > 0);
    kj_job_record bad_utf8 = {.id = "a", .type = "\xc3\x28"};
    assert_int_equal(kj_job_encode(&bad_utf8, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "UTF-8"));
    kj_meta_entry meta[] = {{"k", NULL}};
    kj_job_record null_meta = {.id = "a", .type = "t", .meta = meta, .meta_count = 1};
    assert_int_equal(kj_job_encode(&null_meta, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)),
                     -1);
    kj_job_record null_payload = {.id = "a", .type = "t", .payload_len = 3};
    assert_int_equal(kj_job_encode(&null_payload, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)),
                     -1);
}

/* --- cross-implementation: avro-c --------------------------------------------------------- */

typedef struct avro_job {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
} avro_job;

static void avro_job_new(avro_job *j, const char *schema_json) {
    if (avro_schema_from_json_length(schema_json, strlen(schema_json), &j->schema) != 0)
        fail_msg("avro-c rejected schema: %s", avro_strerror());
    j->iface = avro_generic_class_from_schema(j->schema);
    assert_non_null(j->iface);
    assert_int_equal(avro_generic_value_new(j->iface, &j->value), 0);
}

static void avro_job_free(avro_job *j) {
    avro_value_decref(&j->value);
    avro_value_iface_decref(j->iface);
    avro_schema_decref(j->schema);
}

static void avro_set_common(avro_value_t *rec, int64_t created_at) {
    avro_value_t f;
    assert_int_equal(avro_value_get_by_name(rec, "id", &f, NULL), 0);
    assert_int_equal(avro_value_set_string(&f, "from-avro-c"), 0);
    assert_int_equal(avro_value_get_by_name(rec, "type", &f, NULL), 0);
    assert_int_equal(avro_value_set_string(&f, "kjobs.flaky"), 0);
    assert_int_equal(avro_value_get_by_name(rec, "payload", &f, NULL), 0);
    assert_int_equal(avro_value_set_bytes(&f, (void *)"3\0x", 3), 0);
    assert_int_equal(avro_value_get_by_name(rec, "created_at", &f, NULL), 0);
    if (avro_value_get_type(&f) == AVRO_INT32)
        assert_int_equal(avro_value_set_int(&f, (int32_t)created_at), 0);
    else
        assert_int_equal(avro_value_set_long(&f, created_at), 0);
}

static size_t t_avro_write(avro_value_t *v, uint8_t *buf, size_t cap) {
    avro_writer_t w = avro_writer_memory((const char *)buf, (int64_t)cap);
    if (avro_value_write(w, v) != 0) fail_msg("avro-c write failed: %s", avro_strerror());
    size_t n = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    return n;
}

static void expect_avro_common(const kj_job_record *r, int64_t created_at) {
    assert_string_equal(r->id, "from-avro-c");
    assert_string_equal(r->type, "kjobs.flaky");
    assert_int_equal(r->payload_len, 3);
    assert_memory_equal(r->payload, "3\0x", 3);
    assert_true(r->created_at == created_at);
}

/* avro-c's generic writer with job.avsc → our decoder. */
static void test_avro_c_written_bytes_decode(void **state) {
    (void)state;
    char *json = read_file(KJOBS_SOURCE_DIR "/schemas/job.avsc");
    avro_job j;
    avro_job_new(&j, json);
    avro_set_common(&j.value, INT64_C(1712345678901));
    avro_value_t meta, e;
    assert_int_equal(avro_value_get_by_name(&j.value, "meta", &meta, NULL), 0);
    assert_int_equal(avro_value_add(&meta, "traceparent", &e, NULL, NULL), 0);
    assert_int_equal(avro_value_set_string(&e, "00-aa-bb-01"), 0);
    assert_int_equal(avro_value_add(&meta, "tenant", &e, NULL, NULL), 0);
    assert_int_equal(avro_value_set_string(&e, "acme"), 0);
    uint8_t buf[1024];
    size_t n = t_avro_write(&j.value, buf, sizeof(buf));

    kj_job_record r;
    kj_encoding enc;
    char err[256] = "";
    assert_int_equal(kj_job_decode(buf, n, &r, &enc, err, sizeof(err)), 0);
    assert_int_equal(enc, KJ_ENCODING_BINARY);
    expect_avro_common(&r, INT64_C(1712345678901));
    assert_int_equal(r.meta_count, 2);
    /* avro-c's map keeps insertion order on the wire */
    assert_string_equal(r.meta[0].key, "traceparent");
    assert_string_equal(r.meta[0].value, "00-aa-bb-01");
    assert_string_equal(r.meta[1].key, "tenant");
    assert_string_equal(r.meta[1].value, "acme");
    kj_job_record_free(&r);
    avro_job_free(&j);
    free(json);
}

/* Our encoder → avro-c's generic reader with job.avsc (trusted bytes, so avro-c is fine). */
static void test_our_bytes_read_by_avro_c(void **state) {
    (void)state;
    kj_meta_entry meta[] = {{"a", "1"}, {"b", "2"}};
    kj_job_record in = {.id = "ours",
                        .type = "kjobs.noop",
                        .payload = (const uint8_t *)"pp",
                        .payload_len = 2,
                        .created_at = 42,
                        .meta = meta,
                        .meta_count = 2};
    uint8_t *buf;
    size_t len;
    char err[256];
    assert_int_equal(kj_job_encode(&in, KJ_ENCODING_BINARY, &buf, &len, err, sizeof(err)), 0);
    char *json = read_file(KJOBS_SOURCE_DIR "/schemas/job.avsc");
    avro_job j;
    avro_job_new(&j, json);
    avro_reader_t rd = avro_reader_memory((const char *)buf, (int64_t)len);
    assert_int_equal(avro_value_read(rd, &j.value), 0);
    avro_reader_free(rd);
    avro_value_t f;
    const char *s;
    const void *b;
    size_t sz;
    int64_t l;
    assert_int_equal(avro_value_get_by_name(&j.value, "id", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &sz), 0);
    assert_string_equal(s, "ours");
    assert_int_equal(avro_value_get_by_name(&j.value, "payload", &f, NULL), 0);
    assert_int_equal(avro_value_get_bytes(&f, &b, &sz), 0);
    assert_int_equal(sz, 2);
    assert_int_equal(avro_value_get_by_name(&j.value, "created_at", &f, NULL), 0);
    assert_int_equal(avro_value_get_long(&f, &l), 0);
    assert_int_equal(l, 42);
    assert_int_equal(avro_value_get_by_name(&j.value, "meta", &f, NULL), 0);
    assert_int_equal(avro_value_get_size(&f, &sz), 0);
    assert_int_equal(sz, 2);
    avro_value_t e;
    assert_int_equal(avro_value_get_by_name(&f, "b", &e, NULL), 0);
    assert_int_equal(avro_value_get_string(&e, &s, &sz), 0);
    assert_string_equal(s, "2");
    avro_job_free(&j);
    free(json);
    free(buf);
}

/* --- resolution --------------------------------------------------------------------------- */

/* A v1 writer (no meta) in single-object form resolves with meta = {} (the reader default). */
static void test_v1_single_object_resolves_with_default_meta(void **state) {
    (void)state;
    char *json = read_file(KJOBS_SOURCE_DIR "/schemas/job.v1.avsc");
    char *pcf = NULL;
    char err[256] = "";
    assert_int_equal(kj_schema_canonical_form(json, &pcf, err, sizeof(err)), 0);
    assert_string_equal(pcf, v1_pcf_by_hand);
    free(pcf);

    avro_job j;
    avro_job_new(&j, json);
    avro_set_common(&j.value, -5);
    tbuf t = {.n = 0};
    t_so_header(&t, kj_crc64_avro(v1_pcf_by_hand, strlen(v1_pcf_by_hand)));
    t.n += t_avro_write(&j.value, t.b + t.n, sizeof(t.b) - t.n);

    kj_job_record r;
    kj_encoding enc;
    assert_int_equal(kj_job_decode(t.b, t.n, &r, &enc, err, sizeof(err)), 0);
    assert_int_equal(enc, KJ_ENCODING_SINGLE_OBJECT);
    expect_avro_common(&r, -5);
    assert_int_equal(r.meta_count, 0);
    kj_job_record_free(&r);
    /* The same body as plain binary lacks meta: the current schema cannot read it. */
    expect_reject(t.b + 10, t.n - 10, "truncated");
    avro_job_free(&j);
    free(json);
}

/* A writer with extra fields of every kind (nested records, recursion, arrays, maps, unions,
 * fixed, enum, boolean, float, null) between and after ours; created_at written as int. */
static const char v3_test_schema[] =
    "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},"
    "{\"name\":\"extra\",\"type\":{\"type\":\"record\",\"name\":\"Extra\",\"fields\":["
    "  {\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":[\"null\",\"string\","
    "     {\"type\":\"fixed\",\"name\":\"F4\",\"size\":4}]}},"
    "  {\"name\":\"scores\",\"type\":{\"type\":\"map\",\"values\":\"double\"}},"
    "  "
    "{\"name\":\"color\",\"type\":{\"type\":\"enum\",\"name\":\"Color\",\"symbols\":[\"RED\","
    "\"GREEN\"]}},"
    "  {\"name\":\"flag\",\"type\":\"boolean\"},"
    "  {\"name\":\"ratio\",\"type\":\"float\"},"
    "  {\"name\":\"nothing\",\"type\":\"null\"},"
    "  {\"name\":\"child\",\"type\":[\"null\",\"Extra\"]}]}},"
    "{\"name\":\"type\",\"type\":\"string\"},"
    "{\"name\":\"payload\",\"type\":\"bytes\"},"
    "{\"name\":\"priority\",\"type\":\"int\"},"
    "{\"name\":\"created_at\",\"type\":\"int\"},"
    "{\"name\":\"meta\",\"type\":{\"type\":\"map\",\"values\":\"string\"}},"
    "{\"name\":\"nulls\",\"type\":{\"type\":\"array\",\"items\":\"null\"}}]}";

static void fill_extra(avro_value_t *extra, int depth) {
    avro_value_t f, e, br;
    assert_int_equal(avro_value_get_by_name(extra, "tags", &f, NULL), 0);
    assert_int_equal(avro_value_append(&f, &e, NULL), 0);
    assert_int_equal(avro_value_set_branch(&e, 1, &br), 0);
    assert_int_equal(avro_value_set_string(&br, "tag"), 0);
    assert_int_equal(avro_value_append(&f, &e, NULL), 0);
    assert_int_equal(avro_value_set_branch(&e, 2, &br), 0);
    assert_int_equal(avro_value_set_fixed(&br, (void *)"abcd", 4), 0);
    assert_int_equal(avro_value_append(&f, &e, NULL), 0);
    assert_int_equal(avro_value_set_branch(&e, 0, &br), 0);
    assert_int_equal(avro_value_set_null(&br), 0);
    assert_int_equal(avro_value_get_by_name(extra, "scores", &f, NULL), 0);
    assert_int_equal(avro_value_add(&f, "pi", &e, NULL, NULL), 0);
    assert_int_equal(avro_value_set_double(&e, 3.14), 0);
    assert_int_equal(avro_value_get_by_name(extra, "color", &f, NULL), 0);
    assert_int_equal(avro_value_set_enum(&f, 1), 0);
    assert_int_equal(avro_value_get_by_name(extra, "flag", &f, NULL), 0);
    assert_int_equal(avro_value_set_boolean(&f, 1), 0);
    assert_int_equal(avro_value_get_by_name(extra, "ratio", &f, NULL), 0);
    assert_int_equal(avro_value_set_float(&f, 0.5f), 0);
    assert_int_equal(avro_value_get_by_name(extra, "nothing", &f, NULL), 0);
    assert_int_equal(avro_value_set_null(&f), 0);
    assert_int_equal(avro_value_get_by_name(extra, "child", &f, NULL), 0);
    if (depth == 0) {
        assert_int_equal(avro_value_set_branch(&f, 1, &br), 0);
        fill_extra(&br, depth + 1);
    } else {
        assert_int_equal(avro_value_set_branch(&f, 0, &br), 0);
        assert_int_equal(avro_value_set_null(&br), 0);
    }
}

static void test_writer_with_unknown_fields_is_skipped(void **state) {
    (void)state;
    char err[512] = "";
    kj_writer *w = kj_codec_writer_new(v3_test_schema, err, sizeof(err));
    if (!w) fail_msg("writer: %s", err);
    assert_true(kj_writer_fingerprint(w) != kj_schema_fingerprint());

    avro_job j;
    avro_job_new(&j, v3_test_schema);
    avro_set_common(&j.value, 123456);
    avro_value_t f, e;
    assert_int_equal(avro_value_get_by_name(&j.value, "extra", &f, NULL), 0);
    fill_extra(&f, 0);
    assert_int_equal(avro_value_get_by_name(&j.value, "priority", &f, NULL), 0);
    assert_int_equal(avro_value_set_int(&f, -7), 0);
    assert_int_equal(avro_value_get_by_name(&j.value, "meta", &f, NULL), 0);
    assert_int_equal(avro_value_add(&f, "k", &e, NULL, NULL), 0);
    assert_int_equal(avro_value_set_string(&e, "v"), 0);
    assert_int_equal(avro_value_get_by_name(&j.value, "nulls", &f, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(avro_value_append(&f, &e, NULL), 0);
    uint8_t buf[2048];
    size_t n = t_avro_write(&j.value, buf, sizeof(buf));

    kj_job_record r;
    assert_int_equal(kj_job_decode_body(w, buf, buf, n, &r, err, sizeof(err)), 0);
    expect_avro_common(&r, 123456);
    assert_int_equal(r.meta_count, 1);
    assert_string_equal(r.meta[0].key, "k");
    assert_string_equal(r.meta[0].value, "v");
    kj_job_record_free(&r);

    /* Every truncation of it is rejected too (skipping is bounds-checked as well). */
    for (size_t len = 0; len < n; len++) {
        memset(&r, 0, sizeof(r));
        assert_int_equal(kj_job_decode_body(w, buf, buf, len, &r, err, sizeof(err)), -1);
        assert_null(r.storage_);
    }
    /* The same fingerprint is unknown to the decoder: only schemas/ versions are. */
    tbuf t = {.n = 0};
    t_so_header(&t, kj_writer_fingerprint(w));
    t_raw(&t, buf, n);
    char hex[32];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)kj_writer_fingerprint(w));
    expect_reject(t.b, t.n, hex);
    avro_job_free(&j);
    kj_writer_free(w);
}

static void test_incompatible_writers_are_refused(void **state) {
    (void)state;
    static const char *const bad[] = {
        /* created_at as string cannot become a long */
        "{\"type\":\"record\",\"name\":\"Job\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},"
        "{\"name\":\"type\",\"type\":\"string\"},{\"name\":\"payload\",\"type\":\"bytes\"},"
        "{\"name\":\"created_at\",\"type\":\"string\"}]}",
        /* payload missing, and the reader has no default for it */
        "{\"type\":\"record\",\"name\":\"Job\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},"
        "{\"name\":\"type\",\"type\":\"string\"},{\"name\":\"created_at\",\"type\":\"long\"}]}",
        /* another record name */
        "{\"type\":\"record\",\"name\":\"Other\",\"fields\":[]}",
        /* not a record */
        "\"string\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        kj_writer *w = kj_codec_writer_new(bad[i], err, sizeof(err));
        if (w) print_error("schema %zu was accepted\n", i);
        assert_null(w);
        assert_true(strlen(err) > 0);
    }
}

/* Writer unions resolve per message; string written as bytes and vice versa are promoted. */
static void test_writer_unions_and_promotions(void **state) {
    (void)state;
    const char *schema = "{\"type\":\"record\",\"name\":\"Job\",\"fields\":["
                         "{\"name\":\"id\",\"type\":[\"null\",\"string\"]},"
                         "{\"name\":\"type\",\"type\":\"bytes\"},"
                         "{\"name\":\"payload\",\"type\":\"string\"},"
                         "{\"name\":\"created_at\",\"type\":[\"int\",\"long\"]},"
                         "{\"name\":\"meta\",\"type\":{\"type\":\"map\",\"values\":\"bytes\"}}]}";
    char err[512] = "";
    kj_writer *w = kj_codec_writer_new(schema, err, sizeof(err));
    if (!w) fail_msg("writer: %s", err);
    tbuf t = {.n = 0};
    t_long(&t, 1); /* id: branch string */
    t_str(&t, "u1");
    t_str(&t, "kjobs.noop");
    t_str(&t, "p");
    t_long(&t, 1); /* created_at: branch long */
    t_long(&t, INT64_C(1) << 40);
    t_long(&t, 1);
    t_str(&t, "k");
    t_str(&t, "v");
    t_long(&t, 0);
    kj_job_record r;
    assert_int_equal(kj_job_decode_body(w, t.b, t.b, t.n, &r, err, sizeof(err)), 0);
    assert_string_equal(r.id, "u1");
    assert_string_equal(r.type, "kjobs.noop");
    assert_true(r.created_at == INT64_C(1) << 40);
    assert_string_equal(r.meta[0].value, "v");
    kj_job_record_free(&r);

    t.n = 0;
    t_long(&t, 0); /* id: branch null — the reader needs a string */
    t_str(&t, "kjobs.noop");
    t_str(&t, "p");
    t_long(&t, 0);
    t_long(&t, 7);
    t_long(&t, 0);
    assert_int_equal(kj_job_decode_body(w, t.b, t.b, t.n, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "null"));
    assert_null(r.storage_);
    kj_writer_free(w);
}

/* Negative block counts (count, then the block's byte size) as the spec allows. */
static void test_negative_map_block_count(void **state) {
    (void)state;
    tbuf t = {.n = 0};
    t_head(&t);
    t_long(&t, -2);
    t_long(&t, 8); /* two entries of two one-char strings: (02 61)(02 62) (02 63)(02 64) */
    t_str(&t, "a");
    t_str(&t, "b");
    t_str(&t, "c");
    t_str(&t, "d");
    t_long(&t, 0);
    kj_job_record r;
    char err[256] = "";
    assert_int_equal(kj_job_decode(t.b, t.n, &r, NULL, err, sizeof(err)), 0);
    assert_int_equal(r.meta_count, 2);
    assert_string_equal(r.meta[1].key, "c");
    assert_string_equal(r.meta[1].value, "d");
    kj_job_record_free(&r);
}

/*
 * Confluent Schema Registry framing (00, big-endian schema id, Avro body): kj_job_decode names
 * it (the codec alone cannot read it: the schema is in a registry), kj_job_decode_ex hands the
 * id back; the two ambiguous readings of a leading 00 byte are decided as documented (a plain
 * job always wins).
 */
static void test_confluent_framing_named(void **state) {
    (void)state;
    static const uint8_t body[] = {0x02, 0x61, 0x02, 0x74, 0x04, 0x00, 0xff,
                                   0x01, 0x02, 0x02, 0x6b, 0x02, 0x76, 0x00}; /* id "a", type "t" */
    uint8_t framed[5 + sizeof(body)] = {0x00, 0x00, 0x00, 0x10, 0x92};        /* schema id 4242 */
    memcpy(framed + 5, body, sizeof(body));
    kj_job_record r;
    char err[512] = "";
    assert_int_equal(kj_job_decode(framed, sizeof(framed), &r, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "Confluent Schema Registry framing, schema id 4242, but "
                             "kafka.schema_registry_url is not set");
    kj_job_record_free(&r);
    uint32_t id = 0;
    kj_encoding enc = KJ_ENCODING_BINARY;
    assert_int_equal(kj_job_decode_ex(framed, sizeof(framed), &r, &enc, &id, err, sizeof(err)),
                     KJ_DECODE_CONFLUENT);
    assert_int_equal(id, 4242);
    assert_int_equal(enc, KJ_ENCODING_CONFLUENT);
    assert_null(r.storage_);

    /* ambiguous 1: a plain job whose id is "" starts with 00 too: decoded, not misnamed */
    static const uint8_t empty_id[] = {0x00, 0x02, 0x74, 0x00, 0x02, 0x00};
    enc = KJ_ENCODING_SINGLE_OBJECT;
    assert_int_equal(kj_job_decode(empty_id, sizeof(empty_id), &r, &enc, err, sizeof(err)), 0);
    assert_string_equal(r.id, "");
    assert_string_equal(r.type, "t");
    assert_int_equal(enc, KJ_ENCODING_BINARY);
    kj_job_record_free(&r);

    /* ambiguous 2: 00 + 4 bytes + something that is no job of the current schema: framed (its
     * writer schema may differ), and the plain reading's error is kept in parentheses */
    static const uint8_t neither[] = {0x00, 0x00, 0x00, 0x10, 0x92, 0xff, 0xff, 0xff};
    assert_int_equal(kj_job_decode_ex(neither, sizeof(neither), &r, NULL, &id, err, sizeof(err)),
                     KJ_DECODE_CONFLUENT);
    assert_non_null(strstr(err, "schema id 4242, but kafka.schema_registry_url is not set (as "
                                "plain Avro binary: at byte"));

    /* short values are never framed: 4 bytes cannot hold the header */
    static const uint8_t shorty[] = {0x00, 0x00, 0x00, 0x01};
    assert_int_equal(kj_job_decode_ex(shorty, sizeof(shorty), &r, NULL, &id, err, sizeof(err)), -1);
    assert_int_equal(kj_confluent_header_parse(shorty, sizeof(shorty), &id), -1);
    assert_int_equal(kj_confluent_header_parse(framed, 5, &id), 0);
    assert_int_equal(id, 4242);
    static const uint8_t magic1[] = {0x01, 0x00, 0x00, 0x00, 0x01};
    assert_int_equal(kj_confluent_header_parse(magic1, sizeof(magic1), &id), -1);
    assert_int_equal(kj_confluent_header_parse(NULL, 0, &id), -1);
}

/* A registry's writer schema (a later job version with an extra field, fields reordered) is
 * resolved against job.avsc and decodes framed bodies; one that does not resolve is refused
 * with the reason. */
static void test_confluent_writer_resolution(void **state) {
    (void)state;
    static const char *writer =
        "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
        "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
        "{\"name\":\"priority\",\"type\":\"int\",\"default\":0},"
        "{\"name\":\"payload\",\"type\":\"bytes\"},"
        "{\"name\":\"created_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}"
        "}]}";
    char err[512] = "";
    kj_writer *w = kj_writer_resolve(writer, err, sizeof(err));
    if (!w) fail_msg("writer not resolved: %s", err);
    /* 00 | id 7 | "a" "t" priority=5 payload "p" created_at=1 (no meta: the default {}) */
    static const uint8_t v[] = {0x00, 0x00, 0x00, 0x00, 0x07, 0x02, 'a',
                                0x02, 't',  0x0a, 0x02, 'p',  0x02};
    kj_job_record r;
    assert_int_equal(kj_job_decode_confluent(w, v, sizeof(v), &r, err, sizeof(err)), 0);
    assert_string_equal(r.id, "a");
    assert_string_equal(r.type, "t");
    assert_int_equal(r.payload_len, 1);
    assert_int_equal(r.created_at, 1);
    assert_int_equal(r.meta_count, 0);
    kj_job_record_free(&r);
    /* truncated body: an error with a byte offset counted from the value's first byte */
    assert_int_equal(kj_job_decode_confluent(w, v, sizeof(v) - 1, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "at byte 12"));
    /* not framed at all */
    assert_int_equal(kj_job_decode_confluent(w, v + 1, sizeof(v) - 1, &r, err, sizeof(err)), -1);
    kj_writer_free(w);

    assert_null(kj_writer_resolve("{\"type\":\"record\",\"name\":\"Order\",\"fields\":[]}", err,
                                  sizeof(err)));
    assert_non_null(strstr(err, "not a record of the same name"));
    assert_null(kj_writer_resolve("{\"type\":\"record\",\"name\":\"Job\",\"fields\":["
                                  "{\"name\":\"id\",\"type\":\"int\"}]}",
                                  err, sizeof(err)));
    assert_non_null(strstr(err, "field \"id\""));
    assert_null(kj_writer_resolve("not json", err, sizeof(err)));
    assert_non_null(strstr(err, "not valid JSON"));
}

/* Appends the definition of record R<level>: 100 fields, the first defining R<level-1>, the
 * others naming it; R0's fields are all null. */
static void append_fanout_record(char *buf, size_t cap, size_t *len, int level) {
    *len += (size_t)snprintf(buf + *len, cap - *len,
                             "{\"type\":\"record\",\"name\":\"R%d\",\"fields\":[", level);
    for (int f = 0; f < 100; f++) {
        *len += (size_t)snprintf(buf + *len, cap - *len,
                                 "%s{\"name\":\"f%d\",\"type\":", f ? "," : "", f);
        if (level == 0)
            *len += (size_t)snprintf(buf + *len, cap - *len, "\"null\"");
        else if (f == 0)
            append_fanout_record(buf, cap, len, level - 1);
        else
            *len += (size_t)snprintf(buf + *len, cap - *len, "\"R%d\"", level - 1);
        *len += (size_t)snprintf(buf + *len, cap - *len, "}");
    }
    *len += (size_t)snprintf(buf + *len, cap - *len, "]}");
}

/* A small registry schema whose extra field is six levels of records of 100 null fields each
 * (10^12 zero-byte values, 20 kB of JSON): skipping it must not walk them (it hung a worker
 * thread for good before kj_skip took zero-size types in one step). */
static void test_confluent_zero_size_fanout_is_skipped_at_once(void **state) {
    (void)state;
    size_t cap = 64 * 1024, len = 0;
    char *json = malloc(cap);
    assert_non_null(json);
    len += (size_t)snprintf(
        json, cap,
        "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
        "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
        "{\"name\":\"payload\",\"type\":\"bytes\"},"
        "{\"name\":\"created_at\",\"type\":\"long\"},{\"name\":\"x\",\"type\":");
    append_fanout_record(json, cap, &len, 5);
    len += (size_t)snprintf(json + len, cap - len, "}]}");
    assert_true(len < cap);
    char err[512] = "";
    kj_writer *w = kj_writer_resolve(json, err, sizeof(err));
    if (!w) fail_msg("writer not resolved: %s", err);
    /* 00 | id 9 | "a" "t" payload "p" created_at=1, x: zero bytes */
    static const uint8_t v[] = {0x00, 0x00, 0x00, 0x00, 0x09, 0x02,
                                'a',  0x02, 't',  0x02, 'p',  0x02};
    kj_job_record r;
    assert_int_equal(kj_job_decode_confluent(w, v, sizeof(v), &r, err, sizeof(err)), 0);
    assert_string_equal(r.id, "a");
    kj_job_record_free(&r);
    kj_writer_free(w);
    free(json);
}

/* --- hostile input ------------------------------------------------------------------------ */

static void test_every_truncation_is_rejected(void **state) {
    (void)state;
    for (int enc = 0; enc < 2; enc++) {
        kj_meta_entry meta[] = {{"traceparent", "00-abc"}, {"x", "y"}};
        kj_job_record in = {.id = "job-1",
                            .type = "kjobs.noop",
                            .payload = (const uint8_t *)"hello",
                            .payload_len = 5,
                            .created_at = 1700000000000,
                            .meta = meta,
                            .meta_count = 2};
        uint8_t *buf;
        size_t len;
        char err[256];
        assert_int_equal(kj_job_encode(&in, (kj_encoding)enc, &buf, &len, err, sizeof(err)), 0);
        for (size_t n = 0; n < len; n++) {
            /* copy so ASan catches any read past the truncated length */
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, buf, n);
            expect_reject(cut, n, NULL);
            free(cut);
        }
        free(buf);
    }
}

static void test_hostile_lengths_and_counts(void **state) {
    (void)state;
    tbuf t;

    t.n = 0; /* negative id length */
    t_long(&t, -5);
    t_raw(&t, "abcdefgh", 8);
    expect_reject(t.b, t.n, "negative length -5");

    t.n = 0; /* huge id length */
    t_long(&t, INT64_MAX);
    t_raw(&t, "abc", 3);
    expect_reject(t.b, t.n, "exceeds the 3 remaining bytes");

    t.n = 0; /* huge payload length */
    t_str(&t, "a");
    t_str(&t, "b");
    t_long(&t, INT64_C(1) << 50);
    expect_reject(t.b, t.n, "exceeds");

    t.n = 0; /* huge map count */
    t_head(&t);
    t_long(&t, INT64_C(1) << 40);
    t_str(&t, "k");
    t_str(&t, "v");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "map block count");

    t.n = 0; /* huge negative map count */
    t_head(&t);
    t_long(&t, -(INT64_C(1) << 40));
    t_long(&t, 4);
    t_str(&t, "k");
    t_str(&t, "v");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "map block count");

    t.n = 0; /* INT64_MIN block count: zig-zag 2^64-1, ten bytes */
    t_head(&t);
    for (int i = 0; i < 9; i++)
        t_byte(&t, 0xff);
    t_byte(&t, 0x01);
    expect_reject(t.b, t.n, "out of range");

    t.n = 0; /* negative count whose byte size exceeds the message */
    t_head(&t);
    t_long(&t, -1);
    t_long(&t, 1000);
    t_str(&t, "k");
    t_str(&t, "v");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "block byte size");

    t.n = 0; /* negative count whose byte size does not match the entries */
    t_head(&t);
    t_long(&t, -1);
    t_long(&t, 3);
    t_str(&t, "k");
    t_str(&t, "v");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "does not match");

    t.n = 0; /* 11-byte varint */
    for (int i = 0; i < 10; i++)
        t_byte(&t, 0x80);
    t_byte(&t, 0x00);
    expect_reject(t.b, t.n, "64 bits");

    t.n = 0; /* 10th varint byte too big */
    for (int i = 0; i < 9; i++)
        t_byte(&t, 0xff);
    t_byte(&t, 0x02);
    expect_reject(t.b, t.n, "64 bits");

    t.n = 0; /* trailing garbage */
    t_valid_job(&t);
    t_byte(&t, 0);
    expect_reject(t.b, t.n, "trailing");

    t.n = 0; /* NUL inside the id */
    t_bytes(&t, "a\0b", 3);
    t_str(&t, "t");
    t_str(&t, "");
    t_long(&t, 0);
    t_long(&t, 0);
    expect_reject(t.b, t.n, "NUL");

    t.n = 0; /* invalid UTF-8 in type */
    t_str(&t, "a");
    t_str(&t, "\xc3\x28");
    t_str(&t, "");
    t_long(&t, 0);
    t_long(&t, 0);
    expect_reject(t.b, t.n, "UTF-8");

    t.n = 0; /* NUL and a bad byte past the validator's 8-byte ASCII words: found, and where */
    t_bytes(&t, "abcdefghijklm\0o", 16);
    t_str(&t, "t");
    t_str(&t, "");
    t_long(&t, 0);
    t_long(&t, 0);
    expect_reject(t.b, t.n, "NUL character at its byte 13");
    t.n = 0;
    t_str(&t, "a");
    t_str(&t, "email.send.with.a.long.type\xff");
    t_str(&t, "");
    t_long(&t, 0);
    t_long(&t, 0);
    expect_reject(t.b, t.n, "not valid UTF-8 at its byte 27");

    t.n = 0; /* overlong '/' in a meta key */
    t_head(&t);
    t_long(&t, 1);
    t_str(&t, "\xc0\xaf");
    t_str(&t, "v");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "meta key");

    t.n = 0; /* UTF-16 surrogate in a meta value */
    t_head(&t);
    t_long(&t, 1);
    t_str(&t, "k");
    t_str(&t, "\xed\xa0\x80");
    t_long(&t, 0);
    expect_reject(t.b, t.n, "meta value");

    t.n = 0; /* unknown fingerprint, named in hex */
    t_so_header(&t, UINT64_C(0x0123456789abcdef));
    t_valid_job(&t);
    expect_reject(t.b, t.n, "0x0123456789abcdef");

    t.n = 0; /* single-object marker but no room for the fingerprint */
    t_byte(&t, 0xC3);
    t_byte(&t, 0x01);
    t_byte(&t, 0x00);
    expect_reject(t.b, t.n, "single-object header");

    expect_reject("", 0, "empty");

    t.n = 0; /* a valid job is accepted by the same helpers (the cases above are not vacuous) */
    t_valid_job(&t);
    kj_job_record r;
    char err[256] = "";
    assert_int_equal(kj_job_decode(t.b, t.n, &r, NULL, err, sizeof(err)), 0);
    assert_string_equal(r.meta[0].value, "00-abc");
    kj_job_record_free(&r);
}

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t rng(void) { /* xorshift64 */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Random bytes and random mutations of a valid job: never a crash; -1 always with a reason. */
static void test_random_and_mutated_input(void **state) {
    (void)state;
    tbuf valid = {.n = 0};
    t_so_header(&valid, kj_schema_fingerprint());
    t_valid_job(&valid);
    size_t ok = 0, rejected = 0;
    for (int iter = 0; iter < 40000; iter++) {
        uint8_t buf[128];
        size_t n;
        if (iter % 2) {
            n = rng() % sizeof(buf);
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)rng();
        } else {
            n = valid.n;
            memcpy(buf, valid.b, n);
            int flips = 1 + (int)(rng() % 4);
            for (int k = 0; k < flips; k++)
                buf[rng() % n] = (uint8_t)rng();
            if (rng() % 4 == 0) n = rng() % n;
        }
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        kj_job_record r;
        char err[256] = "";
        if (kj_job_decode(copy, n, &r, NULL, err, sizeof(err)) == 0) {
            assert_non_null(r.id);
            assert_non_null(r.storage_);
            kj_job_record_free(&r);
            ok++;
        } else {
            assert_true(strlen(err) > 0);
            assert_null(r.storage_);
            rejected++;
        }
        free(copy);
    }
    assert_true(rejected > 0);
    assert_true(ok > 0); /* some mutations (e.g. inside the payload) stay valid */
}

/* --- concurrency -------------------------------------------------------------------------- */

typedef struct thread_arg {
    const uint8_t *bin, *so;
    size_t bin_len, so_len;
    int failures;
} thread_arg;

static void *decode_loop(void *p) {
    thread_arg *a = p;
    for (int i = 0; i < 20000; i++) {
        kj_job_record r;
        int odd = i & 1;
        if (kj_job_decode(odd ? a->so : a->bin, odd ? a->so_len : a->bin_len, &r, NULL, NULL, 0) !=
                0 ||
            strcmp(r.id, "job-1") != 0 || r.meta_count != 1)
            a->failures++;
        kj_job_record_free(&r);
        uint8_t bad[3] = {0xC3, 0x01, 0x00};
        if (kj_job_decode(bad, sizeof(bad), &r, NULL, NULL, 0) != -1) a->failures++;
    }
    return NULL;
}

static void test_concurrent_decoding(void **state) {
    (void)state;
    tbuf bin = {.n = 0}, so = {.n = 0};
    t_valid_job(&bin);
    t_so_header(&so, kj_schema_fingerprint());
    t_valid_job(&so);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){bin.b, so.b, bin.n, so.n, 0};
        assert_int_equal(pthread_create(&th[i], NULL, decode_loop, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_encoding_names),
        cmocka_unit_test(test_round_trip_binary),
        cmocka_unit_test(test_round_trip_single_object),
        cmocka_unit_test(test_encoding_bytes_exact),
        cmocka_unit_test(test_encode_rejects_bad_input),
        cmocka_unit_test(test_avro_c_written_bytes_decode),
        cmocka_unit_test(test_our_bytes_read_by_avro_c),
        cmocka_unit_test(test_v1_single_object_resolves_with_default_meta),
        cmocka_unit_test(test_writer_with_unknown_fields_is_skipped),
        cmocka_unit_test(test_incompatible_writers_are_refused),
        cmocka_unit_test(test_writer_unions_and_promotions),
        cmocka_unit_test(test_negative_map_block_count),
        cmocka_unit_test(test_confluent_framing_named),
        cmocka_unit_test(test_confluent_writer_resolution),
        cmocka_unit_test(test_every_truncation_is_rejected),
        cmocka_unit_test(test_hostile_lengths_and_counts),
        cmocka_unit_test(test_random_and_mutated_input),
        cmocka_unit_test(test_concurrent_decoding),
        cmocka_unit_test(test_confluent_zero_size_fanout_is_skipped_at_once),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
