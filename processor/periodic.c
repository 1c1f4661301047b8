/*
 * periodic.c — the periodic (cron) job scheduler; the design is in periodic.h.
 *
 * Threads: kj_periodic_start spawns one scheduler thread per ownership (a "session");
 * kj_periodic_stop sets `stop` under `mu`, signals `cv` and joins it. The session owns the
 * per-entry runtime state, the state-topic reader (a short-lived group-less consumer) and every
 * call on the producer (created once in kj_periodic_new, kept across sessions, used by one session
 * at a time). Deliveries are awaited on the session thread with rd_kafka_poll, so a tick is done
 * only once the broker acknowledged it.
 */
#include "processor/periodic.h"

#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/hash.h"
#include "processor/header_contract.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/topic_reader.h"
#include "processor/metrics.h"
#include "schemas/codec.h"

#define KJ_PERIODIC_MSG_TIMEOUT_MS  "10000" /* the producer's message.timeout.ms */
#define KJ_PERIODIC_RETRY_MS        1000    /* after a failed produce or state read */
#define KJ_PERIODIC_READ_TIMEOUT_MS 30000   /* reading the state topic to its end */
#define KJ_PERIODIC_MAX_WAIT_MS     60000   /* longest sleep before the wall clock is read again */
#define KJ_PERIODIC_FUTURE_MS       60000   /* a state tick further ahead than this is not real */

struct kj_periodic {
    const kj_config *cfg;
    char *state_topic;
    char worker_id[256];
    rd_kafka_t *producer;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool stop;         /* (mu) the session must end */
    bool running;      /* (start/stop caller) a session thread exists */
    pthread_t thread;
    int64_t state_end; /* (session) the state topic's end offset as this session last knew it:
                          read to it, or its own last write + 1 */
};

/* ---- pure parts ------------------------------------------------------------------------------ */

int64_t kj_periodic_jitter(const char *name, int64_t tick_ms, int64_t jitter_ms) {
    if (jitter_ms <= 0) return 0;
    char buf[160];
    snprintf(buf, sizeof buf, "%s@%lld", name, (long long)tick_ms);
    uint64_t h = kj_hash_str(buf);
    /* splitmix64's finaliser: FNV-1a's low bits alone are poorly mixed */
    h ^= h >> 30;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h *= UINT64_C(0x94d049bb133111eb);
    h ^= h >> 31;
    return (int64_t)(h % (uint64_t)(jitter_ms + 1));
}

/* The first tick of e strictly after t, or -1 (none within the cron search bound, or error). */
static int64_t next_tick(const kj_periodic_entry *e, kj_cron_zone *z, int64_t t) {
    int64_t n;
    if (t < 0) t = 0;
    return kj_cron_next(&e->cron, z, t, &n) == KJ_CRON_OK ? n : -1;
}

int kj_periodic_plan_entry(const kj_periodic_entry *e, kj_cron_zone *z, int64_t last_ms,
                           int64_t now_ms, kj_periodic_plan *out) {
    out->run_once_tick = -1;
    out->missed = 0;
    out->first_late = -1;
    /* a recorded tick ahead of this clock (the last owner's clock ran ahead): start after it,
     * so no tick it enqueued is enqueued again */
    out->next = next_tick(e, z, last_ms > now_ms ? last_ms : now_ms);
    if (last_ms < 0) return 0; /* no state: no backfill */
    int64_t first_due = next_tick(e, z, last_ms);
    if (first_due < 0 || first_due > now_ms) return 0; /* nothing due */
    int64_t t0 = now_ms - e->catch_up_ms;              /* late: tick >= t0 */
    if (first_due >= t0) {
        out->first_late = first_due;
        return 0;
    }
    int64_t fl = next_tick(e, z, t0 - 1);
    if (fl >= 0 && fl <= now_ms) out->first_late = fl;
    /* Missed ticks: [first_due, t0). Count them (capped) and find the latest. */
    int64_t latest = -1, t = first_due;
    while (t >= 0 && t < t0 && out->missed < KJ_PERIODIC_COUNT_CAP) {
        latest = t;
        out->missed++;
        t = next_tick(e, z, t);
    }
    if (t >= 0 && t < t0) {
        /* more than the cap: search back from t0 in growing windows for the latest one */
        latest = -1;
        for (int64_t w = 1000; latest < 0; w *= 10) {
            int64_t s = t0 - w > last_ms ? t0 - w : last_ms;
            int64_t n = 0;
            for (int64_t u = next_tick(e, z, s); u >= 0 && u < t0 && n < KJ_PERIODIC_COUNT_CAP;
                 u = next_tick(e, z, u), n++)
                latest = u;
            if (s == last_ms) break;
        }
        out->missed = KJ_PERIODIC_COUNT_CAP;
    }
    if (e->missed == KJ_MISSED_RUN_ONCE) out->run_once_tick = latest;
    return latest < 0 && out->missed > 0 ? -1 : 0;
}

/* ---- waiting --------------------------------------------------------------------------------- */

/* Wait up to ms (< 0: until stopped) or until stopped. Returns true when stopped. */
static bool wait_or_stop(kj_periodic *p, int64_t ms) {
    pthread_mutex_lock(&p->mu);
    if (!p->stop) {
        if (ms < 0) {
            pthread_cond_wait(&p->cv, &p->mu);
        } else {
            struct timespec ts = kj_mono_deadline(ms);
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
    }
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

static bool stopping(kj_periodic *p) {
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* ---- producing ------------------------------------------------------------------------------- */

typedef struct delivery {
    bool done;
    rd_kafka_resp_err_t err;
    int64_t offset;
} delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    delivery *d = m->_private;
    if (!d) return;
    d->err = m->err;
    d->offset = m->offset;
    d->done = true;
}

/* Produce one record and wait for its delivery report (bounded by message.timeout.ms).
 * `value` is copied. Returns 0, or -1 with the error logged. @locality session thread */
static int produce_wait(kj_periodic *p, const char *topic, int32_t partition, const char *key,
                        const void *value, size_t value_len, rd_kafka_headers_t *hdrs,
                        const char *what, const char *name, int64_t *offset) {
    delivery d = {false, RD_KAFKA_RESP_ERR_NO_ERROR, -1};
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&d),
        RD_KAFKA_V_END);
    if (err) {
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        kj_log(KJ_LOG_ERROR, "periodic produce failed", "{s:s,s:s,s:s,s:s}", "name", name, "what",
               what, "topic", topic, "error", rd_kafka_err2str(err));
        return -1;
    }
    /* headers now belong to the message; wait for its report whatever happens (d is on this
     * stack frame) */
    while (!d.done)
        rd_kafka_poll(p->producer, 100);
    if (d.err) {
        kj_log(KJ_LOG_ERROR, "periodic produce failed", "{s:s,s:s,s:s,s:s}", "name", name, "what",
               what, "topic", topic, "error", rd_kafka_err2str(d.err));
        return -1;
    }
    if (offset) *offset = d.offset;
    return 0;
}

/* The per-entry runtime of one session. */
typedef struct ent_rt {
    const kj_periodic_entry *e;
    kj_cron_zone *zone;
    int64_t last;     /* last enqueued tick, -1 none */
    int64_t pending;  /* the next tick to enqueue (due when <= now), -1 none */
    int64_t run_once; /* a missed tick to enqueue first (run_once), -1 none */
    int64_t retry_at; /* after a failed enqueue: not before this (wall ms), 0 none */
    int fails;        /* failed enqueues in a row, for the backoff */
} ent_rt;

static void rfc3339(int64_t ms, char *buf, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)(ms % 1000));
}

/* Enqueue tick T of r: the job, then (once acknowledged) the state record. 0 done, -1 not
 * (nothing or only the job was written: the tick stays pending). @locality session thread */
static int enqueue_tick(kj_periodic *p, ent_rt *r, int64_t tick, const char *why) {
    const kj_periodic_entry *e = r->e;
    char id[160];
    snprintf(id, sizeof id, "%s@%lld", e->name, (long long)tick);
    kj_meta_entry *meta = NULL;
    if (e->meta_count) {
        meta = calloc(e->meta_count, sizeof *meta);
        if (!meta) abort();
        for (size_t i = 0; i < e->meta_count; i++) {
            meta[i].key = e->meta_keys[i];
            meta[i].value = e->meta_values[i];
        }
    }
    kj_job_record job = {.id = id,
                         .type = e->type,
                         .payload = (const uint8_t *)e->payload,
                         .payload_len = strlen(e->payload),
                         .created_at = tick,
                         .meta = meta,
                         .meta_count = e->meta_count};
    uint8_t *value = NULL;
    size_t value_len = 0;
    char err[256];
    int rc = kj_job_encode(&job, KJ_ENCODING_BINARY, &value, &value_len, err, sizeof err);
    free(meta);
    if (rc) {
        kj_log(KJ_LOG_ERROR, "periodic job not encoded", "{s:s,s:s}", "name", e->name, "error",
               err);
        return -1;
    }
    int64_t offset = kj_periodic_jitter(e->name, tick, e->jitter_ms);
    int64_t run_at = tick + offset;
    rd_kafka_headers_t *hdrs = NULL;
    if (offset > 0) {
        char due[32];
        snprintf(due, sizeof due, "%lld", (long long)run_at);
        hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, KJ_HDR_RUN_AT, -1, due, -1);
    }
    rc = produce_wait(p, p->cfg->main_topic, RD_KAFKA_PARTITION_UA, e->key, value, value_len, hdrs,
                      "job", e->name, NULL);
    free(value);
    if (rc) return -1;
    /* The job is acknowledged: record the tick. A crash from here until the state record is
     * acknowledged is the crash window (periodic.h): the next owner enqueues this tick again. */
    int64_t now = kj_now_ms();
    json_t *st = json_pack("{s:I,s:s,s:I,s:s}", "tick", (json_int_t)tick, "id", id, "enqueued_at",
                           (json_int_t)now, "worker", p->worker_id);
    char *text = json_dumps(st, JSON_COMPACT);
    json_decref(st);
    if (!text) abort();
    for (;;) {
        int64_t at = -1;
        rc = produce_wait(p, p->state_topic, 0, e->name, text, strlen(text), NULL, "state", e->name,
                          &at);
        if (rc == 0 && at >= 0 && at + 1 > p->state_end) p->state_end = at + 1;
        if (rc == 0 || wait_or_stop(p, KJ_PERIODIC_RETRY_MS)) break;
    }
    free(text);
    char tick_at[40];
    rfc3339(tick, tick_at, sizeof tick_at);
    kj_log(KJ_LOG_INFO, "periodic job enqueued", "{s:s,s:s,s:I,s:s,s:s,s:I,s:I,s:s,s:b}", "name",
           e->name, "id", id, "tick", (json_int_t)tick, "tick_at", tick_at, "type", e->type,
           "run_at", (json_int_t)run_at, "late_ms", (json_int_t)(now - tick), "why", why,
           "state_written", rc == 0);
    kj_metrics_periodic_enqueued(e->name);
    /* Even when the state record could not be written (stopping), the job was: this session
     * does not enqueue the tick again. */
    return 0;
}

/* ---- reading the state topic ----------------------------------------------------------------- */

/* Read the state topic to its end; fill last[i] for each entry (-1: no record). Returns the
 * number of records read, or -1 (logged). @locality session thread */
static bool stopping_fn(void *p) {
    return stopping(p);
}

typedef struct state_read {
    ent_rt *rt;
    size_t n;
    long *count;
} state_read;

/* One record of the state topic: the newest tick of its entry (key = the entry's name). */
static bool on_state_record(rd_kafka_message_t *m, size_t index, void *opaque) {
    state_read *rd = opaque;
    ent_rt *rt = rd->rt;
    (void)index;
    (*rd->count)++;
    for (size_t i = 0; i < rd->n; i++) {
        const char *name = rt[i].e->name;
        if (m->key_len != strlen(name) || memcmp(m->key, name, m->key_len) != 0) continue;
        if (!m->payload) { /* tombstone */
            rt[i].last = -1;
            continue;
        }
        json_error_t je;
        json_t *v = json_loadb(m->payload, m->len, 0, &je);
        json_t *t = v ? json_object_get(v, "tick") : NULL;
        /* the newest tick wins, whatever order the records came in (a member frozen past its
         * session may write an older one after a newer); a tick ahead of the clock is no tick
         * this schedule enqueued */
        if (json_is_integer(t) && json_integer_value(t) >= 0 &&
            json_integer_value(t) <= kj_now_ms() + KJ_PERIODIC_FUTURE_MS) {
            if (json_integer_value(t) > rt[i].last) rt[i].last = json_integer_value(t);
        } else
            kj_log(KJ_LOG_WARN, "periodic state record ignored", "{s:s,s:I}", "name", name,
                   "offset", (json_int_t)m->offset);
        json_decref(v);
    }
    rd_kafka_message_destroy(m);
    return true;
}

static long read_state(kj_periodic *p, ent_rt *rt, size_t n) {
    char err[512];
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(p->cfg, err, sizeof err);
    if (!conf) {
        kj_log(KJ_LOG_ERROR, "periodic state not read", "{s:s}", "error", err);
        return -1;
    }
    char group[300];
    snprintf(group, sizeof group, "%s.periodic-state-reader", p->cfg->group);
    if (kj_kafka_conf_set(conf, "group.id", group, err, sizeof err) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ||
        kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err) ||
        kj_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof err)) {
        rd_kafka_conf_destroy(conf);
        kj_log(KJ_LOG_ERROR, "periodic state not read", "{s:s}", "error", err);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        kj_log(KJ_LOG_ERROR, "periodic state not read", "{s:s}", "error", err);
        return -1;
    }
    long count = 0;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk, p->state_topic, 0, &lo, &hi, 10000);
    if (e) {
        kj_log(KJ_LOG_ERROR, "periodic state not read", "{s:s,s:s}", "topic", p->state_topic,
               "error", rd_kafka_err2str(e));
        count = -1;
        goto out;
    }
    kj_read_range range = {p->state_topic, 0, lo, hi};
    kj_read_opts opts = {.deadline_ms = kj_now_ms() + KJ_PERIODIC_READ_TIMEOUT_MS,
                         .stop = stopping_fn,
                         .stop_opaque = p,
                         .what = "periodic state topic"};
    state_read rd = {rt, n, &count};
    kj_read_result r =
        kj_topic_read(rk, &range, 1, on_state_record, &rd, &opts, NULL, err, sizeof err);
    if (r != KJ_READ_DONE) {
        kj_log(KJ_LOG_ERROR, "periodic state not read", "{s:s,s:s}", "topic", p->state_topic,
               "error", r == KJ_READ_STOPPED ? "stopped" : err);
        count = -1;
    }
out:
    if (count >= 0) p->state_end = hi;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

/* Before enqueueing: has another member written the state since this session last looked (a
 * member frozen past its session, or the new owner while this one is that member)? Then read it
 * again and skip whatever ticks it already enqueued. Returns -1 when the state could not be read
 * (the caller retries later). @locality session thread */
static int catch_up_with_others(kj_periodic *p, ent_rt *rt, size_t n) {
    int64_t lo, hi;
    if (rd_kafka_query_watermark_offsets(p->producer, p->state_topic, 0, &lo, &hi, 5000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi <= p->state_end)
        return 0; /* nobody else wrote (or we cannot tell: go on, as before this check) */
    int64_t *mine = malloc(n * sizeof *mine);
    if (!mine) abort();
    for (size_t i = 0; i < n; i++) {
        mine[i] = rt[i].last;
        rt[i].last = -1;
    }
    long records = read_state(p, rt, n);
    int rc = records < 0 ? -1 : 0;
    for (size_t i = 0; i < n; i++) {
        if (records < 0 || rt[i].last < mine[i]) rt[i].last = mine[i];
        if (rt[i].last > mine[i]) {
            kj_log(KJ_LOG_WARN,
                   "periodic: another member enqueued ticks of this entry; skipping them",
                   "{s:s,s:I,s:I}", "name", rt[i].e->name, "own_last", (json_int_t)mine[i],
                   "their_last", (json_int_t)rt[i].last);
            if (rt[i].run_once >= 0 && rt[i].run_once <= rt[i].last) rt[i].run_once = -1;
            if (rt[i].pending >= 0 && rt[i].pending <= rt[i].last)
                rt[i].pending = next_tick(rt[i].e, rt[i].zone, rt[i].last);
        }
    }
    free(mine);
    return rc;
}

/* ---- the session ----------------------------------------------------------------------------- */

static void set_next_gauge(const ent_rt *r) {
    kj_metrics_periodic_next_tick(r->e->name, r->run_once >= 0 ? r->run_once : r->pending);
}

static void *session_main(void *arg) {
    kj_periodic *p = arg;
    const kj_config *cfg = p->cfg;
    size_t n = cfg->periodic_count;
    ent_rt *rt = calloc(n, sizeof *rt);
    if (!rt) abort();
    char err[256];
    for (size_t i = 0; i < n; i++) {
        rt[i].e = &cfg->periodic[i];
        rt[i].zone = kj_cron_zone_open(rt[i].e->time_zone, err, sizeof err);
        if (!rt[i].zone) abort(); /* checked when the config was loaded */
    }
    long records;
    for (;;) {
        for (size_t i = 0; i < n; i++)
            rt[i].last = -1;
        records = read_state(p, rt, n);
        if (records >= 0 || wait_or_stop(p, KJ_PERIODIC_RETRY_MS)) break;
    }
    if (records < 0) goto out; /* stopped before the state was read */
    int64_t now = kj_now_ms();
    for (size_t i = 0; i < n; i++) {
        if (stopping(p)) goto out; /* revoked while planning: hand the partition over now */
        ent_rt *r = &rt[i];
        kj_periodic_plan plan;
        if (kj_periodic_plan_entry(r->e, r->zone, r->last, now, &plan))
            kj_log(KJ_LOG_ERROR, "periodic plan failed", "{s:s}", "name", r->e->name);
        r->run_once = plan.run_once_tick;
        r->pending = plan.first_late >= 0 ? plan.first_late : plan.next;
        if (plan.missed > 0 || plan.first_late >= 0)
            kj_log(KJ_LOG_INFO, "periodic catch-up", "{s:s,s:I,s:I,s:s,s:I,s:I}", "name",
                   r->e->name, "last_tick", (json_int_t)r->last, "missed", (json_int_t)plan.missed,
                   "missed_policy", r->e->missed == KJ_MISSED_RUN_ONCE ? "run_once" : "skip",
                   "run_once_tick", (json_int_t)plan.run_once_tick, "first_late_tick",
                   (json_int_t)plan.first_late);
        if (plan.next < 0 && r->pending < 0)
            kj_log(KJ_LOG_WARN, "periodic entry never fires", "{s:s,s:s}", "name", r->e->name,
                   "cron", r->e->cron_text);
        set_next_gauge(r);
    }
    kj_log(KJ_LOG_INFO, "periodic scheduler started", "{s:s,s:i,s:i,s:I}", "state_topic",
           p->state_topic, "entries", (int)n, "state_records", (int)records, "now",
           (json_int_t)now);
    while (!stopping(p)) {
        ent_rt *due = NULL;
        int64_t due_at = -1;
        for (size_t i = 0; i < n; i++) {
            int64_t t = rt[i].run_once >= 0 ? rt[i].run_once : rt[i].pending;
            /* an entry whose enqueue keeps failing (a payload the broker refuses) backs off on
             * its own; it never holds the other entries up */
            if (t >= 0 && t < rt[i].retry_at) t = rt[i].retry_at;
            if (t >= 0 && (due_at < 0 || t < due_at)) due = &rt[i], due_at = t;
        }
        now = kj_now_ms();
        if (!due) {
            wait_or_stop(p, -1);
            continue;
        }
        if (due_at > now) {
            /* a timed wait on the monotonic clock for the wall-clock distance; re-read the wall
             * clock at least every KJ_PERIODIC_MAX_WAIT_MS so a stepped clock is noticed */
            wait_or_stop(p, due_at - now < KJ_PERIODIC_MAX_WAIT_MS ? due_at - now
                                                                   : KJ_PERIODIC_MAX_WAIT_MS);
            continue;
        }
        if (catch_up_with_others(p, rt, n) != 0) {
            wait_or_stop(p, KJ_PERIODIC_RETRY_MS);
            continue;
        }
        int64_t tick = due->run_once >= 0 ? due->run_once : due->pending;
        if (tick < 0 || tick > now) continue; /* skipped by catch_up_with_others */
        int64_t grace = due->e->catch_up_ms > 1000 ? due->e->catch_up_ms : 1000;
        if (due->run_once < 0 && tick < now - grace) {
            /* the clock stepped forward, or the process was paused, while this member owned
             * the schedule: the missed-tick policy applies as at a start, not a flood */
            kj_periodic_plan plan;
            kj_periodic_plan_entry(due->e, due->zone, due->last, now, &plan);
            due->run_once = plan.run_once_tick;
            due->pending = plan.first_late >= 0 ? plan.first_late : plan.next;
            kj_log(KJ_LOG_WARN, "periodic catch-up after a clock jump or pause",
                   "{s:s,s:I,s:I,s:s,s:I}", "name", due->e->name, "last_tick",
                   (json_int_t)due->last, "missed", (json_int_t)plan.missed, "missed_policy",
                   due->e->missed == KJ_MISSED_RUN_ONCE ? "run_once" : "skip", "now",
                   (json_int_t)now);
            set_next_gauge(due);
            continue;
        }
        due_at = tick;
        bool once = due->run_once >= 0;
        if (enqueue_tick(p, due, due_at,
                         once                  ? "run_once"
                         : due_at < now - 1000 ? "late"
                                               : "due")) {
            int shift = due->fails < 6 ? due->fails : 6;
            due->retry_at = kj_now_ms() + (int64_t)KJ_PERIODIC_RETRY_MS * (1 << shift); /* ..64 s */
            due->fails++;
            continue;
        }
        due->retry_at = 0;
        due->fails = 0;
        due->last = due_at;
        if (once)
            due->run_once = -1;
        else
            due->pending = next_tick(due->e, due->zone, due_at);
        set_next_gauge(due);
    }
out:
    for (size_t i = 0; i < n; i++) {
        kj_metrics_periodic_clear(rt[i].e->name);
        kj_cron_zone_close(rt[i].zone);
    }
    free(rt);
    kj_log(KJ_LOG_INFO, "periodic scheduler stopped", "{s:s}", "state_topic", p->state_topic);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

/* The state topic must exist (`kjobs topics --create` makes it) and have one partition. */
static int check_state_topic(kj_periodic *p, char *errstr, size_t errstr_size) {
    /* every topic, not this one: asking for one topic by name makes a broker with
     * auto.create.topics.enable create it — with the wrong partitions and no compaction */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->producer, 1, NULL, &md, 15000);
    if (err) {
        snprintf(errstr, errstr_size, "cannot read metadata of %s: %s", p->state_topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    int rc = 0;
    const rd_kafka_metadata_topic_t *t = NULL;
    for (int i = 0; i < md->topic_cnt && !t; i++)
        if (strcmp(md->topics[i].topic, p->state_topic) == 0) t = &md->topics[i];
    if (!t || t->err || t->partition_cnt < 1) {
        snprintf(errstr, errstr_size,
                 "missing topics: %s (the state topic of schedule.periodic; create it with "
                 "`kjobs topics --create`, or use `kjobs broker` / `kjobs run --embedded` in "
                 "development)",
                 p->state_topic);
        rc = -1;
    } else if (t->partition_cnt != 1) {
        kj_log(KJ_LOG_WARN, "periodic state topic has more than one partition; only 0 is used",
               "{s:s,s:i}", "topic", p->state_topic, "partitions", t->partition_cnt);
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

kj_periodic *kj_periodic_new(const kj_config *cfg, const char *worker_id, char *errstr,
                             size_t errstr_size) {
    kj_periodic *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->cfg = cfg;
    p->state_topic = kj_periodic_state_topic(cfg);
    snprintf(p->worker_id, sizeof p->worker_id, "%s", worker_id);
    pthread_mutex_init(&p->mu, NULL);
    kj_cond_init_monotonic(&p->cv);
    rd_kafka_conf_t *conf = kj_kafka_producer_conf_new(cfg, errstr, errstr_size);
    if (!conf) goto fail;
    if (kj_kafka_conf_set(conf, "message.timeout.ms", KJ_PERIODIC_MSG_TIMEOUT_MS, errstr,
                          errstr_size) ||
        kj_kafka_conf_set(conf, "linger.ms", "0", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "allow.auto.create.topics", "false", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    p->producer = kj_kafka_producer_new(conf, errstr, errstr_size);
    if (!p->producer) goto fail;
    if (check_state_topic(p, errstr, errstr_size)) goto fail;
    return p;
fail:
    kj_periodic_free(p);
    return NULL;
}

void kj_periodic_start(kj_periodic *p) {
    if (!p || p->running) return;
    pthread_mutex_lock(&p->mu);
    p->stop = false;
    pthread_mutex_unlock(&p->mu);
    if (pthread_create(&p->thread, NULL, session_main, p) != 0) {
        kj_log(KJ_LOG_ERROR, "periodic scheduler thread not started", "{s:s}", "error",
               strerror(errno));
        return;
    }
    p->running = true;
}

void kj_periodic_stop(kj_periodic *p) {
    if (!p || !p->running) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->running = false;
}

void kj_periodic_free(kj_periodic *p) {
    if (!p) return;
    kj_periodic_stop(p);
    if (p->producer) {
        rd_kafka_flush(p->producer, 5000);
        rd_kafka_destroy(p->producer);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->state_topic);
    free(p);
}
