/*
 * status_report.c — the worker status record: rendering (pure), the recent-errors ring, and the
 * small producer that publishes it to <topics.main>.status. Design and schema: status_report.h
 * and docs/console.md.
 */
#include "processor/status_report.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "processor/kafka.h"
#include "processor/topic_layout.h"
#include "common/utf8.h"
#include "processor/version.h"

/* ---- recent errors -------------------------------------------------------------------------- */

/* Process-wide and never freed: the log observer may run on any thread until exit. */
static struct {
    pthread_mutex_t mu;
    json_t *items[KJ_STATUS_MAX_ERRORS]; /* ring; next is the oldest slot */
    size_t next, count;
} g_errors = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Context fields of a log line worth showing an operator; nothing else is copied. */
static const char *const kept_fields[] = {"error",  "class", "topic", "partition",
                                          "offset", "type",  "id",    "reason"};

static json_t *cut_string(const char *s) {
    char buf[KJ_STATUS_MAX_ERROR_TEXT];
    size_t n = kj_utf8_clean(buf, sizeof(buf), s, strlen(s), NULL, true);
    return json_stringn(buf, n);
}

void kj_status_note_log(kj_log_level level, const json_t *line) {
    (void)level;
    json_t *e = json_object();
    if (!e) return;
    static const char *const head[] = {"ts", "level", "msg"};
    for (size_t i = 0; i < 3; i++) {
        const char *v = json_string_value(json_object_get(line, head[i]));
        json_object_set_new(e, head[i], v ? cut_string(v) : json_null());
    }
    for (size_t i = 0; i < sizeof(kept_fields) / sizeof(kept_fields[0]); i++) {
        json_t *v = json_object_get(line, kept_fields[i]);
        if (json_is_string(v))
            json_object_set_new(e, kept_fields[i], cut_string(json_string_value(v)));
        else if (json_is_integer(v))
            json_object_set_new(e, kept_fields[i], json_integer(json_integer_value(v)));
    }
    pthread_mutex_lock(&g_errors.mu);
    json_decref(g_errors.items[g_errors.next]);
    g_errors.items[g_errors.next] = e;
    g_errors.next = (g_errors.next + 1) % KJ_STATUS_MAX_ERRORS;
    if (g_errors.count < KJ_STATUS_MAX_ERRORS) g_errors.count++;
    pthread_mutex_unlock(&g_errors.mu);
}

json_t *kj_status_errors_json(void) {
    json_t *a = json_array();
    pthread_mutex_lock(&g_errors.mu);
    size_t first = (g_errors.next + KJ_STATUS_MAX_ERRORS - g_errors.count) % KJ_STATUS_MAX_ERRORS;
    for (size_t i = 0; i < g_errors.count; i++)
        json_array_append_new(a,
                              json_deep_copy(g_errors.items[(first + i) % KJ_STATUS_MAX_ERRORS]));
    pthread_mutex_unlock(&g_errors.mu);
    return a;
}

/* ---- rendering ------------------------------------------------------------------------------ */

static json_t *str_or_null(const char *s) {
    return s ? kj_utf8_json_string(s, strlen(s)) : json_null();
}

static json_t *seconds_or_null(double s) {
    return s < 0 ? json_null() : json_real(s);
}

/* The record with the first `listed` partitions of the assignment. */
static json_t *build(const kj_status_input *in, size_t listed) {
    const kj_metrics_summary *m = &in->summary;
    json_t *parts = json_array();
    for (size_t i = 0; i < listed; i++) {
        json_t *p = json_pack("{s:o,s:i}", "topic", str_or_null(in->parts[i].topic), "partition",
                              (int)in->parts[i].partition);
        if (p && in->parts[i].paused) json_object_set_new(p, "paused", json_true());
        json_array_append_new(parts, p);
    }
    json_t *jobs = json_object();
    for (int o = 0; o < KJ_JOB_OUTCOME_COUNT; o++)
        json_object_set_new(jobs, kj_job_outcome_name((kj_job_outcome)o),
                            json_integer((json_int_t)m->jobs[o]));
    return json_pack(
        "{s:i,s:o,s:o,s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:o,s:{s:b},s:{s:I,s:o,s:I},s:o,"
        "s:{s:I,s:o,s:o},s:I,s:{s:I,s:I,s:I,s:I,s:I},s:o}",
        "schema", KJ_STATUS_SCHEMA_VERSION, "worker_id", str_or_null(in->worker_id), "host",
        str_or_null(in->host), "pid", (json_int_t)in->pid, "client_id", str_or_null(in->client_id),
        "group", str_or_null(in->group), "version", str_or_null(in->version), "started_at",
        (json_int_t)in->started_at_ms, "reported_at", (json_int_t)in->reported_at_ms, "interval_ms",
        (json_int_t)in->interval_ms, "state", str_or_null(in->state), "breaker", "open",
        m->breaker_open, "assignment", "count", (json_int_t)in->part_count, "partitions", parts,
        "omitted", (json_int_t)(in->part_count - listed), "jobs", jobs, "handler", "count",
        (json_int_t)m->handled, "p50_seconds", seconds_or_null(m->p50_seconds), "p99_seconds",
        seconds_or_null(m->p99_seconds), "in_flight", (json_int_t)m->in_flight, "counters",
        "route_errors", (json_int_t)m->route_errors, "decode_errors", (json_int_t)m->decode_errors,
        "offset_resets", (json_int_t)m->offset_resets, "rebalances", (json_int_t)m->rebalances,
        "retries_in_place", (json_int_t)m->retries_in_place, "errors",
        in->errors ? json_deep_copy(in->errors) : json_array());
}

char *kj_status_render(const kj_status_input *in, size_t max_bytes, size_t *len) {
    size_t listed = in->part_count;
    for (;;) {
        json_t *rec = build(in, listed);
        if (!rec) return NULL;
        char *text = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(rec);
        if (!text) return NULL;
        size_t n = strlen(text);
        if (n <= max_bytes || listed == 0) {
            if (len) *len = n;
            return text;
        }
        free(text);
        listed /= 2; /* the list is the only unbounded part: halve it until the record fits */
    }
}

void kj_status_worker_id(const kj_config *cfg, char *buf, size_t size) {
    if (cfg->group_instance_id && cfg->group_instance_id[0]) {
        snprintf(buf, size, "%s", cfg->group_instance_id);
        return;
    }
    char host[128] = "unknown";
    gethostname(host, sizeof(host) - 1);
    snprintf(buf, size, "%s-%ld", host, (long)getpid());
}

/* ---- the reporter --------------------------------------------------------------------------- */

struct kj_status_reporter {
    const kj_config *cfg;
    rd_kafka_t *producer;
    char *topic;
    char id[256];
    char host[128];
    int64_t started_at, next_due;
    atomic_bool failing; /* a record was not delivered; logged once until one is */
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    kj_status_reporter *r = opaque;
    if (m->err) {
        if (!atomic_exchange(&r->failing, true))
            kj_log(KJ_LOG_WARN, "status record not delivered; the console shows this worker stale",
                   "{s:s,s:s}", "topic", r->topic, "error", rd_kafka_err2str(m->err));
    } else if (atomic_exchange(&r->failing, false)) {
        kj_log(KJ_LOG_INFO, "status records delivered again", "{s:s}", "topic", r->topic);
    }
}

/* The topic must exist: asking for it by name would let auto.create.topics.enable make it
 * uncompacted, so read every topic's metadata (as periodic.c does for its state topic). */
static bool topic_exists(kj_status_reporter *r) {
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(r->producer, 1, NULL, &md, 15000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    bool found = false;
    for (int i = 0; i < md->topic_cnt && !found; i++)
        found = strcmp(md->topics[i].topic, r->topic) == 0 && !md->topics[i].err &&
                md->topics[i].partition_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return found;
}

kj_status_reporter *kj_status_reporter_new(const kj_config *cfg, char *errstr, size_t errstr_size,
                                           bool *failed) {
    *failed = false;
    if (cfg->ui_report_interval_ms <= 0) return NULL;
    kj_status_reporter *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->cfg = cfg;
    r->topic = kj_topic_status(cfg);
    kj_status_worker_id(cfg, r->id, sizeof(r->id));
    snprintf(r->host, sizeof(r->host), "unknown");
    gethostname(r->host, sizeof(r->host) - 1);
    r->started_at = kj_now_ms();
    rd_kafka_conf_t *conf = kj_kafka_producer_conf_new(cfg, errstr, errstr_size);
    if (!conf ||
        kj_kafka_conf_set(conf, "allow.auto.create.topics", "false", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "linger.ms", "50", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "queue.buffering.max.messages", "64", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "message.timeout.ms", "30000", errstr, errstr_size)) {
        if (conf) rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (!(r->producer = kj_kafka_producer_new(conf, errstr, errstr_size))) goto fail;
    if (!topic_exists(r)) {
        kj_log(KJ_LOG_WARN,
               "status topic missing: this worker publishes no status for the console (create it "
               "with `kjobs topics --create`)",
               "{s:s}", "topic", r->topic);
        kj_status_reporter_free(r);
        return NULL;
    }
    kj_log_set_observer(kj_status_note_log);
    kj_log(KJ_LOG_INFO, "status reports on", "{s:s,s:s,s:I}", "topic", r->topic, "worker_id", r->id,
           "interval_ms", (json_int_t)cfg->ui_report_interval_ms);
    return r;
fail:
    *failed = true;
    kj_status_reporter_free(r);
    return NULL;
}

const char *kj_status_reporter_id(const kj_status_reporter *r) {
    return r->id;
}

bool kj_status_reporter_due(kj_status_reporter *r, int64_t now_ms) {
    rd_kafka_poll(r->producer, 0);
    return now_ms >= r->next_due;
}

void kj_status_reporter_publish(kj_status_reporter *r, kj_status_input *in, int64_t now_ms) {
    r->next_due = now_ms + r->cfg->ui_report_interval_ms;
    in->worker_id = r->id;
    in->host = r->host;
    in->pid = (long)getpid();
    in->client_id = r->cfg->client_id;
    in->group = r->cfg->group;
    in->version = kj_version();
    in->started_at_ms = r->started_at;
    in->reported_at_ms = now_ms;
    in->interval_ms = r->cfg->ui_report_interval_ms;
    size_t len;
    char *text = kj_status_render(in, KJ_STATUS_MAX_BYTES, &len);
    if (!text) return;
    if (rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(r->topic),
                          RD_KAFKA_V_KEY(r->id, strlen(r->id)), RD_KAFKA_V_VALUE(text, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                          RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        free(text); /* not queued: ours to free */
        if (!atomic_exchange(&r->failing, true))
            kj_log(KJ_LOG_WARN, "status record dropped (producer queue full)", "{s:s}", "topic",
                   r->topic);
    }
}

void kj_status_reporter_tombstone(kj_status_reporter *r, int timeout_ms) {
    if (!r) return;
    if (rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(r->topic),
                          RD_KAFKA_V_KEY(r->id, strlen(r->id)), RD_KAFKA_V_VALUE(NULL, 0),
                          RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_flush(r->producer, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
        kj_log(KJ_LOG_INFO, "status tombstone written", "{s:s,s:s}", "topic", r->topic, "worker_id",
               r->id);
    else
        kj_log(KJ_LOG_WARN, "status tombstone not written; the console shows this worker stale",
               "{s:s,s:s}", "topic", r->topic, "worker_id", r->id);
}

void kj_status_reporter_free(kj_status_reporter *r) {
    if (!r) return;
    if (r->producer) {
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(r->producer, 0);
        rd_kafka_destroy(r->producer);
    }
    free(r->topic);
    free(r);
}
