/*
 * test_kafka_props.c — how kjobs reads the passthrough librdkafka properties it must act on
 * (processor/kafka.c): the last "name=value" wins, as librdkafka applies them in order, and
 * group.protocol=consumer (KIP-848) is recognised, so the worker leaves the assignor and the
 * session timing to the broker. Properties go in through the public -X path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "processor/config.h"
#include "processor/kafka.h"

static void add(kj_config *cfg, const char *prop) {
    char err[256];
    assert_int_equal(kj_config_add_rdkafka_prop(cfg, prop, err, sizeof(err)), 0);
}

static void last_value_wins_and_names_match_whole(void **state) {
    (void)state;
    if (rd_kafka_version() < 0x020c0000) skip(); /* group.protocol: librdkafka >= 2.12 */
    kj_config cfg;
    kj_config_defaults(&cfg);
    assert_null(kj_kafka_prop_value(&cfg, "group.protocol"));
    add(&cfg, "group.protocol.type=consumer"); /* a longer name, not group.protocol */
    assert_null(kj_kafka_prop_value(&cfg, "group.protocol"));
    add(&cfg, "group.protocol=consumer");
    add(&cfg, "fetch.wait.max.ms=5");
    add(&cfg, "group.protocol=classic");
    assert_string_equal(kj_kafka_prop_value(&cfg, "group.protocol"), "classic");
    assert_string_equal(kj_kafka_prop_value(&cfg, "fetch.wait.max.ms"), "5");
    kj_config_free(&cfg);
}

static void consumer_protocol_only_when_the_last_setting_says_so(void **state) {
    (void)state;
    if (rd_kafka_version() < 0x020c0000) skip(); /* group.protocol: librdkafka >= 2.12 */
    kj_config cfg;
    kj_config_defaults(&cfg);
    assert_false(kj_kafka_consumer_protocol(&cfg));
    add(&cfg, "group.protocol=consumer");
    assert_true(kj_kafka_consumer_protocol(&cfg));
    add(&cfg, "group.protocol=classic");
    assert_false(kj_kafka_consumer_protocol(&cfg));
    add(&cfg, "group.protocol=consumer");
    assert_true(kj_kafka_consumer_protocol(&cfg));
    kj_config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(last_value_wins_and_names_match_whole),
        cmocka_unit_test(consumer_protocol_only_when_the_last_setting_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
