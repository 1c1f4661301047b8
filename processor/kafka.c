/*
 * kafka.c — librdkafka handle construction shared by every command (see kafka.h).
 */
#include "processor/kafka.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/log.h"

/* The last error-level line librdkafka logged (its own words: an authentication or TLS
 * failure is reported there, while the API only says "transport failure"). librdkafka
 * redacts secrets in its logs. */
static pthread_mutex_t last_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[512];

void kj_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* kafka.properties go to every client kjobs makes (consumers and producers alike), so
     * librdkafka's note that one of them does not apply to this kind of client is expected:
     * kept at debug, not a warning on every start */
    if (level > 3 && strcmp(fac, "CONFWARN") == 0 &&
        strstr(buf, " property and will be ignored by this "))
        level = 7; /* LOG_DEBUG */
    kj_log(kj_log_level_from_syslog(level), buf, "{s:s,s:s,s:s}", "component", "librdkafka",
           "facility", fac, "client", rk ? rd_kafka_name(rk) : "");
    if (level <= 3) { /* LOG_ERR and worse */
        /* "N/N brokers are down" follows every specific failure: keep the specific one */
        bool summary = strstr(buf, "brokers are down") != NULL;
        pthread_mutex_lock(&last_error_lock);
        if (!summary || !last_error[0]) snprintf(last_error, sizeof(last_error), "%s", buf);
        pthread_mutex_unlock(&last_error_lock);
    }
}

bool kj_kafka_last_error(char *buf, size_t size) {
    pthread_mutex_lock(&last_error_lock);
    bool any = last_error[0] != '\0';
    snprintf(buf, size, "%s", last_error);
    pthread_mutex_unlock(&last_error_lock);
    return any;
}

int kj_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size) {
    char rd_err[512];
    if (rd_kafka_conf_set(conf, name, value, rd_err, sizeof(rd_err)) != RD_KAFKA_CONF_OK) {
        /* rd_err can quote the value for enum/int properties; it never holds secrets for
         * string properties (those accept any value), so keep it: it says what is wrong. */
        snprintf(errstr, errstr_size, "librdkafka property %s: %s", name, rd_err);
        return -1;
    }
    return 0;
}

static rd_kafka_conf_t *conf_new(const kj_config *cfg, bool producer, char *errstr,
                                 size_t errstr_size) {
    if (strcmp(cfg->bootstrap, "embedded") == 0) {
        snprintf(errstr, errstr_size,
                 "kafka.bootstrap is \"embedded\": start `kjobs broker` and pass its address with "
                 "-b (or KJOBS_KAFKA_BOOTSTRAP), or use `kjobs run --embedded`");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kj_kafka_log_cb);
    if (kj_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap, errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "client.id", cfg->client_id, errstr, errstr_size))
        goto fail;
    /* Unkeyed jobs: spread each one at random rather than librdkafka's sticky partitioning
     * (one partition per 10 ms linger window), so a burst of jobs reaches every partition
     * and so every worker thread. A user property still wins. */
    if (producer &&
        kj_kafka_conf_set(conf, "sticky.partitioning.linger.ms", "0", errstr, errstr_size))
        goto fail;
    for (size_t i = 0; i < cfg->rdkafka_prop_count; i++) {
        const char *prop = cfg->rdkafka_props[i];
        const char *eq = strchr(prop, '=');
        char name[256];
        if (!eq || (size_t)(eq - prop) >= sizeof(name) || eq == prop) {
            snprintf(errstr, errstr_size, "kafka.properties: expected \"name=value\"");
            goto fail;
        }
        memcpy(name, prop, (size_t)(eq - prop));
        name[eq - prop] = '\0';
        if (kj_kafka_conf_set(conf, name, eq + 1, errstr, errstr_size)) goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *kj_kafka_conf_new(const kj_config *cfg, char *errstr, size_t errstr_size) {
    return conf_new(cfg, false, errstr, errstr_size);
}

long long kj_kafka_conf_get_ll(const rd_kafka_conf_t *conf, const char *name, long long fallback) {
    char value[32];
    size_t size = sizeof(value);
    if (rd_kafka_conf_get(conf, name, value, &size) != RD_KAFKA_CONF_OK || size > sizeof(value))
        return fallback;
    char *end;
    long long n = strtoll(value, &end, 10);
    return end != value && *end == '\0' ? n : fallback;
}

int kj_kafka_fit_message_max_bytes(const kj_config *cfg, rd_kafka_conf_t *conf, char *errstr,
                                   size_t errstr_size) {
    if (kj_kafka_prop_value(cfg, "message.max.bytes")) return 0;
    long long fetch = kj_kafka_conf_get_ll(conf, "fetch.max.bytes", -1);
    if (fetch >= 0 && fetch < 1000) { /* message.max.bytes cannot come down that far */
        snprintf(errstr, errstr_size,
                 "librdkafka property fetch.max.bytes: %lld is below 1000, the least "
                 "message.max.bytes librdkafka accepts, and a consumer's fetch.max.bytes may not "
                 "be below its message.max.bytes",
                 fetch);
        return -1;
    }
    if (fetch >= kj_kafka_conf_get_ll(conf, "message.max.bytes", 0)) return 0;
    char value[32];
    snprintf(value, sizeof(value), "%lld", fetch);
    return kj_kafka_conf_set(conf, "message.max.bytes", value, errstr, errstr_size);
}

/* librdkafka's prefetch queue (queued.max.messages.kbytes) and Fetch response size
 * (fetch.max.bytes), unless kafka.properties sets them. Every consumer kjobs makes gets them,
 * so none holds librdkafka's defaults (a 64 MiB queue and 50 MiB responses): the worker's group
 * consumer sized from batch.max_pending_bytes (kj_kafka_worker_sizes), the others (the key-order
 * scan, the control and status readers, the periodic reader, the console's and the CLI's, which
 * read little or release each record at once) at the floor, KJ_QUEUE_MIN_KBYTES and
 * KJ_FETCH_MIN_BYTES, whatever the bound.
 *
 * The queue: its default alone was over the whole process's memory target, and one Fetch
 * response is kept alive by any record of it still held, so a smaller queue also means smaller
 * responses pinned by a slow job. A full queue makes librdkafka wait fetch.queue.backoff.ms
 * (1 s by default) before it fetches that partition again: a small queue fills at every fetch,
 * so the wait is cut to KJ_FETCH_QUEUE_BACKOFF_MS (measured: with a 1 MiB queue and the 1 s
 * wait, a drain with 10 % retries ran at 0.1x its rate). librdkafka before 2.2.0 (Debian 12's
 * 2.0.2) has no such property and parks a full queue's partitions for up to a second: there
 * the queue keeps librdkafka's default and only the held records are bounded.
 *
 * The response: any record kjobs still holds (its job running, its batch not yet committed,
 * its routed copy not yet acknowledged) keeps its whole response buffer alive, so with 128 main
 * and 128 ladder partitions each holding a few records, ~1 MiB responses were most of the
 * process's peak heap (18-46 MiB, heaptrack; bench/RESULTS.md, "The router's copies"). The
 * worker's scales with the bound, not fixed: librdkafka keeps one Fetch in flight per broker,
 * so the response size over the round trip caps the rate, and a larger bound is how a user buys
 * throughput on a high-latency link. A record batch larger than fetch.max.bytes still comes
 * whole (KIP-74: the first batch of a response is never cut), so a large job still runs. A
 * user's message.max.bytes larger than the response becomes the response size; the consumer's
 * message.max.bytes otherwise comes down to it (kj_kafka_fit_message_max_bytes). A user's own
 * fetch.max.bytes is left alone. Returns 0, or -1 with errstr. */
#define KJ_FETCH_QUEUE_BACKOFF_MS "1"
#define KJ_QUEUE_MIN_KBYTES       1024
#define KJ_FETCH_MIN_BYTES        262144
static int consumer_sizes(const kj_config *cfg, rd_kafka_conf_t *conf, int queue_kbytes,
                          long long fetch, char *errstr, size_t errstr_size) {
    if (rd_kafka_version() >= 0x020200ff) {
        if (!kj_kafka_prop_value(cfg, "fetch.queue.backoff.ms") &&
            kj_kafka_conf_set(conf, "fetch.queue.backoff.ms", KJ_FETCH_QUEUE_BACKOFF_MS, errstr,
                              errstr_size))
            return -1;
        char kbytes[32];
        snprintf(kbytes, sizeof(kbytes), "%d", queue_kbytes);
        if (!kj_kafka_prop_value(cfg, "queued.max.messages.kbytes") &&
            kj_kafka_conf_set(conf, "queued.max.messages.kbytes", kbytes, errstr, errstr_size))
            return -1;
    }
    if (!kj_kafka_prop_value(cfg, "fetch.max.bytes")) {
        if (kj_kafka_prop_value(cfg, "message.max.bytes")) {
            long long max = kj_kafka_conf_get_ll(conf, "message.max.bytes", 0);
            if (max > fetch) fetch = max;
        }
        char value[32];
        snprintf(value, sizeof(value), "%lld", fetch);
        if (kj_kafka_conf_set(conf, "fetch.max.bytes", value, errstr, errstr_size)) return -1;
    }
    return kj_kafka_fit_message_max_bytes(cfg, conf, errstr, errstr_size);
}

int kj_kafka_worker_sizes(const kj_config *cfg, rd_kafka_conf_t *conf, char *errstr,
                          size_t errstr_size) {
    long long fetch = cfg->batch_max_pending_bytes / 16;
    if (fetch < KJ_FETCH_MIN_BYTES) fetch = KJ_FETCH_MIN_BYTES;
    return consumer_sizes(cfg, conf, kj_config_queue_kbytes(cfg), fetch, errstr, errstr_size);
}

/* librdkafka refuses a classic consumer whose max.poll.interval.ms is below its
 * session.timeout.ms (45 s by default). A user who lowers only the former (allowed with
 * group.protocol = consumer, where session.timeout.ms is the broker's and may not be set) would
 * have every other consumer that names a group (they are classic: they never join) refused: the
 * session timeout comes down to it instead. */
static int fit_session_timeout(const kj_config *cfg, rd_kafka_conf_t *conf, char *errstr,
                               size_t errstr_size) {
    if (kj_kafka_prop_value(cfg, "session.timeout.ms")) return 0;
    long long poll = kj_kafka_conf_get_ll(conf, "max.poll.interval.ms", -1);
    if (poll < 1 || poll >= kj_kafka_conf_get_ll(conf, "session.timeout.ms", 0)) return 0;
    char value[32];
    snprintf(value, sizeof(value), "%lld", poll);
    return kj_kafka_conf_set(conf, "session.timeout.ms", value, errstr, errstr_size);
}

static rd_kafka_conf_t *consumer_conf_new(const kj_config *cfg, bool classic, char *errstr,
                                          size_t errstr_size) {
    rd_kafka_conf_t *conf = conf_new(cfg, false, errstr, errstr_size);
    if (conf &&
        (consumer_sizes(cfg, conf, KJ_QUEUE_MIN_KBYTES, KJ_FETCH_MIN_BYTES, errstr, errstr_size) ||
         (classic && fit_session_timeout(cfg, conf, errstr, errstr_size)))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

rd_kafka_conf_t *kj_kafka_consumer_conf_new(const kj_config *cfg, char *errstr,
                                            size_t errstr_size) {
    return consumer_conf_new(cfg, true, errstr, errstr_size);
}

rd_kafka_conf_t *kj_kafka_group_consumer_conf_new(const kj_config *cfg, bool kip848, char *errstr,
                                                  size_t errstr_size) {
    /* group.protocol=consumer refuses a session.timeout.ms set at all (it is the broker's) */
    return consumer_conf_new(cfg, !kip848, errstr, errstr_size);
}

rd_kafka_conf_t *kj_kafka_producer_conf_new(const kj_config *cfg, char *errstr,
                                            size_t errstr_size) {
    return conf_new(cfg, true, errstr, errstr_size);
}

rd_kafka_t *kj_kafka_producer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size) {
    if (kj_kafka_conf_set(conf, "acks", "all", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    /* "acks" is a topic-level property: setting it made librdkafka create the default topic
     * conf, so attach the partitioner to that one instead of replacing it */
    rd_kafka_topic_conf_t *tconf = rd_kafka_conf_get_default_topic_conf(conf);
    if (!tconf) {
        tconf = rd_kafka_topic_conf_new();
        rd_kafka_conf_set_default_topic_conf(conf, tconf);
    }
    /* Keyed messages land where Java's DefaultPartitioner puts them:
     * toPositive(murmur2(key)) % partitions (tests/unit/test_partitioner.c checks it against
     * Kafka's own vectors); unkeyed ones (NULL key) are spread at random. Not plain
     * "murmur2": it would hash a NULL key as the empty key, putting every unkeyed job on one
     * partition. */
    rd_kafka_topic_conf_set_partitioner_cb(tconf, rd_kafka_msg_partitioner_murmur2_random);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

int kj_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, char *errstr,
                             size_t errstr_size) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        snprintf(errstr, errstr_size, "metadata for topic %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    int count = -1;
    if (md->topic_cnt == 1 && !md->topics[0].err) {
        count = md->topics[0].partition_cnt;
    } else {
        snprintf(errstr, errstr_size, "topic %s: %s", topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not found");
    }
    rd_kafka_metadata_destroy(md);
    return count;
}

const char *kj_kafka_header_str(rd_kafka_headers_t *hdrs, const char *name, char *buf,
                                size_t size) {
    const void *val;
    size_t len;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (!val) len = 0;
    if (len >= size) len = size - 1;
    if (len) memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

const char *kj_kafka_prop_value(const kj_config *cfg, const char *name) {
    size_t n = strlen(name);
    const char *value = NULL;
    for (size_t i = 0; i < cfg->rdkafka_prop_count; i++) {
        const char *prop = cfg->rdkafka_props[i];
        if (strncmp(prop, name, n) == 0 && prop[n] == '=') value = prop + n + 1;
    }
    return value;
}

/* librdkafka refuses these with group.protocol=consumer (rdkafka_conf.c): the classic
 * protocol's own settings */
static const char *const classic_only_props[] = {"session.timeout.ms", "heartbeat.interval.ms",
                                                 "partition.assignment.strategy",
                                                 "group.protocol.type"};

/* The first classic-only property the passthrough list sets, or NULL. */
static const char *classic_only_prop_set(const kj_config *cfg) {
    for (size_t i = 0; i < sizeof(classic_only_props) / sizeof(classic_only_props[0]); i++)
        if (kj_kafka_prop_value(cfg, classic_only_props[i])) return classic_only_props[i];
    return NULL;
}

int kj_kafka_group_protocol(const kj_config *cfg, kj_group_protocol *out, char *errstr,
                            size_t errstr_size) {
    memset(out, 0, sizeof(*out));
    bool has_kip848 = rd_kafka_version() >= 0x020c0000; /* KIP-848 GA: librdkafka 2.12 */
    if (strcmp(cfg->group_protocol, "classic") == 0) {
        snprintf(out->why, sizeof(out->why), "kafka.group_protocol=classic");
        return 0;
    }
    if (strcmp(cfg->group_protocol, "consumer") == 0) {
        if (!has_kip848) {
            snprintf(errstr, errstr_size,
                     "kafka.group_protocol=consumer (KIP-848) needs librdkafka >= 2.12; this "
                     "is %s: use auto or classic",
                     rd_kafka_version_str());
            return -1;
        }
        const char *classic = classic_only_prop_set(cfg);
        if (classic) {
            snprintf(errstr, errstr_size,
                     "kafka.group_protocol=consumer (KIP-848) and the librdkafka property %s, a "
                     "classic-protocol setting (KIP-848 keeps it on the broker): drop one of them",
                     classic);
            return -1;
        }
        out->kip848 = true;
        snprintf(out->why, sizeof(out->why), "kafka.group_protocol=consumer");
        return 0;
    }
    if (!has_kip848) {
        snprintf(out->why, sizeof(out->why), "auto: librdkafka %s has no KIP-848 (>= 2.12)",
                 rd_kafka_version_str());
        return 0;
    }
    const char *classic = classic_only_prop_set(cfg);
    if (classic) {
        snprintf(out->why, sizeof(out->why), "auto: %s is set, a classic-protocol property",
                 classic);
        return 0;
    }
    out->kip848 = out->may_fall_back = true;
    snprintf(out->why, sizeof(out->why),
             "auto: librdkafka %s has KIP-848; classic if the broker refuses it",
             rd_kafka_version_str());
    return 0;
}

bool kj_kafka_kip848_refused(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
           err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION ||
           /* by name: newer than librdkafka 2.0.2 */
           strcmp(rd_kafka_err2name(err), "UNSUPPORTED_ASSIGNOR") == 0;
}
