/*
 * config.c — the configuration table and everything it drives.
 *
 * DESIGN
 *
 * One row per setting (kj_settings[] below): dotted name, environment name, type, the field of
 * kj_config it fills, its default, its bounds and its documentation. Every path into the config
 * goes through the same three steps, so a rule written once holds everywhere:
 *
 *     parse   (libconfig setting  -> kj_value)      value_from_setting()
 *             (env / CLI / default text -> kj_value) value_from_text()
 *     check   (kj_value against the row's bounds)    value_check()
 *     store   (kj_value -> kj_config field, origin)  value_store()
 *
 * Defaults are text in the environment syntax and go through value_from_text() too, so a default
 * can never be out of its own bounds without the unit tests noticing. The example file and the
 * Markdown reference are rendered from the same rows (kj_config_write_example/_reference).
 *
 * Precedence: defaults < file < environment < command line (kj_config_set, kj_config_add_
 * rdkafka_prop). librdkafka properties are the exception that appends instead of replacing:
 * file (or KJOBS_KAFKA_PROPERTIES) first, then KJOBS_RDKAFKA_* sorted by name, then -X, so the
 * later one wins when librdkafka applies them in order.
 *
 * Each value remembers where it came from (cfg->origin[row]) so cross-setting errors, which are
 * found only after everything is loaded, can still point at the file line or variable to fix.
 *
 * Secrets: librdkafka property values (file, environment, -X) are never written into an error
 * or into kj_config_write_effective() output. Every other value may be quoted in errors,
 * truncated and with control bytes escaped.
 *
 * @locality main thread only (not thread-safe while loading; the result is read-only after)
 */
#include "processor/config.h"
#include "processor/periodic_config.h"
#include "processor/config_limits.h"
#include "processor/topic_layout.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <sys/stat.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Allocation: configuration is loaded once at start; running out of memory there is fatal.    */

static void *kj_cfg_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void *kj_cfg_xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

static char *kj_cfg_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(kj_cfg_xmalloc(n), s, n);
}

static char *kj_cfg_xstrndup(const char *s, size_t n) {
    char *d = kj_cfg_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *kj_cfg_concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *d = kj_cfg_xmalloc(la + lb + 1);
    memcpy(d, a, la);
    memcpy(d + la, b, lb + 1);
    return d;
}

static void strlist_free(char **list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static void strlist_push(char ***list, size_t *n, char *owned) {
    *list = kj_cfg_xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = owned;
}

/* Quote untrusted text for an error message: at most 64 bytes, control/non-ASCII bytes as \xNN. */
static void quote_for_error(const char *s, char *buf, size_t size) {
    size_t o = 0, i;
    if (size < 8) {
        if (size) buf[0] = '\0';
        return;
    }
    buf[o++] = '"';
    for (i = 0; s[i] && i < 64 && o + 6 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    if (s[i] && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* Durations                                                                                   */

int kj_duration_parse(const char *text, int64_t *ms_out) {
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"ms", 1}, {"m", 60000}, {"s", 1000}};
    if (!text || !*text) return -1;
    const char *p = text;
    int64_t total = 0;
    int64_t last_unit = INT64_MAX; /* units must be strictly decreasing: "1h30m", not "30m1h" */
    while (*p) {
        if (!isdigit((unsigned char)*p)) return -1;
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            int d = *p++ - '0';
            if (n > (INT64_MAX - d) / 10) return -1;
            n = n * 10 + d;
        }
        int64_t mult = 0;
        if (*p == '\0') {
            if (last_unit != INT64_MAX) return -1; /* "1m30": a bare number only stands alone */
            mult = 1;                              /* "250": milliseconds */
        } else {
            for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
                size_t len = strlen(units[u].unit);
                if (strncmp(p, units[u].unit, len) == 0) {
                    mult = units[u].ms;
                    p += len;
                    break;
                }
            }
            if (mult == 0 || mult >= last_unit) return -1;
            last_unit = mult;
        }
        if (n > INT64_MAX / mult) return -1;
        if (total > INT64_MAX - n * mult) return -1;
        total += n * mult;
    }
    *ms_out = total;
    return 0;
}

void kj_duration_format(int64_t ms, char *buf, size_t size) {
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t o = 0;
    if (size == 0) return;
    buf[0] = '\0';
    if (ms <= 0) {
        snprintf(buf, size, ms == 0 ? "0s" : "%lldms", (long long)ms);
        return;
    }
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]) && o < size; u++) {
        if (ms >= units[u].ms) {
            int w =
                snprintf(buf + o, size - o, "%lld%s", (long long)(ms / units[u].ms), units[u].unit);
            if (w < 0) return;
            o += (size_t)w;
            ms %= units[u].ms;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The table                                                                                   */

typedef enum { KT_STRING, KT_INT, KT_BOOL, KT_DOUBLE, KT_DURATION, KT_STRLIST, KT_DURLIST } kj_type;

enum {
    KF_NONEMPTY = 1 << 0,    /* strings: "" is not allowed */
    KF_SECRET = 1 << 1,      /* values never appear in errors or effective-config output */
    KF_MS_INT = 1 << 2,      /* duration written as integer milliseconds in the example */
    KF_INT_FIELD = 1 << 3,   /* duration stored in an int field (bounds must fit) */
    KF_SPLIT_WORDS = 1 << 4, /* list from env: whitespace-separated words, not comma-separated */
    KF_JSON_ONLY = 1 << 5,   /* list from env: JSON array only (items may contain anything) */
    KF_ARGS_SECRET = 1 << 6, /* command lists: words after the program may be secrets (a
                                --token=...): never in errors, "<hidden>" in effective output */
};

/* Extra check for a string or a list item: 0 ok, else -1 with a complete message in why. */
typedef int (*kj_check_fn)(const char *value, char *why, size_t size);

typedef struct {
    const char *group; /* NULL for a top-level setting */
    const char *name;
    const char *key; /* group.name, or name at top level */
    const char *env; /* KJOBS_<GROUP>_<NAME>, upper-cased (tests check the rule) */
    kj_type type;
    size_t off, count_off; /* field, and the size_t count for lists */
    const char *def;       /* default, in the environment syntax */
    int64_t min, max;      /* ints, durations and duration-list items */
    double dmin, dmax;     /* doubles */
    size_t max_items;      /* lists (0 = unbounded) */
    unsigned flags;
    kj_check_fn check;
    const char *expect; /* for checked strings: what is expected, for the reference tables */
    const char *doc;
} kj_setting;

static int check_bootstrap(const char *v, char *why, size_t size);
static int check_topic(const char *v, char *why, size_t size);
static int check_topic_prefix(const char *v, char *why, size_t size);
static int check_topic_or_empty(const char *v, char *why, size_t size);
static int check_rdkafka_prop(const char *v, char *why, size_t size);
static int check_listen(const char *v, char *why, size_t size);
static int check_log_level(const char *v, char *why, size_t size);
static int check_group_protocol(const char *v, char *why, size_t size);
static int check_batch_ordering(const char *v, char *why, size_t size);
static int check_retry_ordering(const char *v, char *why, size_t size);
static int check_exec_protocol(const char *v, char *why, size_t size);
static int check_exec_type(const char *v, char *why, size_t size);
static int check_type_timeout(const char *v, char *why, size_t size);
static int check_registry_url(const char *v, char *why, size_t size);
static int check_ui_token(const char *v, char *why, size_t size);

#define F(field)     offsetof(kj_config, field)
#define ROW(g, n, e) .group = g, .name = n, .key = g "." n, .env = e
#define TOP(n, e)    .group = NULL, .name = n, .key = n, .env = e
#define DAY_MS       INT64_C(86400000)
#define HOUR_MS      INT64_C(3600000)

static const kj_setting kj_settings[] = {
    /* kafka */
    {ROW("kafka", "bootstrap", "KJOBS_KAFKA_BOOTSTRAP"), .type = KT_STRING, .off = F(bootstrap),
     .def = "embedded", .flags = KF_NONEMPTY, .check = check_bootstrap,
     .expect = "\"embedded\" or a broker list \"host:port,host:port\"",
     .doc = "Kafka brokers as \"host:port,host:port\", or \"embedded\": `kjobs run --embedded` "
            "and `kjobs broker` start an in-process broker; the other commands then need the "
            "real list (-b or KJOBS_KAFKA_BOOTSTRAP). The -b flag overrides it."},
    {ROW("kafka", "group", "KJOBS_KAFKA_GROUP"), .type = KT_STRING, .off = F(group), .def = "kjobs",
     .flags = KF_NONEMPTY,
     .doc = "Consumer group id. One group consumes the main topic and its retry ladder. The -G "
            "flag overrides it."},
    {ROW("kafka", "client_id", "KJOBS_KAFKA_CLIENT_ID"), .type = KT_STRING, .off = F(client_id),
     .def = "kjobs", .flags = KF_NONEMPTY,
     .doc = "client.id of every Kafka client kjobs creates; also the value of the kjobs-worker "
            "header on retry and DLQ copies."},
    {ROW("kafka", "group_instance_id", "KJOBS_KAFKA_GROUP_INSTANCE_ID"), .type = KT_STRING,
     .off = F(group_instance_id), .def = "",
     .doc = "Static group membership (group.instance.id) when not empty: a restarted process "
            "with the same id gets its partitions back without a rebalance. Must be unique per "
            "process, e.g. the pod name."},
    {ROW("kafka", "group_protocol", "KJOBS_KAFKA_GROUP_PROTOCOL"), .type = KT_STRING,
     .off = F(group_protocol), .def = "auto", .check = check_group_protocol,
     .expect = "auto, consumer or classic",
     .doc = "Consumer group protocol. consumer: KIP-848 (Kafka >= 4.0, librdkafka >= 2.12): the "
            "broker assigns partitions incrementally, a member joining or leaving stops only "
            "the partitions that move. classic: JoinGroup/SyncGroup with kjobs' roundrobin "
            "assignor, which revokes every partition on each rebalance (eager). auto: consumer "
            "when this librdkafka has it and no classic-only property (session.timeout.ms, "
            "heartbeat.interval.ms, partition.assignment.strategy, group.protocol.type) is "
            "set; if the broker then refuses KIP-848 before the first assignment (Kafka < 4.0, "
            "or the protocol disabled), the worker logs why and joins with classic instead."},
    {ROW("kafka", "properties", "KJOBS_KAFKA_PROPERTIES"), .type = KT_STRLIST,
     .off = F(rdkafka_props), .count_off = F(rdkafka_prop_count), .def = "",
     .flags = KF_SECRET | KF_JSON_ONLY, .check = check_rdkafka_prop,
     .doc = "librdkafka properties passed through, each \"name=value\", e.g. "
            "\"security.protocol=SASL_SSL\". Applied in order after kjobs' own settings, then "
            "KJOBS_RDKAFKA_* variables, then -X flags, so later ones win. They go to every "
            "client kjobs makes, consumers and producers alike: librdkafka's note that one does "
            "not apply to a kind of client is logged at debug. Unknown properties and "
            "values librdkafka rejects are errors; values are never printed. Refused because "
            "kjobs sets them itself: bootstrap.servers, metadata.broker.list, group.id, "
            "client.id, group.instance.id, group.protocol, enable.auto.commit, "
            "enable.auto.offset.store. From "
            "the environment: a JSON array of strings."},
    {ROW("kafka", "schema_registry_url", "KJOBS_KAFKA_SCHEMA_REGISTRY_URL"), .type = KT_STRING,
     .off = F(sr_url), .def = "", .check = check_registry_url,
     .expect = "\"\" or \"http(s)://host[:port][/path]\", comma-separated",
     .doc = "Confluent Schema Registry API root(s), e.g. \"http://registry:8081\" (Apicurio "
            "Registry: \"http://host:8080/apis/ccompat/v7\"). Several, comma-separated, are "
            "tried in turn. When set, values in Confluent framing (magic byte 0, 4-byte schema "
            "id) are decoded with the writer schema GET /schemas/ids/{id} returns, if it "
            "resolves to kjobs.Job (docs/producers.md, \"Schema Registry\"). \"\": such values "
            "are dead-lettered. No credentials in the URL: use the settings below."},
    {ROW("kafka", "schema_registry_user", "KJOBS_KAFKA_SCHEMA_REGISTRY_USER"), .type = KT_STRING,
     .off = F(sr_user), .def = "",
     .doc = "HTTP basic auth user for the Schema Registry; \"\" sends no credentials."},
    {ROW("kafka", "schema_registry_password", "KJOBS_KAFKA_SCHEMA_REGISTRY_PASSWORD"),
     .type = KT_STRING, .off = F(sr_password), .def = "", .flags = KF_SECRET,
     .doc = "HTTP basic auth password for the Schema Registry (with "
            "kafka.schema_registry_user). Never logged or printed; set it from a secret with "
            "KJOBS_KAFKA_SCHEMA_REGISTRY_PASSWORD."},
    {ROW("kafka", "schema_registry_ca_file", "KJOBS_KAFKA_SCHEMA_REGISTRY_CA_FILE"),
     .type = KT_STRING, .off = F(sr_ca_file), .def = "",
     .doc = "PEM file of the CA certificates that verify an https registry; \"\": the system's "
            "CA store. The server certificate and host name are always verified."},
    {ROW("kafka", "schema_registry_cert_file", "KJOBS_KAFKA_SCHEMA_REGISTRY_CERT_FILE"),
     .type = KT_STRING, .off = F(sr_cert_file), .def = "",
     .doc = "PEM client certificate for mutual TLS with the registry; \"\" for none."},
    {ROW("kafka", "schema_registry_key_file", "KJOBS_KAFKA_SCHEMA_REGISTRY_KEY_FILE"),
     .type = KT_STRING, .off = F(sr_key_file), .def = "",
     .doc = "PEM private key of kafka.schema_registry_cert_file; \"\": the key is in the "
            "certificate file."},
    {ROW("kafka", "schema_registry_key_password", "KJOBS_KAFKA_SCHEMA_REGISTRY_KEY_PASSWORD"),
     .type = KT_STRING, .off = F(sr_key_password), .def = "", .flags = KF_SECRET,
     .doc = "Passphrase of an encrypted kafka.schema_registry_key_file. Never logged or "
            "printed."},
    {ROW("kafka", "schema_registry_timeout", "KJOBS_KAFKA_SCHEMA_REGISTRY_TIMEOUT"),
     .type = KT_DURATION, .off = F(sr_timeout_ms), .def = "5s", .min = 100, .max = 300000,
     .doc = "Longest one registry request may take (connect included). A registry that cannot "
            "be reached never dead-letters a job: the batch waits and retries with backoff "
            "(0.25 s doubling to 10 s), its partition does not advance, and "
            "kjobs_schema_registry_waiting_batches says so."},
    {ROW("kafka", "schema_registry_cache_size", "KJOBS_KAFKA_SCHEMA_REGISTRY_CACHE_SIZE"),
     .type = KT_INT, .off = F(sr_cache_size), .def = "1000", .min = 1, .max = 1000000,
     .doc = "Most schema ids whose answer is kept. Schemas (and \"incompatible\" verdicts) are "
            "kept for good, since registry ids are immutable; when full, \"unknown id\" answers "
            "are dropped first, then the oldest."},
    {ROW("kafka", "schema_registry_unknown_ttl", "KJOBS_KAFKA_SCHEMA_REGISTRY_UNKNOWN_TTL"),
     .type = KT_DURATION, .off = F(sr_unknown_ttl_ms), .def = "1m", .min = 0, .max = DAY_MS,
     .doc = "How long a \"schema id not found\" answer (error code 40403) is remembered: jobs "
            "naming that id meanwhile go to the DLQ without asking again."},
    /* topics */
    {ROW("topics", "main", "KJOBS_TOPICS_MAIN"), .type = KT_STRING, .off = F(main_topic),
     .def = "jobs", .flags = KF_NONEMPTY, .check = check_topic, .expect = "a Kafka topic name",
     .doc = "The main jobs topic, consumed by `kjobs run`; the default --topic of the other "
            "commands."},
    {ROW("topics", "retry_prefix", "KJOBS_TOPICS_RETRY_PREFIX"), .type = KT_STRING,
     .off = F(retry_prefix), .def = "", .check = check_topic_prefix,
     .expect = "\"\" or a topic name prefix",
     .doc = "Prefix of the retry ladder topics <prefix>1 .. <prefix>N, one per retry.delays "
            "entry. \"\" means \"<main>.retry.\" (jobs.retry.1, jobs.retry.2, ...)."},
    {ROW("topics", "dlq", "KJOBS_TOPICS_DLQ"), .type = KT_STRING, .off = F(dlq_topic), .def = "",
     .check = check_topic_or_empty, .expect = "\"\" or a Kafka topic name",
     .doc = "Dead-letter topic. \"\" means \"<main>.dlq\"."},
    {ROW("topics", "partitions", "KJOBS_TOPICS_PARTITIONS"), .type = KT_INT, .off = F(partitions),
     .def = "8", .min = 1, .max = 10000,
     .doc = "Partitions of each topic created by `kjobs broker` and `kjobs topics --create`. "
            "Existing topics are not changed."},
    {ROW("topics", "replication_factor", "KJOBS_TOPICS_REPLICATION_FACTOR"), .type = KT_INT,
     .off = F(replication_factor), .def = "1", .min = 1, .max = 32,
     .doc = "Replication factor of topics created by `kjobs topics --create`."},
    {ROW("topics", "min_insync_replicas", "KJOBS_TOPICS_MIN_INSYNC_REPLICAS"), .type = KT_INT,
     .off = F(min_insync_replicas), .def = "0", .min = 0, .max = 32,
     .doc = "min.insync.replicas of topics created by `kjobs topics --create` (with acks=all, "
            "a write is acknowledged once this many replicas have it). 0: the broker's "
            "default. Production: replication_factor - 1 (e.g. 3 and 2)."},
    {ROW("topics", "retention", "KJOBS_TOPICS_RETENTION"), .type = KT_DURATION,
     .off = F(topic_retention_ms), .def = "7d", .min = 60000, .max = 3650 * DAY_MS,
     .doc = "retention.ms of the main and retry-ladder topics created by `kjobs topics "
            "--create`. Must exceed the longest retry delay, or waiting copies are deleted "
            "before they are due."},
    {ROW("topics", "dlq_retention", "KJOBS_TOPICS_DLQ_RETENTION"), .type = KT_DURATION,
     .off = F(dlq_retention_ms), .def = "30d", .min = 60000, .max = 3650 * DAY_MS,
     .doc = "retention.ms of the dead-letter topic created by `kjobs topics --create`. At "
            "least topics.retention: dead letters outlive the ladder, so there is time to "
            "inspect and replay them."},
    /* batch */
    {ROW("batch", "max_jobs", "KJOBS_BATCH_MAX_JOBS"), .type = KT_INT, .off = F(batch_max_jobs),
     .def = "100", .min = 1, .max = 100000,
     .doc = "Most jobs in one handler call. A batch holds jobs of one partition in offset "
            "order."},
    {ROW("batch", "max_wait_ms", "KJOBS_BATCH_MAX_WAIT_MS"), .type = KT_DURATION,
     .off = F(batch_max_wait_ms), .def = "0", .min = 0, .max = 60000,
     .flags = KF_MS_INT | KF_INT_FIELD,
     .doc = "Longest a partition's first waiting job waits for its batch to fill before the "
            "handler is called anyway. 0: a free worker takes what has arrived (batches still "
            "grow to batch.max_jobs while the workers are busy, so under load they fill without "
            "waiting). Milliseconds, or a duration string."},
    {ROW("batch", "max_pending", "KJOBS_BATCH_MAX_PENDING"), .type = KT_INT,
     .off = F(batch_max_pending), .def = "10000", .min = 1, .max = 10000000,
     .doc = "Back-pressure bound: most jobs fetched but not yet finished per partition; above "
            "it the partition is paused. At least batch.max_jobs. With batch.ordering = \"key\" "
            "it also bounds the jobs a restart runs again: a partition is paused while this many "
            "jobs past its committed offset are fetched, running or finished out of order."},
    {ROW("batch", "max_pending_bytes", "KJOBS_BATCH_MAX_PENDING_BYTES"), .type = KT_INT,
     .off = F(batch_max_pending_bytes), .def = "4194304", .min = 65536, .max = 1073741824,
     .doc = "Back-pressure bound for the whole process, in bytes: fetched records held "
            "(queued or running), each counted as its value and key plus 256 bytes. A "
            "partition that receives a record while the total is at this bound and it holds its "
            "share (the bound over the partitions assigned) is paused until the total is down "
            "to half of it or the partition holds less than its share (none starves). "
            "A quarter of it (at least 1 MiB) also sizes librdkafka's prefetch queue "
            "(queued.max.messages.kbytes, with librdkafka 2.2 or later) and the queue of retry and "
            "dead-letter copies waiting "
            "for their acknowledgement (queue.buffering.max.kbytes), unless kafka.properties "
            "sets them; what those copies hold in memory, headers included, is bounded by the "
            "whole of it (kjobs_routed_copy_bytes), and a sixteenth of it (at least 256 KiB) "
            "the Fetch responses (fetch.max.bytes). With the default a worker peaked at 34-49 "
            "MiB RSS draining 1-2 million 100-byte jobs with 10 % of them retried through the "
            "ladder (8-128 partitions, on the embedded broker and on Kafka; 41-62 MiB, median 44, "
            "over 11 runs with 128 partitions on Kafka, where held records keep librdkafka's "
            "fetch responses alive: bench/RESULTS.md); a larger bound trades memory for fewer "
            "pauses."},
    {ROW("batch", "ordering", "KJOBS_BATCH_ORDERING"), .type = KT_STRING, .off = F(batch_ordering),
     .def = "partition", .check = check_batch_ordering, .expect = "\"partition\" or \"key\"",
     .doc = "\"partition\": a partition's jobs run one batch at a time, in offset order. "
            "\"key\": each main-topic partition is split into batch.key_lanes lanes by job key, "
            "so jobs of different keys of one partition run on several threads at once while "
            "each key's jobs still start in offset order, one at a time; jobs without a key are "
            "spread over the lanes and have no order among themselves. Committed offsets stay "
            "contiguous. Retry-ladder partitions keep partition order. docs/ordering.md."},
    {ROW("batch", "key_lanes", "KJOBS_BATCH_KEY_LANES"), .type = KT_INT, .off = F(batch_key_lanes),
     .def = "0", .min = 0, .max = 1024,
     .doc = "With batch.ordering = \"key\": lanes per main-topic partition (how many of its "
            "keys' batches may run at once). 0: the number of workers. Ignored with "
            "\"partition\"."},
    /* workers */
    {TOP("workers", "KJOBS_WORKERS"), .type = KT_INT, .off = F(workers), .def = "2", .min = 1,
     .max = 1024,
     .doc = "Worker threads running handlers. Different partitions run in parallel; one "
            "partition is never handled by two threads at once (with batch.ordering = \"key\": "
            "one key never is)."},
    /* retry */
    {ROW("retry", "delays", "KJOBS_RETRY_DELAYS"), .type = KT_DURLIST, .off = F(retry_delays_ms),
     .count_off = F(retry_delay_count), .def = "10s,1m,10m", .min = 0, .max = 30 * DAY_MS,
     .max_items = KJ_CONFIG_MAX_RETRY_DELAYS,
     .doc = "The retry ladder: one topic and one delay per entry (N entries). When attempt n "
            "fails and n < retry.max_attempts, the job goes to ladder step min(n, N) and runs "
            "again once that step's delay has passed (with retry.in_place_attempts L: step "
            "min(r, N) for run r = ceil(n / (1 + L)), if r(1 + L) < retry.max_attempts). An "
            "empty list [ ] means no ladder: every failure (after its in-place retries, if any) "
            "goes to the DLQ and retry.max_attempts only bounds in-place retries. From the "
            "environment: comma-separated, e.g. \"10s,1m,10m\"; \"\" for none."},
    {ROW("retry", "max_attempts", "KJOBS_RETRY_MAX_ATTEMPTS"), .type = KT_INT,
     .off = F(retry_max_attempts), .def = "4", .min = 1, .max = 1000,
     .doc = "Attempts, counting the first run, before a failing job goes to the DLQ. Attempts "
            "past the last ladder step reuse the last step."},
    {ROW("retry", "in_place_attempts", "KJOBS_RETRY_IN_PLACE_ATTEMPTS"), .type = KT_INT,
     .off = F(retry_in_place_attempts), .def = "0", .min = 0, .max = 100,
     .doc = "In-place retries before the ladder: a job whose handler asks for a retry (with no "
            "delay, or one no longer than retry.in_place_delay) is run again by this worker after "
            "retry.in_place_delay, up to this many times, before it goes to the ladder. Its "
            "partition (with batch.ordering = \"key\": its key lane) waits meanwhile, holding no "
            "thread; no copy is written. Each is an attempt (kjobs_job_attempt, retry.max_attempts "
            "count it): each run owns a block of 1 + this attempts and the ladder step follows "
            "the runs (docs/retries.md, \"Retrying in place\"). 0: every retry goes to the "
            "ladder."},
    {ROW("retry", "in_place_delay", "KJOBS_RETRY_IN_PLACE_DELAY"), .type = KT_DURATION,
     .off = F(retry_in_place_delay_ms), .def = "0s", .min = 0, .max = 10000,
     .doc = "The wait before each in-place retry (retry.in_place_attempts); 0: at once, as "
            "Spring Kafka's default back-off. The partition waits meanwhile, so a steady "
            "failure rate costs it one delay per batch with a failure in it. A handler's own "
            "delay longer than this sends the job to the ladder instead."},
    {ROW("retry", "ordering", "KJOBS_RETRY_ORDERING"), .type = KT_STRING, .off = F(retry_ordering),
     .def = "none", .check = check_retry_ordering, .expect = "\"none\" or \"key\"",
     .doc = "\"none\": a failed job goes down the ladder and later jobs of its key run on "
            "(they may overtake it). \"key\": while a job is on the ladder, later jobs of its "
            "key wait behind it, parked on the ladder step it is on, and run after it succeeds "
            "or is dead-lettered; other keys flow. Needs ladder topics with as many partitions "
            "as the main topic and the range assignor (set by kjobs). Jobs without a key are "
            "not ordered. docs/ordering.md."},
    {ROW("retry", "exactly_once", "KJOBS_RETRY_EXACTLY_ONCE"), .type = KT_BOOL,
     .off = F(retry_exactly_once), .def = "false",
     .doc = "Produce retry/DLQ copies and commit the consumed offsets in one Kafka transaction, "
            "so a crash never leaves a duplicate copy. Handlers still run at least once."},
    /* schedule */
    {ROW("schedule", "max_delay", "KJOBS_SCHEDULE_MAX_DELAY"), .type = KT_DURATION,
     .off = F(schedule_max_delay_ms), .def = "7d", .min = 1000, .max = 30 * DAY_MS,
     .doc = "Longest delay of a delayed or scheduled job (kjobs-run-at, `kjobs enqueue "
            "--delay/--at`, docs/scheduling.md): one due later than this is dead-lettered "
            "(class invalid-header) instead of held. At most topics.retention; left at its "
            "default, it is topics.retention when that is shorter."},
    /* dlq */
    {ROW("dlq", "breaker_consecutive", "KJOBS_DLQ_BREAKER_CONSECUTIVE"), .type = KT_INT,
     .off = F(breaker_consecutive), .def = "200", .min = 0, .max = 10000000,
     .doc = "Circuit breaker: stop consuming after this many jobs in a row went to the DLQ. "
            "0 turns this rule off."},
    {ROW("dlq", "breaker_window", "KJOBS_DLQ_BREAKER_WINDOW"), .type = KT_INT,
     .off = F(breaker_window), .def = "1000", .min = 0, .max = 10000000,
     .doc = "Circuit breaker ratio rule: the number of most recent finished jobs it looks at. "
            "0 turns the ratio rule off."},
    {ROW("dlq", "breaker_ratio", "KJOBS_DLQ_BREAKER_RATIO"), .type = KT_DOUBLE,
     .off = F(breaker_ratio), .def = "0.5", .dmin = 0.0, .dmax = 1.0,
     .doc = "Circuit breaker ratio rule: trip when at least this fraction of the window went to "
            "the DLQ. 0 turns the ratio rule off."},
    {ROW("dlq", "breaker_min_window", "KJOBS_DLQ_BREAKER_MIN_WINDOW"), .type = KT_INT,
     .off = F(breaker_min_window), .def = "100", .min = 0, .max = 10000000,
     .doc = "Circuit breaker ratio rule: not applied until the window holds this many jobs. At "
            "most dlq.breaker_window."},
    {ROW("dlq", "breaker_cooldown", "KJOBS_DLQ_BREAKER_COOLDOWN"), .type = KT_DURATION,
     .off = F(breaker_cooldown_ms), .def = "0s", .min = 0, .max = 7 * DAY_MS,
     .doc = "How long a tripped breaker stays open before consuming resumes by itself. \"0s\": "
            "it stays open until resumed by hand (or the process restarts)."},
    {ROW("dlq", "crash_loop_limit", "KJOBS_DLQ_CRASH_LOOP_LIMIT"), .type = KT_INT,
     .off = F(crash_loop_limit), .def = "3", .min = 0, .max = 1000,
     .doc = "Crash-loop guard: a job that was running alone when this many worker processes in a "
            "row died (segfault, abort, OOM kill, kill -9) is dead-lettered with class crash-loop "
            "by the next one instead of run again. After a crash the next owner of a partition "
            "runs the jobs the dead one may have had in flight carefully (small batches, each "
            "named by a synchronous offset commit; one at a time within a batch a crash named), "
            "so a poison job runs at most this many times plus two. 0: the guard is off (no "
            "marks, no careful mode). Not with retry.exactly_once (docs/retries.md, \"Crash "
            "loops\")."},
    /* handlers */
    {ROW("handlers", "plugin", "KJOBS_HANDLERS_PLUGIN"), .type = KT_STRING,
     .off = F(handlers_plugin), .def = "",
     .doc = "Path of a handler plugin (shared object) loaded at start; \"\" for none."},
    {ROW("handlers", "exec", "KJOBS_HANDLERS_EXEC"), .type = KT_STRLIST, .off = F(handlers_exec),
     .count_off = F(handlers_exec_count), .def = "", .flags = KF_SPLIT_WORDS | KF_ARGS_SECRET,
     .doc = "Command, as program and arguments, started once per worker thread to handle jobs "
            "over JSON lines (or binary frames, handlers.exec_protocol) on stdin/stdout; [ ] for "
            "none. It gets every job type no built-in or "
            "plugin handler claims, or only handlers.exec_types when set. From the environment: "
            "a JSON array of strings, or words separated by whitespace (no quoting)."},
    {ROW("handlers", "exec_types", "KJOBS_HANDLERS_EXEC_TYPES"), .type = KT_STRLIST,
     .off = F(handlers_exec_types), .count_off = F(handlers_exec_type_count), .def = "",
     .check = check_exec_type,
     .doc = "Job types sent to the exec handler; [ ] means every type that no other handler "
            "claims. Needs handlers.exec. From the environment: comma-separated."},
    {ROW("handlers", "exec_timeout", "KJOBS_HANDLERS_EXEC_TIMEOUT"), .type = KT_DURATION,
     .off = F(handlers_exec_timeout_ms), .def = "30s", .min = 1, .max = HOUR_MS,
     .doc = "Longest the exec child may take to answer one batch; then the batch fails with "
            "error class timeout and the child is restarted."},
    {ROW("handlers", "exec_protocol", "KJOBS_HANDLERS_EXEC_PROTOCOL"), .type = KT_STRING,
     .off = F(handlers_exec_protocol), .def = "json-lines", .check = check_exec_protocol,
     .expect = "\"json-lines\" or \"binary\"",
     .doc = "How batches reach the exec child: \"json-lines\" (one JSON line per batch, payloads "
            "in base64) or \"binary\" (length-prefixed little-endian frames with the payload bytes "
            "as they are; the child first writes the line \"kjobs-exec binary 1\"; "
            "examples/exec/README.md, helpers for Python and Node there)."},
    {ROW("handlers", "timeout", "KJOBS_HANDLERS_TIMEOUT"), .type = KT_DURATION,
     .off = F(handlers_timeout_ms), .def = "0", .min = 0, .max = 7 * DAY_MS,
     .doc = "Time limit of one job in an in-process (built-in or plugin) handler; a per-batch "
            "handler call gets this times its number of jobs. Past it kjobs_job_cancelled() "
            "turns true, and when the call returns its jobs fail with error class timeout "
            "(retried like any failure), whatever the handler reported. 0: no limit. "
            "handlers.timeouts overrides it per type (docs/ordering.md, \"Time limits\")."},
    {ROW("handlers", "timeouts", "KJOBS_HANDLERS_TIMEOUTS"), .type = KT_STRLIST,
     .off = F(handlers_timeouts), .count_off = F(handlers_timeout_count), .def = "",
     .check = check_type_timeout, .expect = "\"type=duration\"",
     .doc = "Per-type time limits as \"type=duration\" (\"resize_image=10m\"; \"=0\" for "
            "none; the first = splits), overriding handlers.timeout for in-process handlers of "
            "those types; a type no in-process handler claims, or one named twice, is an error "
            "(also for --check-config; the exec handler has handlers.exec_timeout). From the "
            "environment: comma-separated."},
    {ROW("handlers", "timeout_grace", "KJOBS_HANDLERS_TIMEOUT_GRACE"), .type = KT_DURATION,
     .off = F(handlers_timeout_grace_ms), .def = "30s", .min = 0, .max = DAY_MS,
     .doc = "How long a handler may run past its time limit before kjobs gives up on it: it "
            "logs the job and exits with status 1 (a handler thread cannot be stopped safely), "
            "so the replica restarts and the crash-loop guard (dlq.crash_loop_limit) counts the "
            "job. 0: never exit (a handler that never returns then holds its partition for good)."},
    /* http */
    {ROW("http", "listen", "KJOBS_HTTP_LISTEN"), .type = KT_STRING, .off = F(http_listen),
     .def = "0.0.0.0:8080", .check = check_listen, .expect = "\"\" or \"host:port\"",
     .doc = "Address of the HTTP listener for /metrics, /livez, /healthz and /readyz: "
            "\"host:port\", \"[ipv6]:port\" or \":port\" (all interfaces); port 0 picks a free "
            "port. \"\" disables HTTP."},
    /* shutdown */
    {ROW("shutdown", "grace_ms", "KJOBS_SHUTDOWN_GRACE_MS"), .type = KT_DURATION,
     .off = F(shutdown_grace_ms), .def = "30000", .min = 0, .max = HOUR_MS, .flags = KF_MS_INT,
     .doc = "On SIGTERM/SIGINT, how long in-flight batches may take to finish before kjobs "
            "commits what is done and leaves the group. Milliseconds, or a duration string."},
    /* ui: the operator console (`kjobs ui`) and the status reports it reads */
    {ROW("ui", "report_interval", "KJOBS_UI_REPORT_INTERVAL"), .type = KT_DURATION,
     .off = F(ui_report_interval_ms), .def = "5s", .min = 0, .max = HOUR_MS,
     .doc = "How often each `kjobs run` worker publishes its status record (counts by outcome, "
            "handler p50/p99, in-flight, assignment, breaker, recent errors) to the compacted "
            "topic <topics.main>.status, which `kjobs ui` reads (docs/console.md). 0: no "
            "reports."},
    {ROW("ui", "listen", "KJOBS_UI_LISTEN"), .type = KT_STRING, .off = F(ui_listen),
     .def = "127.0.0.1:8090", .flags = KF_NONEMPTY, .check = check_listen,
     .expect = "\"host:port\"",
     .doc = "Address `kjobs ui` serves the console on: \"host:port\", \"[ipv6]:port\" or "
            "\":port\" (all interfaces). Bound to anything but a loopback address it needs "
            "ui.token."},
    {ROW("ui", "token", "KJOBS_UI_TOKEN"), .type = KT_STRING, .off = F(ui_token), .def = "",
     .flags = KF_SECRET, .check = check_ui_token, .expect = "\"\" or 16 to 256 visible characters",
     .doc = "Bearer token the console asks for (header `Authorization: Bearer <token>`, or the "
            "login form of the page): at least 16 characters, printable ASCII without spaces "
            "(e.g. `openssl rand -hex 16`); \"\" for none, allowed only when the console "
            "listens on a loopback address. Never logged; set it from the environment "
            "(KJOBS_UI_TOKEN)."},
    {ROW("ui", "allow_actions", "KJOBS_UI_ALLOW_ACTIONS"), .type = KT_BOOL,
     .off = F(ui_allow_actions), .def = "false",
     .doc = "Let the console change things: replay dead letters (with the loop guard of `kjobs "
            "dlq replay`), discard them, pause and resume topics and partitions, resume open "
            "circuit breakers. false: the console is read-only."},
    {ROW("ui", "on_worker", "KJOBS_UI_ON_WORKER"), .type = KT_BOOL, .off = F(ui_on_worker),
     .def = "false",
     .doc = "Serve the console's page and API on each `kjobs run` worker's own HTTP listener "
            "(http.listen) too, with the same ui.* settings, so no separate `kjobs ui` is "
            "needed. Unless http.listen is a loopback address it needs ui.token. The "
            "cluster-wide gauges stay with `kjobs ui` (one series per topic, not per replica)."},
    /* log */
    {ROW("log", "level", "KJOBS_LOG_LEVEL"), .type = KT_STRING, .off = F(log_level), .def = "info",
     .check = check_log_level, .expect = "debug, info, warn or error",
     .doc = "Lowest level written to the JSON log on stderr: debug, info, warn or error."},
};

#define KJ_NSETTINGS (sizeof(kj_settings) / sizeof(kj_settings[0]))
_Static_assert(sizeof(kj_settings) / sizeof(kj_settings[0]) <= KJ_CONFIG_MAX_SETTINGS,
               "raise KJ_CONFIG_MAX_SETTINGS");

/* Environment names that start with KJOBS_ but are not settings (see docs/configuration.md). */
static const char *const kj_env_allowlist[] = {"KJOBS_CONFIG"};
#define KJ_ENV_RDKAFKA_PREFIX "KJOBS_RDKAFKA_"

/* librdkafka properties kjobs sets itself; the setting to use instead, or NULL. */
static const struct {
    const char *prop, *instead;
} kj_reserved_props[] = {
    {"bootstrap.servers", "kafka.bootstrap (-b)"},
    {"metadata.broker.list", "kafka.bootstrap (-b)"},
    {"group.id", "kafka.group (-G)"},
    {"client.id", "kafka.client_id"},
    {"group.instance.id", "kafka.group_instance_id"},
    {"group.protocol", "kafka.group_protocol"},
    {"enable.auto.commit", NULL},
    {"enable.auto.offset.store", NULL},
};

static const kj_setting *row_by_key(const char *key) {
    for (size_t i = 0; i < KJ_NSETTINGS; i++)
        if (strcmp(kj_settings[i].key, key) == 0) return &kj_settings[i];
    return NULL;
}

static size_t row_index(const kj_setting *row) {
    return (size_t)(row - kj_settings);
}

static bool is_group_name(const char *name) {
    for (size_t i = 0; i < KJ_NSETTINGS; i++)
        if (kj_settings[i].group && strcmp(kj_settings[i].group, name) == 0) return true;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* String checks                                                                               */

static int check_bootstrap(const char *v, char *why, size_t size) {
    char q[96];
    if (strcmp(v, "embedded") == 0) return 0;
    const char *p = v;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        bool bad = len == 0;
        for (size_t i = 0; i < len && !bad; i++)
            if (isspace((unsigned char)p[i]) || iscntrl((unsigned char)p[i])) bad = true;
        if (bad) {
            quote_for_error(v, q, sizeof(q));
            snprintf(why, size,
                     "expected \"embedded\" or a broker list \"host:port,host:port\" (no spaces, "
                     "no empty entries), got %s",
                     q);
            return -1;
        }
        if (!end) return 0;
        p = end + 1;
    }
}

/* Kafka's rule: 1..249 of [a-zA-Z0-9._-], and not "." or "..". */
static bool topic_chars_ok(const char *v, size_t max_len) {
    size_t n = strlen(v);
    if (n == 0 || n > max_len) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)v[i]) && v[i] != '.' && v[i] != '_' && v[i] != '-')
            return false;
    return true;
}

static int check_topic(const char *v, char *why, size_t size) {
    char q[96];
    if (topic_chars_ok(v, 249) && strcmp(v, ".") != 0 && strcmp(v, "..") != 0) return 0;
    quote_for_error(v, q, sizeof(q));
    snprintf(why, size, "expected a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), got %s", q);
    return -1;
}

static int check_topic_or_empty(const char *v, char *why, size_t size) {
    return *v ? check_topic(v, why, size) : 0;
}

static int check_topic_prefix(const char *v, char *why, size_t size) {
    char q[96];
    /* Leave room for the step number (up to KJ_CONFIG_MAX_RETRY_DELAYS: two digits). */
    if (!*v || topic_chars_ok(v, 247)) return 0;
    quote_for_error(v, q, sizeof(q));
    snprintf(why, size,
             "expected \"\" or a topic name prefix (1 to 247 of a-z A-Z 0-9 . _ -), got %s", q);
    return -1;
}

static int check_exec_type(const char *v, char *why, size_t size) {
    if (*v) return 0;
    snprintf(why, size, "expected a job type, got \"\"");
    return -1;
}

/* "type=duration": a non-empty type, then a duration of at most 7 days (0: no limit). */
static int check_type_timeout(const char *v, char *why, size_t size) {
    int64_t ms;
    if (kj_type_timeout_parse(v, NULL, &ms) == 0) return 0;
    const char *eq = strchr(v, '=');
    if (eq && eq != v && kj_duration_parse(eq + 1, &ms) == 0)
        snprintf(why, size, "\"%s\": the limit must be from 0s to 7d", v);
    else
        snprintf(why, size,
                 "expected \"type=duration\" (e.g. \"resize_image=10m\"; durations like 250ms, "
                 "10s, 1m30s, 2h), got \"%s\"",
                 v);
    return -1;
}

int kj_type_timeout_parse(const char *text, size_t *type_len, int64_t *ms_out) {
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || kj_duration_parse(eq + 1, ms_out) != 0 || *ms_out < 0 ||
        *ms_out > 7 * DAY_MS)
        return -1;
    if (type_len) *type_len = (size_t)(eq - text);
    return 0;
}

/* Comma-separated http:// or https:// URLs with a host; no credentials (they would be logged
 * and printed with the URL): kafka.schema_registry_user/_password hold those. */
static int check_registry_url(const char *v, char *why, size_t size) {
    char q[96];
    if (!*v) return 0;
    const char *p = v;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t scheme = strncmp(p, "http://", 7) == 0 ? 7 : strncmp(p, "https://", 8) == 0 ? 8 : 0;
        size_t host_end = scheme;
        while (host_end < len && p[host_end] != '/')
            host_end++;
        bool bad = scheme == 0 || host_end == scheme;
        for (size_t i = 0; i < len && !bad; i++)
            if (isspace((unsigned char)p[i]) || iscntrl((unsigned char)p[i])) bad = true;
        if (!bad && memchr(p, '@', host_end)) {
            snprintf(why, size,
                     "credentials in a Schema Registry URL are not accepted (URLs are logged): "
                     "use kafka.schema_registry_user and kafka.schema_registry_password");
            return -1;
        }
        if (!bad && (memchr(p, '?', len) || memchr(p, '#', len))) {
            /* the API is /schemas/ids/{id} under the base URL: a query string has no use
             * there and is where tokens hide (URLs are logged) */
            snprintf(why, size,
                     "a Schema Registry URL takes no query string or fragment (URLs are logged; "
                     "use kafka.schema_registry_user and kafka.schema_registry_password for "
                     "credentials)");
            return -1;
        }
        if (bad) {
            quote_for_error(v, q, sizeof(q));
            snprintf(why, size,
                     "expected \"\" or http:// or https:// URLs with a host, comma-separated (no "
                     "spaces, no empty entries), got %s",
                     q);
            return -1;
        }
        if (!end) return 0;
        p = end + 1;
    }
}

/* A value that must be one of `choices` (NULL-terminated); `expect` lists them for the error. */
static int check_one_of(const char *v, const char *const *choices, const char *expect, char *why,
                        size_t size) {
    char q[96];
    for (size_t i = 0; choices[i]; i++)
        if (strcmp(v, choices[i]) == 0) return 0;
    quote_for_error(v, q, sizeof(q));
    snprintf(why, size, "expected %s, got %s", expect, q);
    return -1;
}

static int check_log_level(const char *v, char *why, size_t size) {
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    return check_one_of(v, levels, "debug, info, warn or error", why, size);
}

static int check_batch_ordering(const char *v, char *why, size_t size) {
    static const char *const orderings[] = {"partition", "key", NULL};
    return check_one_of(v, orderings, "partition or key", why, size);
}

static int check_retry_ordering(const char *v, char *why, size_t size) {
    static const char *const orderings[] = {"none", "key", NULL};
    return check_one_of(v, orderings, "none or key", why, size);
}

static int check_exec_protocol(const char *v, char *why, size_t size) {
    static const char *const protocols[] = {"json-lines", "binary", NULL};
    return check_one_of(v, protocols, "json-lines or binary", why, size);
}

static int check_group_protocol(const char *v, char *why, size_t size) {
    static const char *const protocols[] = {"auto", "consumer", "classic", NULL};
    return check_one_of(v, protocols, "auto, consumer or classic", why, size);
}

/* A bearer token: "" (none) or 16..256 printable ASCII characters without spaces; never
 * quoted (a secret). 16 characters of a random hex string are 64 bits. */
static int check_ui_token(const char *v, char *why, size_t size) {
    size_t n = strlen(v);
    if (n == 0) return 0;
    bool ok = n >= 16 && n <= 256;
    for (const char *p = v; ok && *p; p++)
        ok = *p > 0x20 && *p < 0x7f;
    if (ok) return 0;
    snprintf(why, size,
             "expected \"\" (none) or 16 to 256 printable ASCII characters without spaces "
             "(got %zu characters; the value is a secret and not shown)",
             n);
    return -1;
}

static int check_listen(const char *v, char *why, size_t size) {
    char q[96];
    if (!*v) return 0;
    const char *colon = strrchr(v, ':');
    bool ok = colon != NULL;
    if (ok && v[0] == '[')
        ok = colon > v && colon[-1] == ']' && colon - v > 2;
    else if (ok)
        ok = memchr(v, ':', (size_t)(colon - v)) == NULL; /* IPv6 needs brackets */
    if (ok) {
        const char *port = colon + 1;
        long n = 0;
        ok = *port != '\0' && strlen(port) <= 5;
        for (const char *p = port; ok && *p; p++) {
            if (!isdigit((unsigned char)*p))
                ok = false;
            else
                n = n * 10 + (*p - '0');
        }
        ok = ok && n <= 65535;
    }
    for (const char *p = v; ok && *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) ok = false;
    if (ok) return 0;
    quote_for_error(v, q, sizeof(q));
    snprintf(why, size,
             "expected \"\" (disabled), \"host:port\", \"[ipv6]:port\" or \":port\" with a port "
             "from 0 to 65535, got %s",
             q);
    return -1;
}

/* Checks one "name=value" against librdkafka. Never quotes the value. `prop` is the full text. */
/* A number at the start of @p s (C syntax, as librdkafka reads it: decimal, 0x hex, exponent),
 * leading and trailing blanks aside: true with its value and @p rest at what follows it (""
 * when nothing does). False when @p s does not start with one. */
static bool number_prefix(const char *s, double *out, const char **rest) {
    char *end;
    *out = strtod(s, &end);
    if (end == s) return false;
    while (isspace((unsigned char)*end))
        end++;
    *rest = end;
    return true;
}

static int check_rdkafka_name_value(const char *name, const char *value, char *why, size_t size) {
    char q[96];
    quote_for_error(name, q, sizeof(q));
    for (size_t i = 0; i < sizeof(kj_reserved_props) / sizeof(kj_reserved_props[0]); i++) {
        if (strcmp(name, kj_reserved_props[i].prop) != 0) continue;
        if (kj_reserved_props[i].instead)
            snprintf(why, size, "librdkafka property %s is set by kjobs: use %s instead", q,
                     kj_reserved_props[i].instead);
        else
            snprintf(why, size,
                     "librdkafka property %s is set by kjobs (it commits offsets itself, after "
                     "jobs finish) and cannot be changed",
                     q);
        return -1;
    }
    /* Setting plugin.library.paths would load the plugins now, as a side effect of checking. */
    if (strcmp(name, "plugin.library.paths") == 0) return 0;
    char rd_err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value, rd_err, sizeof(rd_err));
    /* librdkafka reads a number's leading part and ignores the rest ("64Ki" is 64), and stores
     * an integer property as an int ("4295229440" wraps, "0100000" is octal): what it stored is
     * read back, and a number it read other than as written is refused */
    char got[64];
    size_t got_size = sizeof(got);
    double asked, stored;
    const char *rest = NULL;
    bool misread = res == RD_KAFKA_CONF_OK &&
                   rd_kafka_conf_get(conf, name, got, &got_size) == RD_KAFKA_CONF_OK &&
                   got_size <= sizeof(got) && number_prefix(got, &stored, &rest) && !*rest &&
                   number_prefix(value, &asked, &rest) && (*rest || asked != stored);
    rd_kafka_conf_destroy(conf);
    if (misread) {
        snprintf(why, size,
                 *rest ? "librdkafka property %s takes a number, with no unit or other "
                         "characters after it (librdkafka would read only its leading part; "
                         "value not shown)"
                       : "librdkafka property %s: librdkafka would read the number as another "
                         "(it keeps whole numbers within the property's range, and a leading 0 "
                         "means octal; value not shown)",
                 q);
        return -1;
    }
    if (res == RD_KAFKA_CONF_OK) return 0;
    if (res == RD_KAFKA_CONF_UNKNOWN)
        snprintf(why, size, "unknown librdkafka property %s", q);
    else /* librdkafka's own text may quote the value, which may be a secret: not used */
        snprintf(why, size, "librdkafka rejects the value of property %s (value not shown)", q);
    return -1;
}

static int check_rdkafka_prop(const char *v, char *why, size_t size) {
    const char *eq = strchr(v, '=');
    if (!eq || eq == v) {
        snprintf(why, size, "expected \"name=value\" (value not shown)");
        return -1;
    }
    for (const char *p = v; p < eq; p++) {
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
            snprintf(why, size,
                     "expected \"name=value\" with no spaces in the name "
                     "(value not shown)");
            return -1;
        }
    }
    char *name = kj_cfg_xstrndup(v, (size_t)(eq - v));
    int rc = check_rdkafka_name_value(name, eq + 1, why, size);
    free(name);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Values: parse, check, store                                                                 */

typedef struct {
    int64_t i; /* ints, bools, durations */
    double d;
    char *s;
    char **strs;
    int64_t *durs;
    size_t n;
} kj_value;

static void value_free(kj_value *v) {
    free(v->s);
    strlist_free(v->strs, v->n);
    free(v->durs);
    memset(v, 0, sizeof(*v));
}

/* "an integer from 1 to 100000", "a duration from 0s to 1m", ... for "expected ..." */
static void describe_expected(const kj_setting *row, char *buf, size_t size) {
    char a[32], b[32];
    switch (row->type) {
    case KT_STRING:
        if (row->expect)
            snprintf(buf, size, "%s", row->expect);
        else
            snprintf(buf, size, "%s", row->flags & KF_NONEMPTY ? "a non-empty string" : "a string");
        break;
    case KT_INT:
        snprintf(buf, size, "an integer from %lld to %lld", (long long)row->min,
                 (long long)row->max);
        break;
    case KT_BOOL:
        snprintf(buf, size, "true or false");
        break;
    case KT_DOUBLE:
        snprintf(buf, size, "a number from %g to %g", row->dmin, row->dmax);
        break;
    case KT_DURATION:
        kj_duration_format(row->min, a, sizeof(a));
        kj_duration_format(row->max, b, sizeof(b));
        snprintf(buf, size,
                 "a duration from %s to %s (milliseconds, or a string like \"250ms\", \"10s\", "
                 "\"1m\")",
                 a, b);
        break;
    case KT_STRLIST:
        snprintf(buf, size, "a list of strings");
        break;
    case KT_DURLIST:
        kj_duration_format(row->min, a, sizeof(a));
        kj_duration_format(row->max, b, sizeof(b));
        snprintf(buf, size, "a list of at most %zu durations from %s to %s", row->max_items, a, b);
        break;
    }
}

static void fail_expected(const kj_setting *row, const char *got, char *why, size_t size) {
    char exp[192];
    describe_expected(row, exp, sizeof(exp));
    if (row->flags & (KF_SECRET | KF_ARGS_SECRET))
        snprintf(why, size, "expected %s (value not shown)", exp);
    else
        snprintf(why, size, "expected %s, got %s", exp, got);
}

/* Range and content checks shared by every source. On failure *bad_item is the list index (or
 * -1 for the setting as a whole) and why holds "expected ..., got ...". */
static int value_check(const kj_setting *row, const kj_value *v, long *bad_item, char *why,
                       size_t size) {
    char got[96], inner[400];
    *bad_item = -1;
    switch (row->type) {
    case KT_STRING:
        if ((row->flags & KF_NONEMPTY) && !*v->s) {
            describe_expected(row, inner, sizeof(inner));
            snprintf(why, size, "expected %s, got \"\"", inner);
            return -1;
        }
        if (row->check && row->check(v->s, why, size)) return -1;
        return 0;
    case KT_INT:
        if (v->i < row->min || v->i > row->max) {
            snprintf(got, sizeof(got), "%lld", (long long)v->i);
            fail_expected(row, got, why, size);
            return -1;
        }
        return 0;
    case KT_BOOL:
        return 0;
    case KT_DOUBLE:
        if (!isfinite(v->d) || v->d < row->dmin || v->d > row->dmax) {
            snprintf(got, sizeof(got), "%g", v->d);
            fail_expected(row, got, why, size);
            return -1;
        }
        return 0;
    case KT_DURATION:
        if (v->i < row->min || v->i > row->max) {
            kj_duration_format(v->i, got, sizeof(got));
            fail_expected(row, got, why, size);
            return -1;
        }
        return 0;
    case KT_STRLIST:
        if (row->max_items && v->n > row->max_items) {
            snprintf(why, size, "expected at most %zu items, got %zu", row->max_items, v->n);
            return -1;
        }
        for (size_t i = 0; i < v->n && row->check; i++) {
            if (row->check(v->strs[i], inner, sizeof(inner))) {
                *bad_item = (long)i;
                snprintf(why, size, "%s", inner);
                return -1;
            }
        }
        return 0;
    case KT_DURLIST:
        if (row->max_items && v->n > row->max_items) {
            snprintf(why, size, "expected at most %zu items, got %zu", row->max_items, v->n);
            return -1;
        }
        for (size_t i = 0; i < v->n; i++) {
            if (v->durs[i] < row->min || v->durs[i] > row->max) {
                char a[32], b[32];
                kj_duration_format(row->min, a, sizeof(a));
                kj_duration_format(row->max, b, sizeof(b));
                kj_duration_format(v->durs[i], got, sizeof(got));
                *bad_item = (long)i;
                snprintf(why, size, "expected a duration from %s to %s, got %s", a, b, got);
                return -1;
            }
        }
        return 0;
    }
    return 0;
}

static void *field_ptr(kj_config *cfg, size_t off) {
    return (char *)cfg + off;
}

static const void *field_cptr(const kj_config *cfg, size_t off) {
    return (const char *)cfg + off;
}

static void resolve_topics(kj_config *cfg) {
    if (!cfg->main_topic) return; /* kj_config_defaults() has not reached topics.main yet */
    if (cfg->retry_prefix_auto) {
        free(cfg->retry_prefix);
        cfg->retry_prefix = kj_cfg_concat(cfg->main_topic, ".retry.");
    }
    if (cfg->dlq_topic_auto) {
        free(cfg->dlq_topic);
        cfg->dlq_topic = kj_cfg_concat(cfg->main_topic, ".dlq");
    }
}

/* Takes ownership of v's allocations. */
static void value_store(kj_config *cfg, const kj_setting *row, kj_value *v,
                        kj_config_origin_kind kind, int line) {
    void *f = field_ptr(cfg, row->off);
    switch (row->type) {
    case KT_STRING:
        free(*(char **)f);
        *(char **)f = v->s;
        v->s = NULL;
        if (row->off == F(retry_prefix)) cfg->retry_prefix_auto = !*cfg->retry_prefix;
        if (row->off == F(dlq_topic)) cfg->dlq_topic_auto = !*cfg->dlq_topic;
        resolve_topics(cfg);
        break;
    case KT_INT:
        *(int *)f = (int)v->i;
        break;
    case KT_BOOL:
        *(bool *)f = v->i != 0;
        break;
    case KT_DOUBLE:
        *(double *)f = v->d;
        break;
    case KT_DURATION:
        if (row->flags & KF_INT_FIELD)
            *(int *)f = (int)v->i;
        else
            *(int64_t *)f = v->i;
        break;
    case KT_STRLIST: {
        size_t *count = field_ptr(cfg, row->count_off);
        strlist_free(*(char ***)f, *count);
        *(char ***)f = v->strs;
        *count = v->n;
        v->strs = NULL;
        v->n = 0;
        break;
    }
    case KT_DURLIST: {
        size_t *count = field_ptr(cfg, row->count_off);
        free(*(int64_t **)f);
        *(int64_t **)f = v->durs;
        *count = v->n;
        v->durs = NULL;
        v->n = 0;
        break;
    }
    }
    cfg->origin[row_index(row)].kind = (unsigned char)kind;
    cfg->origin[row_index(row)].line = line;
    value_free(v);
}

/* Strict decimal integer, optional leading '-'. */
static int parse_int64(const char *s, int64_t *out) {
    if (!*s || isspace((unsigned char)*s) || *s == '+') return -1;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = n;
    return 0;
}

static int parse_bool(const char *s, int64_t *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* Split env/CLI text into list items: a JSON array if it starts with '[', else per the row. */
static int split_list(const kj_setting *row, const char *text, char ***items, size_t *n, char *why,
                      size_t size) {
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    *items = NULL;
    *n = 0;
    if (!*p) return 0; /* "" (or only spaces) is the empty list, in every syntax */
    if (*p == '[') {
        json_error_t jerr;
        json_t *arr = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!arr || !json_is_array(arr)) {
            json_decref(arr);
            snprintf(why, size, "expected a JSON array of strings (not valid JSON%s)",
                     row->flags & (KF_SECRET | KF_ARGS_SECRET) ? "; value not shown" : "");
            return -1;
        }
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *it = json_array_get(arr, i);
            if (json_is_string(it)) {
                strlist_push(items, n, kj_cfg_xstrdup(json_string_value(it)));
            } else if (row->type == KT_DURLIST && json_is_integer(it) &&
                       json_integer_value(it) >= 0) {
                char buf[32];
                snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(it));
                strlist_push(items, n, kj_cfg_xstrdup(buf));
            } else {
                json_decref(arr);
                strlist_free(*items, *n);
                *items = NULL;
                *n = 0;
                snprintf(why, size, "item %zu: expected a string", i);
                return -1;
            }
        }
        json_decref(arr);
        return 0;
    }
    if (row->flags & KF_JSON_ONLY) {
        snprintf(why, size, "expected a JSON array of strings like [\"a=b\"] (value not shown)");
        return -1;
    }
    if (row->flags & KF_SPLIT_WORDS) {
        while (*p) {
            const char *start = p;
            while (*p && !isspace((unsigned char)*p))
                p++;
            strlist_push(items, n, kj_cfg_xstrndup(start, (size_t)(p - start)));
            while (isspace((unsigned char)*p))
                p++;
        }
        return 0;
    }
    p = text;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0) {
            strlist_free(*items, *n);
            *items = NULL;
            snprintf(why, size, "item %zu: empty (expected comma-separated items)", *n);
            *n = 0;
            return -1;
        }
        strlist_push(items, n, kj_cfg_xstrndup(p, len));
        if (!end) return 0;
        p = end + 1;
    }
}

/* Parse env/CLI/default text. Errors say "expected ..., got ..." (values of secret rows hidden). */
static int value_from_text(const kj_setting *row, const char *text, kj_value *v, char *why,
                           size_t size) {
    char got[96];
    memset(v, 0, sizeof(*v));
    quote_for_error(text, got, sizeof(got));
    switch (row->type) {
    case KT_STRING:
        v->s = kj_cfg_xstrdup(text);
        return 0;
    case KT_INT:
        if (parse_int64(text, &v->i) == 0) return 0;
        break;
    case KT_BOOL:
        if (parse_bool(text, &v->i) == 0) return 0;
        snprintf(why, size, "expected true or false (also yes/no, on/off, 1/0), got %s", got);
        return -1;
    case KT_DOUBLE: {
        char *end;
        errno = 0;
        v->d = strtod(text, &end);
        if (*text && !isspace((unsigned char)*text) && !*end && !errno) return 0;
        break;
    }
    case KT_DURATION:
        if (kj_duration_parse(text, &v->i) == 0) return 0;
        break;
    case KT_STRLIST:
        return split_list(row, text, &v->strs, &v->n, why, size);
    case KT_DURLIST: {
        char **items;
        size_t n;
        if (split_list(row, text, &items, &n, why, size)) return -1;
        v->durs = kj_cfg_xmalloc(n * sizeof(int64_t));
        for (size_t i = 0; i < n; i++) {
            if (kj_duration_parse(items[i], &v->durs[i])) {
                quote_for_error(items[i], got, sizeof(got));
                snprintf(why, size,
                         "item %zu: expected a duration (milliseconds, or a string like "
                         "\"250ms\", \"10s\", \"1m\"), got %s",
                         i, got);
                strlist_free(items, n);
                value_free(v);
                return -1;
            }
        }
        v->n = n;
        strlist_free(items, n);
        return 0;
    }
    }
    fail_expected(row, got, why, size);
    return -1;
}

/* What a libconfig setting holds, for "got ..." in errors. */
static void describe_setting(const config_setting_t *s, char *buf, size_t size) {
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        snprintf(buf, size, "%lld", config_setting_get_int64(s));
        break;
    case CONFIG_TYPE_FLOAT:
        snprintf(buf, size, "%g", config_setting_get_float(s));
        break;
    case CONFIG_TYPE_BOOL:
        snprintf(buf, size, "%s", config_setting_get_bool(s) ? "true" : "false");
        break;
    case CONFIG_TYPE_STRING:
        quote_for_error(config_setting_get_string(s), buf, size);
        break;
    case CONFIG_TYPE_GROUP:
        snprintf(buf, size, "a group { ... }");
        break;
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST:
        snprintf(buf, size, "a list");
        break;
    default:
        snprintf(buf, size, "nothing");
        break;
    }
}

static bool setting_is_int(const config_setting_t *s) {
    return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

/* A duration from a libconfig scalar: integer milliseconds or a duration string. */
static int duration_from_setting(const config_setting_t *s, int64_t *out) {
    if (setting_is_int(s)) {
        long long n = config_setting_get_int64(s);
        if (n < 0) return -1;
        *out = n;
        return 0;
    }
    if (config_setting_type(s) == CONFIG_TYPE_STRING)
        return kj_duration_parse(config_setting_get_string(s), out);
    return -1;
}

/* Parse a libconfig setting. On failure *bad_item is the offending list index (or -1). */
static int value_from_setting(const kj_setting *row, const config_setting_t *s, kj_value *v,
                              long *bad_item, char *why, size_t size) {
    char got[96];
    memset(v, 0, sizeof(*v));
    *bad_item = -1;
    if (row->flags & (KF_SECRET | KF_ARGS_SECRET))
        snprintf(got, sizeof(got), "(hidden)");
    else
        describe_setting(s, got, sizeof(got));
    int type = config_setting_type(s);
    switch (row->type) {
    case KT_STRING:
        if (type != CONFIG_TYPE_STRING) break;
        v->s = kj_cfg_xstrdup(config_setting_get_string(s));
        return 0;
    case KT_INT:
        if (!setting_is_int(s)) break;
        v->i = config_setting_get_int64(s);
        return 0;
    case KT_BOOL:
        if (type != CONFIG_TYPE_BOOL) break;
        v->i = config_setting_get_bool(s);
        return 0;
    case KT_DOUBLE:
        if (type == CONFIG_TYPE_FLOAT)
            v->d = config_setting_get_float(s);
        else if (setting_is_int(s))
            v->d = (double)config_setting_get_int64(s);
        else
            break;
        return 0;
    case KT_DURATION:
        if (duration_from_setting(s, &v->i) == 0) return 0;
        break;
    case KT_STRLIST:
    case KT_DURLIST: {
        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
            snprintf(why, size, "expected a list like [ \"a\", \"b\" ], got %s", got);
            return -1;
        }
        int n = config_setting_length(s);
        if (row->type == KT_DURLIST) v->durs = kj_cfg_xmalloc((size_t)n * sizeof(int64_t));
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            if (row->type == KT_STRLIST && config_setting_type(e) == CONFIG_TYPE_STRING) {
                strlist_push(&v->strs, &v->n, kj_cfg_xstrdup(config_setting_get_string(e)));
                continue;
            }
            if (row->type == KT_DURLIST && duration_from_setting(e, &v->durs[i]) == 0) {
                v->n++;
                continue;
            }
            *bad_item = i;
            if (row->flags & (KF_SECRET | KF_ARGS_SECRET))
                snprintf(got, sizeof(got), "(hidden)");
            else
                describe_setting(e, got, sizeof(got));
            snprintf(why, size, "expected %s, got %s",
                     row->type == KT_STRLIST ? "a string"
                                             : "a duration (milliseconds, or a string like "
                                               "\"250ms\", \"10s\", \"1m\")",
                     got);
            value_free(v);
            return -1;
        }
        return 0;
    }
    }
    fail_expected(row, got, why, size);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults, free                                                                              */

void kj_config_defaults(kj_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->retry_prefix_auto = cfg->dlq_topic_auto = true;
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        kj_value v;
        char why[512];
        /* Defaults are constants checked by the unit tests; a bad one is a programming error. */
        if (value_from_text(&kj_settings[i], kj_settings[i].def, &v, why, sizeof(why))) abort();
        value_store(cfg, &kj_settings[i], &v, KJ_CONFIG_FROM_DEFAULT, 0);
    }
}

void kj_config_free(kj_config *cfg) {
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const kj_setting *row = &kj_settings[i];
        void *f = field_ptr(cfg, row->off);
        if (row->type == KT_STRING) {
            free(*(char **)f);
        } else if (row->type == KT_STRLIST) {
            strlist_free(*(char ***)f, *(size_t *)field_ptr(cfg, row->count_off));
        } else if (row->type == KT_DURLIST) {
            free(*(int64_t **)f);
        }
    }
    kj_periodic_entries_free(cfg->periodic, cfg->periodic_count);
    kj_config_limits_free(cfg);
    free(cfg->source_path);
    memset(cfg, 0, sizeof(*cfg));
}

/* ------------------------------------------------------------------------------------------ */
/* Errors with a place                                                                         */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return SIZE_MAX;
    size_t prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(prev));
    }
    return prev[lb];
}

/* " (did you mean batch.max_jobs?)" or "" — by edit distance, or a unique bare-name match. */
static void suggest(const char *key, bool env, char *buf, size_t size) {
    const kj_setting *best = NULL;
    size_t best_d = 3;
    const char *bare = strrchr(key, '.');
    bare = bare ? bare + 1 : key;
    size_t bare_hits = 0;
    const kj_setting *bare_row = NULL;
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const kj_setting *row = &kj_settings[i];
        size_t d = edit_distance(key, env ? row->env : row->key);
        if (d < best_d) best_d = d, best = row;
        if (!env && strcmp(row->name, bare) == 0) bare_hits++, bare_row = row;
    }
    /* A misspelt group ("bacth = { ... }") is compared with the group names. */
    const char *best_group = NULL;
    for (size_t i = 0; i < KJ_NSETTINGS && !env && !strchr(key, '.'); i++) {
        const char *g = kj_settings[i].group;
        size_t d = g ? edit_distance(key, g) : SIZE_MAX;
        if (d < best_d) best_d = d, best_group = g, best = NULL;
    }
    if (!best && !best_group && bare_hits == 1) best = bare_row;
    if (best_group)
        snprintf(buf, size, " (did you mean %s?)", best_group);
    else if (best)
        snprintf(buf, size, " (did you mean %s?)", env ? best->env : best->key);
    else
        buf[0] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* Environment                                                                                 */

static bool env_is_allowlisted(const char *name) {
    for (size_t i = 0; i < sizeof(kj_env_allowlist) / sizeof(kj_env_allowlist[0]); i++)
        if (strcmp(name, kj_env_allowlist[i]) == 0) return true;
    return false;
}

/* KJOBS_<GROUP> or KJOBS_<GROUP>_... for one of our groups or top-level settings. */
static bool env_looks_ours(const char *name) {
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const char *g = kj_settings[i].group ? kj_settings[i].group : kj_settings[i].name;
        size_t gl = strlen(g);
        if (strlen(name) < 6 + gl) continue;
        if (strncasecmp(name + 6, g, gl) == 0 && (name[6 + gl] == '\0' || name[6 + gl] == '_'))
            return true;
    }
    return false;
}

/* KJOBS_RDKAFKA_SASL_PASSWORD -> "sasl.password"; NULL if the suffix is not [A-Za-z0-9_]+
 * with single underscores between words. */
static char *env_rdkafka_prop_name(const char *env_name) {
    const char *s = env_name + strlen(KJ_ENV_RDKAFKA_PREFIX);
    size_t n = strlen(s);
    if (n == 0 || s[0] == '_' || s[n - 1] == '_') return NULL;
    char *out = kj_cfg_xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            if (s[i + 1] == '_') {
                free(out);
                return NULL;
            }
            out[i] = '.';
        } else if (isalnum((unsigned char)s[i])) {
            out[i] = (char)tolower((unsigned char)s[i]);
        } else {
            free(out);
            return NULL;
        }
    }
    out[n] = '\0';
    return out;
}

static int cmp_env_entry(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strcspn(x, "="), ly = strcspn(y, "=");
    int c = strncmp(x, y, lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

/* Apply one setting given as text (environment or command line). `where` prefixes errors. */
static int apply_text(kj_config *cfg, const kj_setting *row, const char *text,
                      kj_config_origin_kind kind, const char *where, char *errstr,
                      size_t errstr_size) {
    kj_value v;
    char why[600];
    long bad_item;
    if (value_from_text(row, text, &v, why, sizeof(why))) {
        snprintf(errstr, errstr_size, "%s: %s", where, why);
        return -1;
    }
    if (value_check(row, &v, &bad_item, why, sizeof(why))) {
        if (bad_item >= 0)
            snprintf(errstr, errstr_size, "%s: item %ld: %s", where, bad_item, why);
        else
            snprintf(errstr, errstr_size, "%s: %s", where, why);
        value_free(&v);
        return -1;
    }
    value_store(cfg, row, &v, kind, 0);
    return 0;
}

static void props_append(kj_config *cfg, const char *name, const char *value,
                         kj_config_origin_kind kind) {
    size_t ln = strlen(name), lv = strlen(value);
    char *p = kj_cfg_xmalloc(ln + lv + 2);
    memcpy(p, name, ln);
    p[ln] = '=';
    memcpy(p + ln + 1, value, lv + 1);
    strlist_push(&cfg->rdkafka_props, &cfg->rdkafka_prop_count, p);
    size_t idx = row_index(row_by_key("kafka.properties"));
    if (cfg->origin[idx].kind < kind) cfg->origin[idx].kind = (unsigned char)kind;
}

static int apply_env(kj_config *cfg, char *const *envp, char *errstr, size_t errstr_size) {
    if (!envp) return 0;
    size_t nrd = 0, cap = 0;
    const char **rd = NULL;
    int rc = 0;
    for (char *const *e = envp; *e && rc == 0; e++) {
        const char *entry = *e;
        if (strncmp(entry, "KJOBS_", 6) != 0) continue;
        const char *eq = strchr(entry, '=');
        if (!eq) continue;
        char *name = kj_cfg_xstrndup(entry, (size_t)(eq - entry));
        const kj_setting *row = NULL;
        for (size_t i = 0; i < KJ_NSETTINGS && !row; i++)
            if (strcmp(kj_settings[i].env, name) == 0) row = &kj_settings[i];
        if (strncmp(name, KJ_ENV_RDKAFKA_PREFIX, strlen(KJ_ENV_RDKAFKA_PREFIX)) == 0) {
            if (nrd == cap) {
                cap = cap ? cap * 2 : 8;
                rd = kj_cfg_xrealloc(rd, cap * sizeof(*rd));
            }
            rd[nrd++] = entry;
        } else if (strcmp(name, "KJOBS_LIMITS") == 0) {
            rc = kj_config_limits_from_json(cfg, eq + 1, errstr, errstr_size);
        } else if (row) {
            char where[160];
            snprintf(where, sizeof(where), "environment %s", name);
            rc = apply_text(cfg, row, eq + 1, KJ_CONFIG_FROM_ENV, where, errstr, errstr_size);
        } else if (!env_is_allowlisted(name) && env_looks_ours(name)) {
            char hint[96];
            suggest(name, true, hint, sizeof(hint));
            snprintf(errstr, errstr_size, "environment %s: not a kjobs setting%s", name, hint);
            rc = -1;
        }
        free(name);
    }
    if (rc == 0 && nrd) qsort(rd, nrd, sizeof(*rd), cmp_env_entry);
    for (size_t i = 0; i < nrd && rc == 0; i++) {
        const char *eq = strchr(rd[i], '=');
        char *name = kj_cfg_xstrndup(rd[i], (size_t)(eq - rd[i]));
        char *prop = env_rdkafka_prop_name(name);
        char why[512];
        if (!prop) {
            snprintf(errstr, errstr_size,
                     "environment %s: expected KJOBS_RDKAFKA_<PROPERTY> with the property's dots "
                     "as single underscores, e.g. KJOBS_RDKAFKA_SASL_PASSWORD",
                     name);
            rc = -1;
        } else if (check_rdkafka_name_value(prop, eq + 1, why, sizeof(why))) {
            snprintf(errstr, errstr_size, "environment %s: %s", name, why);
            rc = -1;
        } else {
            props_append(cfg, prop, eq + 1, KJ_CONFIG_FROM_ENV);
        }
        free(prop);
        free(name);
    }
    free(rd);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* File                                                                                        */

/* The file a setting came from, for errors: the main file, or an @include'd file with the
 * include directory prepended when libconfig only kept the relative name. */
static const char *place_file(const config_t *lc, const char *f, const char *main_file, char *buf,
                              size_t size) {
    if (!f || strcmp(f, main_file) == 0) return main_file;
    const char *dir = config_get_include_dir(lc);
    if (f[0] == '/' || !dir) return f;
    snprintf(buf, size, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", f);
    return buf;
}

static char kj_place_buf[PATH_MAX + 64];

/* @locality main thread (uses a static buffer, like the rest of loading). */
static const char *setting_file(const config_setting_t *s, const char *fallback) {
    return place_file(s->config, config_setting_source_file(s), fallback, kj_place_buf,
                      sizeof(kj_place_buf));
}

static int apply_setting(kj_config *cfg, const kj_setting *row, const config_setting_t *s,
                         const char *file, char *errstr, size_t errstr_size) {
    kj_value v;
    char why[600];
    long bad_item;
    int rc = value_from_setting(row, s, &v, &bad_item, why, sizeof(why));
    if (rc == 0) rc = value_check(row, &v, &bad_item, why, sizeof(why));
    if (rc) {
        const config_setting_t *at = s;
        if (bad_item >= 0 && bad_item < config_setting_length(s)) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)bad_item);
            if (e && config_setting_source_line(e)) at = e;
        }
        if (bad_item >= 0)
            snprintf(errstr, errstr_size, "%s:%u: %s[%ld]: %s", setting_file(at, file),
                     config_setting_source_line(at), row->key, bad_item, why);
        else
            snprintf(errstr, errstr_size, "%s:%u: %s: %s", setting_file(at, file),
                     config_setting_source_line(at), row->key, why);
        value_free(&v);
        return -1;
    }
    value_store(cfg, row, &v, KJ_CONFIG_FROM_FILE, config_setting_source_line(s));
    return 0;
}

static int unknown_setting(const config_setting_t *s, const char *key, const char *file,
                           char *errstr, size_t errstr_size) {
    char hint[96];
    suggest(key, false, hint, sizeof(hint));
    snprintf(errstr, errstr_size, "%s:%u: %s: unknown setting%s", setting_file(s, file),
             config_setting_source_line(s), key, hint);
    return -1;
}

static int apply_tree(kj_config *cfg, config_t *lc, const char *file, char *errstr,
                      size_t errstr_size) {
    config_setting_t *root = config_root_setting(lc);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        if (!name) continue;
        if (strcmp(name, "limits") == 0) { /* a list of groups: config_limits.c */
            if (kj_config_limits_from_setting(cfg, s, setting_file(s, file), errstr, errstr_size))
                return -1;
            continue;
        }
        const kj_setting *row = row_by_key(name);
        if (row && !row->group) {
            if (apply_setting(cfg, row, s, file, errstr, errstr_size)) return -1;
            continue;
        }
        if (!is_group_name(name)) return unknown_setting(s, name, file, errstr, errstr_size);
        if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
            char got[96];
            describe_setting(s, got, sizeof(got));
            snprintf(errstr, errstr_size, "%s:%u: %s: expected a group like %s = { ... }, got %s",
                     setting_file(s, file), config_setting_source_line(s), name, name, got);
            return -1;
        }
        int m = config_setting_length(s);
        for (int j = 0; j < m; j++) {
            config_setting_t *c = config_setting_get_elem(s, (unsigned)j);
            char key[256];
            snprintf(key, sizeof(key), "%s.%s", name, config_setting_name(c));
            if (strcmp(key, "schedule.periodic") == 0) {
                /* a list of groups: not a table row (processor/periodic_config.h) */
                kj_periodic_entries_free(cfg->periodic, cfg->periodic_count);
                if (kj_periodic_config_parse(c, setting_file(c, file), &cfg->periodic,
                                             &cfg->periodic_count, errstr, errstr_size))
                    return -1;
                continue;
            }
            row = row_by_key(key);
            if (!row) return unknown_setting(c, key, file, errstr, errstr_size);
            if (apply_setting(cfg, row, c, file, errstr, errstr_size)) return -1;
        }
    }
    return 0;
}

static void syntax_error(config_t *lc, const char *file, char *errstr, size_t errstr_size) {
    char buf[PATH_MAX + 64];
    const char *ef = place_file(lc, config_error_file(lc), file, buf, sizeof(buf));
    snprintf(errstr, errstr_size, "%s:%d: %s", ef, config_error_line(lc),
             config_error_text(lc) ? config_error_text(lc) : "syntax error");
}

/* ------------------------------------------------------------------------------------------ */
/* Cross-setting checks                                                                        */

/* "kjobs.cfg:12: batch.max_pending" / "environment KJOBS_X" / "batch.max_pending" for a row. */
static void place_of(const kj_config *cfg, const kj_setting *row, char *buf, size_t size) {
    const struct kj_config_origin *o = &cfg->origin[row_index(row)];
    switch ((kj_config_origin_kind)o->kind) {
    case KJ_CONFIG_FROM_FILE:
        snprintf(buf, size, "%s:%d: %s", cfg->source_path ? cfg->source_path : "config", o->line,
                 row->key);
        break;
    case KJ_CONFIG_FROM_ENV:
        snprintf(buf, size, "environment %s", row->env);
        break;
    default:
        snprintf(buf, size, "%s", row->key);
        break;
    }
}

void kj_config_place(const kj_config *cfg, const char *dotted_name, char *buf, size_t size) {
    const kj_setting *row = row_by_key(dotted_name);
    if (!row) {
        snprintf(buf, size, "%s", dotted_name);
        return;
    }
    place_of(cfg, row, buf, size);
    if (cfg->origin[row_index(row)].kind == KJ_CONFIG_FROM_ENV) { /* name the setting too */
        size_t used = strlen(buf);
        if (used < size) snprintf(buf + used, size - used, ": %s", row->key);
    }
}

/*
 * Blame the first of `keys` (NULL-terminated, most likely culprit first) that was configured —
 * a default cannot be at fault — or the first one when none was.
 */
static void vcross_fail_any(const kj_config *cfg, const char *const *keys, char *errstr,
                            size_t errstr_size, const char *fmt, va_list ap) {
    const kj_setting *blame = row_by_key(keys[0]);
    for (size_t i = 0; keys[i]; i++) {
        const kj_setting *row = row_by_key(keys[i]);
        if (cfg->origin[row_index(row)].kind != KJ_CONFIG_FROM_DEFAULT) {
            blame = row;
            break;
        }
    }
    char place[320], msg[512];
    place_of(cfg, blame, place, sizeof(place));
    vsnprintf(msg, sizeof(msg), fmt, ap);
    snprintf(errstr, errstr_size, "%s: %s", place, msg);
}

static void cross_fail_any(const kj_config *cfg, const char *const *keys, char *errstr,
                           size_t errstr_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vcross_fail_any(cfg, keys, errstr, errstr_size, fmt, ap);
    va_end(ap);
}

/* Blame `b` (the setting named first in the message) unless only `a` was configured. */
static void cross_fail(const kj_config *cfg, const char *key_b, const char *key_a, char *errstr,
                       size_t errstr_size, const char *fmt, ...) {
    const char *const keys[] = {key_b, key_a, NULL};
    va_list ap;
    va_start(ap, fmt);
    vcross_fail_any(cfg, keys, errstr, errstr_size, fmt, ap);
    va_end(ap);
}

int kj_config_validate(const kj_config *cfg, char *errstr, size_t errstr_size) {
    char why[512];
    if (cfg->batch_max_pending < cfg->batch_max_jobs) {
        cross_fail(cfg, "batch.max_pending", "batch.max_jobs", errstr, errstr_size,
                   "batch.max_pending (%d) must be at least batch.max_jobs (%d)",
                   cfg->batch_max_pending, cfg->batch_max_jobs);
        return -1;
    }
    if (cfg->breaker_window > 0 && cfg->breaker_min_window > cfg->breaker_window) {
        cross_fail(cfg, "dlq.breaker_min_window", "dlq.breaker_window", errstr, errstr_size,
                   "dlq.breaker_min_window (%d) must be at most dlq.breaker_window (%d)",
                   cfg->breaker_min_window, cfg->breaker_window);
        return -1;
    }
    if (cfg->min_insync_replicas > cfg->replication_factor) {
        cross_fail(cfg, "topics.min_insync_replicas", "topics.replication_factor", errstr,
                   errstr_size,
                   "topics.min_insync_replicas (%d) must be at most topics.replication_factor "
                   "(%d): no write could ever be acknowledged",
                   cfg->min_insync_replicas, cfg->replication_factor);
        return -1;
    }
    for (size_t i = 0; i < cfg->retry_delay_count; i++) {
        if (cfg->retry_delays_ms[i] >= cfg->topic_retention_ms) {
            cross_fail(cfg, "topics.retention", "retry.delays", errstr, errstr_size,
                       "topics.retention (%lld ms) must exceed every retry delay (%lld ms): "
                       "copies would be deleted before they are due",
                       (long long)cfg->topic_retention_ms, (long long)cfg->retry_delays_ms[i]);
            return -1;
        }
    }
    const kj_setting *max_delay_row = row_by_key("schedule.max_delay");
    if (cfg->origin[row_index(max_delay_row)].kind != KJ_CONFIG_FROM_DEFAULT &&
        cfg->schedule_max_delay_ms > cfg->topic_retention_ms) {
        cross_fail(cfg, "schedule.max_delay", "topics.retention", errstr, errstr_size,
                   "schedule.max_delay (%lld ms) must be at most topics.retention (%lld ms)",
                   (long long)cfg->schedule_max_delay_ms, (long long)cfg->topic_retention_ms);
        return -1;
    }
    if (cfg->dlq_retention_ms < cfg->topic_retention_ms) {
        cross_fail(cfg, "topics.dlq_retention", "topics.retention", errstr, errstr_size,
                   "topics.dlq_retention (%lld ms) must be at least topics.retention (%lld ms): "
                   "dead letters outlive the ladder",
                   (long long)cfg->dlq_retention_ms, (long long)cfg->topic_retention_ms);
        return -1;
    }
    if (cfg->sr_key_file[0] && !cfg->sr_cert_file[0]) {
        cross_fail(cfg, "kafka.schema_registry_key_file", "kafka.schema_registry_cert_file", errstr,
                   errstr_size,
                   "kafka.schema_registry_key_file is set but kafka.schema_registry_cert_file is "
                   "empty");
        return -1;
    }
    if (cfg->sr_password[0] && !cfg->sr_user[0]) {
        cross_fail(cfg, "kafka.schema_registry_password", "kafka.schema_registry_user", errstr,
                   errstr_size,
                   "kafka.schema_registry_password is set but kafka.schema_registry_user is empty");
        return -1;
    }
    if (cfg->handlers_exec_type_count > 0 && cfg->handlers_exec_count == 0) {
        cross_fail(cfg, "handlers.exec_types", "handlers.exec", errstr, errstr_size,
                   "handlers.exec_types is set but handlers.exec is empty");
        return -1;
    }
    /* Derived names must be valid topics too (a long main name makes "<main>.retry.N" too long)
     * and the main, ladder and DLQ topics must all differ. */
    if (check_topic(cfg->dlq_topic, why, sizeof(why))) {
        cross_fail(cfg, "topics.dlq", "topics.main", errstr, errstr_size, "dead-letter topic: %s",
                   why);
        return -1;
    }
    if (strcmp(cfg->dlq_topic, cfg->main_topic) == 0) {
        cross_fail(cfg, "topics.dlq", "topics.main", errstr, errstr_size,
                   "the dead-letter topic must differ from topics.main (\"%s\")", cfg->main_topic);
        return -1;
    }
    for (size_t step = 1; step <= cfg->retry_delay_count; step++) {
        char *t = kj_config_retry_topic(cfg, (int)step);
        int bad = check_topic(t, why, sizeof(why));
        bool clash_main = !bad && strcmp(t, cfg->main_topic) == 0;
        bool clash_dlq = !bad && !clash_main && strcmp(t, cfg->dlq_topic) == 0;
        if (bad)
            cross_fail(cfg, "topics.retry_prefix", "topics.main", errstr, errstr_size,
                       "retry topic %zu: %s", step, why);
        else if (clash_main)
            cross_fail(cfg, "topics.retry_prefix", "topics.main", errstr, errstr_size,
                       "retry topic \"%s\" is the same as topics.main", t);
        else if (clash_dlq) /* a DLQ named like a ladder step: topics.dlq is the likely slip */
            cross_fail_any(
                cfg,
                (const char *const[]){"topics.dlq", "topics.retry_prefix", "topics.main", NULL},
                errstr, errstr_size, "the dead-letter topic \"%s\" is the same as retry topic %zu",
                t, step);
        free(t);
        if (bad || clash_main || clash_dlq) return -1;
    }
    if (cfg->periodic_count > 0) {
        /* The state topic of periodic jobs, "<topics.main>.schedule", is a topic too. */
        char *t = kj_periodic_state_topic(cfg);
        int bad = check_topic(t, why, sizeof(why));
        bool clash = !bad && strcmp(t, cfg->dlq_topic) == 0;
        for (size_t step = 1; !bad && !clash && step <= cfg->retry_delay_count; step++) {
            char *r = kj_config_retry_topic(cfg, (int)step);
            clash = strcmp(r, t) == 0;
            free(r);
        }
        if (bad)
            cross_fail(cfg, "topics.main", "topics.main", errstr, errstr_size,
                       "schedule.periodic state topic: %s", why);
        else if (clash)
            cross_fail(cfg, "topics.main", "topics.main", errstr, errstr_size,
                       "schedule.periodic state topic \"%s\" is also a dead-letter or ladder topic",
                       t);
        free(t);
        if (bad || clash) return -1;
    }
    {
        /* The workers' status topic, "<topics.main>.status" (docs/console.md), is one too. */
        char *t = kj_topic_status(cfg);
        int bad = check_topic(t, why, sizeof(why));
        bool clash = !bad && strcmp(t, cfg->dlq_topic) == 0;
        for (size_t step = 1; !bad && !clash && step <= cfg->retry_delay_count; step++) {
            char *r = kj_config_retry_topic(cfg, (int)step);
            clash = strcmp(r, t) == 0;
            free(r);
        }
        if (bad)
            cross_fail(cfg, "topics.main", "topics.main", errstr, errstr_size, "status topic: %s",
                       why);
        else if (clash)
            cross_fail(cfg, "topics.main", "topics.main", errstr, errstr_size,
                       "the status topic \"%s\" is also a dead-letter or ladder topic", t);
        free(t);
        if (bad || clash) return -1;
    }
    if (kj_periodic_config_check(cfg, errstr, errstr_size)) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading                                                                                     */

static const char *env_lookup(char *const *envp, const char *name) {
    size_t n = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

static int finish_load(kj_config *cfg, config_t *lc, const char *file, char *const *envp,
                       char *errstr, size_t errstr_size) {
    int rc = lc ? apply_tree(cfg, lc, file, errstr, errstr_size) : 0;
    if (rc == 0) rc = apply_env(cfg, envp, errstr, errstr_size);
    if (rc == 0) rc = kj_config_validate(cfg, errstr, errstr_size);
    return rc;
}

int kj_config_load_env(kj_config *cfg, const char *path, char *const *envp, char *errstr,
                       size_t errstr_size) {
    kj_config_defaults(cfg);
    bool explicit_path = path != NULL;
    if (!path) {
        const char *from_env = env_lookup(envp, "KJOBS_CONFIG");
        if (from_env && *from_env)
            path = from_env, explicit_path = true;
        else
            path = KJ_CONFIG_DEFAULT_PATH;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!explicit_path && errno == ENOENT)
            return finish_load(cfg, NULL, NULL, envp, errstr, errstr_size);
        snprintf(errstr, errstr_size, "%s: cannot open config file: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && !S_ISREG(st.st_mode)) {
        /* fopen succeeds on a directory; libconfig would then only say "input in flex scanner
         * failed" */
        snprintf(errstr, errstr_size, "%s: cannot read config file: %s", path,
                 S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file");
        fclose(f);
        return -1;
    }
    cfg->source_path = kj_cfg_xstrdup(path);
    config_t lc;
    config_init(&lc);
    /* Relative @include paths resolve against the config file's directory. */
    char *dir = kj_cfg_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        slash[slash == dir ? 1 : 0] = '\0';
        config_set_include_dir(&lc, dir);
    }
    int rc;
    if (config_read(&lc, f) != CONFIG_TRUE) {
        syntax_error(&lc, path, errstr, errstr_size);
        rc = -1;
    } else {
        rc = finish_load(cfg, &lc, path, envp, errstr, errstr_size);
    }
    config_destroy(&lc);
    free(dir);
    fclose(f);
    return rc;
}

int kj_config_load(kj_config *cfg, const char *path, char *errstr, size_t errstr_size) {
    return kj_config_load_env(cfg, path, environ, errstr, errstr_size);
}

int kj_config_load_string(kj_config *cfg, const char *text, const char *name_for_errors,
                          char *const *envp, char *errstr, size_t errstr_size) {
    kj_config_defaults(cfg);
    if (!name_for_errors) name_for_errors = "config";
    cfg->source_path = kj_cfg_xstrdup(name_for_errors);
    if (strcasestr(text, "@include")) {
        snprintf(errstr, errstr_size, "%s: @include is not supported in in-memory configuration",
                 name_for_errors);
        return -1;
    }
    config_t lc;
    config_init(&lc);
    int rc;
    if (config_read_string(&lc, text) != CONFIG_TRUE) {
        syntax_error(&lc, name_for_errors, errstr, errstr_size);
        rc = -1;
    } else {
        rc = finish_load(cfg, &lc, name_for_errors, envp, errstr, errstr_size);
    }
    config_destroy(&lc);
    return rc;
}

int kj_config_set(kj_config *cfg, const char *dotted_name, const char *value, char *errstr,
                  size_t errstr_size) {
    const kj_setting *row = row_by_key(dotted_name);
    if (!row) {
        char hint[96];
        suggest(dotted_name, false, hint, sizeof(hint));
        snprintf(errstr, errstr_size, "%s: unknown setting%s", dotted_name, hint);
        return -1;
    }
    return apply_text(cfg, row, value, KJ_CONFIG_FROM_CLI, row->key, errstr, errstr_size);
}

int kj_config_add_rdkafka_prop(kj_config *cfg, const char *name_eq_value, char *errstr,
                               size_t errstr_size) {
    char why[512];
    if (check_rdkafka_prop(name_eq_value, why, sizeof(why))) {
        snprintf(errstr, errstr_size, "%s", why);
        return -1;
    }
    const char *eq = strchr(name_eq_value, '=');
    char *name = kj_cfg_xstrndup(name_eq_value, (size_t)(eq - name_eq_value));
    props_append(cfg, name, eq + 1, KJ_CONFIG_FROM_CLI);
    free(name);
    return 0;
}

char *kj_config_retry_topic(const kj_config *cfg, int step) {
    if (step < 1 || (size_t)step > cfg->retry_delay_count || !cfg->retry_prefix) return NULL;
    size_t n = strlen(cfg->retry_prefix) + 12;
    char *t = kj_cfg_xmalloc(n);
    snprintf(t, n, "%s%d", cfg->retry_prefix, step);
    return t;
}

/* ------------------------------------------------------------------------------------------ */
/* Rendering: example file, reference tables, effective config                                 */

/* Appends s to buf as a libconfig string literal. */
static void render_string(const char *s, char *buf, size_t size) {
    size_t o = strlen(buf);
    if (o + 1 < size) buf[o++] = '"';
    for (; *s && o + 5 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf[o++] = '\\', buf[o++] = (char)c;
        else if (c == '\n')
            buf[o++] = '\\', buf[o++] = 'n';
        else if (c == '\t')
            buf[o++] = '\\', buf[o++] = 't';
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (o + 1 < size) buf[o++] = '"';
    buf[o] = '\0';
}

static void render_append(char *buf, size_t size, const char *fmt, ...) {
    size_t o = strlen(buf);
    if (o >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + o, size - o, fmt, ap);
    va_end(ap);
}

/* A value in libconfig syntax. `hide` replaces property values with <hidden>. */
static void render_value(const kj_setting *row, const kj_value *v, bool hide, char *buf,
                         size_t size) {
    char d[48];
    buf[0] = '\0';
    switch (row->type) {
    case KT_STRING: /* a secret string (a password) shows whether it is set, never its text */
        render_string(hide && v->s && *v->s ? "<hidden>" : v->s, buf, size);
        break;
    case KT_INT:
        render_append(buf, size, "%lld", (long long)v->i);
        break;
    case KT_BOOL:
        render_append(buf, size, "%s", v->i ? "true" : "false");
        break;
    case KT_DOUBLE:
        snprintf(d, sizeof(d), "%g", v->d);
        if (!strpbrk(d, ".eEn")) strcat(d, ".0");
        render_append(buf, size, "%s", d);
        break;
    case KT_DURATION:
        if (row->flags & KF_MS_INT) {
            render_append(buf, size, "%lld", (long long)v->i);
        } else {
            kj_duration_format(v->i, d, sizeof(d));
            render_string(d, buf, size);
        }
        break;
    case KT_STRLIST:
    case KT_DURLIST:
        render_append(buf, size, "[");
        for (size_t i = 0; i < v->n; i++) {
            render_append(buf, size, i ? ", " : " ");
            if (row->type == KT_DURLIST) {
                kj_duration_format(v->durs[i], d, sizeof(d));
                render_string(d, buf, size);
            } else if (hide && (row->flags & KF_ARGS_SECRET)) {
                render_string(i == 0 ? v->strs[i] : "<hidden>", buf, size);
            } else if (hide) {
                const char *eq = strchr(v->strs[i], '=');
                char *name = kj_cfg_xstrndup(v->strs[i],
                                             eq ? (size_t)(eq - v->strs[i]) : strlen(v->strs[i]));
                char *shown = kj_cfg_concat(name, "=<hidden>");
                render_string(shown, buf, size);
                free(shown);
                free(name);
            } else {
                render_string(v->strs[i], buf, size);
            }
        }
        render_append(buf, size, " ]");
        break;
    }
}

/* A non-owning kj_value view of the current field. */
static kj_value value_view(const kj_config *cfg, const kj_setting *row) {
    kj_value v;
    memset(&v, 0, sizeof(v));
    const void *f = field_cptr(cfg, row->off);
    switch (row->type) {
    case KT_STRING:
        v.s = *(char *const *)f;
        break;
    case KT_INT:
        v.i = *(const int *)f;
        break;
    case KT_BOOL:
        v.i = *(const bool *)f;
        break;
    case KT_DOUBLE:
        v.d = *(const double *)f;
        break;
    case KT_DURATION:
        v.i = row->flags & KF_INT_FIELD ? *(const int *)f : *(const int64_t *)f;
        break;
    case KT_STRLIST:
        v.strs = *(char **const *)f;
        v.n = *(const size_t *)field_cptr(cfg, row->count_off);
        break;
    case KT_DURLIST:
        v.durs = *(int64_t *const *)f;
        v.n = *(const size_t *)field_cptr(cfg, row->count_off);
        break;
    }
    return v;
}

static void render_default(const kj_setting *row, char *buf, size_t size) {
    kj_value v;
    char why[256];
    if (value_from_text(row, row->def, &v, why, sizeof(why))) abort();
    render_value(row, &v, false, buf, size);
    value_free(&v);
}

/* Word-wraps text after `prefix` at 100 columns. */
static void write_wrapped(FILE *out, const char *prefix, const char *text) {
    const size_t width = 100 - strlen(prefix);
    const char *p = text;
    while (*p) {
        size_t len = strlen(p);
        if (len > width) {
            len = width;
            while (len > 0 && p[len] != ' ')
                len--;
            if (len == 0) len = strcspn(p, " ");
        }
        fprintf(out, "%s%.*s\n", prefix, (int)len, p);
        p += len;
        while (*p == ' ')
            p++;
    }
}

/* The commented schedule.periodic example kj_config_write_example puts in the schedule group:
 * a list of groups is not a table row (processor/periodic_config.h). */
static const char kj_periodic_example[] =
    "\n"
    "  # Periodic (cron) jobs, enqueued once per tick by the worker that owns partition 0 of\n"
    "  # topics.main (docs/scheduling.md, \"Periodic jobs\"). File only: no environment variable.\n"
    "  # cron: 5 fields, or 6 with seconds first; time_zone: IANA name (default \"UTC\");\n"
    "  # missed: \"skip\" or \"run_once\" for ticks older than catch_up (default \"5m\");\n"
    "  # jitter: due up to this long after the tick (default \"0s\"). Check with\n"
    "  # `kjobs run --check-config` and `kjobs cron next \"EXPR\" --tz ZONE`.\n"
    "  # periodic = (\n"
    "  #   { name = \"nightly-report\"; cron = \"0 30 3 * * *\"; time_zone = \"Europe/Berlin\";\n"
    "  #     type = \"report.build\"; key = \"nightly\"; payload = "
    "\"{\\\"kind\\\":\\\"daily\\\"}\";\n"
    "  #     meta = { team = \"bi\"; }; missed = \"run_once\"; catch_up = \"5m\"; jitter = "
    "\"30s\"; }\n"
    "  # );\n";

void kj_config_write_example(FILE *out) {
    fputs("# kjobs.cfg.example - every kjobs setting with its default value.\n"
          "#\n"
          "# Generated from the settings table in processor/config.c by\n"
          "# kj_config_write_example(); do not edit by hand: tests/unit/test_config.c fails\n"
          "# when this file and the table disagree. Copy it to kjobs.cfg (read from the working\n"
          "# directory by default, or give -c FILE or KJOBS_CONFIG) and keep only what you\n"
          "# change. Unknown settings are errors.\n"
          "#\n"
          "# Durations: integer milliseconds, or a string such as \"250ms\", \"10s\", \"1m30s\",\n"
          "# \"2h\", \"1d\". Each setting can also come from the environment variable named above\n"
          "# it, which wins over this file; see docs/configuration.md for the syntax.\n",
          out);
    const char *open_group = NULL;
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const kj_setting *row = &kj_settings[i];
        char value[512];
        if (open_group && (!row->group || strcmp(open_group, row->group) != 0)) {
            if (strcmp(open_group, "schedule") == 0) fputs(kj_periodic_example, out);
            fputs("};\n", out);
            open_group = NULL;
        }
        if (row->group && !open_group) {
            fprintf(out, "\n%s = {\n", row->group);
            open_group = row->group;
        } else {
            fputs("\n", out);
        }
        const char *indent = row->group ? "  " : "";
        char prefix[8];
        snprintf(prefix, sizeof(prefix), "%s# ", indent);
        write_wrapped(out, prefix, row->doc);
        fprintf(out, "%s# env %s\n", indent, row->env);
        render_default(row, value, sizeof(value));
        fprintf(out, "%s%s = %s;\n", indent, row->name, value);
    }
    if (open_group) fputs("};\n", out);
    kj_config_limits_write_example(out);
}

static void describe_type(const kj_setting *row, char *buf, size_t size) {
    char a[32], b[32];
    switch (row->type) {
    case KT_STRING:
        snprintf(buf, size, "string");
        break;
    case KT_INT:
        snprintf(buf, size, "integer %lld..%lld", (long long)row->min, (long long)row->max);
        break;
    case KT_BOOL:
        snprintf(buf, size, "boolean");
        break;
    case KT_DOUBLE:
        snprintf(buf, size, "number %g..%g", row->dmin, row->dmax);
        break;
    case KT_DURATION:
        kj_duration_format(row->min, a, sizeof(a));
        kj_duration_format(row->max, b, sizeof(b));
        snprintf(buf, size, "duration %s..%s", a, b);
        break;
    case KT_STRLIST:
        snprintf(buf, size, "list of strings");
        break;
    case KT_DURLIST:
        kj_duration_format(row->min, a, sizeof(a));
        kj_duration_format(row->max, b, sizeof(b));
        snprintf(buf, size, "list of up to %zu durations %s..%s", row->max_items, a, b);
        break;
    }
}

/* Markdown table cell: characters Markdown would take as markup are escaped, outside `code`. */
static void md_cell(FILE *out, const char *s) {
    bool code = false;
    for (; *s; s++) {
        if (*s == '`') code = !code;
        if (*s == '|')
            fputs("\\|", out); /* a table delimiter even inside code */
        else if (!code && *s == '<')
            fputs("&lt;", out);
        else if (!code && *s == '>')
            fputs("&gt;", out);
        else if (!code && *s == '*')
            fputs("\\*", out);
        else
            fputc(*s, out);
    }
}

void kj_config_write_reference(FILE *out) {
    const char *group = "";
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const kj_setting *row = &kj_settings[i];
        const char *g = row->group ? row->group : row->name;
        if (strcmp(g, group) != 0) {
            fprintf(out, "%s### `%s`\n\n", i ? "\n" : "", g);
            fputs("| Setting | Type | Default | Environment | Meaning |\n"
                  "|---|---|---|---|---|\n",
                  out);
            group = g;
        }
        char type[128], def[512];
        describe_type(row, type, sizeof(type));
        if (row->type == KT_STRING && row->expect) {
            size_t o = strlen(type);
            snprintf(type + o, sizeof(type) - o, ": %s", row->expect);
        } else if (row->type == KT_STRING && (row->flags & KF_NONEMPTY)) {
            snprintf(type, sizeof(type), "non-empty string");
        }
        render_default(row, def, sizeof(def));
        fprintf(out, "| `%s` | ", row->key);
        md_cell(out, type);
        fputs(" | `", out);
        md_cell(out, def);
        fprintf(out, "` | `%s` | ", row->env);
        md_cell(out, row->doc);
        fputs(" |\n", out);
    }
}

void kj_config_write_effective(const kj_config *cfg, FILE *out) {
    fprintf(out, "# effective kjobs configuration (file: %s)\n",
            cfg->source_path ? cfg->source_path : "none, defaults");
    for (size_t i = 0; i < KJ_NSETTINGS; i++) {
        const kj_setting *row = &kj_settings[i];
        kj_value v = value_view(cfg, row);
        char value[4096], from[320];
        render_value(row, &v, (row->flags & (KF_SECRET | KF_ARGS_SECRET)) != 0, value,
                     sizeof(value));
        const struct kj_config_origin *o = &cfg->origin[i];
        switch ((kj_config_origin_kind)o->kind) {
        case KJ_CONFIG_FROM_FILE:
            snprintf(from, sizeof(from), "%s:%d", cfg->source_path ? cfg->source_path : "?",
                     o->line);
            break;
        case KJ_CONFIG_FROM_ENV:
            snprintf(from, sizeof(from), "environment %s",
                     row->type == KT_STRLIST && (row->flags & KF_SECRET)
                         ? "(KJOBS_KAFKA_PROPERTIES / KJOBS_RDKAFKA_*)"
                         : row->env);
            break;
        case KJ_CONFIG_FROM_CLI:
            snprintf(from, sizeof(from), "command line");
            break;
        default:
            snprintf(from, sizeof(from), "default");
            break;
        }
        fprintf(out, "%s = %s;  # %s\n", row->key, value, from);
    }
    /* schedule.periodic (file only); payload and meta values are not printed (they may hold
     * anything), their size is. */
    for (size_t i = 0; i < cfg->periodic_count; i++) {
        const kj_periodic_entry *e = &cfg->periodic[i];
        char name[256] = "", cron[256] = "", tz[256] = "", type[256] = "", key[256] = "";
        char catch_up[32], jitter[32];
        render_string(e->name, name, sizeof(name));
        render_string(e->cron_text, cron, sizeof(cron));
        render_string(e->time_zone, tz, sizeof(tz));
        render_string(e->type, type, sizeof(type));
        render_string(e->key ? e->key : "", key, sizeof(key));
        kj_duration_format(e->catch_up_ms, catch_up, sizeof(catch_up));
        kj_duration_format(e->jitter_ms, jitter, sizeof(jitter));
        fprintf(out,
                "schedule.periodic[%zu] = { name = %s; cron = %s; time_zone = %s; type = %s; "
                "key = %s; missed = \"%s\"; catch_up = \"%s\"; jitter = \"%s\"; };  # %s:%d, "
                "payload %zu bytes, %zu meta entries\n",
                i, name, cron, tz, type, key, e->missed == KJ_MISSED_RUN_ONCE ? "run_once" : "skip",
                catch_up, jitter, cfg->source_path ? cfg->source_path : "?", e->line,
                strlen(e->payload), e->meta_count);
    }
    kj_config_limits_write_effective(cfg, out);
}

/* ------------------------------------------------------------------------------------------ */
/* Introspection                                                                               */

size_t kj_config_setting_count(void) {
    return KJ_NSETTINGS;
}

const char *kj_config_setting_name(size_t i) {
    return i < KJ_NSETTINGS ? kj_settings[i].key : NULL;
}

const char *kj_config_setting_env(size_t i) {
    return i < KJ_NSETTINGS ? kj_settings[i].env : NULL;
}

int kj_config_format_value(const kj_config *cfg, const char *dotted_name, char *buf, size_t size) {
    const kj_setting *row = row_by_key(dotted_name);
    if (!row || size == 0) return -1;
    kj_value v = value_view(cfg, row);
    render_value(row, &v, false, buf, size);
    return 0;
}

int kj_config_origin_of(const kj_config *cfg, const char *dotted_name, int *line_out) {
    const kj_setting *row = row_by_key(dotted_name);
    if (!row) return -1;
    if (line_out) *line_out = cfg->origin[row_index(row)].line;
    return cfg->origin[row_index(row)].kind;
}

int64_t kj_config_schedule_max_delay(const kj_config *cfg) {
    return cfg->schedule_max_delay_ms < cfg->topic_retention_ms ? cfg->schedule_max_delay_ms
                                                                : cfg->topic_retention_ms;
}

bool kj_config_retry_key_ordered(const kj_config *cfg) {
    return cfg->retry_ordering && strcmp(cfg->retry_ordering, "key") == 0;
}

int kj_config_queue_kbytes(const kj_config *cfg) {
    int kb = cfg->batch_max_pending_bytes / 4 / 1024;
    return kb < 1024 ? 1024 : kb;
}

int kj_config_key_lanes(const kj_config *cfg) {
    if (!cfg->batch_ordering || strcmp(cfg->batch_ordering, "key") != 0) return 1;
    return cfg->batch_key_lanes > 0 ? cfg->batch_key_lanes : cfg->workers;
}
