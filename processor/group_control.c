/*
 * group_control.c — the operator controls' wire form, the state built from it, and the small
 * clients that read and write the control topic. Design: group_control.h.
 */
#include "processor/group_control.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pwd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/utf8.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/topic_layout.h"
#include "processor/topic_reader.h"

/* ---- the wire form -------------------------------------------------------------------------- */

bool kj_ctl_topic_valid(const char *s, size_t n) {
    if (!s || n == 0 || n > KJ_CTL_TOPIC_MAX) return false;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* A partition number: decimal digits, no sign, no leading zero (but "0"), <= INT32_MAX. */
static int parse_partition(const char *s, size_t n, int32_t *out) {
    if (n == 0 || n > 10 || (n > 1 && s[0] == '0')) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

int kj_ctl_key_parse(const void *key, size_t len, kj_ctl_key *out) {
    const char *k = key;
    if (!k || len == 0 || len > KJ_CTL_MAX_KEY) return -1;
    memset(out, 0, sizeof(*out));
    if (len == strlen(KJ_CTL_BREAKER_KEY) && memcmp(k, KJ_CTL_BREAKER_KEY, len) == 0) {
        out->kind = KJ_CTL_BREAKER_RESUME;
        out->partition = -1;
        return 0;
    }
    if (len <= 6 || memcmp(k, "pause/", 6) != 0) return -1;
    const char *topic = k + 6;
    size_t rest = len - 6;
    const char *slash = memchr(topic, '/', rest);
    size_t tlen = slash ? (size_t)(slash - topic) : rest;
    if (!kj_ctl_topic_valid(topic, tlen)) return -1;
    out->partition = -1;
    if (slash && parse_partition(slash + 1, rest - tlen - 1, &out->partition) != 0) return -1;
    out->kind = KJ_CTL_PAUSE;
    memcpy(out->topic, topic, tlen);
    out->topic[tlen] = '\0';
    return 0;
}

int kj_ctl_key_format(const kj_ctl_key *k, char *buf, size_t size) {
    int n;
    if (k->kind == KJ_CTL_BREAKER_RESUME)
        n = snprintf(buf, size, "%s", KJ_CTL_BREAKER_KEY);
    else if (k->partition < 0)
        n = snprintf(buf, size, "pause/%s", k->topic);
    else
        n = snprintf(buf, size, "pause/%s/%d", k->topic, (int)k->partition);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* A JSON string field cut to max bytes on a UTF-8 boundary (jansson strings are valid UTF-8);
 * absent: "". -1 when present but not a string. */
static int copy_text(const json_t *o, const char *name, char *dst, size_t max) {
    json_t *v = json_object_get(o, name);
    dst[0] = '\0';
    if (!v) return 0;
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n)) n = strlen(s); /* a \u0000 ends it */
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int kj_ctl_value_parse(const kj_ctl_key *k, const void *value, size_t len, kj_ctl_value *out) {
    memset(out, 0, sizeof(*out));
    if (!value || len == 0) { /* tombstone */
        if (k->kind != KJ_CTL_PAUSE) return -1;
        out->paused = false;
        return 0;
    }
    if (len > KJ_CTL_MAX_VALUE) return -1;
    json_t *o = json_loadb(value, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = -1;
    if (!json_is_object(o)) goto out;
    json_t *ver = json_object_get(o, "v"), *at = json_object_get(o, "at");
    if (!json_is_integer(ver) || json_integer_value(ver) < KJ_CTL_VERSION) goto out;
    /* epoch ms, at most 2^53 (what JSON numbers hold exactly): "at" + a slack never overflows */
    if (!json_is_integer(at) || json_integer_value(at) < 0 ||
        json_integer_value(at) > 9007199254740992LL)
        goto out;
    out->at = json_integer_value(at);
    if (copy_text(o, "by", out->by, KJ_CTL_MAX_BY) != 0) goto out;
    if (k->kind == KJ_CTL_PAUSE) {
        json_t *paused = json_object_get(o, "paused");
        if (!json_is_boolean(paused)) goto out;
        out->paused = json_is_true(paused);
        if (copy_text(o, "reason", out->reason, KJ_CTL_MAX_REASON) != 0) goto out;
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

char *kj_ctl_value_format(kj_ctl_kind kind, const kj_ctl_value *v) {
    json_t *o = json_pack("{s:i,s:I}", "v", KJ_CTL_VERSION, "at", (json_int_t)v->at);
    if (!o) return NULL;
    if (kind == KJ_CTL_PAUSE) json_object_set_new(o, "paused", json_boolean(v->paused));
    json_object_set_new(o, "by", kj_utf8_json_string(v->by, strnlen(v->by, KJ_CTL_MAX_BY)));
    if (kind == KJ_CTL_PAUSE && v->reason[0])
        json_object_set_new(o, "reason",
                            kj_utf8_json_string(v->reason, strnlen(v->reason, KJ_CTL_MAX_REASON)));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

int kj_ctl_target_parse(const char *arg, kj_ctl_key *out, char *err, size_t errsz) {
    memset(out, 0, sizeof(*out));
    out->kind = KJ_CTL_PAUSE;
    out->partition = -1;
    const char *colon = arg ? strrchr(arg, ':') : NULL;
    size_t tlen = colon ? (size_t)(colon - arg) : (arg ? strlen(arg) : 0);
    if (!kj_ctl_topic_valid(arg, tlen)) {
        snprintf(err, errsz,
                 "'%s': expected TOPIC or TOPIC:PARTITION, a topic name being 1..249 of "
                 "[A-Za-z0-9._-]",
                 arg ? arg : "");
        return -1;
    }
    if (colon && parse_partition(colon + 1, strlen(colon + 1), &out->partition) != 0) {
        snprintf(err, errsz, "'%s': the partition must be a number 0..2147483647", arg);
        return -1;
    }
    memcpy(out->topic, arg, tlen);
    out->topic[tlen] = '\0';
    return 0;
}

/* ---- the state ------------------------------------------------------------------------------ */

struct kj_ctl_state {
    kj_ctl_pause *items;
    size_t count, cap;
    bool sorted;
    int64_t breaker_at;
    uint64_t ignored;
};

kj_ctl_state *kj_ctl_state_new(void) {
    kj_ctl_state *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->breaker_at = -1;
    return s;
}

void kj_ctl_state_free(kj_ctl_state *s) {
    if (!s) return;
    free(s->items);
    free(s);
}

static kj_ctl_pause *find(const kj_ctl_state *s, const char *topic, int32_t partition) {
    for (size_t i = 0; i < s->count; i++)
        if (s->items[i].partition == partition && strcmp(s->items[i].topic, topic) == 0)
            return &s->items[i];
    return NULL;
}

kj_ctl_change kj_ctl_state_apply(kj_ctl_state *s, const void *key, size_t key_len,
                                 const void *value, size_t value_len, kj_ctl_key *kout,
                                 kj_ctl_value *vout) {
    kj_ctl_key k;
    kj_ctl_value v;
    if (kj_ctl_key_parse(key, key_len, &k) != 0 ||
        kj_ctl_value_parse(&k, value, value_len, &v) != 0) {
        s->ignored++;
        return KJ_CTL_IGNORED;
    }
    if (kout) *kout = k;
    if (vout) *vout = v;
    if (k.kind == KJ_CTL_BREAKER_RESUME) {
        s->breaker_at = v.at;
        return KJ_CTL_BREAKER;
    }
    kj_ctl_pause *p = find(s, k.topic, k.partition);
    if (!v.paused) {
        if (!p) return KJ_CTL_UNCHANGED;
        *p = s->items[--s->count];
        s->sorted = false;
        return KJ_CTL_RESUMED;
    }
    if (p) {
        bool same = strcmp(p->by, v.by) == 0 && strcmp(p->reason, v.reason) == 0;
        p->at = v.at;
        snprintf(p->by, sizeof(p->by), "%s", v.by);
        snprintf(p->reason, sizeof(p->reason), "%s", v.reason);
        return same ? KJ_CTL_UNCHANGED : KJ_CTL_PAUSED;
    }
    if (s->count >= KJ_CTL_MAX_PAUSES) {
        s->ignored++;
        return KJ_CTL_IGNORED;
    }
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        kj_ctl_pause *items = realloc(s->items, cap * sizeof(*items));
        if (!items) abort();
        s->items = items;
        s->cap = cap;
    }
    p = &s->items[s->count++];
    memset(p, 0, sizeof(*p));
    snprintf(p->topic, sizeof(p->topic), "%s", k.topic);
    p->partition = k.partition;
    p->at = v.at;
    snprintf(p->by, sizeof(p->by), "%s", v.by);
    snprintf(p->reason, sizeof(p->reason), "%s", v.reason);
    s->sorted = false;
    return KJ_CTL_PAUSED;
}

const kj_ctl_pause *kj_ctl_state_paused(const kj_ctl_state *s, const char *topic,
                                        int32_t partition) {
    const kj_ctl_pause *p = find(s, topic, partition);
    return p ? p : find(s, topic, -1);
}

static int by_target(const void *a, const void *b) {
    const kj_ctl_pause *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    if (c) return c;
    return (x->partition > y->partition) - (x->partition < y->partition);
}

const kj_ctl_pause *kj_ctl_state_list(kj_ctl_state *s, size_t *n) {
    if (!s->sorted && s->count > 1) qsort(s->items, s->count, sizeof(*s->items), by_target);
    s->sorted = true;
    *n = s->count;
    return s->items;
}

int64_t kj_ctl_state_breaker_resume_at(const kj_ctl_state *s) {
    return s->breaker_at;
}

uint64_t kj_ctl_state_ignored(const kj_ctl_state *s) {
    return s->ignored;
}

json_t *kj_ctl_pause_json(const kj_ctl_pause *p) {
    return json_pack("{s:s,s:o,s:I,s:s,s:s}", "topic", p->topic, "partition",
                     p->partition >= 0 ? json_integer(p->partition) : json_null(), "at",
                     (json_int_t)p->at, "by", p->by, "reason", p->reason);
}

/* ---- the follower --------------------------------------------------------------------------- */

struct kj_ctl_follower {
    const kj_config *cfg;
    char *topic;
    rd_kafka_t *rk;
    kj_ctl_state *state;
    bool active;       /* the topic exists and is assigned from its end */
    bool warned;       /* a malformed record was logged */
    int64_t next;      /* the offset after the last record read */
    int64_t next_warn; /* a consume error is logged at most every 30 s */
};

kj_ctl_follower *kj_ctl_follower_new(const kj_config *cfg, char *err, size_t errsz) {
    kj_ctl_follower *f = calloc(1, sizeof(*f));
    if (!f) abort();
    f->cfg = cfg;
    f->topic = kj_topic_control(cfg);
    f->state = kj_ctl_state_new();
    char group[512];
    snprintf(group, sizeof(group), "%s.control-reader", cfg->group);
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(cfg, err, errsz);
    if (!conf || kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, errsz) ||
        kj_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, errsz) ||
        kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, errsz) ||
        kj_kafka_conf_set(conf, "allow.auto.create.topics", "false", err, errsz) ||
        kj_kafka_conf_set(conf, "group.id", group, err, errsz)) {
        if (conf) rd_kafka_conf_destroy(conf);
        kj_ctl_follower_free(f);
        return NULL;
    }
    if (!(f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz))) {
        rd_kafka_conf_destroy(conf);
        kj_ctl_follower_free(f);
        return NULL;
    }
    return f;
}

void kj_ctl_follower_free(kj_ctl_follower *f) {
    if (!f) return;
    if (f->rk) { /* never subscribed: close leaves no group and commits nothing */
        rd_kafka_consumer_close(f->rk);
        rd_kafka_destroy(f->rk);
    }
    kj_ctl_state_free(f->state);
    free(f->topic);
    free(f);
}

/* Whether the topic exists: every topic's metadata, so that asking never creates it. 1 yes,
 * 0 no, -1 the cluster did not answer. */
static int topic_exists(rd_kafka_t *rk, const char *topic, int timeout_ms) {
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) return -1;
    int found = 0;
    for (int i = 0; i < md->topic_cnt && !found; i++)
        found = strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err &&
                md->topics[i].partition_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return found;
}

/* One record into the state; a malformed one is logged once per follower. */
static kj_ctl_change apply(kj_ctl_follower *f, const rd_kafka_message_t *m, kj_ctl_key *k,
                           kj_ctl_value *v) {
    kj_ctl_change c =
        kj_ctl_state_apply(f->state, m->key, m->key_len, m->payload, m->payload ? m->len : 0, k, v);
    if (c == KJ_CTL_IGNORED && !f->warned) {
        f->warned = true;
        kj_log(KJ_LOG_WARN,
               "control record ignored: not a valid control, or a pause past the most kept "
               "(logged once; the previous state of "
               "its key stays)",
               "{s:s,s:I,s:i}", "topic", f->topic, "offset", (json_int_t)m->offset, "key_bytes",
               (int)m->key_len);
    }
    return c;
}

static bool on_snapshot_record(rd_kafka_message_t *m, size_t index, void *opaque) {
    (void)index;
    apply(opaque, m, NULL, NULL);
    rd_kafka_message_destroy(m);
    return true;
}

int kj_ctl_follower_load(kj_ctl_follower *f, int64_t deadline_ms, char *err, size_t errsz) {
    int left = (int)(deadline_ms - kj_now_ms());
    int exists = topic_exists(f->rk, f->topic, left > 1000 ? left : 1000);
    if (exists < 0) {
        snprintf(err, errsz, "cannot read metadata to find the control topic %s", f->topic);
        return -1;
    }
    if (!exists) return 1;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e;
    /* a cluster moving or electing leaders (a topic just created, a broker restarting) answers
     * "not leader" and the like for a while: ask again until the deadline */
    for (;;) {
        left = (int)(deadline_ms - kj_now_ms());
        e = rd_kafka_query_watermark_offsets(f->rk, f->topic, 0, &lo, &hi,
                                             left > 1000 ? left : 1000);
        bool transient = e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                         e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                         e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                         e == RD_KAFKA_RESP_ERR_NOT_COORDINATOR ||
                         e == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ||
                         e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                         e == RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH ||
                         e == RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH ||
                         e == RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE;
        if (!e || !transient || kj_now_ms() + 250 >= deadline_ms) break;
        nanosleep(&(struct timespec){.tv_nsec = 250 * 1000000L}, NULL);
    }
    if (e) {
        snprintf(err, errsz, "control topic %s: cannot read its offsets: %s", f->topic,
                 rd_kafka_err2str(e));
        return -1;
    }
    kj_read_range range = {f->topic, 0, lo, hi};
    kj_read_opts opts = {.deadline_ms = deadline_ms, .what = "control topic"};
    kj_read_result rc =
        kj_topic_read(f->rk, &range, 1, on_snapshot_record, f, &opts, NULL, err, errsz);
    if (rc != KJ_READ_DONE) return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, f->topic, 0)->offset = hi;
    e = rd_kafka_assign(f->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(err, errsz, "control topic %s: cannot follow it: %s", f->topic,
                 rd_kafka_err2str(e));
        return -1;
    }
    f->active = true;
    f->next = hi;
    return 0;
}

int kj_ctl_follower_poll(kj_ctl_follower *f, int max, kj_ctl_change_fn *fn, void *opaque) {
    if (!f || !f->active) return 0;
    int n = 0;
    rd_kafka_message_t *m;
    while (n < max && (m = rd_kafka_consumer_poll(f->rk, 0)) != NULL) {
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && kj_now_ms() >= f->next_warn) {
                f->next_warn = kj_now_ms() + 30000;
                kj_log(KJ_LOG_WARN, "control topic: consume error", "{s:s,s:s}", "topic", f->topic,
                       "error", rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        n++;
        if (m->offset >= f->next) f->next = m->offset + 1;
        kj_ctl_key k;
        kj_ctl_value v;
        kj_ctl_change c = apply(f, m, &k, &v);
        rd_kafka_message_destroy(m);
        if (c != KJ_CTL_IGNORED && c != KJ_CTL_UNCHANGED && fn) fn(c, &k, &v, opaque);
    }
    return n;
}

bool kj_ctl_follower_catch_up(kj_ctl_follower *f, int64_t offset, int64_t deadline_ms,
                              kj_ctl_change_fn *fn, void *opaque) {
    if (!f || !f->active) return false;
    for (;;) {
        kj_ctl_follower_poll(f, 1000, fn, opaque);
        if (f->next > offset) return true;
        if (kj_now_ms() >= deadline_ms) return false;
        /* wait for the next record (or nothing) without spinning; it is handed to poll */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(f->rk, 100);
        if (!m) continue;
        if (!m->err) {
            if (m->offset >= f->next) f->next = m->offset + 1;
            kj_ctl_key k;
            kj_ctl_value v;
            kj_ctl_change c = apply(f, m, &k, &v);
            if (c != KJ_CTL_IGNORED && c != KJ_CTL_UNCHANGED && fn) fn(c, &k, &v, opaque);
        }
        rd_kafka_message_destroy(m);
    }
}

kj_ctl_state *kj_ctl_follower_state(kj_ctl_follower *f) {
    return f->state;
}

bool kj_ctl_follower_active(const kj_ctl_follower *f) {
    return f && f->active;
}

/* ---- writing -------------------------------------------------------------------------------- */

typedef struct write_result {
    bool done;
    rd_kafka_resp_err_t err;
    int64_t offset;
} write_result;

static void on_write_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)opaque;
    (void)rk;
    write_result *r = m->_private;
    if (!r) return;
    r->done = true;
    r->err = m->err;
    r->offset = m->offset;
}

/* How many partitions `topic` has in `md`: -1 when it is not there. */
static int partitions_of(const struct rd_kafka_metadata *md, const char *topic) {
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err)
            return md->topics[i].partition_cnt;
    return -1;
}

/* What the control state says about pause key `k`: *present (that exact pause is in force) and
 * *full (KJ_CTL_MAX_PAUSES are, the most a follower keeps: it would ignore one more). 0, or -1
 * when the state could not be read (err). */
static int probe_state(const kj_config *cfg, const kj_ctl_key *k, int timeout_ms, bool *present,
                       bool *full, char *err, size_t errsz) {
    kj_ctl_follower *f = kj_ctl_follower_new(cfg, err, errsz);
    if (!f) return -1;
    int rc = kj_ctl_follower_load(f, kj_now_ms() + timeout_ms, err, errsz) == 0 ? 0 : -1;
    if (rc == 0) {
        size_t n = 0;
        const kj_ctl_pause *all = kj_ctl_state_list(kj_ctl_follower_state(f), &n);
        *present = false;
        for (size_t i = 0; i < n && !*present; i++)
            *present = all[i].partition == k->partition && strcmp(all[i].topic, k->topic) == 0;
        *full = n >= KJ_CTL_MAX_PAUSES;
    }
    kj_ctl_follower_free(f);
    return rc;
}

int kj_ctl_write(const kj_config *cfg, const kj_ctl_key *k, const kj_ctl_value *v, int timeout_ms,
                 int64_t *offset, char *err, size_t errsz) {
    char key[KJ_CTL_MAX_KEY + 1];
    if (kj_ctl_key_format(k, key, sizeof(key)) < 0) {
        snprintf(err, errsz, "control key too long");
        return 2;
    }
    char *value = v ? kj_ctl_value_format(k->kind, v) : NULL;
    if (v && !value) abort();
    char *topic = kj_topic_control(cfg);
    int rc = -1;
    rd_kafka_t *rk = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_conf_t *conf = kj_kafka_producer_conf_new(cfg, err, errsz);
    if (!conf || kj_kafka_conf_set(conf, "allow.auto.create.topics", "false", err, errsz)) {
        if (conf) rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_write_delivery);
    if (!(rk = kj_kafka_producer_new(conf, err, errsz))) goto out;
    /* every topic's metadata: asking for one by name could create it */
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (e) {
        snprintf(err, errsz, "cannot read metadata from %s: %s", cfg->bootstrap,
                 rd_kafka_err2str(e));
        goto out;
    }
    if (partitions_of(md, topic) <= 0) {
        snprintf(err, errsz,
                 "the control topic %s does not exist (create it with `kjobs topics --create`; "
                 "`kjobs broker` makes it on the embedded broker)",
                 topic);
        rc = 1;
        goto out;
    }
    bool present = false, full = false;
    if (k->kind == KJ_CTL_PAUSE &&
        probe_state(cfg, k, timeout_ms, &present, &full, err, errsz) != 0)
        goto out;
    if (k->kind == KJ_CTL_PAUSE && v && v->paused && full && !present) {
        snprintf(err, errsz,
                 "%d pauses are in force, the most a worker keeps: resume some first (a pause "
                 "past that would be ignored)",
                 KJ_CTL_MAX_PAUSES);
        rc = 2;
        goto out;
    }
    /* a pause, or a resume of what is not paused, must name a topic (and partition) that is
     * there; a pause in force can always be resumed, whatever became of its topic */
    if (k->kind == KJ_CTL_PAUSE && !(present && !(v && v->paused))) {
        int n = partitions_of(md, k->topic);
        if (n <= 0) {
            snprintf(err, errsz, "topic %s does not exist", k->topic);
            rc = 2;
            goto out;
        }
        if (k->partition >= n) {
            snprintf(err, errsz, "topic %s has no partition %d (it has %d)", k->topic,
                     (int)k->partition, n);
            rc = 2;
            goto out;
        }
    }
    write_result res = {0};
    e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE(value, value ? strlen(value) : 0),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&res), RD_KAFKA_V_END);
    if (e) {
        snprintf(err, errsz, "cannot produce to %s: %s", topic, rd_kafka_err2str(e));
        goto out;
    }
    rd_kafka_flush(rk, timeout_ms);
    if (!res.done) {
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(rk, 0);
        snprintf(err, errsz, "%s: not acknowledged within %d ms", topic, timeout_ms);
        goto out;
    }
    if (res.err) {
        snprintf(err, errsz, "%s: %s", topic, rd_kafka_err2str(res.err));
        goto out;
    }
    if (offset) *offset = res.offset;
    rc = 0;
out:
    if (md) rd_kafka_metadata_destroy(md);
    if (rk) rd_kafka_destroy(rk);
    free(value);
    free(topic);
    return rc;
}

void kj_ctl_whoami(char *buf, size_t size) {
    char host[128] = "unknown";
    gethostname(host, sizeof(host) - 1);
    const char *user = getenv("USER");
    if (!user || !*user) user = getenv("LOGNAME");
    char pwbuf[1024], uid[32];
    struct passwd pw, *found = NULL;
    if ((!user || !*user) && getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &found) == 0 &&
        found && found->pw_name && *found->pw_name)
        user = found->pw_name;
    if (!user || !*user) { /* a container's user without a passwd entry */
        snprintf(uid, sizeof(uid), "uid %u", (unsigned)geteuid());
        user = uid;
    }
    snprintf(buf, size, "%s@%s", user, host);
}
