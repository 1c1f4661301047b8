/*
 * loadgen.c — the benchmark producer: jobs encoded with the kjobs codec (exactly what
 * `kjobs enqueue` writes: plain Avro binary, 36-char id, created_at = now) produced with the
 * same producer settings as `kjobs enqueue` (acks=all, idempotent, linger.ms=5), but with
 * explicit partitions so every partition gets an even share and benchmark marks land where
 * the bench plugin (bench/latency_plugin.c) expects them.
 *
 * Modes:
 *   loadgen -b B fill --count N [--flaky-every K [--flaky-fails F]] [--marks] [--type T]
 *                [--payload-bytes P]
 *       a backlog: N jobs round-robin over every partition of the topic; every K-th job is
 *       kjobs.flaky with payload F (default "1": fails once; "0": never fails, the same mix of
 *       types without a failure, the fair control), the others T (default kjobs.noop) with a
 *       payload of P bytes ('x', default 0: the memory benchmark's 100-byte jobs). With
 *       --marks each partition gets a bench.start job before and a bench.end job after its
 *       share, so the plugin can time a drain exactly without polling anything.
 *   loadgen -b B rate --rate R --seconds S [--type T] [--warmup]
 *       R jobs/s (default type bench.lat) for S seconds, round-robin over the partitions, each
 *       stamped just before produce() with meta bench_t_us = CLOCK_REALTIME microseconds.
 *       --warmup: first one bench.start job per partition, flushed, so the producer has its
 *       producer id and its leader connections before the clock starts (not counted).
 *       SIGTERM or SIGINT ends the rate early: what was produced is flushed and reported as
 *       usual (a driver that does not know how long it needs the load runs it long and stops it).
 * Prints one JSON line with what was produced and acknowledged; exits 1 if any job failed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/encoding.h"
#include "schemas/codec.h"

typedef struct lg_state {
    rd_kafka_t *rk;
    const char *topic;
    int32_t partitions;
    long long produced, acked, failed;
} lg_state;

static volatile sig_atomic_t lg_stop;

static void lg_on_signal(int sig) {
    (void)sig;
    lg_stop = 1;
}

static int64_t lg_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double lg_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void lg_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    lg_state *st = opaque;
    if (msg->err) {
        if (st->failed++ < 5)
            fprintf(stderr, "loadgen: delivery failed: %s\n", rd_kafka_err2str(msg->err));
    } else {
        st->acked++;
    }
}

static void lg_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "loadgen: %s: %s\n", name, err);
        exit(2);
    }
}

static void lg_produce(lg_state *st, int32_t partition, const char *type, const char *payload,
                       int64_t t_us, int with_stamp) {
    char id[37], stamp[24], err[256];
    kj_job_id_new(id);
    kj_meta_entry meta[1];
    if (with_stamp) {
        snprintf(stamp, sizeof(stamp), "%" PRId64, t_us);
        meta[0].key = "bench_t_us";
        meta[0].value = stamp;
    }
    kj_job_record job = {.id = id,
                         .type = type,
                         .payload = (const uint8_t *)payload,
                         .payload_len = strlen(payload),
                         .created_at = t_us / 1000,
                         .meta = with_stamp ? meta : NULL,
                         .meta_count = with_stamp ? 1 : 0};
    uint8_t *value;
    size_t len;
    if (kj_job_encode(&job, KJ_ENCODING_BINARY, &value, &len, err, sizeof(err)) != 0) {
        fprintf(stderr, "loadgen: encode: %s\n", err);
        exit(1);
    }
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            st->rk, RD_KAFKA_V_TOPIC(st->topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_END);
        if (!e) break;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(st->rk, 10);
            continue;
        }
        fprintf(stderr, "loadgen: produce: %s\n", rd_kafka_err2str(e));
        free(value);
        st->failed++;
        return;
    }
    st->produced++;
    rd_kafka_poll(st->rk, 0);
}

static int32_t lg_partition_count(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    int32_t n = -1;
    if (!err && md->topic_cnt == 1 && !md->topics[0].err) n = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    return n;
}

static void lg_usage(void) {
    fprintf(stderr,
            "usage: loadgen -b BROKERS [-t TOPIC] [-X prop=value]... fill --count N "
            "[--flaky-every K [--flaky-fails F]] [--marks] [--type T] [--payload-bytes P]\n"
            "       loadgen -b BROKERS [-t TOPIC] [-X prop=value]... rate --rate R --seconds S "
            "[--type T]\n");
    exit(2);
}

int main(int argc, char **argv) {
    enum {
        O_COUNT = 256,
        O_FLAKY,
        O_MARKS,
        O_TYPE,
        O_RATE,
        O_SECONDS,
        O_WARMUP,
        O_PAYLOAD,
        O_FLAKY_FAILS
    };
    static const struct option longopts[] = {
        {"count", required_argument, NULL, O_COUNT},
        {"flaky-every", required_argument, NULL, O_FLAKY},
        {"marks", no_argument, NULL, O_MARKS},
        {"type", required_argument, NULL, O_TYPE},
        {"rate", required_argument, NULL, O_RATE},
        {"seconds", required_argument, NULL, O_SECONDS},
        {"warmup", no_argument, NULL, O_WARMUP},
        {"payload-bytes", required_argument, NULL, O_PAYLOAD},
        {"flaky-fails", required_argument, NULL, O_FLAKY_FAILS},
        {NULL, 0, NULL, 0}};
    const char *brokers = NULL, *type = NULL, *flaky_fails = "1";
    long long count = 0, flaky_every = 0, payload_bytes = 0;
    double rate = 0, seconds = 0;
    int marks = 0, opt, linger_set = 0, warmup = 0;
    lg_state st = {.topic = "jobs"};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    lg_set(conf, "acks", "all");
    lg_set(conf, "enable.idempotence", "true");
    lg_set(conf, "linger.ms", "5");
    while ((opt = getopt_long(argc, argv, "b:t:X:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            st.topic = optarg;
            break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq) lg_usage();
            *eq = '\0';
            lg_set(conf, optarg, eq + 1);
            if (strcmp(optarg, "linger.ms") == 0) linger_set = 1;
            break;
        }
        case O_COUNT:
            count = atoll(optarg);
            break;
        case O_FLAKY:
            flaky_every = atoll(optarg);
            break;
        case O_FLAKY_FAILS:
            flaky_fails = optarg;
            break;
        case O_MARKS:
            marks = 1;
            break;
        case O_TYPE:
            type = optarg;
            break;
        case O_RATE:
            rate = atof(optarg);
            break;
        case O_SECONDS:
            seconds = atof(optarg);
            break;
        case O_WARMUP:
            warmup = 1;
            break;
        case O_PAYLOAD:
            payload_bytes = atoll(optarg);
            break;
        default:
            lg_usage();
        }
    }
    if (optind != argc - 1 || !brokers) lg_usage(); /* the mode: the one non-option argument */
    const char *mode = argv[optind];
    int fill = strcmp(mode, "fill") == 0;
    /* A backlog is written in big batches: the mock broker looks a fetch offset up by walking
     * the partition's message sets from the start, so thousands of tiny sets per partition
     * (5 ms linger over many partitions) make every fetch slow and the benchmark would measure
     * that walk. Real Kafka indexes offsets. -X linger.ms=... still overrides this. */
    if (fill && !linger_set) lg_set(conf, "linger.ms", "100");
    if (!fill && strcmp(mode, "rate") != 0) lg_usage();
    if (fill ? count < 0 || (count == 0 && !marks) : (rate <= 0 || seconds <= 0)) lg_usage();
    if (!type) type = fill ? "kjobs.noop" : "bench.lat";
    if (payload_bytes < 0 || payload_bytes > (1 << 20)) lg_usage();
    char *pad = malloc((size_t)payload_bytes + 1); /* lg_produce takes a C string */
    if (!pad) return 1;
    memset(pad, 'x', (size_t)payload_bytes);
    pad[payload_bytes] = '\0';

    char err[512];
    if (kj_codec_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 1;
    }
    lg_set(conf, "bootstrap.servers", brokers);
    rd_kafka_conf_set_dr_msg_cb(conf, lg_on_delivery);
    rd_kafka_conf_set_opaque(conf, &st);
    st.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!st.rk) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 1;
    }
    st.partitions = lg_partition_count(st.rk, st.topic);
    if (st.partitions <= 0) {
        fprintf(stderr, "loadgen: topic %s not found\n", st.topic);
        return 1;
    }

    if (warmup && !fill) {
        for (int32_t p = 0; p < st.partitions; p++)
            lg_produce(&st, p, "bench.start", "", lg_now_us(), 0);
        rd_kafka_flush(st.rk, 30000);
        if (st.acked != st.produced) {
            fprintf(stderr, "loadgen: warm-up: %lld of %lld acknowledged\n", st.acked, st.produced);
            return 1;
        }
        st.produced = st.acked = 0;
    }
    double start = lg_mono(), max_behind = 0;
    if (fill) {
        if (marks)
            for (int32_t p = 0; p < st.partitions; p++)
                lg_produce(&st, p, "bench.start", "", lg_now_us(), 0);
        for (long long i = 0; i < count; i++) {
            int flaky = flaky_every > 0 && i % flaky_every == flaky_every - 1;
            lg_produce(&st, (int32_t)(i % st.partitions), flaky ? "kjobs.flaky" : type,
                       flaky ? flaky_fails : pad, lg_now_us(), 0);
        }
        if (marks)
            for (int32_t p = 0; p < st.partitions; p++)
                lg_produce(&st, p, "bench.end", "", lg_now_us(), 0);
    } else {
        struct sigaction sa = {.sa_handler = lg_on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        long long n = (long long)(rate * seconds);
        for (long long i = 0; i < n && !lg_stop; i++) {
            double due = start + (double)i / rate;
            double now = lg_mono();
            if (due > now) {
                double d = due - now;
                struct timespec ts = {.tv_sec = (time_t)d,
                                      .tv_nsec = (long)((d - (double)(time_t)d) * 1e9)};
                while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !lg_stop) {
                }
                if (lg_stop) break;
            } else if (now - due > max_behind) {
                max_behind = now - due;
            }
            lg_produce(&st, (int32_t)(i % st.partitions), type, "", lg_now_us(), 1);
        }
    }
    double produced_s = lg_mono() - start;
    rd_kafka_flush(st.rk, 60000);
    double acked_s = lg_mono() - start;
    printf("{\"mode\":\"%s\",\"partitions\":%d,\"produced\":%lld,\"acked\":%lld,\"failed\":%lld,"
           "\"produce_s\":%.3f,\"ack_s\":%.3f,\"rate\":%.1f,\"max_behind_ms\":%.2f}\n",
           mode, st.partitions, st.produced, st.acked, st.failed, produced_s, acked_s,
           produced_s > 0 ? (double)st.produced / produced_s : 0.0, max_behind * 1e3);
    fflush(stdout);
    long long failed = st.failed + (st.produced - st.acked - st.failed);
    rd_kafka_destroy(st.rk);
    return failed ? 1 : 0;
}
