/*
 * test_topic_reader.c — the snapshot reader (processor/topic_reader.h) against an in-process
 * embedded broker (librdkafka's mock cluster): every record of the ranges once and in offset
 * order per partition, nothing at or past a range's end, empty ranges done at once, the three
 * ways a read ends early (the record function, the stop predicate, the deadline: an end beyond
 * the partition's records), and eof_is_end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/config.h"
#include "processor/embedded_broker.h"
#include "processor/kafka.h"
#include "processor/topic_reader.h"

#define P0_RECORDS 5
#define P1_RECORDS 3

typedef struct fixture {
    kj_config cfg;
    kj_embedded_broker *broker;
    rd_kafka_t *consumer;
} fixture;

static void produce(const kj_config *cfg, int32_t partition, int count) {
    char err[512];
    rd_kafka_conf_t *conf = kj_kafka_conf_new(cfg, err, sizeof(err));
    assert_non_null(conf);
    rd_kafka_t *prod = kj_kafka_producer_new(conf, err, sizeof(err));
    assert_non_null(prod);
    for (int i = 0; i < count; i++) {
        char value[32];
        int len = snprintf(value, sizeof(value), "p%d-%d", (int)partition, i);
        assert_int_equal(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(cfg->main_topic),
                                           RD_KAFKA_V_PARTITION(partition),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
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
    produce(&f->cfg, 0, P0_RECORDS);
    produce(&f->cfg, 1, P1_RECORDS);
    rd_kafka_conf_t *conf = kj_kafka_conf_new(&f->cfg, err, sizeof(err));
    if (!conf || kj_kafka_conf_set(conf, "group.id", "topic-reader-test", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) ||
        !(f->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        fprintf(stderr, "consumer: %s\n", err);
        return -1;
    }
    rd_kafka_poll_set_consumer(f->consumer);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    rd_kafka_consumer_close(f->consumer);
    rd_kafka_destroy(f->consumer);
    kj_embedded_broker_stop(f->broker);
    kj_config_free(&f->cfg);
    free(f);
    return 0;
}

typedef struct seen {
    int count[2];    /* records per range index */
    int64_t next[2]; /* the offset each range's next record must have */
    int stop_after;  /* 0: never stop */
    int total;
    bool out_of_range; /* a record at or past its range's end was handed over */
    const kj_read_range *ranges;
} seen;

static bool record(rd_kafka_message_t *msg, size_t index, void *opaque) {
    seen *s = opaque;
    assert_true(index < 2);
    assert_int_equal(msg->partition, s->ranges[index].partition);
    assert_int_equal(msg->offset, s->next[index]); /* once each, in offset order */
    if (msg->offset >= s->ranges[index].end) s->out_of_range = true;
    s->next[index] = msg->offset + 1;
    s->count[index]++;
    s->total++;
    rd_kafka_message_destroy(msg); /* the function owns it */
    return !s->stop_after || s->total < s->stop_after;
}

static kj_read_result read_ranges(fixture *f, kj_read_range *r, size_t n, seen *s,
                                  const kj_read_opts *opts, bool *done, char *err) {
    s->ranges = r;
    for (size_t i = 0; i < n; i++)
        s->next[i] = r[i].start;
    return kj_topic_read(f->consumer, r, n, record, s, opts, done, err, 256);
}

static void test_reads_every_record_of_each_range_once(void **state) {
    fixture *f = *state;
    kj_read_range r[2] = {{f->cfg.main_topic, 0, 0, P0_RECORDS},
                          {f->cfg.main_topic, 1, 1, P1_RECORDS}};
    seen s = {0};
    bool done[2] = {false, false};
    char err[256] = "";
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + 30000, .what = "test topic"};
    assert_int_equal(read_ranges(f, r, 2, &s, &opts, done, err), KJ_READ_DONE);
    assert_int_equal(s.count[0], P0_RECORDS);
    assert_int_equal(s.count[1], P1_RECORDS - 1); /* from offset 1 */
    assert_true(done[0] && done[1]);
    assert_false(s.out_of_range);
}

static void test_stops_at_the_snapshot_end(void **state) {
    fixture *f = *state;
    /* the partition has 5 records; the snapshot says 3: offsets 3 and 4 are "newer" */
    kj_read_range r[1] = {{f->cfg.main_topic, 0, 0, 3}};
    seen s = {0};
    char err[256] = "";
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + 30000};
    assert_int_equal(read_ranges(f, r, 1, &s, &opts, NULL, err), KJ_READ_DONE);
    assert_int_equal(s.count[0], 3);
    assert_false(s.out_of_range);
}

static void test_empty_ranges_are_done_at_once(void **state) {
    fixture *f = *state;
    kj_read_range r[2] = {{f->cfg.main_topic, 0, 4, 4}, {f->cfg.main_topic, 1, -1, 3}};
    seen s = {0};
    bool done[2] = {false, false};
    char err[256] = "";
    int64_t t0 = kj_now_ms();
    kj_read_opts opts = {.deadline_ms = t0 + 30000};
    assert_int_equal(read_ranges(f, r, 2, &s, &opts, done, err), KJ_READ_DONE);
    assert_int_equal(s.total, 0);
    assert_true(done[0] && done[1]);
    assert_int_equal(kj_topic_read(f->consumer, r, 0, record, &s, &opts, NULL, err, 256),
                     KJ_READ_DONE);
}

static void test_the_record_function_ends_the_read(void **state) {
    fixture *f = *state;
    kj_read_range r[1] = {{f->cfg.main_topic, 0, 0, P0_RECORDS}};
    seen s = {.stop_after = 2};
    char err[256] = "";
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + 30000};
    assert_int_equal(read_ranges(f, r, 1, &s, &opts, NULL, err), KJ_READ_ENDED_BY_CALLER);
    assert_int_equal(s.total, 2);
}

static bool always(void *opaque) {
    (*(int *)opaque)++;
    return true;
}

static void test_the_stop_predicate_ends_the_read(void **state) {
    fixture *f = *state;
    kj_read_range r[1] = {{f->cfg.main_topic, 0, 0, P0_RECORDS}};
    seen s = {0};
    int asked = 0;
    char err[256] = "";
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + 30000, .stop = always, .stop_opaque = &asked};
    assert_int_equal(read_ranges(f, r, 1, &s, &opts, NULL, err), KJ_READ_STOPPED);
    assert_int_equal(asked, 1);
    assert_int_equal(s.total, 0);
}

static void test_an_end_past_the_records_times_out_unless_eof_ends(void **state) {
    fixture *f = *state;
    /* end 10 on a 5-record partition: EOF comes at 5, below the end */
    kj_read_range r[1] = {{f->cfg.main_topic, 0, 0, 10}};
    seen s = {0};
    char err[256] = "";
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + 1500, .what = "test topic"};
    assert_int_equal(read_ranges(f, r, 1, &s, &opts, NULL, err), KJ_READ_TIMEOUT);
    assert_int_equal(s.total, P0_RECORDS);
    assert_non_null(strstr(err, "timed out reading the test topic"));
    seen again = {0};
    opts = (kj_read_opts){.deadline_ms = kj_now_ms() + 30000, .eof_is_end = true};
    assert_int_equal(read_ranges(f, r, 1, &again, &opts, NULL, err), KJ_READ_DONE);
    assert_int_equal(again.total, P0_RECORDS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_every_record_of_each_range_once),
        cmocka_unit_test(test_stops_at_the_snapshot_end),
        cmocka_unit_test(test_empty_ranges_are_done_at_once),
        cmocka_unit_test(test_the_record_function_ends_the_read),
        cmocka_unit_test(test_the_stop_predicate_ends_the_read),
        cmocka_unit_test(test_an_end_past_the_records_times_out_unless_eof_ends),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
