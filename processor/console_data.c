/*
 * console_data.c — the console's Kafka reads (see console_data.h): the status-topic reader
 * thread, group members and lag, ladder heads, and dead letters through dlq_model.
 */
#include "processor/console_data.h"

#include <ctype.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/dlq_model.h"
#include "processor/group_lag.h"
#include "processor/header_contract.h"
#include "processor/job_json.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/status_report.h"
#include "processor/topic_layout.h"

struct kj_console_data {
    const kj_config *cfg;
    char *status_topic;
    pthread_mutex_t kafka_mu; /* serialises the two handles below */
    rd_kafka_t *group_rk;     /* group.id = cfg->group, never subscribed: lag, members */
    rd_kafka_t *reader;       /* group-less reads by assignment: ladder heads */
    /* the status reader */
    pthread_t thread;
    bool thread_started;
    atomic_bool stop, loaded;
    pthread_mutex_t workers_mu;
    json_t *workers;            /* key -> latest record */
    bool workers_full_logged;   /* (status thread) */
    pthread_mutex_t action_mu;  /* one replay at a time (the loop guard's marker) */
    pthread_mutex_t control_mu; /* the control follower below */
    kj_ctl_follower *control;   /* the operator's controls (group_control.h) */
    bool control_loaded;        /* read to its end once; polled from then on */
};

/* A consumer that never joins a group: group.id is set (librdkafka wants one for
 * consumer_poll) to a name no worker uses, and nothing is ever committed. */
static rd_kafka_t *consumer_new(const kj_config *cfg, const char *group, char *err, size_t errsz) {
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(cfg, err, errsz);
    if (!conf || kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, errsz) ||
        kj_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, errsz) ||
        kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, errsz) ||
        kj_kafka_conf_set(conf, "group.id", group, err, errsz)) {
        if (conf) rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz);
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

/* ---- workers: the status topic ------------------------------------------------------------- */

/* ---- a status record, as the console keeps it ------------------------------------------------
 * Anyone who can produce to the status topic writes what the console reads, so a record is
 * never kept as written: only the fields of the documented schema (docs/console.md), each of its
 * documented type, strings cut to KJ_CONSOLE_FIELD_MAX bytes (UTF-8 kept whole), integers
 * clamped to +-2^53 (what a browser's numbers hold exactly; sums of them saturate: count_add),
 * lists bounded. A field of the wrong type is left out, so the page can trust every field it
 * gets; the kept record is a few KiB at most whatever was written. */
#define KJ_CONSOLE_FIELD_MAX            256
#define KJ_CONSOLE_DESCRIBE_MIN_RDKAFKA 0x020f0000 /* 2.15.0 */
#define KJ_CONSOLE_LIST_MAX             64
#define KJ_JSON_SAFE_INT                9007199254740992LL /* 2^53 */

/* The first at most @p max bytes of the valid UTF-8 string @p s, never cut inside a sequence. */
static json_t *proj_cut(const char *s, size_t max) {
    size_t len = strlen(s), n = len > max ? max : len;
    while (n > 0 && n < len && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return json_stringn(s, n);
}

static json_t *proj_string(const json_t *v) {
    return json_is_string(v) ? proj_cut(json_string_value(v), KJ_CONSOLE_FIELD_MAX) : NULL;
}

static json_t *proj_int(const json_t *v) {
    if (!json_is_integer(v)) return NULL;
    json_int_t i = json_integer_value(v);
    if (i > KJ_JSON_SAFE_INT) i = KJ_JSON_SAFE_INT;
    if (i < -KJ_JSON_SAFE_INT) i = -KJ_JSON_SAFE_INT;
    return json_integer(i);
}

static json_t *proj_seconds(const json_t *v) {
    if (json_is_null(v)) return json_null();
    if (!json_is_number(v)) return NULL;
    double x = json_number_value(v);
    return x >= 0 && x < 1e9 ? json_real(x) : NULL;
}

static void put(json_t *o, const char *key, json_t *v) {
    if (v) json_object_set_new(o, key, v);
}

static json_t *status_project(const json_t *raw) {
    json_t *o = json_object();
    static const char *const strings[] = {"worker_id", "host",    "client_id",
                                          "group",     "version", "state"};
    static const char *const ints[] = {"schema",      "pid",         "started_at",
                                       "reported_at", "interval_ms", "in_flight"};
    for (size_t i = 0; i < sizeof(strings) / sizeof(*strings); i++)
        put(o, strings[i], proj_string(json_object_get(raw, strings[i])));
    for (size_t i = 0; i < sizeof(ints) / sizeof(*ints); i++)
        put(o, ints[i], proj_int(json_object_get(raw, ints[i])));
    json_t *breaker = json_object_get(raw, "breaker");
    if (json_is_boolean(json_object_get(breaker, "open")))
        put(o, "breaker", json_pack("{s:O}", "open", json_object_get(breaker, "open")));
    json_t *a = json_object_get(raw, "assignment"), *pa = json_object();
    put(pa, "count", proj_int(json_object_get(a, "count")));
    put(pa, "omitted", proj_int(json_object_get(a, "omitted")));
    json_t *parts = json_array();
    json_t *e;
    size_t i;
    json_array_foreach(json_object_get(a, "partitions"), i, e) {
        if (i >= KJ_CONSOLE_LIST_MAX) break;
        json_t *t = proj_string(json_object_get(e, "topic"));
        json_t *p = proj_int(json_object_get(e, "partition"));
        if (t && p) {
            json_t *kept = json_pack("{s:o,s:o}", "topic", t, "partition", p);
            if (json_is_true(json_object_get(e, "paused")))
                json_object_set_new(kept, "paused", json_true());
            json_array_append_new(parts, kept);
        } else {
            json_decref(t);
            json_decref(p);
        }
    }
    json_object_set_new(pa, "partitions", parts);
    json_object_set_new(o, "assignment", pa);
    json_t *jobs = json_object(), *raw_jobs = json_object_get(raw, "jobs");
    for (int k = 0; k < KJ_JOB_OUTCOME_COUNT; k++) {
        const char *name = kj_job_outcome_name((kj_job_outcome)k);
        put(jobs, name, proj_int(json_object_get(raw_jobs, name)));
    }
    json_object_set_new(o, "jobs", jobs);
    json_t *h = json_object_get(raw, "handler"), *ph = json_object();
    put(ph, "count", proj_int(json_object_get(h, "count")));
    put(ph, "p50_seconds", proj_seconds(json_object_get(h, "p50_seconds")));
    put(ph, "p99_seconds", proj_seconds(json_object_get(h, "p99_seconds")));
    json_object_set_new(o, "handler", ph);
    json_t *c = json_object_get(raw, "counters"), *pc = json_object();
    static const char *const counters[] = {"route_errors", "decode_errors", "offset_resets",
                                           "rebalances", "retries_in_place"};
    for (size_t k = 0; k < sizeof(counters) / sizeof(*counters); k++)
        put(pc, counters[k], proj_int(json_object_get(c, counters[k])));
    json_object_set_new(o, "counters", pc);
    json_t *errors = json_array();
    json_array_foreach(json_object_get(raw, "errors"), i, e) {
        if (i >= KJ_STATUS_MAX_ERRORS) break;
        if (!json_is_object(e)) continue;
        json_t *pe = json_object();
        /* the schema's fields (docs/console.md): text ones, and the numbers of a record's place */
        static const char *const fields[] = {"ts",    "level", "msg", "error", "class",
                                             "topic", "type",  "id",  "reason"};
        static const char *const numbers[] = {"partition", "offset"};
        for (size_t k = 0; k < sizeof(fields) / sizeof(*fields); k++)
            put(pe, fields[k], proj_string(json_object_get(e, fields[k])));
        for (size_t k = 0; k < sizeof(numbers) / sizeof(*numbers); k++)
            put(pe, numbers[k], proj_int(json_object_get(e, numbers[k])));
        json_array_append_new(errors, pe);
    }
    json_object_set_new(o, "errors", errors);
    return o;
}

/* The worker whose last report is the oldest (to make room for a new one). */
static const char *oldest_worker(json_t *workers) {
    const char *key, *oldest = NULL;
    json_t *rec;
    json_int_t at_min = 0;
    json_object_foreach(workers, key, rec) {
        json_int_t at = json_integer_value(json_object_get(rec, "reported_at"));
        if (!oldest || at < at_min) {
            oldest = key;
            at_min = at;
        }
    }
    return oldest;
}

static void status_apply(kj_console_data *d, const rd_kafka_message_t *m) {
    if (!m->key || m->key_len == 0 || m->key_len > 1024) return;
    char key[1025];
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    if (memchr(key, '\0', m->key_len)) return;
    json_t *rec = NULL;
    if (m->payload && m->len > 0) {
        if (m->len > KJ_STATUS_MAX_BYTES) return; /* larger than any worker writes: ignored */
        json_t *raw = json_loadb(m->payload, m->len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(raw)) {
            json_decref(raw);
            return; /* not a status record: ignored, the previous one stays */
        }
        /* another group's worker is not ours to show, nor to count against the bound */
        const char *group = json_string_value(json_object_get(raw, "group"));
        if (!group || strcmp(group, d->cfg->group) != 0) {
            json_decref(raw);
            return;
        }
        rec = status_project(raw);
        json_decref(raw);
    }
    pthread_mutex_lock(&d->workers_mu);
    if (!rec) {
        json_object_del(d->workers, key); /* tombstone: the worker left cleanly */
    } else {
        if (json_object_size(d->workers) >= KJ_CONSOLE_MAX_WORKERS &&
            !json_object_get(d->workers, key)) {
            /* anyone may write to the topic, and crashed workers never write a tombstone: the
             * bound holds by forgetting the worker heard from longest ago */
            const char *old = oldest_worker(d->workers);
            if (old) json_object_del(d->workers, old);
            if (!d->workers_full_logged)
                kj_log(KJ_LOG_WARN,
                       "console: too many worker ids on the status topic; the oldest are "
                       "forgotten",
                       "{s:s,s:i}", "topic", d->status_topic, "max", KJ_CONSOLE_MAX_WORKERS);
            d->workers_full_logged = true;
        }
        json_object_set_new(d->workers, key, rec);
    }
    pthread_mutex_unlock(&d->workers_mu);
}

static void *status_main(void *arg) {
    kj_console_data *d = arg;
    char err[512];
    rd_kafka_t *rk = consumer_new(d->cfg, "kjobs-ui-status-reader", err, sizeof(err));
    if (!rk) {
        kj_log(KJ_LOG_ERROR, "console: status reader not started", "{s:s}", "error", err);
        return NULL;
    }
    /* "Read" means: every partition read up to the end it had when the reader started (its
     * high watermark then), or a partition EOF. EOF alone is not enough: on a real broker a
     * topic written every few hundred milliseconds may never show one. */
    int partitions = -1, caught = 0;
    int64_t *ends = NULL;
    bool *done = NULL;
    while (!atomic_load(&d->stop)) {
        if (partitions < 0) {
            partitions = kj_kafka_partition_count(rk, d->status_topic, 5000, err, sizeof(err));
            if (partitions <= 0) {
                kj_log(KJ_LOG_WARN, "console: status topic not readable yet; no workers shown",
                       "{s:s,s:s}", "topic", d->status_topic, "error", err);
                partitions = -1;
                for (int i = 0; i < 50 && !atomic_load(&d->stop); i++)
                    rd_kafka_poll(rk, 100);
                continue;
            }
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(partitions);
            for (int p = 0; p < partitions; p++)
                rd_kafka_topic_partition_list_add(l, d->status_topic, p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
            free(ends);
            free(done);
            ends = calloc((size_t)partitions, sizeof(*ends));
            done = calloc((size_t)partitions, sizeof(*done));
            if (!ends || !done) abort();
            caught = 0;
            for (int p = 0; p < partitions; p++) {
                int64_t lo = 0, hi = -1;
                if (rd_kafka_query_watermark_offsets(rk, d->status_topic, p, &lo, &hi, 5000) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR)
                    hi = INT64_MAX; /* unknown: an EOF tells */
                ends[p] = hi;
                if (hi <= lo) {
                    done[p] = true;
                    caught++;
                }
            }
            if (caught >= partitions) atomic_store(&d->loaded, true);
            rd_kafka_assign(rk, l);
            rd_kafka_topic_partition_list_destroy(l);
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        int32_t p = m->partition;
        bool mine = p >= 0 && p < partitions && !done[p];
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (mine) {
                done[p] = true;
                if (++caught >= partitions) atomic_store(&d->loaded, true);
            }
        } else if (!m->err) {
            status_apply(d, m);
            if (mine && m->offset >= ends[p] - 1) {
                done[p] = true;
                if (++caught >= partitions) atomic_store(&d->loaded, true);
            }
        }
        rd_kafka_message_destroy(m);
    }
    free(ends);
    free(done);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return NULL;
}

bool kj_console_data_status_loaded(kj_console_data *d) {
    return atomic_load(&d->loaded);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

kj_console_data *kj_console_data_new(const kj_config *cfg, char *err, size_t errsz) {
    kj_console_data *d = calloc(1, sizeof(*d));
    if (!d) abort();
    d->cfg = cfg;
    d->status_topic = kj_topic_status(cfg);
    d->workers = json_object();
    pthread_mutex_init(&d->kafka_mu, NULL);
    pthread_mutex_init(&d->workers_mu, NULL);
    pthread_mutex_init(&d->action_mu, NULL);
    pthread_mutex_init(&d->control_mu, NULL);
    if (!(d->control = kj_ctl_follower_new(cfg, err, errsz))) goto fail;
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(cfg, err, errsz);
    if (!conf || kj_group_lag_conf_set(conf, cfg->group, err, errsz) ||
        !(d->group_rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz))) {
        if (conf) rd_kafka_conf_destroy(conf);
        goto fail;
    }
    if (!(d->reader = consumer_new(cfg, "kjobs-ui-reader", err, errsz))) goto fail;
    if (pthread_create(&d->thread, NULL, status_main, d) != 0) {
        snprintf(err, errsz, "cannot start the status reader thread");
        goto fail;
    }
    d->thread_started = true;
    return d;
fail:
    kj_console_data_free(d);
    return NULL;
}

void kj_console_data_free(kj_console_data *d) {
    if (!d) return;
    atomic_store(&d->stop, true);
    if (d->thread_started) pthread_join(d->thread, NULL);
    if (d->reader) {
        rd_kafka_consumer_close(d->reader);
        rd_kafka_destroy(d->reader);
    }
    if (d->group_rk) { /* never subscribed: close leaves no group and commits nothing */
        rd_kafka_consumer_close(d->group_rk);
        rd_kafka_destroy(d->group_rk);
    }
    kj_ctl_follower_free(d->control);
    json_decref(d->workers);
    pthread_mutex_destroy(&d->control_mu);
    pthread_mutex_destroy(&d->kafka_mu);
    pthread_mutex_destroy(&d->workers_mu);
    pthread_mutex_destroy(&d->action_mu);
    free(d->status_topic);
    free(d);
}

static void add_error(json_t *errors, const char *what, const char *why) {
    char text[600];
    snprintf(text, sizeof(text), "%s: %s", what, why);
    json_array_append_new(errors, json_string(text));
}

/* ---- heads: the first uncommitted record of a partition -------------------------------------- */

typedef struct head_info {
    bool read;
    int64_t not_before; /* kjobs-not-before (ladder), -1 when missing or invalid */
    int64_t created_at; /* the job's created_at, -1 when it does not decode */
} head_info;

/* Read the head of every row of `role` with lag > 0 into heads[i] (one assignment of all of
 * them on the group-less reader, at most 5 s). Returns how many could not be read.
 * @locks_required kafka_mu */
static int read_heads(kj_console_data *d, const kj_lag_row *rows, size_t count, kj_topic_role role,
                      head_info *heads, int64_t now) {
    rd_kafka_topic_partition_list_t *want = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < count; i++) {
        heads[i] = (head_info){.not_before = -1, .created_at = -1};
        if (rows[i].role != role || rows[i].lag <= 0) continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(want, rows[i].topic, rows[i].partition);
        tp->offset = rows[i].committed >= 0 ? rows[i].committed : rows[i].log_start;
        tp->opaque = &heads[i];
    }
    int pending = want->cnt;
    if (pending > 0) {
        rd_kafka_assign(d->reader, want);
        int64_t deadline = kj_now_ms() + 5000;
        while (pending > 0 && kj_now_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(d->reader, 100);
            if (!m) continue;
            rd_kafka_topic_partition_t *tp =
                m->rkt ? rd_kafka_topic_partition_list_find(want, rd_kafka_topic_name(m->rkt),
                                                            m->partition)
                       : NULL;
            head_info *h = tp ? tp->opaque : NULL;
            if (h && !h->read && !m->err) { /* the first record of this partition */
                h->read = true;
                pending--;
                rd_kafka_headers_t *hdrs = NULL;
                if (rd_kafka_message_headers(m, &hdrs) != 0 ||
                    kj_control_not_before(hdrs, now, &h->not_before) != 0)
                    h->not_before = -1;
                json_t *job = kj_job_json_from_message(m);
                json_t *created = json_object_get(job, "created_at");
                if (json_is_integer(created)) h->created_at = json_integer_value(created);
                json_decref(job);
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(d->reader, NULL);
    }
    rd_kafka_topic_partition_list_destroy(want);
    return pending;
}

/* "oldest_waiting": per main-topic partition with jobs waiting, the age of its head job (now -
 * created_at), and the largest per topic. @locks_required kafka_mu */
static json_t *oldest_waiting(kj_console_data *d, const kj_lag_row *rows, size_t count, int64_t now,
                              json_t *errors) {
    head_info *heads = calloc(count ? count : 1, sizeof(*heads));
    if (!heads) abort();
    if (read_heads(d, rows, count, KJ_TOPIC_MAIN, heads, now) > 0)
        add_error(errors, "oldest waiting job", "some partition heads could not be read in 5 s");
    json_t *out = json_object();
    for (size_t i = 0; i < count; i++) {
        if (!heads[i].read || heads[i].created_at < 0) continue;
        int64_t age = now - heads[i].created_at;
        json_t *cur = json_object_get(out, rows[i].topic);
        if (!cur || json_integer_value(cur) < age)
            json_object_set_new(out, rows[i].topic, json_integer(age < 0 ? 0 : age));
    }
    free(heads);
    return out;
}

/* ---- overview ------------------------------------------------------------------------------- */

#define NO_DESCRIBE                                                                                \
    "the broker has no DescribeGroups API (the embedded broker): workers are shown from their "    \
    "status records only"

/* Group members through DescribeConsumerGroups. @locks_required kafka_mu */
static void read_members(kj_console_data *d, json_t *out, json_t *errors) {
    json_t *members = json_array();
    json_object_set_new(out, "members", members);
    json_object_set_new(out, "group_state", json_null());
    /* Older librdkafka aborts the process (rdkafka_queue.h, rd_kafka_enq_once_del_source_return:
     * "eonce->refcnt > 0") when a broker refuses DescribeConsumerGroups, as the embedded broker
     * does: seen with Debian 12's 2.0.2 (librdkafka #4605); the version kjobs is built and tested
     * with (2.15) answers UNSUPPORTED_FEATURE. Below that, members are not asked for. */
    if (rd_kafka_version() < KJ_CONSOLE_DESCRIBE_MIN_RDKAFKA) {
        add_error(errors, "group members",
                  "not read with this librdkafka (older than 2.15: DescribeConsumerGroups may "
                  "abort it); workers are shown from their status records only");
        return;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(d->group_rk);
    rd_kafka_AdminOptions_t *opt =
        rd_kafka_AdminOptions_new(d->group_rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    char e[256];
    rd_kafka_AdminOptions_set_request_timeout(opt, KJ_CONSOLE_TIMEOUT_MS, e, sizeof(e));
    const char *groups[] = {d->cfg->group};
    rd_kafka_DescribeConsumerGroups(d->group_rk, groups, 1, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, KJ_CONSOLE_TIMEOUT_MS + 2000);
    if (!ev) {
        add_error(errors, "group members", "DescribeConsumerGroups timed out");
    } else if (rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE) {
        add_error(errors, "group members", NO_DESCRIBE);
    } else if (rd_kafka_event_error(ev)) {
        add_error(errors, "group members", rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_DescribeConsumerGroups_result_t *res =
            rd_kafka_event_DescribeConsumerGroups_result(ev);
        size_t n = 0;
        const rd_kafka_ConsumerGroupDescription_t **descs =
            rd_kafka_DescribeConsumerGroups_result_groups(res, &n);
        for (size_t i = 0; i < n; i++) {
            const rd_kafka_error_t *ge = rd_kafka_ConsumerGroupDescription_error(descs[i]);
            if (ge) {
                add_error(errors, "group members",
                          rd_kafka_error_code(ge) == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE
                              ? NO_DESCRIBE
                              : rd_kafka_error_string(ge));
                continue;
            }
            json_object_set_new(out, "group_state",
                                json_string(rd_kafka_consumer_group_state_name(
                                    rd_kafka_ConsumerGroupDescription_state(descs[i]))));
            size_t mc = rd_kafka_ConsumerGroupDescription_member_count(descs[i]);
            for (size_t k = 0; k < mc; k++) {
                const rd_kafka_MemberDescription_t *m =
                    rd_kafka_ConsumerGroupDescription_member(descs[i], (int)k);
                json_t *assign = json_array();
                const rd_kafka_MemberAssignment_t *ma = rd_kafka_MemberDescription_assignment(m);
                const rd_kafka_topic_partition_list_t *tps =
                    ma ? rd_kafka_MemberAssignment_partitions(ma) : NULL;
                for (int t = 0; tps && t < tps->cnt; t++)
                    json_array_append_new(assign,
                                          json_pack("{s:s,s:i}", "topic", tps->elems[t].topic,
                                                    "partition", (int)tps->elems[t].partition));
                const char *gid = rd_kafka_MemberDescription_group_instance_id(m);
                json_array_append_new(
                    members, json_pack("{s:s?,s:s?,s:s?,s:s?,s:o}", "member_id",
                                       rd_kafka_MemberDescription_consumer_id(m), "client_id",
                                       rd_kafka_MemberDescription_client_id(m), "host",
                                       rd_kafka_MemberDescription_host(m), "group_instance_id", gid,
                                       "assignment", assign));
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
}

/* A total of counters from status records: @p sum plus @p v (ignored unless an integer),
 * within 0..2^53. Each record's value is already within +-2^53, but up to
 * KJ_CONSOLE_MAX_WORKERS of them would overflow 64 bits (any producer writes the topic), and a
 * counter is never negative. */
static json_int_t count_add(json_int_t sum, const json_t *v) {
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
    if (x <= 0) return sum;
    return x >= KJ_JSON_SAFE_INT - sum ? KJ_JSON_SAFE_INT : sum + x;
}

static json_t *lag_json(const kj_lag_row *r) {
    return json_pack("{s:s,s:s,s:i,s:i,s:o,s:I,s:I,s:I}", "topic", r->topic, "role",
                     kj_topic_role_name(r->role), "step", r->step, "partition", (int)r->partition,
                     "committed", r->committed >= 0 ? json_integer(r->committed) : json_null(),
                     "log_start", (json_int_t)r->log_start, "log_end", (json_int_t)r->log_end,
                     "lag", (json_int_t)r->lag);
}

json_t *kj_console_overview(kj_console_data *d) {
    int64_t now = kj_now_ms();
    json_t *out = json_pack("{s:I,s:s,s:s,s:s,s:b}", "now", (json_int_t)now, "group", d->cfg->group,
                            "main_topic", d->cfg->main_topic, "status_topic", d->status_topic,
                            "status_loaded", atomic_load(&d->loaded));
    json_t *errors = json_array();
    /* workers: the status records, oldest key first, with "stale" */
    json_t *workers = json_array(), *jobs = json_object();
    json_int_t in_place = 0;
    pthread_mutex_lock(&d->workers_mu);
    const char *key;
    json_t *rec;
    json_object_foreach(d->workers, key, rec) {
        const char *group = json_string_value(json_object_get(rec, "group"));
        if (group && strcmp(group, d->cfg->group) != 0) continue; /* another group's worker */
        json_t *w = json_deep_copy(rec);
        json_object_set_new(w, "key", json_string(key));
        /* both clamped to +-2^53 at ingest (status_project): no overflow here */
        json_int_t at = json_integer_value(json_object_get(rec, "reported_at"));
        json_int_t every = json_integer_value(json_object_get(rec, "interval_ms"));
        bool stale = every <= 0 || now - at > 3 * every;
        json_object_set_new(w, "stale", json_boolean(stale));
        json_object_set_new(w, "age_ms", json_integer(now - at));
        const char *outcome;
        json_t *count;
        json_object_foreach(json_object_get(rec, "jobs"), outcome, count) {
            if (!json_is_integer(count)) continue;
            json_int_t sum = json_integer_value(json_object_get(jobs, outcome));
            json_object_set_new(jobs, outcome, json_integer(count_add(sum, count)));
        }
        /* absent (a worker before the counter) or of another type: adds nothing */
        in_place = count_add(in_place,
                             json_object_get(json_object_get(rec, "counters"), "retries_in_place"));
        json_array_append_new(workers, w);
    }
    pthread_mutex_unlock(&d->workers_mu);
    json_object_set_new(out, "workers", workers);

    pthread_mutex_lock(&d->kafka_mu);
    read_members(d, out, errors);
    kj_lag_row *rows = NULL;
    size_t count = 0;
    int rc = kj_group_lag_read(d->group_rk, d->cfg, KJ_CONSOLE_TIMEOUT_MS, &rows, &count);
    json_object_set_new(out, "oldest_waiting_ms", oldest_waiting(d, rows, count, now, errors));
    pthread_mutex_unlock(&d->kafka_mu);
    if (rc < 0) add_error(errors, "lag", "the cluster did not answer (see the console's log)");
    if (rc > 0) add_error(errors, "lag", "some partitions could not be read (see the log)");
    json_t *lag = json_array();
    json_int_t lag_main = 0, lag_ladder = 0;
    for (size_t i = 0; i < count; i++) {
        json_array_append_new(lag, lag_json(&rows[i]));
        if (rows[i].role == KJ_TOPIC_MAIN)
            lag_main += rows[i].lag;
        else
            lag_ladder += rows[i].lag;
    }
    kj_group_lag_free(rows, count);
    json_object_set_new(out, "lag", lag);
    json_object_set_new(out, "totals",
                        json_pack("{s:I,s:I,s:o,s:I}", "lag_main", lag_main, "lag_ladder",
                                  lag_ladder, "jobs", jobs, "retries_in_place", in_place));
    json_object_set_new(out, "errors", errors);
    return out;
}

/* ---- retries -------------------------------------------------------------------------------- */

json_t *kj_console_retries(kj_console_data *d) {
    int64_t now = kj_now_ms();
    json_t *errors = json_array(), *steps = json_array();
    kj_topic_spec *specs;
    size_t spec_count = kj_topic_layout(d->cfg, &specs);
    for (size_t i = 0; i < spec_count; i++) {
        if (specs[i].role != KJ_TOPIC_RETRY) continue;
        json_array_append_new(steps, json_pack("{s:i,s:s,s:I,s:I,s:n,s:[]}", "step", specs[i].step,
                                               "topic", specs[i].name, "delay_ms",
                                               (json_int_t)specs[i].delay_ms, "waiting",
                                               (json_int_t)0, "next_due", "partitions"));
    }
    kj_topic_layout_free(specs, spec_count);

    pthread_mutex_lock(&d->kafka_mu);
    kj_lag_row *rows = NULL;
    size_t count = 0;
    int rc = kj_group_lag_read(d->group_rk, d->cfg, KJ_CONSOLE_TIMEOUT_MS, &rows, &count);
    if (rc < 0) add_error(errors, "lag", "the cluster did not answer (see the console's log)");
    head_info *heads = calloc(count ? count : 1, sizeof(*heads));
    if (!heads) abort();
    if (read_heads(d, rows, count, KJ_TOPIC_RETRY, heads, now) > 0)
        add_error(errors, "retries", "some ladder heads could not be read in 5 s");
    pthread_mutex_unlock(&d->kafka_mu);
    for (size_t i = 0; i < count; i++) {
        const kj_lag_row *r = &rows[i];
        if (r->role != KJ_TOPIC_RETRY) continue;
        json_t *step = json_array_get(steps, (size_t)r->step - 1);
        int64_t nb = heads[i].read ? heads[i].not_before : -1;
        json_array_append_new(
            json_object_get(step, "partitions"),
            json_pack("{s:i,s:I,s:I,s:o}", "partition", (int)r->partition, "waiting",
                      (json_int_t)r->lag, "head_offset",
                      (json_int_t)(r->committed >= 0 ? r->committed : r->log_start),
                      "head_not_before", nb >= 0 ? json_integer(nb) : json_null()));
        json_object_set_new(
            step, "waiting",
            json_integer(json_integer_value(json_object_get(step, "waiting")) + r->lag));
        json_t *due = json_object_get(step, "next_due");
        if (nb >= 0 && (json_is_null(due) || json_integer_value(due) > nb))
            json_object_set_new(step, "next_due", json_integer(nb));
    }
    free(heads);
    kj_group_lag_free(rows, count);
    return json_pack("{s:I,s:o,s:o}", "now", (json_int_t)now, "steps", steps, "errors", errors);
}

/* ---- dead letters --------------------------------------------------------------------------- */

static bool contains_nocase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return true;
    }
    return n == 0;
}

typedef struct list_ctx {
    const kj_console_dlq_query *q;
    json_t *items;
    long matched, limit;
} list_ctx;

static bool on_dead_letter(const kj_dlq_record *rec, void *opaque) {
    list_ctx *c = opaque;
    json_t *dl = json_object_get(rec->json, "dead_letter");
    const char *error = json_string_value(json_object_get(dl, "error"));
    json_t *fa = json_object_get(dl, "failed_at");
    int64_t failed_at = json_is_integer(fa) ? json_integer_value(fa) : 0;
    if (c->q->text && c->q->text[0] && !(error && contains_nocase(error, c->q->text))) return true;
    if (c->q->since_ms > 0 && failed_at < c->q->since_ms) return true;
    if (c->q->until_ms > 0 && failed_at > c->q->until_ms) return true;
    c->matched++;
    /* the list shows a line (detail has all): at most 240 bytes, never cut inside a UTF-8
     * sequence (the DLQ model's JSON strings are valid UTF-8) */
    json_t *cut = error ? proj_cut(error, 240) : NULL;
    json_t *item = json_pack(
        "{s:O,s:I,s:I,s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "handle",
        json_object_get(rec->json, "handle"), "partition", (json_int_t)rec->msg->partition,
        "offset", (json_int_t)rec->msg->offset, "state", kj_dlq_state_name(rec->state), "id",
        json_object_get(rec->json, "id") ? json_object_get(rec->json, "id") : json_null(), "type",
        json_object_get(rec->json, "type") ? json_object_get(rec->json, "type") : json_null(),
        "error_class",
        json_object_get(dl, "error_class") ? json_object_get(dl, "error_class") : json_null(),
        "failed_at", fa ? fa : json_null(), "failed_at_iso",
        json_object_get(dl, "failed_at_iso") ? json_object_get(dl, "failed_at_iso") : json_null(),
        "original_topic",
        json_object_get(dl, "original_topic") ? json_object_get(dl, "original_topic") : json_null(),
        "attempt", json_object_get(dl, "attempt") ? json_object_get(dl, "attempt") : json_null());
    if (!item) {
        json_decref(cut);
        return true;
    }
    json_object_set_new(item, "error", cut ? cut : json_null());
    char ref[48]; /* PARTITION:OFFSET names exactly this dead letter (a job id may name several) */
    snprintf(ref, sizeof(ref), "%d:%lld", (int)rec->msg->partition, (long long)rec->msg->offset);
    json_object_set_new(item, "ref", json_string(ref));
    json_array_append_new(c->items, item);
    if ((long)json_array_size(c->items) > c->limit) json_array_remove(c->items, 0); /* newest */
    return true;
}

static int dlq_open(kj_console_data *d, kj_dlq **out, char *err, size_t errsz) {
    kj_dlq_params p = {.cfg = d->cfg, .deadline_ms = kj_now_ms() + KJ_CONSOLE_TIMEOUT_MS};
    return kj_dlq_open(&p, out, err, errsz);
}

json_t *kj_console_dlq_list(kj_console_data *d, const kj_console_dlq_query *q) {
    json_t *errors = json_array();
    list_ctx c = {.q = q,
                  .items = json_array(),
                  .limit = q->limit > 0 && q->limit <= KJ_CONSOLE_DLQ_LIMIT ? q->limit
                                                                            : KJ_CONSOLE_DLQ_LIMIT};
    kj_dlq_filter f = {.type = q->type && q->type[0] ? q->type : NULL,
                       .error_class = q->error_class && q->error_class[0] ? q->error_class : NULL};
    char err[512] = "";
    kj_dlq *dlq = NULL;
    if (dlq_open(d, &dlq, err, sizeof(err)) != KJ_DLQ_OK)
        add_error(errors, "dead letters", err[0] ? err : "cannot open the DLQ");
    else if (kj_dlq_list(dlq, &f, on_dead_letter, &c, err, sizeof(err)) != KJ_DLQ_OK)
        add_error(errors, "dead letters", err[0] ? err : "read incomplete");
    kj_dlq_close(dlq);
    return json_pack("{s:s,s:I,s:o,s:b,s:o}", "topic", d->cfg->dlq_topic, "matched",
                     (json_int_t)c.matched, "items", c.items, "truncated",
                     c.matched > (long)json_array_size(c.items), "errors", errors);
}

int kj_console_dlq_show(kj_console_data *d, const char *handle, json_t **out, char *err,
                        size_t errsz) {
    *out = NULL;
    int32_t partition;
    int64_t offset;
    if (!kj_dlq_parse_handle(handle, &partition, &offset)) {
        snprintf(err, errsz, "expected PARTITION:OFFSET");
        return 400;
    }
    kj_dlq *dlq = NULL;
    int rc = dlq_open(d, &dlq, err, errsz);
    if (rc == KJ_DLQ_OK) rc = kj_dlq_find(dlq, handle, out, NULL, err, errsz);
    kj_dlq_close(dlq);
    if (rc == KJ_DLQ_OK) return 0;
    return rc == KJ_DLQ_ERR_NOT_FOUND ? 404 : 502;
}

static void on_replayed(const kj_dlq_replay_item *item, void *opaque) {
    char ref[48];
    snprintf(ref, sizeof(ref), "%d:%lld", (int)item->partition, (long long)item->offset);
    json_array_append_new(opaque,
                          json_pack("{s:s,s:s?,s:b}", "ref", ref, "original_topic",
                                    item->original_topic, "acknowledged", item->acknowledged));
}

/* Replay or discard `refs` under action_mu (one action at a time per console). */
static int dlq_action(kj_console_data *d, const char *const *refs, size_t count, bool dry_run,
                      bool discard, json_t **out) {
    json_t *items = json_array();
    kj_dlq_replay_counts n = {0};
    char err[512] = "";
    kj_dlq_filter f = {.handles = refs, .handle_count = count};
    unsigned flags = dry_run ? KJ_DLQ_REPLAY_DRY_RUN : 0;
    pthread_mutex_lock(&d->action_mu);
    kj_dlq *dlq = NULL;
    int rc = dlq_open(d, &dlq, err, sizeof(err));
    if (rc == KJ_DLQ_OK)
        rc = discard ? kj_dlq_discard(dlq, &f, flags, on_replayed, items, &n, err, sizeof(err))
                     : kj_dlq_replay(dlq, &f, flags, on_replayed, items, &n, err, sizeof(err));
    kj_dlq_close(dlq);
    pthread_mutex_unlock(&d->action_mu);
    json_t *error = rc == KJ_DLQ_OK ? json_null()
                                    : json_string(err[0]    ? err
                                                  : discard ? "discard failed"
                                                            : "replay failed");
    if (discard)
        *out = json_pack("{s:b,s:I,s:I,s:I,s:{s:I},s:o,s:o}", "dry_run", dry_run, "requested",
                         (json_int_t)count, "selected", (json_int_t)n.selected, "discarded",
                         (json_int_t)n.discarded, "skipped", "discarded",
                         (json_int_t)n.skipped_discarded, "items", items, "error", error);
    else
        *out = json_pack(
            "{s:b,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I},s:o,s:o}", "dry_run", dry_run,
            "requested", (json_int_t)count, "selected", (json_int_t)n.selected, "replayed",
            (json_int_t)n.replayed, "failed", (json_int_t)n.failed, "skipped", "replayed",
            (json_int_t)n.skipped_replayed, "refailed", (json_int_t)n.skipped_refailed, "no_origin",
            (json_int_t)n.skipped_no_origin, "no_value", (json_int_t)n.skipped_no_value,
            "discarded", (json_int_t)n.skipped_discarded, "items", items, "error", error);
    return rc;
}

int kj_console_dlq_replay(kj_console_data *d, const char *const *refs, size_t count, bool dry_run,
                          json_t **out) {
    return dlq_action(d, refs, count, dry_run, false, out);
}

int kj_console_dlq_discard(kj_console_data *d, const char *const *refs, size_t count, bool dry_run,
                           json_t **out) {
    return dlq_action(d, refs, count, dry_run, true, out);
}

/* ---- controls ------------------------------------------------------------------------------- */

/* The control state up to date: read to its end on first use (again after a failure), then
 * whatever arrived since, without waiting. NULL, or why it is not available.
 * @locks_required control_mu */
static const char *controls_ready(kj_console_data *d, char *err, size_t errsz) {
    if (d->control_loaded) {
        kj_ctl_follower_poll(d->control, 100000, NULL, NULL);
        return NULL;
    }
    int rc = kj_ctl_follower_load(d->control, kj_now_ms() + KJ_CONSOLE_TIMEOUT_MS, err, errsz);
    if (rc == 0) {
        d->control_loaded = true;
        return NULL;
    }
    if (rc == 1)
        snprintf(err, errsz,
                 "the control topic does not exist: pauses cannot be read or written (create it "
                 "with `kjobs topics --create`)");
    return err;
}

/* "topic:partition" -> [worker ids whose last status record holds it paused]; the open
 * breakers. @locks_required none (takes workers_mu) */
static json_t *applied_map(kj_console_data *d, json_t *open, int64_t now) {
    json_t *map = json_object();
    pthread_mutex_lock(&d->workers_mu);
    const char *key;
    json_t *rec;
    json_object_foreach(d->workers, key, rec) {
        json_int_t at = json_integer_value(json_object_get(rec, "reported_at"));
        json_int_t every = json_integer_value(json_object_get(rec, "interval_ms"));
        bool stale = every <= 0 || now - at > 3 * every;
        const char *id = json_string_value(json_object_get(rec, "worker_id"));
        if (!id) id = key;
        if (json_is_true(json_object_get(json_object_get(rec, "breaker"), "open")))
            json_array_append_new(
                open,
                json_pack("{s:s,s:O,s:O,s:I,s:b}", "worker_id", id, "host",
                          json_object_get(rec, "host") ? json_object_get(rec, "host") : json_null(),
                          "state",
                          json_object_get(rec, "state") ? json_object_get(rec, "state")
                                                        : json_null(),
                          "age_ms", (json_int_t)(now - at), "stale", stale));
        if (stale) continue;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(json_object_get(rec, "assignment"), "partitions"), i,
                           e) {
            if (!json_is_true(json_object_get(e, "paused"))) continue;
            char tp[320];
            snprintf(tp, sizeof(tp), "%s:%lld", json_string_value(json_object_get(e, "topic")),
                     (long long)json_integer_value(json_object_get(e, "partition")));
            json_t *list = json_object_get(map, tp);
            if (!list) json_object_set_new(map, tp, list = json_array());
            json_array_append_new(list, json_string(id));
        }
    }
    pthread_mutex_unlock(&d->workers_mu);
    return map;
}

static json_t *applied_by(json_t *map, const char *topic, int32_t partition) {
    char tp[320];
    snprintf(tp, sizeof(tp), "%s:%d", topic, (int)partition);
    json_t *list = json_object_get(map, tp);
    return list ? json_incref(list) : json_array();
}

json_t *kj_console_controls(kj_console_data *d) {
    int64_t now = kj_now_ms();
    json_t *errors = json_array(), *open = json_array();
    char *topic = kj_topic_control(d->cfg);
    json_t *out = json_pack("{s:I,s:s}", "now", (json_int_t)now, "control_topic", topic);
    free(topic);
    json_t *map = applied_map(d, open, now);
    /* the state, copied out under its lock */
    char err[512] = "";
    size_t n = 0;
    kj_ctl_pause *pauses = NULL;
    int64_t last_resume = -1;
    pthread_mutex_lock(&d->control_mu);
    const char *why = controls_ready(d, err, sizeof(err));
    if (why) {
        add_error(errors, "controls", why);
    } else {
        kj_ctl_state *st = kj_ctl_follower_state(d->control);
        const kj_ctl_pause *list = kj_ctl_state_list(st, &n);
        pauses = calloc(n ? n : 1, sizeof(*pauses));
        if (!pauses) abort();
        if (n) memcpy(pauses, list, n * sizeof(*pauses));
        last_resume = kj_ctl_state_breaker_resume_at(st);
    }
    pthread_mutex_unlock(&d->control_mu);
    json_t *jp = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = kj_ctl_pause_json(&pauses[i]);
        if (pauses[i].partition >= 0)
            json_object_set_new(o, "applied_by",
                                applied_by(map, pauses[i].topic, pauses[i].partition));
        json_array_append_new(jp, o);
    }
    json_object_set_new(out, "pauses", jp);
    /* every consumed topic and partition, with the group's lag and whether it is paused */
    pthread_mutex_lock(&d->kafka_mu);
    kj_lag_row *rows = NULL;
    size_t count = 0;
    int rc = kj_group_lag_read(d->group_rk, d->cfg, KJ_CONSOLE_TIMEOUT_MS, &rows, &count);
    pthread_mutex_unlock(&d->kafka_mu);
    if (rc < 0) add_error(errors, "lag", "the cluster did not answer (see the console's log)");
    json_t *topics = json_array(), *parts = json_array();
    kj_topic_spec *specs;
    size_t spec_count = kj_topic_layout(d->cfg, &specs);
    for (size_t t = 0; t < spec_count; t++) {
        if (specs[t].role == KJ_TOPIC_DLQ) continue;
        bool topic_paused = false;
        for (size_t i = 0; i < n && !topic_paused; i++)
            topic_paused = pauses[i].partition < 0 && strcmp(pauses[i].topic, specs[t].name) == 0;
        json_array_append_new(topics, json_pack("{s:s,s:s,s:i,s:b}", "topic", specs[t].name, "role",
                                                kj_topic_role_name(specs[t].role), "step",
                                                specs[t].step, "paused", topic_paused));
    }
    kj_topic_layout_free(specs, spec_count);
    for (size_t r = 0; r < count; r++) {
        const char *paused = NULL;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(pauses[i].topic, rows[r].topic) != 0) continue;
            if (pauses[i].partition == rows[r].partition) paused = "partition";
            if (pauses[i].partition < 0 && !paused) paused = "topic";
        }
        json_t *o = lag_json(&rows[r]);
        json_object_set_new(o, "paused", paused ? json_string(paused) : json_null());
        json_object_set_new(o, "applied_by", applied_by(map, rows[r].topic, rows[r].partition));
        json_array_append_new(parts, o);
    }
    kj_group_lag_free(rows, count);
    free(pauses);
    json_decref(map);
    json_object_set_new(out, "topics", topics);
    json_object_set_new(out, "partitions", parts);
    json_object_set_new(out, "breaker",
                        json_pack("{s:o,s:o}", "open", open, "last_resume_at",
                                  last_resume >= 0 ? json_integer(last_resume) : json_null()));
    json_object_set_new(out, "errors", errors);
    return out;
}

int kj_console_control(kj_console_data *d, const kj_ctl_key *k, const kj_ctl_value *v, char *err,
                       size_t errsz) {
    int64_t offset = -1;
    int rc = kj_ctl_write(d->cfg, k, v, KJ_CONSOLE_TIMEOUT_MS, &offset, err, errsz);
    if (rc != 0) return rc;
    /* read it back, so that the page's next load shows it (bounded: it is written) */
    char why[512];
    pthread_mutex_lock(&d->control_mu);
    if (!controls_ready(d, why, sizeof(why)))
        kj_ctl_follower_catch_up(d->control, offset, kj_now_ms() + 3000, NULL, NULL);
    pthread_mutex_unlock(&d->control_mu);
    return 0;
}
