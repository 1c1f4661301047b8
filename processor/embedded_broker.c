/*
 * embedded_broker.c — mock cluster lifecycle and topic layout (see embedded_broker.h).
 * The mock needs an rd_kafka_t to hang off; we use a bare producer that never connects.
 */
#include "processor/embedded_broker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/periodic_config.h"
#include "processor/topic_layout.h"

struct kj_embedded_broker {
    rd_kafka_t *host;
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;
};

static int create_topic(kj_embedded_broker *b, const char *topic, int partitions, char *errstr,
                        size_t errstr_size) {
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(b->mock, topic, partitions, 1);
    if (err) {
        snprintf(errstr, errstr_size, "embedded broker: create topic %s: %s", topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    kj_log(KJ_LOG_INFO, "topic created", "{s:s,s:i}", "topic", topic, "partitions", partitions);
    return 0;
}

/* The mock cluster's host handle is configured here and connects nowhere on purpose: its
 * configuration notes (no bootstrap.servers) are kept at debug; everything else as any
 * client's (kj_kafka_log_cb). */
static void host_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    kj_kafka_log_cb(rk, strcmp(fac, "CONFWARN") == 0 ? 7 /* LOG_DEBUG */ : level, fac, buf);
}

kj_embedded_broker *kj_embedded_broker_start(const kj_config *cfg, int brokers, int partitions,
                                             char *errstr, size_t errstr_size) {
    if (partitions <= 0) partitions = cfg->partitions;
    if (brokers <= 0) brokers = 1;
    kj_embedded_broker *b = calloc(1, sizeof(*b));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, host_log_cb);
    rd_kafka_conf_set(conf, "client.id", "kjobs-embedded-broker", NULL, 0);
    b->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!b->host) {
        rd_kafka_conf_destroy(conf);
        free(b);
        return NULL;
    }
    b->mock = rd_kafka_mock_cluster_new(b->host, brokers);
    if (!b->mock) {
        snprintf(errstr, errstr_size, "embedded broker: could not start the mock cluster");
        kj_embedded_broker_stop(b);
        return NULL;
    }
    b->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(b->mock));
#if RD_KAFKA_VERSION >= 0x020c0000
    /* KIP-848 groups (group.protocol=consumer) take their timing from the broker: the same
     * short session and heartbeat that `kjobs run --embedded` gives classic members. */
    rd_kafka_mock_set_group_consumer_session_timeout_ms(b->mock, 6000);
    rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(b->mock, 500);
#endif

    kj_topic_spec *topics;
    size_t topic_count = kj_topic_layout(cfg, &topics);
    int rc = 0;
    for (size_t i = 0; i < topic_count && rc == 0; i++)
        rc = create_topic(b, topics[i].name, partitions, errstr, errstr_size);
    kj_topic_layout_free(topics, topic_count);
    if (rc == 0 && cfg->periodic_count > 0) { /* schedule.periodic's state topic: 1 partition */
        char *state = kj_periodic_state_topic(cfg);
        rc = create_topic(b, state, 1, errstr, errstr_size);
        free(state);
    }
    if (rc == 0) { /* the workers' status topic (docs/console.md): 1 partition */
        char *status = kj_topic_status(cfg);
        rc = create_topic(b, status, 1, errstr, errstr_size);
        free(status);
    }
    if (rc == 0) { /* the operator's control topic (processor/group_control.h): 1 partition */
        char *control = kj_topic_control(cfg);
        rc = create_topic(b, control, 1, errstr, errstr_size);
        free(control);
    }
    if (rc) goto fail;
    kj_log(KJ_LOG_INFO, "embedded broker started", "{s:s,s:i}", "bootstrap", b->bootstrap,
           "brokers", brokers);
    return b;
fail:
    kj_embedded_broker_stop(b);
    return NULL;
}

const char *kj_embedded_broker_bootstrap(const kj_embedded_broker *b) {
    return b->bootstrap;
}

struct rd_kafka_mock_cluster_s *kj_embedded_broker_mock(kj_embedded_broker *b) {
    return b->mock;
}

void kj_embedded_broker_stop(kj_embedded_broker *b) {
    if (!b) return;
    if (b->mock) rd_kafka_mock_cluster_destroy(b->mock);
    if (b->host) rd_kafka_destroy(b->host);
    free(b->bootstrap);
    free(b);
}
