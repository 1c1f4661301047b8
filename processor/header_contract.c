/*
 * header_contract.c — the kjobs-* headers: writing them on retry, dead-letter and replayed
 * copies, and strict parsing and validation of the control headers on consumed ladder records
 * (see header_contract.h for the contract and the rules).
 */
#include "processor/header_contract.h"
#include "common/clock.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

bool kj_hdr_is_kjobs(const char *name) {
    return strncmp(name, KJ_HDR_PREFIX, sizeof(KJ_HDR_PREFIX) - 1) == 0;
}

bool kj_hdr_parse_uint(const void *val, size_t len, int64_t max, int64_t *out) {
    const unsigned char *p = val;
    if (!p || len == 0 || len > KJ_HDR_UINT_DIGITS_MAX) return false;
    uint64_t v = 0; /* 19 digits stay below 2^64 */
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (max < 0 || v > (uint64_t)max) return false;
    *out = (int64_t)v;
    return true;
}

/* The one value of header `name`: 0 found once, -1 missing, -2 repeated. */
static int header_once(const rd_kafka_headers_t *hdrs, const char *name, const void **val,
                       size_t *len) {
    if (!hdrs || rd_kafka_header_get(hdrs, 0, name, val, len)) return -1;
    const void *v2;
    size_t l2;
    if (rd_kafka_header_get(hdrs, 1, name, &v2, &l2) == 0) return -2;
    if (!*val) *len = 0;
    return 0;
}

static int invalid(kj_control *out, const char *header, const char *why) {
    out->invalid_header = header;
    snprintf(out->reason, sizeof(out->reason), "invalid %s header: %s", header, why);
    return -1;
}

/* The one value of control header `name`; when missing or repeated fills out, returns -1. */
static int control_once(const rd_kafka_headers_t *hdrs, const char *name, const void **val,
                        size_t *len, kj_control *out) {
    int rc = header_once(hdrs, name, val, len);
    if (rc == -1) return invalid(out, name, "missing");
    if (rc == -2) return invalid(out, name, "present more than once");
    return 0;
}

/* Reads one strict unsigned header into *v; on failure fills out and returns -1. */
static int uint_header(const rd_kafka_headers_t *hdrs, const char *name, int64_t max, int64_t *v,
                       kj_control *out) {
    const void *val;
    size_t len;
    if (control_once(hdrs, name, &val, &len, out)) return -1;
    if (!kj_hdr_parse_uint(val, len, max, v)) {
        char why[96];
        snprintf(why, sizeof(why), "not a decimal number in 0..%lld (%zu bytes)", (long long)max,
                 len);
        return invalid(out, name, why);
    }
    return 0;
}

static int64_t not_before_max(int64_t now_ms) {
    return now_ms + KJ_RETRY_MAX_DELAY_MS + KJ_CLOCK_SKEW_MS;
}

int kj_control_not_before(const rd_kafka_headers_t *hdrs, int64_t now_ms, int64_t *out) {
    kj_control scratch;
    return uint_header(hdrs, KJ_HDR_NOT_BEFORE, not_before_max(now_ms), out, &scratch);
}

bool kj_hdr_topic_ok(const void *val, size_t len) {
    const unsigned char *p = val;
    if (!p || len == 0 || len > KJ_TOPIC_NAME_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int kj_control_parse_ladder(const rd_kafka_headers_t *hdrs, int64_t now_ms, kj_control *out) {
    memset(out, 0, sizeof(*out));
    int64_t v;
    if (uint_header(hdrs, KJ_HDR_ATTEMPT, KJ_ATTEMPT_MAX, &v, out)) return -1;
    {
        const void *pv;
        size_t pl;
        if (rd_kafka_header_get(hdrs, 0, KJ_HDR_PARKED_BEHIND, &pv, &pl) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            int64_t behind;
            if (uint_header(hdrs, KJ_HDR_PARKED_BEHIND, INT64_MAX, &behind, out)) return -1;
            out->parked = true;
            out->parked_behind = behind;
        }
    }
    if (v < 1 && !out->parked) {
        const void *dv;
        size_t dl;
        if (header_once(hdrs, KJ_HDR_RUN_AT, &dv, &dl) != 0 &&
            header_once(hdrs, KJ_HDR_DELIVER_AT, &dv, &dl) != 0)
            return invalid(out, KJ_HDR_ATTEMPT, "0 (attempts start at 1)");
        /* a scheduled copy (kjobs-run-at, or its alias on a copy of a record that used the
         * alias): no attempt made yet, its first run is attempt 1 */
    }
    out->attempt = (int)v;
    int64_t max_nb = not_before_max(now_ms);
    if (uint_header(hdrs, KJ_HDR_NOT_BEFORE, max_nb, &out->not_before_ms, out)) {
        const void *val;
        size_t len;
        if (header_once(hdrs, KJ_HDR_NOT_BEFORE, &val, &len) == 0 &&
            kj_hdr_parse_uint(val, len, INT64_MAX, &v))
            snprintf(out->reason, sizeof(out->reason),
                     "invalid " KJ_HDR_NOT_BEFORE " header: %lld ms ahead, more than the longest "
                     "retry delay (30 days)",
                     (long long)(v - now_ms));
        return -1;
    }
    const void *val;
    size_t len;
    if (control_once(hdrs, KJ_HDR_ORIGINAL_TOPIC, &val, &len, out)) return -1;
    if (!kj_hdr_topic_ok(val, len))
        return invalid(out, KJ_HDR_ORIGINAL_TOPIC, "not a Kafka topic name");
    memcpy(out->original_topic, val, len);
    out->original_topic[len] = '\0';
    if (uint_header(hdrs, KJ_HDR_ORIGINAL_PARTITION, INT32_MAX, &v, out)) return -1;
    out->original_partition = (int32_t)v;
    if (uint_header(hdrs, KJ_HDR_ORIGINAL_OFFSET, INT64_MAX, &out->original_offset, out)) return -1;
    return 0;
}

int64_t kj_ladder_grain_ms(int64_t step_delay_ms) {
    int64_t grain = step_delay_ms / 10;
    return grain < 1 ? 1 : grain > KJ_LADDER_GRAIN_MAX_MS ? KJ_LADDER_GRAIN_MAX_MS : grain;
}

int64_t kj_ladder_release_grain_ms(const rd_kafka_headers_t *hdrs, int64_t step_delay_ms) {
    const void *v;
    size_t n;
    int64_t attempt;
    /* the contract's own reading (present once, strict decimal), as kj_control_parse_ladder */
    bool attempt_0 = header_once(hdrs, KJ_HDR_ATTEMPT, &v, &n) == 0 &&
                     kj_hdr_parse_uint(v, n, KJ_ATTEMPT_MAX, &attempt) && attempt == 0;
    return attempt_0 ? 1 : kj_ladder_grain_ms(step_delay_ms);
}

int64_t kj_control_hold_until(int64_t not_before_ms, int64_t record_ts_ms, int64_t now_ms,
                              int64_t step_delay_ms, int64_t grain_ms) {
    int64_t base = record_ts_ms > 0 && record_ts_ms < now_ms ? record_ts_ms : now_ms;
    int64_t cap = base + step_delay_ms;
    int64_t at = not_before_ms < cap ? not_before_ms : cap;
    int64_t grain = grain_ms > 1 ? grain_ms : 1;
    return at > 0 ? (at + grain - 1) / grain * grain : at; /* up to the grain's next multiple */
}

/* One scheduling header of a main-topic record: 0 absent, 1 valid (*due set), -1 repeated or
 * not strict decimal epoch ms (reason filled, naming it). */
static int run_at_one(const rd_kafka_headers_t *hdrs, const char *name, int64_t *due, char *reason,
                      size_t reason_size) {
    const void *val;
    size_t len;
    int rc = header_once(hdrs, name, &val, &len);
    if (rc == -1) return 0;
    if (rc == -2) {
        snprintf(reason, reason_size, "invalid %s header: present more than once", name);
        return -1;
    }
    if (!kj_hdr_parse_uint(val, len, INT64_MAX, due)) {
        snprintf(reason, reason_size,
                 "invalid %s header: not a decimal epoch time in ms (%zu bytes)", name, len);
        return -1;
    }
    /* 10^9..10^11 ms is January 1970 to March 1973: no producer means that; it is the epoch
     * SECONDS of 2001..5138 (Python's int(time.time())), which would otherwise run at once */
    if (*due >= INT64_C(1000000000) && *due < INT64_C(100000000000)) {
        snprintf(reason, reason_size,
                 "invalid %s header: %lld looks like epoch seconds; it must be epoch "
                 "milliseconds (%lld000)",
                 name, (long long)*due, (long long)*due);
        return -1;
    }
    return 1;
}

kj_run_at_status kj_run_at_parse(const rd_kafka_headers_t *hdrs, int64_t now_ms,
                                 int64_t max_delay_ms, int64_t *due_ms, const char **header,
                                 char *reason, size_t reason_size) {
    const char *scratch;
    if (!header) header = &scratch;
    *header = NULL;
    int64_t due = 0, alias_due = 0;
    int run_at = run_at_one(hdrs, KJ_HDR_RUN_AT, &due, reason, reason_size);
    if (run_at < 0) {
        *header = KJ_HDR_RUN_AT;
        return KJ_RUN_AT_INVALID;
    }
    int alias = run_at_one(hdrs, KJ_HDR_DELIVER_AT, &alias_due, reason, reason_size);
    if (alias < 0) {
        *header = KJ_HDR_DELIVER_AT;
        return KJ_RUN_AT_INVALID;
    }
    if (!run_at && !alias) return KJ_RUN_AT_NONE;
    *header = run_at ? KJ_HDR_RUN_AT : KJ_HDR_DELIVER_AT;
    if (run_at && alias && due != alias_due) {
        snprintf(reason, reason_size,
                 "invalid " KJ_HDR_RUN_AT
                 " header: %lld, but its deprecated alias " KJ_HDR_DELIVER_AT
                 " says %lld (both must be the same time)",
                 (long long)due, (long long)alias_due);
        return KJ_RUN_AT_INVALID;
    }
    if (!run_at) due = alias_due;
    if (due > now_ms && due - now_ms > max_delay_ms) {
        snprintf(reason, reason_size,
                 "%s too far ahead: due in %lld ms, more than schedule.max_delay (%lld ms)",
                 *header, (long long)(due - now_ms), (long long)max_delay_ms);
        return KJ_RUN_AT_TOO_FAR;
    }
    *due_ms = due;
    return KJ_RUN_AT_VALID;
}

/* n ASCII digits at *p (advanced), or -1. */
static int digits(const char **p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

int kj_parse_rfc3339_ms(const char *s, int64_t *out_ms) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s) return -1;
    const char *p = s;
    int y = digits(&p, 4);
    if (y < 0 || *p++ != '-') return -1;
    int mo = digits(&p, 2);
    if (mo < 1 || mo > 12 || *p++ != '-') return -1;
    int d = digits(&p, 2);
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap)) return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return -1;
    p++;
    int h = digits(&p, 2);
    if (h < 0 || h > 23 || *p++ != ':') return -1;
    int mi = digits(&p, 2);
    if (mi < 0 || mi > 59 || *p++ != ':') return -1;
    int se = digits(&p, 2);
    if (se < 0 || se > 59) return -1;
    int ms = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3) ms = ms * 10 + (*p - '0');
        if (n == 0) return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh = digits(&p, 2);
        if (oh < 0 || oh > 23 || *p++ != ':') return -1;
        int om = digits(&p, 2);
        if (om < 0 || om > 59) return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p) return -1;
    int64_t secs = kj_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_min * 60;
    *out_ms = secs * 1000 + ms;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

void kj_hdr_set(rd_kafka_headers_t *h, const char *name, const char *value) {
    rd_kafka_header_remove(h, name);
    rd_kafka_header_add(h, name, -1, value, -1);
}

void kj_hdr_set_int(rd_kafka_headers_t *h, const char *name, int64_t value) {
    char buf[24]; /* "-9223372036854775808" */
    snprintf(buf, sizeof(buf), "%" PRId64, value);
    kj_hdr_set(h, name, buf);
}

/* kj_hdr_set / kj_hdr_set_int, without the remove scan when the list is known to hold no
 * header of that name (`fresh`) */
static void put(rd_kafka_headers_t *h, bool fresh, const char *name, const char *value,
                ssize_t len) {
    if (!fresh) rd_kafka_header_remove(h, name);
    rd_kafka_header_add(h, name, -1, value, len);
}

/* The decimal digits of `value` as snprintf's "%" PRId64 writes them, without its cost (five
 * integers per routed copy). */
static void put_int(rd_kafka_headers_t *h, bool fresh, const char *name, int64_t value) {
    char buf[24]; /* "-9223372036854775808" */
    char *p = buf + sizeof(buf);
    uint64_t u = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (value < 0) *--p = '-';
    put(h, fresh, name, p, (ssize_t)(buf + sizeof(buf) - p));
}

void kj_hdr_write_failure(rd_kafka_headers_t *h, const kj_hdr_failure *f) {
    /* The common case — a main-topic job without headers failed — has nothing to replace:
     * eleven remove scans per routed copy saved (the retry path, bench/README.md). */
    bool fresh = rd_kafka_header_cnt(h) == 0;
    put(h, fresh, KJ_HDR_ORIGINAL_TOPIC, f->original_topic, -1);
    put_int(h, fresh, KJ_HDR_ORIGINAL_PARTITION, f->original_partition);
    put_int(h, fresh, KJ_HDR_ORIGINAL_OFFSET, f->original_offset);
    put_int(h, fresh, KJ_HDR_ATTEMPT, f->attempt);
    put_int(h, fresh, KJ_HDR_NOT_BEFORE, f->not_before_ms);
    put(h, fresh, KJ_HDR_ERROR, f->error, -1);
    put(h, fresh, KJ_HDR_ERROR_CLASS, f->error_class, -1);
    put_int(h, fresh, KJ_HDR_FAILED_AT, f->failed_at_ms);
    put(h, fresh, KJ_HDR_WORKER, f->worker, -1);
    if (!fresh) rd_kafka_header_remove(h, KJ_HDR_TRUNCATED); /* only a reduced dead letter */
    if (f->parked)
        put_int(h, fresh, KJ_HDR_PARKED_BEHIND, f->parked_behind);
    else if (!fresh)
        rd_kafka_header_remove(h, KJ_HDR_PARKED_BEHIND);
}

void kj_hdr_write_replay(rd_kafka_headers_t *h, const char *dlq_topic, int32_t partition,
                         int64_t offset, int64_t now_ms) {
    char buf[KJ_HDR_REPLAYED_FROM_MAX + 1];
    snprintf(buf, sizeof(buf), "%s:%" PRId32 ":%" PRId64, dlq_topic, partition, offset);
    rd_kafka_header_add(h, KJ_HDR_REPLAYED_FROM, -1, buf, -1);
    snprintf(buf, sizeof(buf), "%" PRId64, now_ms);
    rd_kafka_header_add(h, KJ_HDR_REPLAYED_AT, -1, buf, -1);
}
