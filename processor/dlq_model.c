/*
 * dlq_model.c — the dead-letter model's Kafka side (processor/dlq_model.h says what it
 * guarantees): the snapshot (partitions, watermarks and the replay marker at open), one read
 * loop that every call shares (assign() over every partition from a start offset up to the
 * snapshot's end, never "until idle"), the state and JSON form of each record, and replay (a
 * producer for the copies, then the marker commit). The marker's text and the rule that moves it
 * are pure, in processor/dlq_marker.c; the table, JSON lines and exit codes are the CLI's,
 * cli/cmd_dlq.c.
 *
 * Per partition the handle keeps the snapshot (low, end, the marker as read or last committed)
 * and the current read's bounds and progress: each read sets [start, stop) for every partition
 * (plan_all, plan_one) and read_dlq hands each record to a function that takes it, through
 * the shared snapshot reader (processor/topic_reader.h).
 */
#include "processor/dlq_model.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "common/clock.h"
#include "processor/dlq_marker.h"
#include "processor/header_contract.h"
#include "processor/job_json.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/topic_reader.h"
#include "common/utf8.h"
#include "schemas/codec.h"

/* One marker of one partition (processor/dlq_marker.h): the replay marker, or the discard
 * marker, which has the same form and rule under its own group. */
typedef struct dlq_mark {
    int64_t committed;   /* W; -1 when none */
    kj_dlq_ranges marks; /* recorded offsets >= committed, from the commit metadata */
    char *marks_text;    /* the metadata as read or committed (to detect a change); NULL none */
} dlq_mark;

/* Which marker a run moves: replay's or discard's. */
typedef struct marker_kind {
    const char *what; /* "replay" or "discard", for log lines */
    size_t mark_off;  /* offsetof(part_state, replay or discard) */
} marker_kind;

typedef struct part_state {
    int64_t low, end; /* watermarks at open: the snapshot is [low, end) */
    dlq_mark replay;  /* the replay marker */
    dlq_mark discard; /* the discard marker */
    /* the current read */
    int64_t start, stop;    /* reads [start, stop) */
    bool done;              /* reached stop */
    int64_t next_expected;  /* last offset seen + 1 */
    int64_t first_blocking; /* replay: first offset read that stays "new"; -1 none */
} part_state;

struct kj_dlq {
    const kj_config *cfg;
    char *topic;
    char replay_group[512];
    char discard_group[512];
    long long deadline;
    volatile sig_atomic_t *stop;
    rd_kafka_t *rk;         /* reads the DLQ; group.id is the replay group (its marker) */
    rd_kafka_t *rk_discard; /* group.id is the discard group: reads and commits its marker only */
    int partitions;
    part_state *parts;
};

static const char *const state_names[] = {"new", "replayed", "refailed", "no-origin", "discarded"};

const char *kj_dlq_state_name(kj_dlq_state state) {
    return (unsigned)state < sizeof(state_names) / sizeof(*state_names) ? state_names[state] : "?";
}

static void seterr(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t size, const char *fmt, ...) {
    if (!err || !size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

static bool stopped(const kj_dlq *d) {
    return d->stop && *d->stop;
}

/* ---- dead letters: headers, state, JSON -------------------------------------------------- */

static rd_kafka_headers_t *headers_of(const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    return h;
}

static kj_dlq_state state_of(const part_state *ps, const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *h = headers_of(msg);
    char buf[256];
    if (kj_dlq_ranges_has(&ps->discard.marks, msg->offset) ||
        (ps->discard.committed >= 0 && msg->offset < ps->discard.committed))
        return KJ_DLQ_DISCARDED;
    if (kj_dlq_ranges_has(&ps->replay.marks, msg->offset)) return KJ_DLQ_REPLAYED;
    if (!kj_kafka_header_str(h, KJ_HDR_ORIGINAL_TOPIC, buf, sizeof(buf)) || !buf[0])
        return KJ_DLQ_NO_ORIGIN;
    if (kj_kafka_header_str(h, KJ_HDR_REPLAYED_FROM, buf, sizeof(buf))) return KJ_DLQ_REFAILED;
    if (ps->replay.committed >= 0 && msg->offset < ps->replay.committed) return KJ_DLQ_REPLAYED;
    return KJ_DLQ_NEW;
}

static void iso_time(long long ms, char *out, size_t size) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", base, (int)(ms % 1000));
}

static json_t *header_int(rd_kafka_headers_t *h, const char *name) {
    char buf[64], *end;
    if (!kj_kafka_header_str(h, name, buf, sizeof(buf))) return json_null();
    long long v = strtoll(buf, &end, 10);
    if (end == buf || *end) return json_string(buf);
    return json_integer(v);
}

/* The header as text; bytes that are not UTF-8 become U+FFFD (never a dropped field). */
static json_t *header_text(rd_kafka_headers_t *h, const char *name) {
    const void *val = NULL;
    size_t size = 0;
    if (!h || rd_kafka_header_get_last(h, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return json_null();
    return val ? kj_utf8_json_string(val, size) : json_string("");
}

json_t *kj_dlq_json(const rd_kafka_message_t *msg, kj_dlq_state state) {
    json_t *o = kj_job_json_from_message(msg);
    rd_kafka_headers_t *h = headers_of(msg);
    char handle[64];
    json_t *id = json_object_get(o, "id");
    if (json_is_string(id)) {
        json_object_set_new(o, "handle", json_string(json_string_value(id)));
    } else {
        snprintf(handle, sizeof(handle), "%" PRId32 ":%" PRId64, msg->partition, msg->offset);
        json_object_set_new(o, "handle", json_string(handle));
    }
    json_object_set_new(o, "state", json_string(kj_dlq_state_name(state)));
    json_t *d = json_object();
    json_object_set_new(d, "attempt", header_int(h, KJ_HDR_ATTEMPT));
    json_object_set_new(d, "error_class", header_text(h, KJ_HDR_ERROR_CLASS));
    json_object_set_new(d, "error", header_text(h, KJ_HDR_ERROR));
    json_object_set_new(d, "original_topic", header_text(h, KJ_HDR_ORIGINAL_TOPIC));
    json_object_set_new(d, "original_partition", header_int(h, KJ_HDR_ORIGINAL_PARTITION));
    json_object_set_new(d, "original_offset", header_int(h, KJ_HDR_ORIGINAL_OFFSET));
    json_t *failed_at = header_int(h, KJ_HDR_FAILED_AT);
    if (json_is_integer(failed_at)) {
        char iso[48];
        iso_time(json_integer_value(failed_at), iso, sizeof(iso));
        json_object_set_new(d, "failed_at", failed_at);
        json_object_set_new(d, "failed_at_iso", json_string(iso));
    } else {
        json_object_set_new(d, "failed_at", failed_at);
        json_object_set_new(d, "failed_at_iso", json_null());
    }
    json_object_set_new(d, "worker", header_text(h, KJ_HDR_WORKER));
    json_object_set_new(d, "replayed_from", header_text(h, KJ_HDR_REPLAYED_FROM));
    json_object_set_new(o, "dead_letter", d);
    return o;
}

/* ---- selection ---------------------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

bool kj_dlq_parse_handle(const char *text, int32_t *partition, int64_t *offset) {
    long long pp, oo;
    char tail;
    if (sscanf(text, "%lld:%lld%c", &pp, &oo, &tail) != 2) return false;
    if (pp < 0 || pp > INT32_MAX || oo < 0) return false;
    *partition = (int32_t)pp;
    *offset = oo;
    return true;
}

/* Whether `handle` names dead letter `o`: by its place when it is PARTITION:OFFSET, else by id. */
static bool handle_names(const char *handle, json_t *o) {
    int32_t p;
    int64_t off;
    if (kj_dlq_parse_handle(handle, &p, &off))
        return json_integer_value(json_object_get(o, "partition")) == p &&
               json_integer_value(json_object_get(o, "offset")) == off;
    return jstr(o, "id") && strcmp(jstr(o, "id"), handle) == 0;
}

bool kj_dlq_filter_match(const kj_dlq_filter *f, json_t *o) {
    if (!f) return true;
    if (f->type && (!jstr(o, "type") || strcmp(jstr(o, "type"), f->type) != 0)) return false;
    if (f->error_class) {
        const char *c = jstr(json_object_get(o, "dead_letter"), "error_class");
        if (!c || strcmp(c, f->error_class) != 0) return false;
    }
    if (f->handle_count) {
        size_t i = 0;
        while (i < f->handle_count && !handle_names(f->handles[i], o))
            i++;
        if (i == f->handle_count) return false;
    }
    return true;
}

/* ---- the snapshot ------------------------------------------------------------------------- */

static int open_consumer(const kj_dlq *d, const char *group, rd_kafka_t **out, char *err,
                         size_t err_size) {
    char e[512];
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(d->cfg, e, sizeof(e));
    /* group.id is the replay marker's group: rd_kafka_committed reads it and replay commits
     * it; the handle only ever uses assign(), so it never joins that (or any) group */
    if (!conf || kj_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof(e)) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e)) ||
        kj_kafka_conf_set(conf, "auto.offset.reset", "earliest", e, sizeof(e)) ||
        kj_kafka_conf_set(conf, "group.id", group, e, sizeof(e))) {
        seterr(err, err_size, "%s", e);
        if (conf) rd_kafka_conf_destroy(conf);
        return KJ_DLQ_ERR_CONFIG;
    }
    *out = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!*out) {
        seterr(err, err_size, "%s", e);
        rd_kafka_conf_destroy(conf);
        return KJ_DLQ_ERR_CONFIG;
    }
    rd_kafka_poll_set_consumer(*out);
    return KJ_DLQ_OK;
}

static int remaining_ms(const kj_dlq *d) {
    long long left = d->deadline - kj_now_ms();
    return left < 1 ? 1 : left > 30000 ? 30000 : (int)left;
}

static dlq_mark *mark_of(part_state *ps, size_t mark_off) {
    return (dlq_mark *)((char *)ps + mark_off);
}

/* The marker of `group` (committed offsets and their metadata), into each part's mark at
 * `mark_off`; `list` names every partition. */
static int load_marker(kj_dlq *d, rd_kafka_t *rk, const char *group, size_t mark_off,
                       const rd_kafka_topic_partition_list_t *list, char *err, size_t err_size) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(list);
    rd_kafka_resp_err_t re = rd_kafka_committed(rk, l, remaining_ms(d));
    for (int i = 0; !re && i < l->cnt; i++)
        re = l->elems[i].err;
    if (re) {
        kj_log(KJ_LOG_ERROR, "cannot read a dead-letter marker", "{s:s,s:s}", "group", group,
               "error", rd_kafka_err2str(re));
        seterr(err, err_size, "cannot read the marker of group %s: %s", group,
               rd_kafka_err2str(re));
        rd_kafka_topic_partition_list_destroy(l);
        return KJ_DLQ_ERR_IO;
    }
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (tp->offset < 0 || tp->partition < 0 || tp->partition >= d->partitions) continue;
        dlq_mark *m = mark_of(&d->parts[tp->partition], mark_off);
        m->committed = tp->offset;
        m->marks_text = strndup(tp->metadata ? tp->metadata : "", tp->metadata_size);
        if (m->marks_text[0] && kj_dlq_marker_parse(m->marks_text, &m->marks) != 0) {
            kj_log(KJ_LOG_WARN, "dead-letter marker metadata not understood, ignored", "{s:s,s:i}",
                   "group", group, "partition", (int)tp->partition);
            m->marks.n = 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return KJ_DLQ_OK;
}

/* (Re)reads both markers, forgetting what the handle held: at open, and after the fence (see
 * dlq_model.h). */
static int load_markers(kj_dlq *d, char *err, size_t err_size) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(d->partitions);
    for (int p = 0; p < d->partitions; p++) {
        dlq_mark *marks[] = {&d->parts[p].replay, &d->parts[p].discard};
        for (size_t i = 0; i < 2; i++) {
            kj_dlq_ranges_free(&marks[i]->marks);
            free(marks[i]->marks_text);
            marks[i]->marks_text = NULL;
            marks[i]->committed = -1;
        }
        rd_kafka_topic_partition_list_add(list, d->topic, p);
    }
    int rc =
        load_marker(d, d->rk, d->replay_group, offsetof(part_state, replay), list, err, err_size);
    if (rc == KJ_DLQ_OK)
        rc = load_marker(d, d->rk_discard, d->discard_group, offsetof(part_state, discard), list,
                         err, err_size);
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

/* Partitions, end offsets (the snapshot), and the replay and discard markers. */
static int load_partitions(kj_dlq *d, char *err, size_t err_size) {
    char e[512];
    d->partitions = kj_kafka_partition_count(d->rk, d->topic, remaining_ms(d), e, sizeof(e));
    if (d->partitions < 0) {
        kj_log(KJ_LOG_ERROR, "cannot read topic", "{s:s,s:s}", "topic", d->topic, "error", e);
        seterr(err, err_size, "cannot read topic %s: %s", d->topic, e);
        return KJ_DLQ_ERR_IO;
    }
    d->parts = calloc((size_t)d->partitions + 1, sizeof(*d->parts));
    for (int p = 0; p < d->partitions; p++) {
        part_state *ps = &d->parts[p];
        ps->first_blocking = -1;
        ps->replay.committed = ps->discard.committed = -1;
        rd_kafka_resp_err_t re = rd_kafka_query_watermark_offsets(d->rk, d->topic, p, &ps->low,
                                                                  &ps->end, remaining_ms(d));
        if (re) {
            kj_log(KJ_LOG_ERROR, "cannot read end offset", "{s:s,s:i,s:s}", "topic", d->topic,
                   "partition", p, "error", rd_kafka_err2str(re));
            seterr(err, err_size, "cannot read the end offset of %s [%d]: %s", d->topic, p,
                   rd_kafka_err2str(re));
            return KJ_DLQ_ERR_IO;
        }
    }
    return load_markers(d, err, err_size);
}

int kj_dlq_open(const kj_dlq_params *params, kj_dlq **out, char *err, size_t err_size) {
    *out = NULL;
    char e[512];
    if (kj_codec_init(e, sizeof(e)) != 0) {
        kj_log(KJ_LOG_ERROR, "codec init failed", "{s:s}", "error", e);
        seterr(err, err_size, "%s", e);
        return KJ_DLQ_ERR_IO;
    }
    kj_dlq *d = calloc(1, sizeof(*d));
    d->cfg = params->cfg;
    d->topic = strdup(params->topic ? params->topic : params->cfg->dlq_topic);
    snprintf(d->replay_group, sizeof(d->replay_group), "%s.dlq-replay", params->cfg->group);
    snprintf(d->discard_group, sizeof(d->discard_group), "%s.dlq-discard", params->cfg->group);
    d->deadline = params->deadline_ms;
    d->stop = params->stop;
    int rc = open_consumer(d, d->replay_group, &d->rk, err, err_size);
    if (rc == KJ_DLQ_OK) rc = open_consumer(d, d->discard_group, &d->rk_discard, err, err_size);
    if (rc == KJ_DLQ_OK) rc = load_partitions(d, err, err_size);
    if (rc != KJ_DLQ_OK) {
        kj_dlq_close(d);
        return rc;
    }
    *out = d;
    return KJ_DLQ_OK;
}

void kj_dlq_close(kj_dlq *d) {
    if (!d) return;
    for (int p = 0; d->parts && p < d->partitions; p++) {
        kj_dlq_ranges_free(&d->parts[p].replay.marks);
        free(d->parts[p].replay.marks_text);
        kj_dlq_ranges_free(&d->parts[p].discard.marks);
        free(d->parts[p].discard.marks_text);
    }
    free(d->parts);
    rd_kafka_t *handles[] = {d->rk, d->rk_discard};
    for (size_t i = 0; i < 2; i++) {
        if (!handles[i]) continue;
        rd_kafka_consumer_close(handles[i]);
        rd_kafka_destroy(handles[i]);
    }
    free(d->topic);
    free(d);
}

const char *kj_dlq_topic(const kj_dlq *d) {
    return d->topic;
}

void kj_dlq_depth(const kj_dlq *d, int64_t *retained, int64_t *unresolved) {
    int64_t all = 0, open = 0;
    for (int p = 0; p < d->partitions; p++) {
        const part_state *ps = &d->parts[p];
        if (ps->end <= ps->low) continue;
        all += ps->end - ps->low;
        kj_dlq_marker_view views[] = {{ps->replay.committed, &ps->replay.marks},
                                      {ps->discard.committed, &ps->discard.marks}};
        open += kj_dlq_marker_unsettled(ps->low, ps->end, views, 2);
    }
    if (retained) *retained = all;
    if (unresolved) *unresolved = open;
}

/* ---- reading the DLQ up to the snapshot --------------------------------------------------- */

/* Every partition from its oldest record — or, with a marker's offset, from its committed W. */
static void plan_all(kj_dlq *d, const size_t *mark_off) {
    for (int p = 0; p < d->partitions; p++) {
        part_state *ps = &d->parts[p];
        int64_t w = mark_off ? mark_of(ps, *mark_off)->committed : -1;
        ps->start = w > ps->low ? w : ps->low;
        ps->stop = ps->end;
    }
}

/* The one record at partition/offset, if the snapshot has it; nothing else. */
static void plan_one(kj_dlq *d, int32_t partition, int64_t offset) {
    for (int p = 0; p < d->partitions; p++) {
        part_state *ps = &d->parts[p];
        if (p == partition && offset >= ps->low && offset < ps->end) {
            ps->start = offset;
            ps->stop = offset + 1;
        } else {
            ps->start = ps->stop = ps->end;
        }
    }
}

/* Takes ownership of msg. Returns false to end the read. */
typedef bool(on_msg_fn)(kj_dlq *d, rd_kafka_message_t *msg, void *opaque);

typedef struct read_ctx {
    kj_dlq *d;
    on_msg_fn *on_msg;
    void *opaque;
} read_ctx;

static bool on_read_record(rd_kafka_message_t *msg, size_t index, void *opaque) {
    read_ctx *c = opaque;
    (void)index; /* the DLQ's ranges are its partitions, in order */
    c->d->parts[msg->partition].next_expected = msg->offset + 1;
    return c->on_msg(c->d, msg, c->opaque);
}

static bool read_stopped(void *opaque) {
    return stopped(opaque);
}

/* Each partition [start, stop) through the shared snapshot reader (processor/topic_reader.h). */
static int read_dlq(kj_dlq *d, on_msg_fn *on_msg, void *opaque, char *err, size_t err_size) {
    kj_read_range *ranges = calloc((size_t)d->partitions + 1, sizeof(*ranges));
    bool *done = calloc((size_t)d->partitions + 1, sizeof(*done));
    if (!ranges || !done) abort();
    for (int p = 0; p < d->partitions; p++) {
        part_state *ps = &d->parts[p];
        if (ps->start < ps->low) ps->start = ps->low;
        ps->next_expected = ps->start;
        ps->first_blocking = -1;
        ranges[p] = (kj_read_range){d->topic, p, ps->start, ps->stop};
    }
    read_ctx c = {d, on_msg, opaque};
    kj_read_opts opts = {.deadline_ms = d->deadline,
                         .stop = read_stopped,
                         .stop_opaque = d,
                         .errors_fatal = true,
                         .what = "dead-letter topic"};
    kj_read_result r = kj_topic_read(d->rk, ranges, (size_t)d->partitions, on_read_record, &c,
                                     &opts, done, err, err_size);
    for (int p = 0; p < d->partitions; p++)
        d->parts[p].done = done[p];
    free(ranges);
    free(done);
    switch (r) {
    case KJ_READ_DONE:
    case KJ_READ_ENDED_BY_CALLER:
        return KJ_DLQ_OK;
    case KJ_READ_STOPPED:
        seterr(err, err_size, "stopped");
        return KJ_DLQ_ERR_STOPPED;
    case KJ_READ_TIMEOUT:
        kj_log(KJ_LOG_ERROR, "timed out reading the dead-letter topic", "{s:s}", "topic", d->topic);
        return KJ_DLQ_ERR_TIMEOUT;
    case KJ_READ_CONSUME_ERROR:
    case KJ_READ_ASSIGN_ERROR:
        break;
    }
    return KJ_DLQ_ERR_IO;
}

/* ---- list and find ------------------------------------------------------------------------ */

typedef struct list_ctx {
    const kj_dlq_filter *filter;
    kj_dlq_record_fn *fn;
    void *opaque;
} list_ctx;

static bool on_list_msg(kj_dlq *d, rd_kafka_message_t *msg, void *opaque) {
    list_ctx *c = opaque;
    kj_dlq_record rec = {.msg = msg, .state = state_of(&d->parts[msg->partition], msg)};
    rec.json = kj_dlq_json(msg, rec.state);
    bool go_on = !kj_dlq_filter_match(c->filter, rec.json) || c->fn(&rec, c->opaque);
    json_decref(rec.json);
    rd_kafka_message_destroy(msg);
    return go_on;
}

int kj_dlq_list(kj_dlq *d, const kj_dlq_filter *filter, kj_dlq_record_fn *fn, void *opaque,
                char *err, size_t err_size) {
    list_ctx c = {filter, fn, opaque};
    plan_all(d, NULL);
    return read_dlq(d, on_list_msg, &c, err, err_size);
}

typedef struct find_ctx {
    const char *handle;
    bool by_place;
    int32_t partition;
    int64_t offset;
    json_t *match;
    long matches;
} find_ctx;

static json_int_t failed_at_of(json_t *o) {
    return json_integer_value(json_object_get(json_object_get(o, "dead_letter"), "failed_at"));
}

static bool on_find_msg(kj_dlq *d, rd_kafka_message_t *msg, void *opaque) {
    find_ctx *c = opaque;
    json_t *o = kj_dlq_json(msg, state_of(&d->parts[msg->partition], msg));
    bool hit = c->by_place ? msg->partition == c->partition && msg->offset == c->offset
                           : jstr(o, "id") && strcmp(jstr(o, "id"), c->handle) == 0;
    if (hit) {
        /* the same job can be dead-lettered more than once: the latest failure */
        if (!c->match || failed_at_of(o) >= failed_at_of(c->match)) {
            json_decref(c->match);
            c->match = json_incref(o);
        }
        c->matches++;
    }
    json_decref(o);
    rd_kafka_message_destroy(msg);
    return true;
}

int kj_dlq_find(kj_dlq *d, const char *handle, json_t **out, long *matches, char *err,
                size_t err_size) {
    find_ctx c = {.handle = handle};
    *out = NULL;
    if (matches) *matches = 0;
    c.by_place = kj_dlq_parse_handle(handle, &c.partition, &c.offset);
    if (c.by_place)
        plan_one(d, c.partition, c.offset); /* read just [offset, offset+1) of that partition */
    else
        plan_all(d, NULL);
    int rc = read_dlq(d, on_find_msg, &c, err, err_size);
    if (rc == KJ_DLQ_OK && !c.match) {
        seterr(err, err_size, "no dead letter %s in %s", handle, d->topic);
        rc = KJ_DLQ_ERR_NOT_FOUND;
    }
    if (rc != KJ_DLQ_OK) {
        json_decref(c.match);
        return rc;
    }
    *out = c.match;
    if (matches) *matches = c.matches;
    return KJ_DLQ_OK;
}

/* ---- replay ------------------------------------------------------------------------------- */

typedef struct replay_item {
    rd_kafka_message_t *msg;
    char *handle;
    char *orig_topic;
    int status; /* 0 queued, 1 acknowledged, 2 failed */
} replay_item;

typedef struct replay_ctx {
    const kj_dlq_filter *filter;
    bool again;
    bool discard;    /* a discard: nothing is produced; the discard marker moves */
    size_t mark_off; /* the marker this run moves: offsetof(part_state, replay or discard) */
    replay_item *items;
    size_t item_count, item_cap;
    kj_dlq_replay_counts n;
} replay_ctx;

/* Keeps `msg` (owned from here) as a selected item; `o` is its kj_dlq_json form. */
static void select_item(replay_ctx *c, rd_kafka_message_t *msg, json_t *o) {
    if (c->item_count == c->item_cap) {
        c->item_cap = c->item_cap ? c->item_cap * 2 : 64;
        c->items = realloc(c->items, c->item_cap * sizeof(*c->items));
        if (!c->items) abort();
    }
    replay_item *it = &c->items[c->item_count++];
    memset(it, 0, sizeof(*it));
    it->msg = msg;
    it->handle = strdup(jstr(o, "handle"));
    const char *orig = jstr(json_object_get(o, "dead_letter"), "original_topic");
    it->orig_topic = strdup(orig ? orig : ""); /* no-origin ones are selected by discard only */
}

/* Selects or skips one dead letter; takes ownership of msg (kept when selected). */
static bool on_replay_msg(kj_dlq *d, rd_kafka_message_t *msg, void *opaque) {
    replay_ctx *c = opaque;
    part_state *ps = &d->parts[msg->partition];
    kj_dlq_state state = state_of(ps, msg);
    json_t *o = kj_dlq_json(msg, state);
    bool selected = false, match = kj_dlq_filter_match(c->filter, o);
    char dropped[64];
    bool no_value = !msg->payload && kj_kafka_header_str(headers_of(msg), KJ_HDR_TRUNCATED, dropped,
                                                         sizeof(dropped));
    if (no_value && match) {
        /* too large to copy whole: the job is only at its kjobs-original-* coordinates */
        c->n.skipped_no_value++;
        kj_log(KJ_LOG_WARN, "dead letter was reduced to fit (kjobs-truncated), no value to replay",
               "{s:s,s:i,s:I,s:s}", "topic", d->topic, "partition", (int)msg->partition, "offset",
               (json_int_t)msg->offset, "dropped", dropped);
    } else if (match) {
        if (state == KJ_DLQ_NEW ||
            (c->again && state != KJ_DLQ_NO_ORIGIN && state != KJ_DLQ_DISCARDED)) {
            selected = true;
        } else if (state == KJ_DLQ_DISCARDED) {
            c->n.skipped_discarded++;
        } else if (state == KJ_DLQ_REPLAYED) {
            c->n.skipped_replayed++;
        } else if (state == KJ_DLQ_REFAILED) {
            c->n.skipped_refailed++;
        } else {
            c->n.skipped_no_origin++;
            kj_log(KJ_LOG_WARN, "dead letter has no kjobs-original-topic, cannot replay",
                   "{s:s,s:i,s:I}", "topic", d->topic, "partition", (int)msg->partition, "offset",
                   (json_int_t)msg->offset);
        }
    }
    if (selected) {
        select_item(c, msg, o);
    } else {
        /* still new (also one reduced without its value: it waits for a discard), so the
         * marker may not pass it */
        if (state == KJ_DLQ_NEW && ps->first_blocking < 0) ps->first_blocking = msg->offset;
        rd_kafka_message_destroy(msg);
    }
    json_decref(o);
    return true;
}

/* Discard: every dead letter that matches and is not discarded yet is selected (its state
 * does not matter: a refailed or unreplayable one is dropped as well). Takes ownership of msg. */
static bool on_discard_msg(kj_dlq *d, rd_kafka_message_t *msg, void *opaque) {
    replay_ctx *c = opaque;
    part_state *ps = &d->parts[msg->partition];
    kj_dlq_state state = state_of(ps, msg);
    json_t *o = kj_dlq_json(msg, state);
    if (state != KJ_DLQ_DISCARDED && kj_dlq_filter_match(c->filter, o)) {
        select_item(c, msg, o);
    } else {
        if (state == KJ_DLQ_DISCARDED)
            c->n.skipped_discarded += kj_dlq_filter_match(c->filter, o);
        else if (ps->first_blocking < 0)
            ps->first_blocking = msg->offset; /* kept: the discard marker may not pass it */
        rd_kafka_message_destroy(msg);
    }
    json_decref(o);
    return true;
}

static void on_replay_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    (void)opaque;
    replay_item *it = msg->_private;
    if (msg->err) {
        it->status = 2;
        kj_log(KJ_LOG_ERROR, "replayed copy not acknowledged", "{s:s,s:s,s:s}", "handle",
               it->handle, "topic", it->orig_topic, "error", rd_kafka_err2str(msg->err));
    } else {
        it->status = 1;
    }
}

static rd_kafka_headers_t *replay_headers(const kj_dlq *d, const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *src = headers_of(msg), *out = rd_kafka_headers_new(8);
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; src && rd_kafka_header_get_all(src, i, &name, &val, &size) == 0; i++)
        if (!kj_hdr_is_kjobs(name)) rd_kafka_header_add(out, name, -1, val, (ssize_t)size);
    kj_hdr_write_replay(out, d->topic, msg->partition, msg->offset, kj_now_ms());
    return out;
}

/* Produces every item and waits for every delivery report; item statuses say what happened. */
/* The transactional producer of this DLQ's replays and discards (see "Fence" in dlq_model.h):
 * one transactional.id per group and DLQ, so a second replay or discard fences the first. */
static rd_kafka_t *txn_producer(const kj_dlq *d, char *err, size_t err_size, int *rc) {
    char e[512], txn_id[1100];
    rd_kafka_conf_t *conf = kj_kafka_conf_new(d->cfg, e, sizeof(e));
    snprintf(txn_id, sizeof(txn_id), "%s:%s", d->replay_group, d->topic);
    if (!conf || kj_kafka_conf_set(conf, "transactional.id", txn_id, e, sizeof(e)) ||
        kj_kafka_conf_set(conf, "linger.ms", "5", e, sizeof(e))) {
        seterr(err, err_size, "%s", e);
        if (conf) rd_kafka_conf_destroy(conf);
        *rc = KJ_DLQ_ERR_CONFIG;
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_replay_delivery);
    rd_kafka_t *prod = kj_kafka_producer_new(conf, e, sizeof(e));
    if (!prod) {
        seterr(err, err_size, "%s", e);
        *rc = KJ_DLQ_ERR_CONFIG;
    }
    return prod;
}

/* Starts the fenced run: a transactional producer whose init fences (aborts) any earlier
 * replay or discard of this DLQ still in flight, then the markers as they are now. */
static rd_kafka_t *fence(kj_dlq *d, char *err, size_t err_size, int *rc) {
    rd_kafka_t *prod = txn_producer(d, err, err_size, rc);
    if (!prod) return NULL;
    rd_kafka_error_t *error = rd_kafka_init_transactions(prod, remaining_ms(d));
    if (error) {
        kj_log(KJ_LOG_ERROR, "cannot start the dead-letter transaction", "{s:s,s:s}", "topic",
               d->topic, "error", rd_kafka_error_string(error));
        seterr(err, err_size, "cannot start the dead-letter transaction: %s",
               rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_destroy(prod);
        *rc = KJ_DLQ_ERR_IO;
        return NULL;
    }
    if ((*rc = load_markers(d, err, err_size)) != KJ_DLQ_OK) {
        rd_kafka_destroy(prod);
        return NULL;
    }
    return prod;
}

/* Produces every item in the open transaction and waits for every delivery report; item
 * statuses say what happened. */
static void produce_copies(kj_dlq *d, replay_ctx *c, rd_kafka_t *prod) {
    for (size_t i = 0; i < c->item_count; i++) {
        replay_item *it = &c->items[i];
        const rd_kafka_message_t *m = it->msg;
        for (;;) {
            rd_kafka_headers_t *h = replay_headers(d, m);
            rd_kafka_resp_err_t re = rd_kafka_producev(
                prod, RD_KAFKA_V_TOPIC(it->orig_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(it), RD_KAFKA_V_END);
            if (!re) break;
            rd_kafka_headers_destroy(h);
            if (re == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stopped(d)) {
                rd_kafka_poll(prod, 100);
                continue;
            }
            it->status = 2;
            kj_log(KJ_LOG_ERROR, "cannot queue replayed copy", "{s:s,s:s,s:s}", "handle",
                   it->handle, "topic", it->orig_topic, "error", rd_kafka_err2str(re));
            break;
        }
    }
    /* wait for every delivery report (message.timeout.ms bounds it); a stop purges */
    while (rd_kafka_outq_len(prod) > 0) {
        if (stopped(d)) rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(prod, 100);
    }
}

/* The marker partition p gets (dlq_marker.h): W and the ranges >= W, from the item statuses. */
static int64_t new_marker(kj_dlq *d, const replay_ctx *c, int p, kj_dlq_ranges *out) {
    part_state *ps = &d->parts[p];
    const dlq_mark *mk = mark_of(ps, c->mark_off);
    kj_dlq_ranges acked = {0};
    int64_t first_new = ps->first_blocking;
    for (size_t i = 0; i < c->item_count; i++) {
        const replay_item *it = &c->items[i];
        if (it->msg->partition != p) continue;
        if (it->status == 1)
            kj_dlq_ranges_add(&acked, it->msg->offset);
        else if ((first_new < 0 || it->msg->offset < first_new) &&
                 state_of(ps, it->msg) == KJ_DLQ_NEW)
            first_new = it->msg->offset; /* not replayed and still new: must stay ahead of W */
    }
    kj_dlq_marker_step st = {.committed = mk->committed,
                             .marks = &mk->marks,
                             .end = ps->end,
                             .read_to_end = ps->done,
                             .next_expected = ps->next_expected,
                             .first_new = first_new,
                             .acked = &acked};
    int64_t w = kj_dlq_marker_next(&st, out);
    kj_dlq_ranges_free(&acked);
    return w;
}

typedef struct marker_change {
    int32_t partition;
    int64_t w;
    kj_dlq_ranges set;
    char *text;
} marker_change;

/* Commits the partitions whose marker changes; on success the handle's marker is the new one. */
/* Internal: the transaction committed but the marker did not (the copies stay replayed). */
#define KJ_DLQ_ERR_MARKER_ONLY (-100)

static int commit_marker(kj_dlq *d, const replay_ctx *c, rd_kafka_t *prod, char *err,
                         size_t err_size) {
    rd_kafka_t *rk = c->discard ? d->rk_discard : d->rk;
    const char *group = c->discard ? d->discard_group : d->replay_group;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(d->partitions);
    marker_change *ch = calloc((size_t)d->partitions + 1, sizeof(*ch));
    int n = 0;
    for (int p = 0; p < d->partitions; p++) {
        part_state *ps = &d->parts[p];
        const dlq_mark *mk = mark_of(ps, c->mark_off);
        marker_change *m = &ch[n];
        m->w = new_marker(d, c, p, &m->set);
        m->text = kj_dlq_marker_format(&m->set);
        if (!kj_dlq_marker_changed(mk->committed, mk->marks_text, ps->low, m->w, m->text)) {
            kj_dlq_ranges_free(&m->set);
            free(m->text);
            continue;
        }
        m->partition = p;
        n++;
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, d->topic, p);
        tp->offset = m->w;
        tp->metadata = strdup(m->text); /* freed by the list destroy */
        tp->metadata_size = strlen(m->text);
        if (tp->metadata_size > KJ_DLQ_MARKER_MAX_BYTES)
            kj_log(KJ_LOG_WARN, "dead-letter marker is large; the broker may refuse it",
                   "{s:s,s:i,s:i}", "group", group, "partition", p, "bytes",
                   (int)tp->metadata_size);
    }
    /* 1. the marker goes into the transaction with the copies (it also makes a discard's
     * transaction non-empty: librdkafka ends an empty one locally, without asking the
     * coordinator, so it would never learn it was fenced), then the transaction commits:
     * fenced if another replay or discard of this DLQ began since ours did (then nothing of
     * ours becomes visible and nothing is recorded) */
    int rc = KJ_DLQ_OK;
    rd_kafka_error_t *error = NULL;
    if (list->cnt) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(rk);
        error = rd_kafka_send_offsets_to_transaction(prod, list, cgmd, remaining_ms(d));
        rd_kafka_consumer_group_metadata_destroy(cgmd);
    }
    if (!error) error = rd_kafka_commit_transaction(prod, remaining_ms(d));
    while (error && rd_kafka_error_is_retriable(error) && kj_now_ms() < d->deadline) {
        rd_kafka_error_destroy(error);
        error = rd_kafka_commit_transaction(prod, remaining_ms(d));
    }
    if (error) {
        bool fenced = rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__FENCED ||
                      rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
                      rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
        kj_log(KJ_LOG_ERROR,
               fenced ? "another replay or discard of this DLQ began meanwhile: nothing was "
                        "recorded"
                      : "the dead-letter transaction did not commit: nothing was recorded",
               "{s:s,s:s,s:s}", "action", c->discard ? "discard" : "replay", "topic", d->topic,
               "error", rd_kafka_error_string(error));
        seterr(err, err_size, "%s: %s; nothing was %s",
               fenced ? "another replay or discard began meanwhile"
                      : "the transaction did not commit",
               rd_kafka_error_string(error), c->discard ? "discarded" : "replayed");
        rd_kafka_error_destroy(error);
        rd_kafka_error_t *aborted = rd_kafka_abort_transaction(prod, remaining_ms(d));
        if (aborted) rd_kafka_error_destroy(aborted); /* fenced: the broker aborted it already */
        rc = KJ_DLQ_ERR_MARKER;
    }
    /* 2. where the broker did not keep the transaction's offsets (the embedded broker answers
     * TxnOffsetCommit without storing it), the marker is committed again, plainly — only
     * where the group still holds the marker read after the fence, so a later run's marker
     * is never overwritten */
    if (rc == KJ_DLQ_OK && list->cnt) {
        rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_topic_partition_list_t *kept = rd_kafka_topic_partition_list_copy(list);
        rd_kafka_topic_partition_list_t *again = rd_kafka_topic_partition_list_new(list->cnt);
        re = rd_kafka_committed(rk, kept, remaining_ms(d));
        for (int i = 0; !re && i < kept->cnt; i++) {
            const rd_kafka_topic_partition_t *now = &kept->elems[i];
            const dlq_mark *before = mark_of(&d->parts[now->partition], c->mark_off);
            int64_t now_w = now->offset < 0 ? -1 : now->offset; /* none: -1, as read */
            bool unchanged =
                now_w == before->committed &&
                strlen(before->marks_text ? before->marks_text : "") == now->metadata_size &&
                (now->metadata_size == 0 ||
                 memcmp(now->metadata, before->marks_text, now->metadata_size) == 0);
            if (!now->err && unchanged) {
                const rd_kafka_topic_partition_t *ours = &list->elems[i];
                rd_kafka_topic_partition_t *tp =
                    rd_kafka_topic_partition_list_add(again, d->topic, ours->partition);
                tp->offset = ours->offset;
                tp->metadata = malloc(ours->metadata_size + 1);
                memcpy(tp->metadata, ours->metadata, ours->metadata_size);
                tp->metadata_size = ours->metadata_size;
            }
        }
        rd_kafka_topic_partition_list_destroy(kept);
        if (!re && again->cnt) re = rd_kafka_commit(rk, again, 0);
        for (int i = 0; !re && i < again->cnt; i++)
            re = again->elems[i].err;
        rd_kafka_topic_partition_list_destroy(again);
        for (int i = 0; !re && i < list->cnt; i++)
            re = list->elems[i].err;
        if (re) {
            if (c->discard)
                kj_log(KJ_LOG_ERROR, "the discard marker was not recorded: nothing was discarded",
                       "{s:s,s:s}", "group", group, "error", rd_kafka_err2str(re));
            else
                kj_log(KJ_LOG_ERROR,
                       "replayed, but the replay marker was not recorded: a later replay would "
                       "replay these again",
                       "{s:s,s:s}", "group", group, "error", rd_kafka_err2str(re));
            seterr(err, err_size, "the %s marker was not recorded (group %s): %s",
                   c->discard ? "discard" : "replay", group, rd_kafka_err2str(re));
            rc = KJ_DLQ_ERR_MARKER_ONLY;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    for (int i = 0; i < n; i++) {
        dlq_mark *mk = mark_of(&d->parts[ch[i].partition], c->mark_off);
        if (rc == KJ_DLQ_OK) { /* the handle now holds what the group holds */
            kj_dlq_ranges_free(&mk->marks);
            free(mk->marks_text);
            mk->committed = ch[i].w;
            mk->marks = ch[i].set;
            mk->marks_text = ch[i].text;
        } else {
            kj_dlq_ranges_free(&ch[i].set);
            free(ch[i].text);
        }
    }
    free(ch);
    return rc;
}

static void log_dry_run(const replay_ctx *c) {
    kj_log(KJ_LOG_INFO, "replay dry run: nothing produced", "{s:I,s:I,s:I,s:I,s:I,s:I}",
           "would_replay", (json_int_t)c->item_count, "skipped_already_replayed",
           (json_int_t)c->n.skipped_replayed, "skipped_refailed", (json_int_t)c->n.skipped_refailed,
           "skipped_no_origin", (json_int_t)c->n.skipped_no_origin, "skipped_no_value",
           (json_int_t)c->n.skipped_no_value, "skipped_discarded",
           (json_int_t)c->n.skipped_discarded);
}

static void log_finished(const replay_ctx *c) {
    kj_log(c->n.failed ? KJ_LOG_ERROR : KJ_LOG_INFO, "replay finished",
           "{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "replayed", (json_int_t)c->n.replayed, "failed",
           (json_int_t)c->n.failed, "skipped_already_replayed", (json_int_t)c->n.skipped_replayed,
           "skipped_refailed", (json_int_t)c->n.skipped_refailed, "skipped_no_origin",
           (json_int_t)c->n.skipped_no_origin, "skipped_no_value",
           (json_int_t)c->n.skipped_no_value, "skipped_discarded",
           (json_int_t)c->n.skipped_discarded);
}

static void report(const replay_ctx *c, size_t i, kj_dlq_replay_fn *each, void *opaque) {
    const replay_item *it = &c->items[i];
    kj_dlq_replay_item item = {.handle = it->handle,
                               .partition = it->msg->partition,
                               .offset = it->msg->offset,
                               .original_topic = it->orig_topic,
                               .acknowledged = it->status == 1};
    if (each) each(&item, opaque);
}

static void free_items(replay_ctx *c) {
    for (size_t i = 0; i < c->item_count; i++) {
        rd_kafka_message_destroy(c->items[i].msg);
        free(c->items[i].handle);
        free(c->items[i].orig_topic);
    }
    free(c->items);
}

static int replay(kj_dlq *d, replay_ctx *c, unsigned flags, kj_dlq_replay_fn *each, void *opaque,
                  char *err, size_t err_size) {
    bool dry = (flags & KJ_DLQ_REPLAY_DRY_RUN) != 0;
    int rc = KJ_DLQ_OK;
    rd_kafka_t *prod = dry ? NULL : fence(d, err, err_size, &rc);
    if (!dry && !prod) return rc;
    plan_all(d, c->again ? NULL : &c->mark_off); /* below the marker everything is handled */
    rc = read_dlq(d, on_replay_msg, c, err, err_size);
    if (rc != KJ_DLQ_OK) {
        if (prod) rd_kafka_destroy(prod);
        return rc;
    }
    c->n.selected = (long)c->item_count;
    if (dry) {
        for (size_t i = 0; i < c->item_count; i++)
            report(c, i, each, opaque);
        log_dry_run(c);
        return KJ_DLQ_OK;
    }
    rd_kafka_error_t *error = rd_kafka_begin_transaction(prod);
    if (error) {
        seterr(err, err_size, "cannot begin the replay transaction: %s",
               rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rc = KJ_DLQ_ERR_IO;
    } else {
        produce_copies(d, c, prod);
        long failed = 0;
        for (size_t i = 0; i < c->item_count; i++)
            failed += c->items[i].status != 1;
        if (failed) { /* all or nothing: none of the copies becomes visible */
            seterr(err, err_size, "%ld of %ld copies were not acknowledged; nothing was replayed",
                   failed, c->n.selected);
            rd_kafka_error_t *aborted = rd_kafka_abort_transaction(prod, remaining_ms(d));
            if (aborted) rd_kafka_error_destroy(aborted);
            rc = KJ_DLQ_ERR_NOT_ACKED;
        } else {
            rc = commit_marker(d, c, prod, err, err_size);
        }
    }
    rd_kafka_destroy(prod);
    if (rc == KJ_DLQ_ERR_MARKER_ONLY) {
        rc = KJ_DLQ_ERR_MARKER; /* the copies are committed: replayed, but not recorded */
    } else if (rc != KJ_DLQ_OK) {
        for (size_t i = 0; i < c->item_count; i++)
            c->items[i].status = 2; /* aborted with the transaction, or never produced */
    }
    for (size_t i = 0; i < c->item_count; i++) {
        if (c->items[i].status == 1)
            c->n.replayed++;
        else
            c->n.failed++;
        report(c, i, each, opaque);
    }
    log_finished(c);
    return rc;
}

int kj_dlq_replay(kj_dlq *d, const kj_dlq_filter *filter, unsigned flags, kj_dlq_replay_fn *each,
                  void *opaque, kj_dlq_replay_counts *counts, char *err, size_t err_size) {
    replay_ctx c = {.filter = filter,
                    .again = (flags & KJ_DLQ_REPLAY_AGAIN) != 0,
                    .mark_off = offsetof(part_state, replay)};
    int rc = replay(d, &c, flags, each, opaque, err, err_size);
    if (counts) *counts = c.n;
    free_items(&c);
    return rc;
}

/* Discard: select, then record the selection in the discard marker (in a transaction of its
 * own, for the fence); nothing is produced. */
static int discard(kj_dlq *d, replay_ctx *c, unsigned flags, kj_dlq_replay_fn *each, void *opaque,
                   char *err, size_t err_size) {
    bool dry = (flags & KJ_DLQ_REPLAY_DRY_RUN) != 0;
    int rc = KJ_DLQ_OK;
    rd_kafka_t *prod = dry ? NULL : fence(d, err, err_size, &rc);
    if (!dry && !prod) return rc;
    plan_all(d, &c->mark_off); /* below the discard marker everything is discarded */
    rc = read_dlq(d, on_discard_msg, c, err, err_size);
    c->n.selected = (long)c->item_count;
    if (rc == KJ_DLQ_OK && !dry) {
        for (size_t i = 0; i < c->item_count; i++)
            c->items[i].status = 1; /* to be recorded */
        rd_kafka_error_t *error = rd_kafka_begin_transaction(prod);
        if (error) {
            seterr(err, err_size, "cannot begin the discard transaction: %s",
                   rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rc = KJ_DLQ_ERR_IO;
        } else {
            rc = commit_marker(d, c, prod, err, err_size);
        }
        if (rc == KJ_DLQ_ERR_MARKER_ONLY) rc = KJ_DLQ_ERR_MARKER; /* no copies to keep */
        if (rc == KJ_DLQ_OK) c->n.discarded = (long)c->item_count;
    }
    if (prod) rd_kafka_destroy(prod);
    if (rc != KJ_DLQ_OK && rc != KJ_DLQ_ERR_MARKER) return rc; /* read or begin failed */
    for (size_t i = 0; i < c->item_count; i++) {
        if (rc != KJ_DLQ_OK || dry) c->items[i].status = dry ? 0 : 2;
        report(c, i, each, opaque);
    }
    kj_log(rc == KJ_DLQ_OK ? KJ_LOG_INFO : KJ_LOG_ERROR,
           dry ? "discard dry run: nothing recorded" : "discard finished", "{s:I,s:I,s:I}",
           dry ? "would_discard" : "discarded", (json_int_t)(dry ? c->n.selected : c->n.discarded),
           "skipped_already_discarded", (json_int_t)c->n.skipped_discarded, "partitions",
           (json_int_t)d->partitions);
    return rc;
}

int kj_dlq_discard(kj_dlq *d, const kj_dlq_filter *filter, unsigned flags, kj_dlq_replay_fn *each,
                   void *opaque, kj_dlq_replay_counts *counts, char *err, size_t err_size) {
    replay_ctx c = {.filter = filter, .discard = true, .mark_off = offsetof(part_state, discard)};
    int rc = discard(d, &c, flags, each, opaque, err, err_size);
    if (counts) *counts = c.n;
    free_items(&c);
    return rc;
}
