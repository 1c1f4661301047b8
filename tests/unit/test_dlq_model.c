/*
 * test_dlq_model.c — the dead-letter model's API (processor/dlq_model.h) used the way a console
 * would use it, with a kj_config and no CLI: dead letters written here to an in-process
 * embedded broker (librdkafka's mock cluster, processor/embedded_broker.h), then listed with
 * filters and states, looked up by id and by PARTITION:OFFSET, replayed by handles (dry run,
 * real, again), the marker seen through the same handle and a fresh one, the copies read back
 * through the model, and the error codes (settings, missing topic, stop flag, not found).
 * `kjobs dlq` itself is covered end to end by tests/integration/test_dlq.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/config.h"
#include "processor/dlq_model.h"
#include "processor/embedded_broker.h"
#include "processor/header_contract.h"
#include "processor/kafka.h"
#include "schemas/codec.h"

typedef struct fixture {
    kj_config cfg;
    kj_embedded_broker *broker;
} fixture;

/* One dead letter to write: a job (or raw value), its partition and the headers that matter. */
typedef struct dl_spec {
    int32_t partition;
    const char *id, *type; /* NULL id: the value is `raw` */
    const char *raw;
    const char *error_class;
    long long failed_at;
    bool origin;               /* has kjobs-original-topic */
    const char *replayed_from; /* NULL: none */
} dl_spec;

/* DLQ partition 0: a1, b1, a1 again (a later failure), a foreign record;
 * partition 1: b2 (retryable), a2 (a replayed job that failed again), an undecodable value. */
static const dl_spec letters[] = {
    {0, "a1", "A", NULL, "permanent", 1000, true, NULL},
    {0, "b1", "B", NULL, "permanent", 1100, true, NULL},
    {0, "a1", "A", NULL, "permanent", 3000, true, NULL},
    {0, NULL, NULL, "foreign", NULL, 0, false, NULL},
    {1, "b2", "B", NULL, "retryable", 1200, true, NULL},
    {1, "a2", "A", NULL, "permanent", 1300, true, "jobs.dlq:0:9"},
    {1, NULL, NULL, "not avro", "decode", 1400, true, NULL},
};
#define LETTERS (sizeof(letters) / sizeof(*letters))

static void produce_letters(const kj_config *cfg) {
    char err[512];
    rd_kafka_conf_t *conf = kj_kafka_conf_new(cfg, err, sizeof(err));
    assert_non_null(conf);
    rd_kafka_t *prod = kj_kafka_producer_new(conf, err, sizeof(err));
    assert_non_null(prod);
    for (size_t i = 0; i < LETTERS; i++) {
        const dl_spec *s = &letters[i];
        uint8_t *value = NULL;
        size_t len = 0;
        if (s->id) {
            kj_job_record job = {.id = s->id,
                                 .type = s->type,
                                 .payload = (const uint8_t *)"p",
                                 .payload_len = 1,
                                 .created_at = 1700000000000};
            assert_int_equal(
                kj_job_encode(&job, KJ_ENCODING_BINARY, &value, &len, err, sizeof(err)), 0);
        } else {
            value = (uint8_t *)strdup(s->raw);
            len = strlen(s->raw);
        }
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        rd_kafka_header_add(h, "user", -1, "u", 1);
        if (s->origin) {
            rd_kafka_header_add(h, KJ_HDR_ORIGINAL_TOPIC, -1, "jobs", -1);
            rd_kafka_header_add(h, KJ_HDR_ORIGINAL_PARTITION, -1, "0", -1);
            rd_kafka_header_add(h, KJ_HDR_ORIGINAL_OFFSET, -1, "7", -1);
        }
        if (s->error_class) {
            char at[32];
            snprintf(at, sizeof(at), "%lld", s->failed_at);
            rd_kafka_header_add(h, KJ_HDR_ATTEMPT, -1, "1", -1);
            rd_kafka_header_add(h, KJ_HDR_ERROR_CLASS, -1, s->error_class, -1);
            rd_kafka_header_add(h, KJ_HDR_ERROR, -1, "boom", -1);
            rd_kafka_header_add(h, KJ_HDR_FAILED_AT, -1, at, -1);
        }
        if (s->replayed_from)
            rd_kafka_header_add(h, KJ_HDR_REPLAYED_FROM, -1, s->replayed_from, -1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            prod, RD_KAFKA_V_TOPIC(cfg->dlq_topic), RD_KAFKA_V_PARTITION(s->partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY("k", 1),
            RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
        free(value);
    }
    assert_int_equal(rd_kafka_flush(prod, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(prod);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    char err[512];
    kj_config_defaults(&f->cfg);
    f->broker = kj_embedded_broker_start(&f->cfg, 1, 2, err, sizeof(err));
    if (!f->broker) {
        fprintf(stderr, "embedded broker: %s\n", err);
        return -1;
    }
    if (kj_config_set(&f->cfg, "kafka.bootstrap", kj_embedded_broker_bootstrap(f->broker), err,
                      sizeof(err)) != 0)
        return -1;
    produce_letters(&f->cfg);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    kj_embedded_broker_stop(f->broker);
    kj_config_free(&f->cfg);
    free(f);
    return 0;
}

static kj_dlq *open_dlq(fixture *f, const char *topic) {
    kj_dlq_params p = {.cfg = &f->cfg, .topic = topic, .deadline_ms = kj_now_ms() + 60000};
    kj_dlq *d = NULL;
    char err[512] = "";
    int rc = kj_dlq_open(&p, &d, err, sizeof(err));
    if (rc != KJ_DLQ_OK) fail_msg("kj_dlq_open: %d %s", rc, err);
    return d;
}

/* ---- what a console's list page collects ------------------------------------------------- */

typedef struct seen {
    size_t n, stop_after;
    char line[16][96]; /* "P:O handle state", sorted after the read */
} seen;

static bool collect(const kj_dlq_record *rec, void *opaque) {
    seen *s = opaque;
    json_t *h = json_object_get(rec->json, "handle");
    assert_string_equal(json_string_value(json_object_get(rec->json, "state")),
                        kj_dlq_state_name(rec->state));
    if (s->n < 16)
        snprintf(s->line[s->n], sizeof(s->line[0]), "%" PRId32 ":%" PRId64 " %s %s",
                 rec->msg->partition, rec->msg->offset, json_string_value(h),
                 kj_dlq_state_name(rec->state));
    s->n++;
    return !s->stop_after || s->n < s->stop_after;
}

static int line_cmp(const void *a, const void *b) {
    return strcmp(a, b);
}

/* The dead letters `filter` selects, as "P:O handle state" lines joined by "|", sorted. */
static char *listed(kj_dlq *d, const kj_dlq_filter *filter) {
    seen s = {0};
    char err[512] = "";
    int rc = kj_dlq_list(d, filter, collect, &s, err, sizeof(err));
    if (rc != KJ_DLQ_OK) fail_msg("kj_dlq_list: %d %s", rc, err);
    qsort(s.line, s.n, sizeof(s.line[0]), line_cmp);
    static char out[2048];
    out[0] = '\0';
    for (size_t i = 0; i < s.n; i++) {
        if (i) strcat(out, "|");
        strcat(out, s.line[i]);
    }
    return out;
}

static void test_pure_parts(void **state) {
    (void)state;
    assert_string_equal(kj_dlq_state_name(KJ_DLQ_NEW), "new");
    assert_string_equal(kj_dlq_state_name(KJ_DLQ_REPLAYED), "replayed");
    assert_string_equal(kj_dlq_state_name(KJ_DLQ_REFAILED), "refailed");
    assert_string_equal(kj_dlq_state_name(KJ_DLQ_NO_ORIGIN), "no-origin");
    int32_t p;
    int64_t o;
    assert_true(kj_dlq_parse_handle("3:17", &p, &o));
    assert_int_equal(p, 3);
    assert_int_equal(o, 17);
    static const char *const not_places[] = {"a1",   "1:",           ":1",    "1:2x", "-1:0",
                                             "1:-2", "2147483648:0", "1:2:3", ""};
    for (size_t i = 0; i < sizeof(not_places) / sizeof(*not_places); i++)
        if (kj_dlq_parse_handle(not_places[i], &p, &o)) fail_msg("took \"%s\"", not_places[i]);
}

static void test_list_with_filters_and_states(void **state) {
    fixture *f = *state;
    kj_dlq *d = open_dlq(f, NULL);
    assert_string_equal(kj_dlq_topic(d), "jobs.dlq");
    assert_string_equal(listed(d, NULL), "0:0 a1 new|0:1 b1 new|0:2 a1 new|0:3 0:3 no-origin|"
                                         "1:0 b2 new|1:1 a2 refailed|1:2 1:2 new");
    kj_dlq_filter by_type = {.type = "A"};
    assert_string_equal(listed(d, &by_type), "0:0 a1 new|0:2 a1 new|1:1 a2 refailed");
    kj_dlq_filter by_class = {.error_class = "retryable"};
    assert_string_equal(listed(d, &by_class), "1:0 b2 new");
    const char *const handles[] = {"a1", "1:2", "no-such"};
    kj_dlq_filter by_handles = {.handles = handles, .handle_count = 3};
    assert_string_equal(listed(d, &by_handles), "0:0 a1 new|0:2 a1 new|1:2 1:2 new");
    kj_dlq_filter all_of = {.type = "A", .handles = handles, .handle_count = 2};
    assert_string_equal(listed(d, &all_of), "0:0 a1 new|0:2 a1 new");
    /* a callback that has seen enough ends the read, successfully */
    seen s = {.stop_after = 2};
    assert_int_equal(kj_dlq_list(d, NULL, collect, &s, NULL, 0), KJ_DLQ_OK);
    assert_int_equal(s.n, 2);
    kj_dlq_close(d);
}

static void test_find(void **state) {
    fixture *f = *state;
    kj_dlq *d = open_dlq(f, NULL);
    json_t *o;
    long matches;
    char err[512];
    /* a job id dead-lettered twice: the latest failure */
    assert_int_equal(kj_dlq_find(d, "a1", &o, &matches, err, sizeof(err)), KJ_DLQ_OK);
    assert_int_equal(matches, 2);
    assert_int_equal(json_integer_value(json_object_get(o, "offset")), 2);
    json_t *dl = json_object_get(o, "dead_letter");
    assert_int_equal(json_integer_value(json_object_get(dl, "failed_at")), 3000);
    assert_string_equal(json_string_value(json_object_get(dl, "failed_at_iso")),
                        "1970-01-01T00:00:03.000Z");
    assert_string_equal(json_string_value(json_object_get(dl, "original_topic")), "jobs");
    assert_int_equal(json_integer_value(json_object_get(dl, "original_offset")), 7);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "new");
    json_decref(o);
    /* by place: exactly that one, also the one without a job */
    assert_int_equal(kj_dlq_find(d, "0:0", &o, &matches, NULL, 0), KJ_DLQ_OK);
    assert_int_equal(matches, 1);
    assert_int_equal(json_integer_value(json_object_get(o, "offset")), 0);
    json_decref(o);
    assert_int_equal(kj_dlq_find(d, "1:2", &o, NULL, NULL, 0), KJ_DLQ_OK);
    assert_string_equal(json_string_value(json_object_get(o, "handle")), "1:2");
    assert_null(json_object_get(o, "id"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "dead_letter"), "error_class")),
        "decode");
    json_decref(o);
    /* none */
    static const char *const missing[] = {"no-such", "0:99", "5:0"};
    for (size_t i = 0; i < 3; i++) {
        o = (json_t *)1;
        err[0] = '\0';
        assert_int_equal(kj_dlq_find(d, missing[i], &o, &matches, err, sizeof(err)),
                         KJ_DLQ_ERR_NOT_FOUND);
        assert_null(o);
        assert_int_equal(matches, 0);
        assert_non_null(strstr(err, missing[i]));
    }
    kj_dlq_close(d);
}

/* ---- replay by handles, as a console's "replay these" button ---------------------------- */

typedef struct reported {
    size_t n, acked;
    char line[8][64];
} reported;

static void report(const kj_dlq_replay_item *item, void *opaque) {
    reported *r = opaque;
    snprintf(r->line[r->n++], sizeof(r->line[0]), "%" PRId32 ":%" PRId64 " %s -> %s%s",
             item->partition, item->offset, item->handle, item->original_topic,
             item->acknowledged ? " ok" : "");
    r->acked += item->acknowledged;
}

static void test_replay_by_handles(void **state) {
    fixture *f = *state;
    kj_dlq *d = open_dlq(f, NULL);
    /* b1 and the undecodable one are replayable; the foreign one and the refailed one not */
    const char *const pick[] = {"0:1", "1:2", "0:3", "1:1"};
    kj_dlq_filter sel = {.handles = pick, .handle_count = 4};
    const char *before = "0:0 a1 new|0:1 b1 new|0:2 a1 new|0:3 0:3 no-origin|1:0 b2 new|"
                         "1:1 a2 refailed|1:2 1:2 new";
    kj_dlq_replay_counts n;
    reported r = {0};
    char err[512] = "";

    /* dry run: reported, not produced, not recorded */
    assert_int_equal(
        kj_dlq_replay(d, &sel, KJ_DLQ_REPLAY_DRY_RUN, report, &r, &n, err, sizeof(err)), KJ_DLQ_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.acked, 0);
    qsort(r.line, r.n, sizeof(r.line[0]), line_cmp);
    assert_string_equal(r.line[0], "0:1 b1 -> jobs");
    assert_string_equal(r.line[1], "1:2 1:2 -> jobs");
    assert_int_equal(n.selected, 2);
    assert_int_equal(n.replayed, 0);
    assert_int_equal(n.skipped_no_origin, 1);
    assert_int_equal(n.skipped_refailed, 1);
    assert_string_equal(listed(d, NULL), before);

    /* the replay: acknowledged, and the same handle sees the new marker at once */
    memset(&r, 0, sizeof(r));
    assert_int_equal(kj_dlq_replay(d, &sel, 0, report, &r, &n, err, sizeof(err)), KJ_DLQ_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.acked, 2);
    assert_int_equal(n.replayed, 2);
    assert_int_equal(n.failed, 0);
    const char *after = "0:0 a1 new|0:1 b1 replayed|0:2 a1 new|0:3 0:3 no-origin|1:0 b2 new|"
                        "1:1 a2 refailed|1:2 1:2 replayed";
    assert_string_equal(listed(d, NULL), after);
    kj_dlq_close(d);

    /* a fresh handle reads the committed marker: same states; a second replay skips them */
    d = open_dlq(f, NULL);
    assert_string_equal(listed(d, NULL), after);
    memset(&r, 0, sizeof(r));
    assert_int_equal(kj_dlq_replay(d, &sel, 0, report, &r, &n, err, sizeof(err)), KJ_DLQ_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(n.selected, 0);
    assert_int_equal(n.skipped_replayed, 2);
    assert_int_equal(n.skipped_refailed, 1);
    assert_int_equal(n.skipped_no_origin, 1);
    /* again: the refailed and the replayed ones, never the foreign one */
    memset(&r, 0, sizeof(r));
    assert_int_equal(kj_dlq_replay(d, &sel, KJ_DLQ_REPLAY_AGAIN | KJ_DLQ_REPLAY_DRY_RUN, report, &r,
                                   &n, err, sizeof(err)),
                     KJ_DLQ_OK);
    assert_int_equal(n.selected, 3);
    assert_int_equal(n.skipped_no_origin, 1);
    kj_dlq_close(d);

    /* the copies, read back through the model from the main topic: kjobs-* headers replaced */
    d = open_dlq(f, "jobs");
    seen s = {0};
    assert_int_equal(kj_dlq_list(d, NULL, collect, &s, err, sizeof(err)), KJ_DLQ_OK);
    assert_int_equal(s.n, 2);
    json_t *o;
    assert_int_equal(kj_dlq_find(d, "b1", &o, NULL, err, sizeof(err)), KJ_DLQ_OK);
    json_t *dl = json_object_get(o, "dead_letter");
    assert_string_equal(json_string_value(json_object_get(dl, "replayed_from")), "jobs.dlq:0:1");
    assert_true(json_is_null(json_object_get(dl, "attempt")));
    assert_true(json_is_null(json_object_get(dl, "error_class")));
    json_t *headers = json_object_get(o, "headers");
    assert_int_equal(json_array_size(headers), 3); /* user, kjobs-replayed-from, -at */
    assert_string_equal(json_string_value(json_array_get(json_array_get(headers, 0), 0)), "user");
    json_decref(o);
    kj_dlq_close(d);
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_errors(void **state) {
    fixture *f = *state;
    char err[512] = "";
    kj_dlq *d = (kj_dlq *)1;
    /* settings the client refuses when it is created: reported to the caller, no handle */
    kj_config bad;
    kj_config_defaults(&bad);
    assert_int_equal(kj_config_set(&bad, "kafka.bootstrap", f->cfg.bootstrap, err, sizeof(err)), 0);
    assert_int_equal(kj_config_add_rdkafka_prop(&bad, "security.protocol=ssl", err, sizeof(err)),
                     0);
    assert_int_equal(
        kj_config_add_rdkafka_prop(&bad, "ssl.ca.location=/nonexistent/ca.pem", err, sizeof(err)),
        0);
    kj_dlq_params p = {.cfg = &bad, .deadline_ms = kj_now_ms() + 60000};
    assert_int_equal(kj_dlq_open(&p, &d, err, sizeof(err)), KJ_DLQ_ERR_CONFIG);
    assert_null(d);
    assert_non_null(strstr(err, "ssl.ca.location"));
    kj_config_free(&bad);
    /* a topic the broker does not have */
    kj_dlq_params missing = {
        .cfg = &f->cfg, .topic = "no.such.topic", .deadline_ms = kj_now_ms() + 3000};
    err[0] = '\0';
    int rc = kj_dlq_open(&missing, &d, err, sizeof(err));
    if (rc == KJ_DLQ_OK && rd_kafka_version() < 0x020c0000) {
        /* the mock cluster of older librdkafka (Debian 12's 2.0.2) creates a topic that a
         * metadata request names: then it is simply an empty DLQ */
        seen none = {0};
        assert_int_equal(kj_dlq_list(d, NULL, collect, &none, err, sizeof(err)), KJ_DLQ_OK);
        assert_int_equal(none.n, 0);
        kj_dlq_close(d);
        d = NULL;
    } else {
        assert_int_equal(rc, KJ_DLQ_ERR_IO);
        assert_null(d);
        assert_non_null(strstr(err, "no.such.topic"));
    }
    /* the stop flag ends a read */
    volatile sig_atomic_t stop = 1;
    kj_dlq_params stopping = {.cfg = &f->cfg, .deadline_ms = kj_now_ms() + 60000, .stop = &stop};
    assert_int_equal(kj_dlq_open(&stopping, &d, err, sizeof(err)), KJ_DLQ_OK);
    seen s = {0};
    assert_int_equal(kj_dlq_list(d, NULL, collect, &s, err, sizeof(err)), KJ_DLQ_ERR_STOPPED);
    assert_int_equal(kj_dlq_replay(d, NULL, 0, NULL, NULL, NULL, err, sizeof(err)),
                     KJ_DLQ_ERR_STOPPED);
    kj_dlq_close(d);
    kj_dlq_close(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pure_parts), cmocka_unit_test(test_list_with_filters_and_states),
        cmocka_unit_test(test_find),       cmocka_unit_test(test_replay_by_handles),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
