/*
 * test_fingerprint.c — Parsing Canonical Form and CRC-64-AVRO against PUBLISHED vectors.
 *
 * Every vector below is copied (not computed by us) from the Apache Avro repository:
 *   apache/avro, share/test/data/schema-tests.txt (stored commit
 *   0ea74a36cebb2e5fbc37e599814a05c33cb7d424), cases 000-033: "<<INPUT", "<<canonical" and
 *   "<<fingerprint" lines. The fingerprints there are Java `long`s (signed decimal) of the
 *   same CRC-64-AVRO; the file notes Java's slow direct implementation cross-checks them.
 * Cases without a fingerprint line only assert the canonical form (the file gives none).
 * The CRC-64 EMPTY constant comes from the specification's reference code: apache/avro,
 * doc/content/en/docs/++version++/Specification/_index.md, "Schema Fingerprints"
 * (`static long EMPTY = 0xc15d213aa4d7a795L;`, returned unchanged for zero input bytes).
 *
 * The vectors are embedded: nothing is fetched at run time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "schemas/codec.h"

typedef struct pcf_vector {
    const char *source; /* case number in schema-tests.txt */
    const char *input;
    const char *canonical;
    int has_fingerprint;
    int64_t fingerprint; /* as printed in the file (Java long) */
} pcf_vector;

/* All from apache/avro share/test/data/schema-tests.txt (commit 0ea74a36), case numbers given. */
static const pcf_vector vectors[] = {
    /* schema-tests.txt // 000 */
    {"000", "\"null\"", "\"null\"", 1, INT64_C(7195948357588979594)},
    /* schema-tests.txt // 001 */
    {"001", "{\"type\":\"null\"}", "\"null\"", 0, 0},
    /* schema-tests.txt // 002 */
    {"002", "\"boolean\"", "\"boolean\"", 1, INT64_C(-6970731678124411036)},
    /* schema-tests.txt // 003 */
    {"003", "{\"type\":\"boolean\"}", "\"boolean\"", 0, 0},
    /* schema-tests.txt // 004 */
    {"004", "\"int\"", "\"int\"", 1, INT64_C(8247732601305521295)},
    /* schema-tests.txt // 005 */
    {"005", "{\"type\":\"int\"}", "\"int\"", 0, 0},
    /* schema-tests.txt // 006 */
    {"006", "\"long\"", "\"long\"", 1, INT64_C(-3434872931120570953)},
    /* schema-tests.txt // 007 */
    {"007", "{\"type\":\"long\"}", "\"long\"", 0, 0},
    /* schema-tests.txt // 008 */
    {"008", "\"float\"", "\"float\"", 1, INT64_C(5583340709985441680)},
    /* schema-tests.txt // 009 */
    {"009", "{\"type\":\"float\"}", "\"float\"", 0, 0},
    /* schema-tests.txt // 010 */
    {"010", "\"double\"", "\"double\"", 1, INT64_C(-8181574048448539266)},
    /* schema-tests.txt // 011 */
    {"011", "{\"type\":\"double\"}", "\"double\"", 0, 0},
    /* schema-tests.txt // 012 */
    {"012", "\"bytes\"", "\"bytes\"", 1, INT64_C(5746618253357095269)},
    /* schema-tests.txt // 013 */
    {"013", "{\"type\":\"bytes\"}", "\"bytes\"", 0, 0},
    /* schema-tests.txt // 014 */
    {"014", "\"string\"", "\"string\"", 1, INT64_C(-8142146995180207161)},
    /* schema-tests.txt // 015 */
    {"015", "{\"type\":\"string\"}", "\"string\"", 0, 0},
    /* schema-tests.txt // 016 */
    {"016", "[  ]", "[]", 1, INT64_C(-1241056759729112623)},
    /* schema-tests.txt // 017 */
    {"017", "[ \"int\"  ]", "[\"int\"]", 1, INT64_C(-5232228896498058493)},
    /* schema-tests.txt // 018 */
    {"018", "[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]", 1,
     INT64_C(5392556393470105090)},
    /* schema-tests.txt // 019 */
    {"019", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    /* schema-tests.txt // 020 */
    {"020", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(5916914534497305771)},
    /* schema-tests.txt // 021 */
    {"021", "{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4616218487480524110)},
    /* schema-tests.txt // 022 */
    {"022", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"Useful info\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    /* schema-tests.txt // 023 */
    {"023", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    /* schema-tests.txt // 024 */
    {"024",
     "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", "
     "\"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    /* schema-tests.txt // 025 */
    {"025",
     "{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], \"type\":\"record\", "
     "\"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}",
     1, INT64_C(7843277075252814651)},
    /* schema-tests.txt // 026 (multi-line INPUT, newlines kept) */
    {"026",
     "{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", "
     "\"default\":\"true\"},\n"
     "            {\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\",\"type\":\"int\"}],\n"
     "  \"type\":\"record\", \"name\":\"foo\"\n"
     "}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},{"
     "\"name\":\"f2\",\"type\":\"int\"}]}",
     1, INT64_C(-4860222112080293046)},
    /* schema-tests.txt // 027 */
    {"027", "{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", 1, INT64_C(-6342190197741309591)},
    /* schema-tests.txt // 028 */
    {"028",
     "{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"symbols\":[\"A1\", \"A2\"]}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"A2\"]}", 1,
     INT64_C(-4448647247586288245)},
    /* schema-tests.txt // 029 (the uncommented INPUT line) */
    {"029", "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}",
     "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", 1, INT64_C(1756455273707447556)},
    /* schema-tests.txt // 030 */
    {"030",
     "{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"size\":32}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}", 1, INT64_C(-3064184465700546786)},
    /* schema-tests.txt // 031 */
    {"031", "{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}",
     "{\"type\":\"array\",\"items\":\"null\"}", 1, INT64_C(-589620603366471059)},
    /* schema-tests.txt // 032 */
    {"032", "{ \"values\":\"string\", \"type\":\"map\"}",
     "{\"type\":\"map\",\"values\":\"string\"}", 1, INT64_C(-8732877298790414990)},
    /* schema-tests.txt // 033 (multi-line INPUT, newlines kept) */
    {"033",
     "  {\"name\":\"PigValue\",\"type\":\"record\",\n"
     "   \"fields\":[{\"name\":\"value\", \"type\":[\"null\", \"int\", \"long\", \"PigValue\"]}]}",
     "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":["
     "\"null\",\"int\",\"long\",\"PigValue\"]}]}",
     1, INT64_C(-1759257747318642341)},
};

static void test_canonical_forms_match_published_vectors(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const pcf_vector *v = &vectors[i];
        char err[256] = "";
        char *pcf = NULL;
        int rc = kj_schema_canonical_form(v->input, &pcf, err, sizeof(err));
        if (rc != 0 || strcmp(pcf, v->canonical) != 0)
            print_error("case %s: rc=%d err=%s\n got: %s\nwant: %s\n", v->source, rc, err,
                        pcf ? pcf : "(null)", v->canonical);
        assert_int_equal(rc, 0);
        assert_string_equal(pcf, v->canonical);
        free(pcf);
    }
}

static void test_fingerprints_match_published_vectors(void **state) {
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const pcf_vector *v = &vectors[i];
        if (!v->has_fingerprint) continue;
        /* The published fingerprint is of the published canonical form. */
        uint64_t fp = kj_crc64_avro(v->canonical, strlen(v->canonical));
        if (fp != (uint64_t)v->fingerprint)
            print_error("case %s: got %lld want %lld\n", v->source, (long long)(int64_t)fp,
                        (long long)v->fingerprint);
        assert_true(fp == (uint64_t)v->fingerprint);
        checked++;
    }
    assert_true(checked >= 25);
}

/* Spec reference code: fingerprint64 of no bytes is EMPTY (Specification, "Schema Fingerprints").
 */
static void test_crc64_of_empty_input_is_spec_empty(void **state) {
    (void)state;
    assert_true(kj_crc64_avro("", 0) == UINT64_C(0xc15d213aa4d7a795));
}

/* Same inputs, same fingerprint; one changed byte, another one. Guards against an
 * implementation that ignores part of its input. */
static void test_crc64_depends_on_every_byte(void **state) {
    (void)state;
    char buf[64];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)('a' + i % 26);
    uint64_t base = kj_crc64_avro(buf, sizeof(buf));
    assert_true(base == kj_crc64_avro(buf, sizeof(buf)));
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 1;
        assert_true(kj_crc64_avro(buf, sizeof(buf)) != base);
        buf[i] ^= 1;
    }
}

/*
 * The job schema's canonical form, written out by hand from the specification's rules
 * (doc, logicalType and default stripped; namespace folded into the full name; fields in order).
 */
static const char job_pcf_by_hand[] =
    "{\"name\":\"kjobs.Job\",\"type\":\"record\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},"
    "{\"name\":\"type\",\"type\":\"string\"},"
    "{\"name\":\"payload\",\"type\":\"bytes\"},"
    "{\"name\":\"created_at\",\"type\":\"long\"},"
    "{\"name\":\"meta\",\"type\":{\"type\":\"map\",\"values\":\"string\"}}]}";

static void test_job_schema_canonical_and_fingerprint(void **state) {
    (void)state;
    char err[256] = "";
    assert_int_equal(kj_codec_init(err, sizeof(err)), 0);
    assert_string_equal(kj_schema_canonical(), job_pcf_by_hand);
    assert_true(kj_schema_fingerprint() == kj_crc64_avro(job_pcf_by_hand, strlen(job_pcf_by_hand)));
    /* The embedded text is the file in the source tree, byte for byte. */
    FILE *f = fopen(KJOBS_SOURCE_DIR "/schemas/job.avsc", "rb");
    assert_non_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_string_equal(kj_schema_json(), text);
}

static void test_canonical_form_rejects_bad_schemas(void **state) {
    (void)state;
    static const char *const bad[] = {
        "",                                                        /* not JSON */
        "\"nosuchtype\"",                                          /* unknown name */
        "{\"type\":\"record\",\"fields\":[]}",                     /* record without name */
        "{\"type\":\"record\",\"name\":\"r\"}",                    /* record without fields */
        "{\"type\":\"enum\",\"name\":\"e\",\"symbols\":[\"1x\"]}", /* bad symbol */
        "{\"type\":\"fixed\",\"name\":\"f\",\"size\":-1}",         /* negative size */
        "{\"type\":\"record\",\"name\":\"bad-name\",\"fields\":[]}",
        "[[\"int\"]]", /* union inside union */
        "{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
        "{\"name\":\"a\",\"type\":\"long\"}]}", /* duplicate field */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        char *out = (char *)"untouched";
        assert_int_equal(kj_schema_canonical_form(bad[i], &out, err, sizeof(err)), -1);
        assert_null(out);
        assert_true(strlen(err) > 0);
    }
}

/* Nested named types take the enclosing namespace; a second use is printed by name only. */
static void test_canonical_form_nested_names(void **state) {
    (void)state;
    const char *in =
        "{\"type\":\"record\",\"name\":\"Outer\",\"namespace\":\"a.b\",\"fields\":["
        "{\"name\":\"x\",\"type\":{\"type\":\"fixed\",\"name\":\"F\",\"size\":4}},"
        "{\"name\":\"y\",\"type\":\"F\"},"
        "{\"name\":\"z\",\"type\":{\"type\":\"enum\",\"name\":\"c.E\",\"symbols\":[\"A\"]}},"
        "{\"name\":\"w\",\"type\":{\"type\":\"array\",\"items\":\"c.E\"}}]}";
    const char *want =
        "{\"name\":\"a.b.Outer\",\"type\":\"record\",\"fields\":["
        "{\"name\":\"x\",\"type\":{\"name\":\"a.b.F\",\"type\":\"fixed\",\"size\":4}},"
        "{\"name\":\"y\",\"type\":\"a.b.F\"},"
        "{\"name\":\"z\",\"type\":{\"name\":\"c.E\",\"type\":\"enum\",\"symbols\":[\"A\"]}},"
        "{\"name\":\"w\",\"type\":{\"type\":\"array\",\"items\":\"c.E\"}}]}";
    char err[256] = "";
    char *out = NULL;
    assert_int_equal(kj_schema_canonical_form(in, &out, err, sizeof(err)), 0);
    assert_string_equal(out, want);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_forms_match_published_vectors),
        cmocka_unit_test(test_fingerprints_match_published_vectors),
        cmocka_unit_test(test_crc64_of_empty_input_is_spec_empty),
        cmocka_unit_test(test_crc64_depends_on_every_byte),
        cmocka_unit_test(test_job_schema_canonical_and_fingerprint),
        cmocka_unit_test(test_canonical_form_rejects_bad_schemas),
        cmocka_unit_test(test_canonical_form_nested_names),
    };
    return cmocka_run_group_tests_name("fingerprint", tests, NULL, NULL);
}
