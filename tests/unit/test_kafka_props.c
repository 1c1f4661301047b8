/*
 * test_kafka_props.c — how kjobs reads the passthrough librdkafka properties it must act on
 * and chooses the consumer group protocol (processor/kafka.c): the last "name=value" wins, as
 * librdkafka applies them in order; kafka.group_protocol=auto means KIP-848 only where this
 * librdkafka has it and no classic-only property is set; the broker errors that mean "KIP-848
 * refused" (and only those) allow auto's fallback; a consumer's message.max.bytes follows a
 * smaller passthrough fetch.max.bytes. Properties go in through the public -X path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "processor/config.h"
#include "processor/kafka.h"
#include "processor/worker.h"

static bool has_kip848(void) {
    return rd_kafka_version() >= 0x020c0000; /* librdkafka 2.12 */
}

static void add(kj_config *cfg, const char *prop) {
    char err[256];
    assert_int_equal(kj_config_add_rdkafka_prop(cfg, prop, err, sizeof(err)), 0);
}

static void set(kj_config *cfg, const char *key, const char *value) {
    char err[256];
    assert_int_equal(kj_config_set(cfg, key, value, err, sizeof(err)), 0);
}

static void last_value_wins_and_names_match_whole(void **state) {
    (void)state;
    kj_config cfg;
    kj_config_defaults(&cfg);
    assert_null(kj_kafka_prop_value(&cfg, "session.timeout.ms"));
    add(&cfg, "fetch.wait.max.ms=5");
    add(&cfg, "session.timeout.ms=7000");
    add(&cfg, "session.timeout.ms=9000");
    assert_string_equal(kj_kafka_prop_value(&cfg, "session.timeout.ms"), "9000");
    assert_string_equal(kj_kafka_prop_value(&cfg, "fetch.wait.max.ms"), "5");
    assert_null(kj_kafka_prop_value(&cfg, "fetch.wait.max")); /* a prefix is not the name */
    if (has_kip848()) {
        add(&cfg, "group.protocol.type=consumer"); /* a longer name, not group.protocol */
        assert_null(kj_kafka_prop_value(&cfg, "group.protocol"));
    }
    kj_config_free(&cfg);
}

static void group_protocol_passthrough_is_refused_for_the_setting(void **state) {
    (void)state;
    kj_config cfg;
    kj_config_defaults(&cfg);
    char err[256] = "";
    assert_int_not_equal(
        kj_config_add_rdkafka_prop(&cfg, "group.protocol=consumer", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "kafka.group_protocol"));
    assert_int_not_equal(kj_config_set(&cfg, "kafka.group_protocol", "kip848", err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "auto, consumer or classic"));
    kj_config_free(&cfg);
}

static void auto_is_kip848_with_fallback_where_librdkafka_has_it(void **state) {
    (void)state;
    kj_config cfg;
    kj_config_defaults(&cfg);
    assert_string_equal(cfg.group_protocol, "auto");
    kj_group_protocol p;
    char err[256];
    assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kip848, has_kip848());
    assert_int_equal(p.may_fall_back, has_kip848());
    if (!has_kip848()) assert_non_null(strstr(p.why, rd_kafka_version_str()));
    kj_config_free(&cfg);
}

static void auto_is_classic_when_a_classic_only_property_is_set(void **state) {
    (void)state;
    static const char *const props[] = {"session.timeout.ms=6000", "heartbeat.interval.ms=300",
                                        "partition.assignment.strategy=cooperative-sticky"};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        kj_config cfg;
        kj_config_defaults(&cfg);
        add(&cfg, props[i]);
        kj_group_protocol p;
        char err[256];
        assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), 0);
        assert_false(p.kip848);
        assert_false(p.may_fall_back);
        if (has_kip848()) { /* the reason names the property */
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(strchr(props[i], '=') - props[i]), props[i]);
            assert_non_null(strstr(p.why, name));
        }
        kj_config_free(&cfg);
    }
}

static void explicit_choices_never_fall_back(void **state) {
    (void)state;
    kj_config cfg;
    kj_config_defaults(&cfg);
    kj_group_protocol p;
    char err[256] = "";
    set(&cfg, "kafka.group_protocol", "classic");
    assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), 0);
    assert_false(p.kip848);
    assert_false(p.may_fall_back);
    set(&cfg, "kafka.group_protocol", "consumer");
    if (has_kip848()) {
        assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), 0);
        assert_true(p.kip848);
        assert_false(p.may_fall_back);
        add(&cfg, "heartbeat.interval.ms=300"); /* a classic setting: a contradiction */
        assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "heartbeat.interval.ms"));
    } else {
        assert_int_equal(kj_kafka_group_protocol(&cfg, &p, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "2.12"));
    }
    kj_config_free(&cfg);
}

static void only_refusals_of_kip848_allow_the_fallback(void **state) {
    (void)state;
    assert_true(kj_kafka_kip848_refused(RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION));
    assert_true(kj_kafka_kip848_refused(RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE));
    assert_false(kj_kafka_kip848_refused(RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID));
    assert_false(kj_kafka_kip848_refused(RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED));
    assert_false(kj_kafka_kip848_refused(RD_KAFKA_RESP_ERR_INVALID_REQUEST));
}

/* A consumer made from cfg by kj_kafka_consumer_conf_new (created, never connected); its
 * message.max.bytes in *max. NULL with err when librdkafka refuses it. */
static rd_kafka_t *consumer(const kj_config *cfg, char *max, size_t max_size, char *err,
                            size_t errsz) {
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(cfg, err, errsz);
    assert_non_null(conf);
    assert_int_equal(rd_kafka_conf_get(conf, "message.max.bytes", max, &max_size),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz);
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

static void a_small_fetch_max_bytes_lowers_the_consumers_message_max_bytes(void **state) {
    (void)state;
    char max[32], err[512] = "";
    kj_config cfg;
    kj_config_defaults(&cfg);
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    add(&cfg, "fetch.max.bytes=500000"); /* below librdkafka's 1,000,000 message.max.bytes */
    rd_kafka_t *rk = consumer(&cfg, max, sizeof(max), err, sizeof(err));
    assert_non_null(rk);
    assert_string_equal(max, "500000");
    rd_kafka_destroy(rk);
    kj_config_free(&cfg);

    kj_config_defaults(&cfg); /* a larger one leaves it alone */
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    add(&cfg, "fetch.max.bytes=2000000");
    assert_non_null(rk = consumer(&cfg, max, sizeof(max), err, sizeof(err)));
    assert_string_equal(max, "1000000");
    rd_kafka_destroy(rk);
    kj_config_free(&cfg);

    kj_config_defaults(&cfg); /* both set by the user, contradicting: librdkafka's refusal */
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    add(&cfg, "fetch.max.bytes=500000");
    add(&cfg, "message.max.bytes=600000");
    assert_null(consumer(&cfg, max, sizeof(max), err, sizeof(err)));
    assert_string_equal(max, "600000");
    assert_non_null(strstr(err, "fetch.max.bytes"));
    kj_config_free(&cfg);

    kj_config_defaults(&cfg); /* below message.max.bytes' least (1000): refused, named */
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    add(&cfg, "fetch.max.bytes=500");
    assert_null(kj_kafka_consumer_conf_new(&cfg, err, sizeof(err)));
    assert_string_equal(err, "librdkafka property fetch.max.bytes: 500 is below 1000, the least "
                             "message.max.bytes librdkafka accepts, and a consumer's "
                             "fetch.max.bytes may not be below its message.max.bytes");
    kj_config_free(&cfg);
}

/* Every consumer conf gets kjobs' floor sizes (a 1 MiB queue, 256 KiB responses), not
 * librdkafka's 64 MiB queue and 50 MiB responses; the worker's group consumer gets them from
 * batch.max_pending_bytes (a quarter, a sixteenth); the user's own win, and a larger
 * message.max.bytes raises the response. */
static void every_consumer_conf_gets_the_prefetch_and_response_sizes(void **state) {
    (void)state;
    char err[256] = "";
    bool queue = rd_kafka_version() >= 0x020200ff;
    kj_config cfg;
    kj_config_defaults(&cfg);
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    set(&cfg, "batch.max_pending_bytes", "67108864");
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(&cfg, err, sizeof(err));
    assert_non_null(conf);
    if (queue) assert_int_equal(kj_kafka_conf_get_ll(conf, "queued.max.messages.kbytes", -1), 1024);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "fetch.max.bytes", -1), 262144);
    rd_kafka_conf_destroy(conf);
    assert_non_null(conf = kj_worker_consumer_conf(&cfg, false, err, sizeof(err)));
    if (queue)
        assert_int_equal(kj_kafka_conf_get_ll(conf, "queued.max.messages.kbytes", -1), 16384);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "fetch.max.bytes", -1), 4194304);
    rd_kafka_conf_destroy(conf);
    add(&cfg, "queued.max.messages.kbytes=2048");
    add(&cfg, "message.max.bytes=8000000");
    for (int worker = 0; worker < 2; worker++) {
        conf = worker ? kj_worker_consumer_conf(&cfg, false, err, sizeof(err))
                      : kj_kafka_consumer_conf_new(&cfg, err, sizeof(err));
        assert_non_null(conf);
        assert_int_equal(kj_kafka_conf_get_ll(conf, "queued.max.messages.kbytes", -1), 2048);
        assert_int_equal(kj_kafka_conf_get_ll(conf, "fetch.max.bytes", -1), 8000000);
        rd_kafka_conf_destroy(conf);
    }
    kj_config_free(&cfg);
}

/* A max.poll.interval.ms below the 45 s session timeout, set alone (as with group.protocol =
 * consumer, where session.timeout.ms may not be set): the classic consumers that name the group
 * (control and status readers, the key-order scan) get it as their session timeout and are
 * created; the worker's KIP-848 consumer never has session.timeout.ms set. */
static void a_short_max_poll_interval_lowers_the_classic_session_timeout(void **state) {
    (void)state;
    char err[256] = "";
    kj_config cfg;
    kj_config_defaults(&cfg);
    set(&cfg, "kafka.bootstrap", "127.0.0.1:9");
    add(&cfg, "max.poll.interval.ms=30000");
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(&cfg, err, sizeof(err));
    assert_non_null(conf);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "session.timeout.ms", -1), 30000);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", "g", err, sizeof(err)), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(rk);
    rd_kafka_destroy(rk);
    assert_non_null(conf = kj_kafka_group_consumer_conf_new(&cfg, true, err, sizeof(err)));
    assert_int_equal(kj_kafka_conf_get_ll(conf, "session.timeout.ms", -1), 45000);
    rd_kafka_conf_destroy(conf);
    kj_config_free(&cfg);
}

static void a_property_reads_back_as_librdkafka_parsed_it(void **state) {
    (void)state;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[256];
    assert_int_equal(kj_kafka_conf_get_ll(conf, "message.max.bytes", -1), 1000000); /* default */
    assert_int_equal(rd_kafka_conf_set(conf, "fetch.max.bytes", "0x40000", err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "fetch.max.bytes", -1), 262144);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "no.such.property", -7), -7);
    assert_int_equal(kj_kafka_conf_get_ll(conf, "client.id", -7), -7); /* not a number */
    rd_kafka_conf_destroy(conf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(last_value_wins_and_names_match_whole),
        cmocka_unit_test(group_protocol_passthrough_is_refused_for_the_setting),
        cmocka_unit_test(auto_is_kip848_with_fallback_where_librdkafka_has_it),
        cmocka_unit_test(auto_is_classic_when_a_classic_only_property_is_set),
        cmocka_unit_test(explicit_choices_never_fall_back),
        cmocka_unit_test(only_refusals_of_kip848_allow_the_fallback),
        cmocka_unit_test(a_small_fetch_max_bytes_lowers_the_consumers_message_max_bytes),
        cmocka_unit_test(every_consumer_conf_gets_the_prefetch_and_response_sizes),
        cmocka_unit_test(a_short_max_poll_interval_lowers_the_classic_session_timeout),
        cmocka_unit_test(a_property_reads_back_as_librdkafka_parsed_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
