/*
 * control_headers.c — strict parsing and validation of kjobs control headers on consumed
 * ladder records (see control_headers.h for the rules).
 */
#include "processor/control_headers.h"

#include <stdio.h>
#include <string.h>

bool kj_control_parse_uint(const void *val, size_t len, int64_t max, int64_t *out) {
    const unsigned char *p = val;
    if (!p || len == 0 || len > 19) return false;
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

/* Reads one strict unsigned header into *v; on failure fills out and returns -1. */
static int uint_header(const rd_kafka_headers_t *hdrs, const char *name, int64_t max, int64_t *v,
                       kj_control *out) {
    const void *val;
    size_t len;
    int rc = header_once(hdrs, name, &val, &len);
    if (rc == -1) return invalid(out, name, "missing");
    if (rc == -2) return invalid(out, name, "present more than once");
    if (!kj_control_parse_uint(val, len, max, v)) {
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
    return uint_header(hdrs, "kjobs-not-before", not_before_max(now_ms), out, &scratch);
}

static bool topic_name_ok(const void *val, size_t len) {
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
    if (uint_header(hdrs, "kjobs-attempt", KJ_ATTEMPT_MAX, &v, out)) return -1;
    if (v < 1) return invalid(out, "kjobs-attempt", "0 (attempts start at 1)");
    out->attempt = (int)v;
    int64_t max_nb = not_before_max(now_ms);
    if (uint_header(hdrs, "kjobs-not-before", max_nb, &out->not_before_ms, out)) {
        const void *val;
        size_t len;
        if (header_once(hdrs, "kjobs-not-before", &val, &len) == 0 &&
            kj_control_parse_uint(val, len, INT64_MAX, &v))
            snprintf(out->reason, sizeof(out->reason),
                     "invalid kjobs-not-before header: %lld ms ahead, more than the longest "
                     "retry delay (30 days)",
                     (long long)(v - now_ms));
        return -1;
    }
    const void *val;
    size_t len;
    int rc = header_once(hdrs, "kjobs-original-topic", &val, &len);
    if (rc == -1) return invalid(out, "kjobs-original-topic", "missing");
    if (rc == -2) return invalid(out, "kjobs-original-topic", "present more than once");
    if (!topic_name_ok(val, len))
        return invalid(out, "kjobs-original-topic", "not a Kafka topic name");
    memcpy(out->original_topic, val, len);
    out->original_topic[len] = '\0';
    if (uint_header(hdrs, "kjobs-original-partition", INT32_MAX, &v, out)) return -1;
    out->original_partition = (int32_t)v;
    if (uint_header(hdrs, "kjobs-original-offset", INT64_MAX, &out->original_offset, out))
        return -1;
    return 0;
}

int64_t kj_control_hold_until(int64_t not_before_ms, int64_t record_ts_ms, int64_t now_ms,
                              int64_t step_delay_ms) {
    int64_t base = record_ts_ms > 0 && record_ts_ms < now_ms ? record_ts_ms : now_ms;
    int64_t cap = base + step_delay_ms;
    return not_before_ms < cap ? not_before_ms : cap;
}
