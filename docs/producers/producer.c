/*
 * producer.c — enqueue kjobs jobs from C: librdkafka, with kjobs' own codec (schemas/codec.h,
 * linked from the kjobs_core library; see CMakeLists.txt here) encoding the Avro value.
 *
 * Usage: producer BOOTSTRAP KEY...
 * Sends one email.send job per KEY to the topic "jobs", plain Avro binary; exits 1 unless
 * every job was acknowledged.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "schemas/codec.h"

static int failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    if (msg->err) {
        fprintf(stderr, "not enqueued: %s\n", rd_kafka_err2str(msg->err));
        failed++;
    }
}

int main(int argc, char **argv) {
    char err[512];
    if (argc < 2) {
        fprintf(stderr, "usage: %s BOOTSTRAP KEY...\n", argv[0]);
        return 2;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) || /* acks=all */
        /* librdkafka's default (consistent_random, CRC32) puts keys elsewhere than Java/kjobs */
        rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 2; i < argc; i++) {
        const char *key = argv[i];
        char id[64], payload[256];
        snprintf(id, sizeof(id), "c-%ld-%ld-%d", (long)now.tv_sec, (long)getpid(), i);
        snprintf(payload, sizeof(payload), "welcome %s", key);
        kj_meta_entry meta[] = {{"producer", "c"}};
        kj_job_record job = {
            .id = id,
            .type = "email.send",
            .payload = (const uint8_t *)payload,
            .payload_len = strlen(payload),
            .created_at = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
            .meta = meta,
            .meta_count = 1,
        };
        uint8_t *value;
        size_t value_len;
        if (kj_job_encode(&job, KJ_ENCODING_BINARY, &value, &value_len, err, sizeof(err))) {
            fprintf(stderr, "cannot encode: %s\n", err);
            failed++;
            continue;
        }
        rd_kafka_resp_err_t e =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("jobs"), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE(value, value_len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
        if (e) { /* not queued: the value is still ours */
            fprintf(stderr, "not enqueued: %s\n", rd_kafka_err2str(e));
            free(value);
            failed++;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 30000);
    int unsent = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    return failed || unsent ? 1 : 0;
}
