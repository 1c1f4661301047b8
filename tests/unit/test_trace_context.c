/*
 * tests/unit/test_trace_context.c — the W3C trace context parser (processor/trace_context.c)
 * as untrusted input. Vectors are the examples of W3C Trace Context Level 1 (Recommendation,
 * 23 November 2021, https://www.w3.org/TR/trace-context-1/): §3.1 (the Congo/Rojo headers),
 * §3.2.3 (the two traceparent examples), §3.3.1.2 (the list example), §3.3.1.4 (the
 * duplicated-key value the spec says must not be sent), §3.3.2 (tracestate examples); plus
 * one case per rule of §3.2.2 (version, trace-id, parent-id, flags), §3.2.4 (higher versions),
 * §3.3.1.1-§3.3.1.3.2 (list, members, keys, values), §3.3.1.5 (truncation), the carriers
 * (record headers, then meta) and the public accessors with the invalid-value counter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "processor/handlers.h"
#include "processor/metrics.h"
#include "processor/trace_context.h"

#define TP_SAMPLED     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" /* §3.2.3 */
#define TP_NOT_SAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00" /* §3.2.3 */
#define TP_CONGO       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" /* §3.1 */

static bool tp_ok(const char *v, char out[KJ_TRACEPARENT_LEN + 1]) {
    const char *why = NULL;
    bool ok = kj_traceparent_parse(v, strlen(v), out, &why);
    if (!ok) assert_non_null(why);
    return ok;
}

static void test_traceparent_spec_examples(void **state) {
    (void)state;
    char out[KJ_TRACEPARENT_LEN + 1];
    const char *valid[] = {TP_SAMPLED, TP_NOT_SAMPLED, TP_CONGO,
                           "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",  /* §3.1 */
                           "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"}; /* §3.1 */
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        assert_true(tp_ok(valid[i], out));
        assert_string_equal(out, valid[i]); /* version 00 is handed on unchanged */
    }
    /* other flags are kept on version 00 (§3.2.2.5: a bit field, not ours to change) */
    assert_true(tp_ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", out));
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09");
}

static void test_traceparent_invalid(void **state) {
    (void)state;
    char out[KJ_TRACEPARENT_LEN + 1];
    const char *bad[] = {
        "",
        "00",
        "00-",
        /* §3.2.2.3: all-zero trace-id */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        /* §3.2.2.4: all-zero parent-id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* HEXDIGLC: uppercase is not allowed, in any field */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* §3.2.2.1: version ff is invalid, even in an otherwise valid shape */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* §3.2.2.2: version 00 is exactly 55 characters */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  /* dash moved */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",  /* wrong delimiter */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",  /* wrong delimiter */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* no trimming */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        /* §3.2.4: a higher version shorter than 55 characters, or with the flags followed by
         * something other than "-" */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0101",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(out, "junk");
        if (tp_ok(bad[i], out)) fail_msg("accepted: \"%s\"", bad[i]);
        assert_string_equal(out, "");
    }
    const char *why = NULL;
    assert_false(kj_traceparent_parse(NULL, 0, out, &why)); /* a header without a value */
    assert_non_null(why);
    /* a NUL inside (Kafka header values are bytes) */
    char nul[] = TP_SAMPLED;
    nul[10] = '\0';
    assert_false(kj_traceparent_parse(nul, KJ_TRACEPARENT_LEN, out, &why));
    /* prohibitively large (§3.2.4) higher versions are refused */
    char big[600];
    memset(big, '-', sizeof(big));
    memcpy(big, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", KJ_TRACEPARENT_LEN);
    assert_true(kj_traceparent_parse(big, KJ_TRACEPARENT_MAX, out, &why));
    assert_false(kj_traceparent_parse(big, KJ_TRACEPARENT_MAX + 1, out, &why));
}

static void test_traceparent_higher_version(void **state) {
    (void)state;
    char out[KJ_TRACEPARENT_LEN + 1];
    /* §3.2.4: parsed with the 00 fields, handed on as version 00 (§3.4), flags reduced to
     * "sampled" (§4.3 step 2.2) */
    assert_true(tp_ok("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra-field", out));
    assert_string_equal(out, TP_SAMPLED);
    assert_true(tp_ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe", out));
    assert_string_equal(out, TP_NOT_SAMPLED);
    assert_true(tp_ok("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", out));
    assert_string_equal(out, TP_SAMPLED);
    /* the all-zero rules still apply */
    assert_false(tp_ok("01-00000000000000000000000000000000-00f067aa0ba902b7-01", out));
}

static int ts(const char *v, char out[KJ_TRACESTATE_MAX + 1], bool *truncated) {
    const char *why = NULL;
    int rc = kj_tracestate_parse(v, strlen(v), out, truncated, &why);
    if (rc != 0) assert_non_null(why);
    return rc;
}

static void test_tracestate_spec_examples(void **state) {
    (void)state;
    char out[KJ_TRACESTATE_MAX + 1];
    bool cut = true;
    const char *valid[] = {
        "congo=t61rcWkgMzE",                                 /* §3.1 */
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",           /* §3.1, §3.3.2 */
        "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7",           /* §3.1 */
        "rojo=00f067aa0ba902b7",                             /* §3.3.2 */
        "vendorname1=opaqueValue1,vendorname2=opaqueValue2", /* §3.3.1.2 */
        "congo=congosSecondPosition,rojo=rojosFirstPosition" /* §3.3.1.4 */
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        assert_int_equal(ts(valid[i], out, &cut), 0);
        assert_string_equal(out, valid[i]);
        assert_false(cut);
    }
    /* §3.3.1.4: only one entry per key */
    assert_int_equal(
        ts("congo=congosFirstPosition,rojo=rojosFirstPosition,congo=congosSecondPosition", out,
           &cut),
        -1);
    assert_string_equal(out, "");
}

static void test_tracestate_list_rules(void **state) {
    (void)state;
    char out[KJ_TRACESTATE_MAX + 1];
    bool cut;
    /* §3.3.1.1: empty and whitespace-only members allowed; OWS around members ignored; the
     * value (<= 512 characters) is handed on unchanged */
    assert_int_equal(ts(" a=1 ,\t, b=2\t", out, &cut), 0);
    assert_string_equal(out, " a=1 ,\t, b=2\t");
    assert_int_equal(ts("", out, &cut), 0); /* empty header: accepted, nothing to hand on */
    assert_string_equal(out, "");
    assert_int_equal(ts(" , ,\t", out, &cut), 0);
    assert_string_equal(out, "");
    /* §3.3.1.3.1 keys */
    const char *good_keys[] = {"a=1",
                               "foo_bar-baz*qux/1=1",
                               "tenant@sys=1",
                               "1tenant@s=1",
                               "fw529a3039@dt=FW4;0;0;0;0;0;0;1",
                               "a@b-c_d*e/f=1"};
    for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]); i++)
        if (ts(good_keys[i], out, &cut) != 0) fail_msg("refused: \"%s\"", good_keys[i]);
    const char *bad[] = {
        "1abc=1",        /* a simple key starts with lcalpha */
        "Abc=1",         /* lowercase only */
        "a.b=1",         /* not a keychar */
        "=1",            /* empty key */
        "a@=1",          /* empty system-id */
        "@b=1",          /* empty tenant-id */
        "a@1b=1",        /* system-id starts with lcalpha */
        "a@b@c=1",       /* one "@" */
        "novalue",       /* no "=" */
        "a=",            /* §3.3.1.3.2: value of at least one character */
        "a=x=y",         /* "=" not allowed in a value */
        "a=x\ty",        /* tab not allowed inside a value */
        "a=caf\xc3\xa9", /* printable ASCII only */
        "a=x\x7f",       /* DEL */
        "a=1,Bad=2",     /* one bad member spoils the value (§4.3 step 3) */
        "a=1,a=2",       /* duplicated key (§3.3.1.4) */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(out, "junk");
        if (ts(bad[i], out, &cut) == 0) fail_msg("accepted: \"%s\"", bad[i]);
        assert_string_equal(out, "");
    }
    /* a value may start with spaces (chr) but not end with one: a trailing space is OWS */
    assert_int_equal(ts("a=  x  ", out, &cut), 0);
    /* a NUL inside the bytes */
    const char *why;
    assert_int_equal(kj_tracestate_parse("a=1\0b", 5, out, &cut, &why), -1);
}

static char *repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_tracestate_limits(void **state) {
    (void)state;
    char out[KJ_TRACESTATE_MAX + 1], buf[40000];
    bool cut;
    /* §3.3.1.3.1: simple key up to 256, tenant-id up to 241, system-id up to 14 characters */
    char *k256 = repeat('k', 256), *k257 = repeat('k', 257), *t241 = repeat('t', 241),
         *t242 = repeat('t', 242), *v256 = repeat('v', 256), *v257 = repeat('v', 257);
    snprintf(buf, sizeof(buf), "%s=1", k256);
    assert_int_equal(ts(buf, out, &cut), 0);
    snprintf(buf, sizeof(buf), "%s=1", k257);
    assert_int_equal(ts(buf, out, &cut), -1);
    snprintf(buf, sizeof(buf), "%s@abcdefghijklmn=1", t241);
    assert_int_equal(ts(buf, out, &cut), 0);
    snprintf(buf, sizeof(buf), "%s@abcdefghijklmn=1", t242);
    assert_int_equal(ts(buf, out, &cut), -1);
    assert_int_equal(ts("t@abcdefghijklmno=1", out, &cut), -1); /* system-id of 15 */
    /* §3.3.1.3.2: values up to 256 characters */
    snprintf(buf, sizeof(buf), "a=%s", v256);
    assert_int_equal(ts(buf, out, &cut), 0);
    snprintf(buf, sizeof(buf), "a=%s", v257);
    assert_int_equal(ts(buf, out, &cut), -1);
    free(k256), free(k257), free(t241), free(t242), free(v256), free(v257);

    /* §3.3.1.2: at most 32 members (empty ones do not count) */
    size_t o = 0;
    for (int i = 0; i < 32; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%sk%d=%d", i ? ", ," : "", i, i);
    assert_int_equal(ts(buf, out, &cut), 0);
    snprintf(buf + o, sizeof(buf) - o, ",k32=32");
    assert_int_equal(ts(buf, out, &cut), -1);

    /* §3.3.1.5: over 512 characters, whole entries go: those over 128 characters first ... */
    char *v195 = repeat('x', 195), *v96 = repeat('y', 96);
    o = (size_t)snprintf(buf, sizeof(buf), "big=%s", v195); /* 199 characters */
    for (int i = 0; i < 5; i++)                             /* 5 x 100 characters */
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, ",s%02d=%s", i, v96);
    assert_int_equal(ts(buf, out, &cut), 0);
    assert_true(cut);
    assert_int_equal(strlen(out), 5 * 100 + 4);
    assert_memory_equal(out, "s00=", 4);
    assert_null(strstr(out, "big="));
    /* ... then from the end */
    o = 0;
    for (int i = 0; i < 6; i++) /* 6 x 100 characters + 5 commas = 605 */
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%ss%02d=%s", i ? "," : "", i, v96);
    assert_int_equal(ts(buf, out, &cut), 0);
    assert_true(cut);
    assert_int_equal(strlen(out), 5 * 100 + 4);
    assert_null(strstr(out, "s05="));
    assert_non_null(strstr(out, "s04="));
    /* 516 characters: the last entry goes; cut to exactly 512: handed on unchanged */
    o = 0;
    for (int i = 0; i < 5; i++) /* 504 */
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%ss%02d=%s", i ? "," : "", i, v96);
    snprintf(buf + o, sizeof(buf) - o, ",ab=wwwwwwww");
    assert_int_equal(strlen(buf), 516);
    assert_int_equal(ts(buf, out, &cut), 0);
    assert_true(cut);
    assert_int_equal(strlen(out), 504);
    assert_null(strstr(out, "ab="));
    buf[512] = '\0';
    assert_int_equal(ts(buf, out, &cut), 0);
    assert_false(cut);
    assert_string_equal(out, buf);
    free(v195), free(v96);
    /* input refused unparsed beyond KJ_TRACE_INPUT_MAX */
    char *huge = repeat(' ', KJ_TRACE_INPUT_MAX + 1);
    assert_int_equal(ts(huge, out, &cut), -1);
    huge[KJ_TRACE_INPUT_MAX] = '\0';
    assert_int_equal(ts(huge, out, &cut), 0); /* all whitespace: empty list */
    free(huge);
}

static void meta_record(kj_job_record *rec, kj_meta_entry *entries, size_t n) {
    memset(rec, 0, sizeof(*rec));
    rec->id = "job-1";
    rec->type = "t";
    rec->meta = entries;
    rec->meta_count = n;
}

static void test_carriers(void **state) {
    (void)state;
    kj_trace_context tc;
    const char *why;
    kj_job_record rec;
    kj_meta_entry meta[] = {{"traceparent", TP_CONGO}, {"tracestate", "congo=t61rcWkgMzE"}};
    meta_record(&rec, meta, 2);

    /* headers win over meta; names in any case (§3.2.1, §3.3.1) */
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "TraceParent", -1, TP_SAMPLED, -1);
    rd_kafka_header_add(h, "TRACESTATE", -1, "rojo=00f067aa0ba902b7", -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), 0);
    assert_string_equal(tc.traceparent, TP_SAMPLED);
    assert_string_equal(tc.tracestate, "rojo=00f067aa0ba902b7");
    /* several tracestate headers are combined in order (§3.3.1.1) */
    rd_kafka_header_add(h, "tracestate", -1, "congo=t61rcWkgMzE", -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), 0);
    assert_string_equal(tc.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    /* ... and judged together: a key in two headers is a duplicate */
    rd_kafka_header_add(h, "tracestate", -1, "rojo=1", -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), KJ_TRACE_INVALID_TRACESTATE);
    assert_string_equal(tc.traceparent, TP_SAMPLED); /* §3.3: tracestate never spoils it */
    assert_string_equal(tc.tracestate, "");
    rd_kafka_headers_destroy(h);

    /* meta only */
    assert_int_equal(kj_trace_context_resolve(&tc, NULL, &rec, &why), 0);
    assert_string_equal(tc.traceparent, TP_CONGO);
    assert_string_equal(tc.tracestate, "congo=t61rcWkgMzE");
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "other", -1, "x", -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), 0);
    assert_string_equal(tc.traceparent, TP_CONGO);
    rd_kafka_headers_destroy(h);

    /* a header traceparent takes its tracestate from the headers, never from meta */
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "traceparent", -1, TP_SAMPLED, -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), 0);
    assert_string_equal(tc.traceparent, TP_SAMPLED);
    assert_string_equal(tc.tracestate, "");
    /* a repeated traceparent header is invalid (and meta is not consulted) */
    rd_kafka_header_add(h, "traceparent", -1, TP_SAMPLED, -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), KJ_TRACE_INVALID_TRACEPARENT);
    assert_string_equal(tc.traceparent, "");
    rd_kafka_headers_destroy(h);

    /* an invalid traceparent: nothing, and its tracestate is not parsed (§3.3) */
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "traceparent", -1,
                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", -1);
    rd_kafka_header_add(h, "tracestate", -1, "NOT VALID", -1);
    why = NULL;
    assert_int_equal(kj_trace_context_resolve(&tc, h, &rec, &why), KJ_TRACE_INVALID_TRACEPARENT);
    assert_string_equal(why, "trace-id is all zeros");
    assert_string_equal(tc.traceparent, "");
    assert_string_equal(tc.tracestate, "");
    rd_kafka_headers_destroy(h);

    /* a header without a value */
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "traceparent", -1, NULL, 0);
    assert_int_equal(kj_trace_context_resolve(&tc, h, NULL, &why), KJ_TRACE_INVALID_TRACEPARENT);
    rd_kafka_headers_destroy(h);

    /* a tracestate without a traceparent is discarded (§4.2 step 3) */
    h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "tracestate", -1, "congo=t61rcWkgMzE", -1);
    assert_int_equal(kj_trace_context_resolve(&tc, h, NULL, &why), KJ_TRACE_INVALID_TRACESTATE);
    assert_string_equal(tc.tracestate, "");
    rd_kafka_headers_destroy(h);
    kj_meta_entry only_state[] = {{"tracestate", "congo=t61rcWkgMzE"}};
    meta_record(&rec, only_state, 1);
    assert_int_equal(kj_trace_context_resolve(&tc, NULL, &rec, &why), KJ_TRACE_INVALID_TRACESTATE);

    /* nothing at all */
    meta_record(&rec, NULL, 0);
    assert_int_equal(kj_trace_context_resolve(&tc, NULL, &rec, &why), 0);
    assert_string_equal(tc.traceparent, "");
    assert_int_equal(kj_trace_context_resolve(&tc, NULL, NULL, &why), 0);
}

/* The value of kjobs_trace_context_invalid_total{field="..."} in the rendered registry. */
static double invalid_count(const char *field) {
    size_t len;
    char *text = kj_registry_render(kj_metrics_registry(), &len);
    char pat[128];
    snprintf(pat, sizeof(pat), "kjobs_trace_context_invalid_total{field=\"%s\"} ", field);
    const char *p = strstr(text, pat);
    double v = p ? strtod(p + strlen(pat), NULL) : 0;
    free(text);
    return v;
}

static void test_accessors_and_counter(void **state) {
    (void)state;
    kjobs_job_t job;
    memset(&job, 0, sizeof(job));
    kj_meta_entry meta[] = {
        {"traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"},
        {"tracestate", "a=1"}};
    meta_record(&job.record, meta, 2);
    kj_trace_context_read(&job);
    assert_string_equal(kjobs_job_traceparent(&job), TP_SAMPLED);
    assert_string_equal(kjobs_job_tracestate(&job), "a=1");

    double tp0 = invalid_count("traceparent"), ts0 = invalid_count("tracestate");
    meta[0].value = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    kj_trace_context_read(&job);
    assert_null(kjobs_job_traceparent(&job));
    assert_null(kjobs_job_tracestate(&job));
    assert_true(invalid_count("traceparent") == tp0 + 1);
    assert_true(invalid_count("tracestate") == ts0);

    meta[0].value = TP_SAMPLED;
    meta[1].value = "a=1,a=2";
    kj_trace_context_read(&job);
    assert_string_equal(kjobs_job_traceparent(&job), TP_SAMPLED);
    assert_null(kjobs_job_tracestate(&job));
    assert_true(invalid_count("tracestate") == ts0 + 1);
    assert_true(invalid_count("traceparent") == tp0 + 1);

    meta_record(&job.record, NULL, 0); /* no trace context: nothing counted */
    kj_trace_context_read(&job);
    assert_null(kjobs_job_traceparent(&job));
    assert_true(invalid_count("traceparent") == tp0 + 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_spec_examples),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_traceparent_higher_version),
        cmocka_unit_test(test_tracestate_spec_examples),
        cmocka_unit_test(test_tracestate_list_rules),
        cmocka_unit_test(test_tracestate_limits),
        cmocka_unit_test(test_carriers),
        cmocka_unit_test(test_accessors_and_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
