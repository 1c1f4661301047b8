/*
 * embedded_broker.h — librdkafka's mock cluster as kjobs' development broker, shared by
 * `kjobs broker` (standalone process) and `kjobs run --embedded` (in-process).
 *
 * The mock speaks the real Kafka protocol on loopback, so kcat, kafka-python and KafkaJS can
 * use it, but it is not Kafka. Its limits (documented in README.md): everything is in memory;
 * about 5 MiB are kept per partition and older data is silently dropped; there is no
 * CreateTopics API (topics are created here, from the config); ports are ephemeral; the first
 * consumer-group join waits ~3 s (initial rebalance delay); an empty Fetch is held for the
 * client's full fetch.wait.max.ms even when data arrives, so clients should use a small value.
 */
#ifndef KJOBS_EMBEDDED_BROKER_H
#define KJOBS_EMBEDDED_BROKER_H

#include "processor/config.h"

typedef struct kj_embedded_broker kj_embedded_broker;

/**
 * Start a mock cluster of `brokers` brokers and create the config's main, retry-ladder and
 * dead-letter topics with `partitions` partitions each (<= 0: cfg->partitions).
 * Returns NULL with errstr set.
 */
kj_embedded_broker *kj_embedded_broker_start(const kj_config *cfg, int brokers, int partitions,
                                             char *errstr, size_t errstr_size);
/** "127.0.0.1:port,..." — valid until stop. */
const char *kj_embedded_broker_bootstrap(const kj_embedded_broker *broker);
/** The mock cluster, for fault injection (rdkafka_mock.h). */
struct rd_kafka_mock_cluster_s *kj_embedded_broker_mock(kj_embedded_broker *broker);
void kj_embedded_broker_stop(kj_embedded_broker *broker);

#endif /* KJOBS_EMBEDDED_BROKER_H */
