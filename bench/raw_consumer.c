/*
 * raw_consumer.c — the "raw librdkafka consume rate" baseline for the kjobs drain benchmark.
 *
 * A librdkafka high-level consumer with the same group semantics as `kjobs run` (subscribe,
 * kjobs' default assignor, a fresh group reading from the beginning — each partition's log
 * start offset looked up at assignment, as kjobs does —, no automatic offset store, positions
 * committed asynchronously every 200 ms) that does no processing at all: it counts
 * messages until N were consumed. The ratio kjobs jobs/s ÷ raw msgs/s says how much of the
 * achievable consume rate kjobs keeps.
 *
 * Owns nothing of kjobs: it links librdkafka only, so it measures librdkafka + the broker.
 *
 * Usage:
 *   raw_consumer -b BROKERS -G GROUP -n N [-t TOPIC]... [-X prop=value]...
 *       [--idle-timeout S]: give up (exit 1) after S seconds without a message (default 30;
 *       +30 s before the first one, which waits for the group join)
 *       prints one JSON line: {"msgs":..,"first_to_last_s":..,"rate":..,"assign_to_first_s":..}
 *       (rate = (msgs - 1) / first_to_last_s: messages after the first over the time between
 *       the first and the last one; the same definition bench/bench.py uses for kjobs)
 *       [--latency FILE]: also write, one line per message carrying loadgen's stamp (meta
 *       bench_t_us, found in the Avro value without decoding the rest), the latency in µs
 *       from that stamp to rd_kafka_consumer_poll returning it: the raw counterpart of the
 *       bench plugin's handler-start latency. Prints "raw_consumer: assigned" on stderr at
 *       the first assignment and "raw_consumer: first message" at the first message, so a
 *       driver can start the load once both happened.
 *       [--copy-every K --copy-topic T]: the floor of the retry path: every K-th message
 *       consumed is also produced to T (key, value, its own headers plus nine of the size and
 *       kind kjobs adds to a retry copy), by a producer with kjobs' router settings (linger.ms 5,
 *       delivery reports polled in the loop); the copies are flushed before the JSON line,
 *       which adds "copies" and "copies_acked". T is not subscribed: what a client that writes
 *       a tenth of what it reads to Kafka costs, without reading it back.
 *   raw_consumer -b BROKERS --watermarks [-t TOPIC]...
 *       prints {"topic":..,"partitions":P,"low_max":..,"high_sum":..} per topic: with
 *       low_max 0 nothing was dropped by the broker's retention.
 */
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define RC_MAX_TOPICS 16

static volatile sig_atomic_t rc_stop;
static double rc_assign_at;
static long long rc_copies_acked;

static double rc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rc_on_signal(int sig) {
    (void)sig;
    rc_stop = 1;
}

static void rc_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "raw_consumer: %s: %s\n", name, err);
        exit(2);
    }
}

static void rc_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    (void)opaque;
    rd_kafka_error_t *error = NULL;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (rc_assign_at == 0 && parts->cnt > 0) {
            rc_assign_at = rc_now();
            fprintf(stderr, "raw_consumer: assigned %d partitions\n", parts->cnt);
        }
        /* as kjobs does (processor/worker_rebalance.c, resolve_log_starts): partitions without
         * a committed offset start at their log start offset, looked up here for all at once;
         * left to auto.offset.reset, librdkafka resolves each when it starts fetching and
         * defers one whose leader it has not reached yet by 500 ms */
        rd_kafka_topic_partition_list_t *start = rd_kafka_topic_partition_list_copy(parts);
        if (rd_kafka_committed(rk, start, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(start->cnt);
            for (int i = 0; i < start->cnt; i++)
                if (start->elems[i].offset < 0)
                    rd_kafka_topic_partition_list_add(q, start->elems[i].topic,
                                                      start->elems[i].partition)
                        ->offset = RD_KAFKA_OFFSET_BEGINNING; /* the earliest timestamp */
            if (q->cnt > 0 && rd_kafka_offsets_for_times(rk, q, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
                for (int i = 0; i < q->cnt; i++) {
                    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
                        start, q->elems[i].topic, q->elems[i].partition);
                    if (tp && !q->elems[i].err && q->elems[i].offset >= 0)
                        tp->offset = q->elems[i].offset;
                }
            rd_kafka_topic_partition_list_destroy(q);
        } else {
            for (int i = 0; i < start->cnt; i++)
                start->elems[i].offset = RD_KAFKA_OFFSET_INVALID; /* librdkafka's own lookup */
        }
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, start);
        else
            rd_kafka_assign(rk, start);
        rd_kafka_topic_partition_list_destroy(start);
    } else if (cooperative) {
        error = rd_kafka_incremental_unassign(rk, parts);
    } else {
        rd_kafka_assign(rk, NULL);
    }
    if (error) {
        fprintf(stderr, "raw_consumer: rebalance: %s\n", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

/* Commit the current positions (asynchronously), like kjobs' periodic commit. */
static void rc_commit_positions(rd_kafka_t *rk) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) || !parts) return;
    if (parts->cnt > 0 && rd_kafka_position(rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_commit(rk, parts, 1);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* The producer's stamp of a loadgen `rate` job: the Avro map entry "bench_t_us" -> decimal
 * string, i.e. the key's bytes, the value's zigzag varint length, its digits. 0 if absent. */
static long long rc_stamp_us(const char *v, size_t len) {
    static const char key[] = "bench_t_us";
    const char *k = v ? memmem(v, len, key, sizeof(key) - 1) : NULL;
    if (!k) return 0;
    const char *p = k + sizeof(key) - 1, *end = v + len;
    if (p >= end || (*p & 0x80)) return 0; /* a digit string is shorter than 64 bytes */
    long n = (*p++ & 0x7f) >> 1;
    long long t = 0;
    for (; n > 0 && p < end && *p >= '0' && *p <= '9'; n--, p++)
        t = t * 10 + (*p - '0');
    return n == 0 ? t : 0;
}

/* Peak resident set of this process, kB (VmHWM), or -1. */
static long rc_vm_hwm_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static int rc_watermarks(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "raw_consumer: metadata for %s: %s\n", topic,
                rd_kafka_err2str(err ? err : md->topics[0].err));
        if (md) rd_kafka_metadata_destroy(md);
        return -1;
    }
    int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    long long low_max = 0, high_sum = 0;
    for (int p = 0; p < parts; p++) {
        int64_t lo, hi;
        err = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (err) {
            fprintf(stderr, "raw_consumer: watermarks %s[%d]: %s\n", topic, p,
                    rd_kafka_err2str(err));
            return -1;
        }
        if (lo > low_max) low_max = lo;
        high_sum += hi;
    }
    printf("{\"topic\":\"%s\",\"partitions\":%d,\"low_max\":%lld,\"high_sum\":%lld}\n", topic,
           parts, low_max, high_sum);
    return 0;
}

static void rc_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    (void)opaque;
    if (!msg->err) rc_copies_acked++;
}

/* Produces msg to topic with its headers and nine more, as kjobs' router does for a job that
 * failed once (processor/header_contract.h: attempt, error, error class, original topic,
 * partition and offset, failed-at, not-before, worker). 0 or the producev error. */
static rd_kafka_resp_err_t rc_copy(rd_kafka_t *producer, const char *topic,
                                   rd_kafka_message_t *msg) {
    rd_kafka_headers_t *orig = NULL, *h;
    h = rd_kafka_message_headers(msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR
            ? rd_kafka_headers_copy(orig)
            : rd_kafka_headers_new(12);
    char num[32];
    long long now_ms = (long long)(rc_now() * 1000);
    rd_kafka_header_add(h, "kjobs-attempt", -1, "1", -1);
    rd_kafka_header_add(h, "kjobs-error", -1, "flaky: fails on its first attempt", -1);
    rd_kafka_header_add(h, "kjobs-error-class", -1, "transient", -1);
    rd_kafka_header_add(h, "kjobs-original-topic", -1, rd_kafka_topic_name(msg->rkt), -1);
    snprintf(num, sizeof(num), "%d", (int)msg->partition);
    rd_kafka_header_add(h, "kjobs-original-partition", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", (long long)msg->offset);
    rd_kafka_header_add(h, "kjobs-original-offset", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", now_ms);
    rd_kafka_header_add(h, "kjobs-failed-at", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", now_ms + 1000);
    rd_kafka_header_add(h, "kjobs-not-before", -1, num, -1);
    rd_kafka_header_add(h, "kjobs-worker", -1, "raw_consumer@bench", -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(msg->key, msg->key_len), RD_KAFKA_V_VALUE(msg->payload, msg->len),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (err) rd_kafka_headers_destroy(h);
    return err;
}

int main(int argc, char **argv) {
    const char *brokers = NULL, *group = NULL, *latency_path = NULL, *copy_topic = NULL;
    long long copy_every = 0;
    const char *topics[RC_MAX_TOPICS];
    int ntopics = 0, watermarks = 0;
    long long want = 0;
    double idle_timeout = 30;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const struct option longopts[] = {{"watermarks", no_argument, NULL, 'W'},
                                             {"idle-timeout", required_argument, NULL, 'I'},
                                             {"latency", required_argument, NULL, 'L'},
                                             {"copy-every", required_argument, NULL, 'C'},
                                             {"copy-topic", required_argument, NULL, 'T'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "b:G:n:t:X:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 'G':
            group = optarg;
            break;
        case 'n':
            want = atoll(optarg);
            break;
        case 't':
            if (ntopics < RC_MAX_TOPICS) topics[ntopics++] = optarg;
            break;
        case 'W':
            watermarks = 1;
            break;
        case 'I':
            idle_timeout = atof(optarg);
            break;
        case 'L':
            latency_path = optarg;
            break;
        case 'C':
            copy_every = atoll(optarg);
            break;
        case 'T':
            copy_topic = optarg;
            break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "raw_consumer: -X wants prop=value\n");
                return 2;
            }
            *eq = '\0';
            rc_set(conf, optarg, eq + 1);
            break;
        }
        default:
            fprintf(stderr, "usage: raw_consumer -b BROKERS (-G GROUP -n N | --watermarks) "
                            "[-t TOPIC]... [-X prop=value]...\n");
            return 2;
        }
    }
    if (ntopics == 0) topics[ntopics++] = "jobs";
    if (!brokers || (!watermarks && (!group || want <= 0))) {
        fprintf(stderr, "raw_consumer: need -b, and -G and -n (or --watermarks)\n");
        return 2;
    }
    if ((copy_every > 0) != (copy_topic != NULL)) {
        fprintf(stderr, "raw_consumer: --copy-every and --copy-topic go together\n");
        return 2;
    }
    char err[512];
    rd_kafka_t *producer = NULL;
    if (copy_topic) {
        rd_kafka_conf_t *pconf = rd_kafka_conf_new();
        rc_set(pconf, "bootstrap.servers", brokers);
        rc_set(pconf, "client.id", "raw_consumer.copies");
        rc_set(pconf, "linger.ms", "5");
        rd_kafka_conf_set_dr_msg_cb(pconf, rc_on_delivery);
        producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
        if (!producer) {
            fprintf(stderr, "raw_consumer: %s\n", err);
            return 1;
        }
    }
    rc_set(conf, "bootstrap.servers", brokers);
    if (watermarks) {
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        if (!rk) {
            fprintf(stderr, "raw_consumer: %s\n", err);
            return 1;
        }
        int rc = 0;
        for (int i = 0; i < ntopics; i++)
            rc |= rc_watermarks(rk, topics[i]);
        rd_kafka_destroy(rk);
        return rc ? 1 : 0;
    }

    /* the group semantics of `kjobs run` (processor/worker.c): no automatic offset store or
     * commit; the consumed positions are committed asynchronously every 200 ms (kjobs commits
     * its own watermark at the same interval) */
    rc_set(conf, "group.id", group);
    rc_set(conf, "client.id", "raw_consumer");
    /* kjobs' default assignor (processor/worker.c): eager roundrobin before librdkafka 2.1 */
    rc_set(conf, "partition.assignment.strategy",
           RD_KAFKA_VERSION >= 0x020100ff ? "cooperative-sticky" : "roundrobin");
    rc_set(conf, "auto.offset.reset", "earliest");
    rc_set(conf, "enable.auto.commit", "false");
    rc_set(conf, "enable.auto.offset.store", "false");
    rd_kafka_conf_set_rebalance_cb(conf, rc_rebalance);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "raw_consumer: %s\n", err);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(ntopics);
    for (int i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        fprintf(stderr, "raw_consumer: subscribe: %s\n", rd_kafka_err2str(e));
        return 1;
    }
    signal(SIGINT, rc_on_signal);
    signal(SIGTERM, rc_on_signal);

    long long got = 0, copies = 0;
    size_t bytes = 0, nlat = 0;
    /* latencies in µs; at most one per message (-n bounds it) */
    int *lat = latency_path ? malloc(sizeof(int) * (size_t)want) : NULL;
    if (latency_path && !lat) return 1;
    double first = 0, last = 0, started = rc_now(), last_commit = started;
    while (!rc_stop && got < want) {
        if (got > 0 && last - last_commit >= 0.2) {
            rc_commit_positions(rk);
            last_commit = last;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg) { /* give up when nothing comes: a dead broker must not hang a benchmark */
            double idle = rc_now() - (last > 0 ? last : started);
            if (idle > (last > 0 ? idle_timeout : idle_timeout + 30)) {
                fprintf(stderr, "raw_consumer: nothing for %.0f s after %lld messages\n", idle,
                        got);
                break;
            }
            continue;
        }
        if (!msg->err) {
            last = rc_now();
            if (got++ == 0) {
                first = last;
                if (lat) fprintf(stderr, "raw_consumer: first message\n");
            }
            bytes += msg->len;
            if (producer && got % copy_every == 0) {
                rd_kafka_resp_err_t pe;
                while ((pe = rc_copy(producer, copy_topic, msg)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    rd_kafka_poll(producer, 10);
                if (pe)
                    fprintf(stderr, "raw_consumer: copy: %s\n", rd_kafka_err2str(pe));
                else
                    copies++;
            }
            if (producer && got % 1024 == 0) rd_kafka_poll(producer, 0);
            long long stamp = lat ? rc_stamp_us(msg->payload, msg->len) : 0;
            if (stamp > 0 && nlat < (size_t)want)
                lat[nlat++] = (int)((long long)(last * 1e6) - stamp);
        } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "raw_consumer: %s\n", rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    double span = last - first;
    if (producer) rd_kafka_flush(producer, 60000);
    struct rusage ru; /* CPU of the whole process (all librdkafka threads) up to the N-th message */
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"msgs\":%lld,\"bytes\":%zu,\"first_to_last_s\":%.6f,\"rate\":%.1f,"
           "\"assign_to_first_s\":%.6f,\"first_at\":%.6f,\"last_at\":%.6f,\"cpu_s\":%.3f,"
           "\"hwm_kb\":%ld,\"copies\":%lld,\"copies_acked\":%lld}\n",
           got, bytes, span, span > 0 ? (double)(got - 1) / span : 0.0,
           rc_assign_at > 0 && first > 0 ? first - rc_assign_at : -1.0, first, last, cpu,
           rc_vm_hwm_kb(), copies, rc_copies_acked);
    fflush(stdout);
    if (lat) {
        FILE *f = fopen(latency_path, "w");
        for (size_t i = 0; f && i < nlat; i++)
            fprintf(f, "%d\n", lat[i]);
        if (!f || fclose(f) != 0) fprintf(stderr, "raw_consumer: cannot write %s\n", latency_path);
        free(lat);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (producer) rd_kafka_destroy(producer);
    return got >= want ? 0 : 1;
}
