/*
 * trace_context.c — reads and validates a job's W3C trace context (traceparent, tracestate)
 * from its record headers or meta map; the rules, with the sections of the W3C Recommendation
 * each one implements, are in trace_context.h. Kept apart from the batch path (worker.c calls
 * kj_trace_context_read once per decoded job) so the parser can be unit-tested on its own.
 */
#include "processor/trace_context.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "processor/handlers.h"
#include "processor/log.h"
#include "processor/metrics.h"

/* ---- traceparent (§3.2.2, §3.2.4) ------------------------------------------------------- */

static bool hexlc(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool all_hexlc(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!hexlc(p[i])) return false;
    return true;
}

static bool all_zero(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != '0') return false;
    return true;
}

static const char *traceparent_problem(const char *v, size_t len) {
    if (!v) return "traceparent has no value";
    if (len < 3 || !hexlc(v[0]) || !hexlc(v[1]) || v[2] != '-')
        return "traceparent version is not 2 lowercase hex digits followed by \"-\"";
    if (v[0] == 'f' && v[1] == 'f') return "traceparent version ff is invalid";
    bool v00 = v[0] == '0' && v[1] == '0';
    if (v00 && len != KJ_TRACEPARENT_LEN) return "traceparent of version 00 is not 55 characters";
    if (len < KJ_TRACEPARENT_LEN) return "traceparent is shorter than 55 characters";
    if (len > KJ_TRACEPARENT_MAX) return "traceparent is longer than 512 characters";
    if (!all_hexlc(v + 3, 32) || v[35] != '-')
        return "trace-id is not 32 lowercase hex digits followed by \"-\"";
    if (all_zero(v + 3, 32)) return "trace-id is all zeros";
    if (!all_hexlc(v + 36, 16) || v[52] != '-')
        return "parent-id is not 16 lowercase hex digits followed by \"-\"";
    if (all_zero(v + 36, 16)) return "parent-id is all zeros";
    if (!all_hexlc(v + 53, 2)) return "trace-flags is not 2 lowercase hex digits";
    if (len > KJ_TRACEPARENT_LEN && v[55] != '-')
        return "trace-flags is followed by neither the end nor \"-\"";
    return NULL;
}

bool kj_traceparent_parse(const char *value, size_t len, char out[KJ_TRACEPARENT_LEN + 1],
                          const char **why) {
    out[0] = '\0';
    const char *problem = traceparent_problem(value, len);
    if (problem) {
        if (why) *why = problem;
        return false;
    }
    memcpy(out, value, KJ_TRACEPARENT_LEN);
    out[KJ_TRACEPARENT_LEN] = '\0';
    if (value[0] != '0' || value[1] != '0') {
        /* a higher version: handed on as version 00 with the fields 00 knows (§3.2.4, §3.4),
         * and of the flags only "sampled" (§4.3 step 2.2) */
        out[0] = out[1] = '0';
        out[53] = '0';
        char low = value[54];
        int nibble = low <= '9' ? low - '0' : low - 'a' + 10;
        out[54] = (nibble & 1) ? '1' : '0';
    }
    return true;
}

/* ---- tracestate (§3.3.1) ------------------------------------------------------------------ */

static bool lcalpha(char c) {
    return c >= 'a' && c <= 'z';
}

static bool keychar(char c) {
    return lcalpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}

/* `first` accepts the first character; the rest are keychar; 1..max characters. */
static bool key_part(const char *p, size_t n, size_t max, bool digit_first) {
    if (n == 0 || n > max) return false;
    if (!lcalpha(p[0]) && !(digit_first && p[0] >= '0' && p[0] <= '9')) return false;
    for (size_t i = 1; i < n; i++)
        if (!keychar(p[i])) return false;
    return true;
}

/* §3.3.1.3.1: simple-key / tenant-id "@" system-id */
static bool valid_key(const char *k, size_t n) {
    const char *at = memchr(k, '@', n);
    if (!at) return key_part(k, n, 256, false);
    size_t tenant = (size_t)(at - k);
    return key_part(k, tenant, 241, true) && key_part(at + 1, n - tenant - 1, 14, false);
}

/* §3.3.1.3.2: 1..256 printable ASCII except "," and "=", not ending in a space */
static bool valid_value(const char *v, size_t n) {
    if (n == 0 || n > 256 || v[n - 1] == ' ') return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=') return false;
    return true;
}

static bool ows(char c) {
    return c == ' ' || c == '\t';
}

typedef struct member {
    size_t off, len, key_len;
    bool kept;
} member;

int kj_tracestate_parse(const char *value, size_t len, char out[KJ_TRACESTATE_MAX + 1],
                        bool *truncated, const char **why) {
    const char *dummy;
    if (!why) why = &dummy;
    out[0] = '\0';
    *truncated = false;
    if (!value) {
        value = "";
        len = 0;
    }
    if (len > KJ_TRACE_INPUT_MAX) {
        *why = "tracestate is longer than 32768 bytes";
        return -1;
    }
    member m[KJ_TRACESTATE_MEMBERS];
    size_t count = 0;
    for (size_t start = 0; start <= len;) {
        const char *comma = memchr(value + start, ',', len - start);
        size_t end = comma ? (size_t)(comma - value) : len;
        size_t a = start, b = end;
        while (a < b && ows(value[a]))
            a++;
        while (b > a && ows(value[b - 1]))
            b--;
        start = end + 1;
        if (a == b) continue; /* empty or whitespace-only member: allowed, ignored */
        if (count == KJ_TRACESTATE_MEMBERS) {
            *why = "tracestate has more than 32 list-members";
            return -1;
        }
        const char *eq = memchr(value + a, '=', b - a);
        if (!eq) {
            *why = "tracestate list-member has no \"=\"";
            return -1;
        }
        size_t klen = (size_t)(eq - (value + a));
        if (!valid_key(value + a, klen)) {
            *why = "tracestate key is invalid";
            return -1;
        }
        if (!valid_value(eq + 1, b - a - klen - 1)) {
            *why = "tracestate value is invalid";
            return -1;
        }
        for (size_t i = 0; i < count; i++)
            if (m[i].key_len == klen && memcmp(value + m[i].off, value + a, klen) == 0) {
                *why = "tracestate has a key more than once";
                return -1;
            }
        m[count++] = (member){a, b - a, klen, true};
    }
    if (count == 0) return 0; /* an empty list: no tracestate */
    if (len <= KJ_TRACESTATE_MAX) {
        memcpy(out, value, len); /* unchanged (§3.4) */
        out[len] = '\0';
        return 0;
    }
    /* §3.3.1.5: whole entries, those over 128 characters first, then from the end */
    size_t total = count - 1;
    for (size_t i = 0; i < count; i++)
        total += m[i].len;
    size_t kept = count;
    while (total > KJ_TRACESTATE_MAX && kept > 0) {
        size_t drop = SIZE_MAX;
        for (size_t i = count; i-- > 0;)
            if (m[i].kept && m[i].len > KJ_TRACESTATE_ENTRY) {
                drop = i;
                break;
            }
        if (drop == SIZE_MAX)
            for (size_t i = count; i-- > 0;)
                if (m[i].kept) {
                    drop = i;
                    break;
                }
        m[drop].kept = false;
        total -= m[drop].len + (kept > 1 ? 1 : 0);
        kept--;
        *truncated = true;
    }
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        if (!m[i].kept) continue;
        if (o) out[o++] = ',';
        memcpy(out + o, value + m[i].off, m[i].len);
        o += m[i].len;
    }
    out[o] = '\0';
    return 0;
}

/* ---- carriers ------------------------------------------------------------------------------ */

static const char *meta_get(const kj_job_record *rec, const char *name) {
    for (size_t i = 0; rec && i < rec->meta_count; i++)
        if (strcmp(rec->meta[i].key, name) == 0) return rec->meta[i].value;
    return NULL;
}

/* The tracestate headers of hdrs combined with "," in order (§3.3.1.1). Returns the value
 * (maybe `buf`, to free) or NULL with `*too_long` when the input passes KJ_TRACE_INPUT_MAX. */
static const char *combined_tracestate(const rd_kafka_headers_t *hdrs, int count, size_t *len,
                                       char **to_free, bool *too_long) {
    const char *name;
    const void *val;
    size_t size;
    *to_free = NULL;
    *too_long = false;
    *len = 0;
    if (count == 1) {
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++)
            if (strcasecmp(name, "tracestate") == 0) {
                *len = val ? size : 0;
                return val ? val : "";
            }
    }
    char *buf = malloc(KJ_TRACE_INPUT_MAX + 1);
    if (!buf) {
        *too_long = true;
        return NULL;
    }
    size_t o = 0;
    bool first = true;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
        if (strcasecmp(name, "tracestate") != 0) continue;
        if (!val) size = 0;
        if (o + size + (first ? 0 : 1) > KJ_TRACE_INPUT_MAX) {
            free(buf);
            *too_long = true;
            return NULL;
        }
        if (!first) buf[o++] = ',';
        memcpy(buf + o, val ? val : "", size);
        o += size;
        first = false;
    }
    *to_free = buf;
    *len = o;
    return buf;
}

unsigned kj_trace_context_resolve(kj_trace_context *out, const rd_kafka_headers_t *hdrs,
                                  const kj_job_record *rec, const char **why) {
    const char *dummy;
    if (!why) why = &dummy;
    *why = NULL;
    out->traceparent[0] = '\0';
    out->tracestate[0] = '\0';
    const char *name, *tp = NULL;
    const void *val;
    size_t size, tp_len = 0;
    int tp_count = 0, ts_count = 0;
    for (size_t i = 0; hdrs && rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
        if (strcasecmp(name, "traceparent") == 0) {
            tp_count++;
            tp = val;
            tp_len = val ? size : 0;
        } else if (strcasecmp(name, "tracestate") == 0) {
            ts_count++;
        }
    }
    const char *meta_tp = meta_get(rec, "traceparent"), *meta_ts = meta_get(rec, "tracestate");
    bool from_headers = tp_count > 0;
    if (!from_headers && !meta_tp) {
        if (ts_count > 0 || meta_ts) {
            *why = "tracestate without a traceparent";
            return KJ_TRACE_INVALID_TRACESTATE;
        }
        return 0;
    }
    if (from_headers && tp_count > 1) {
        *why = "traceparent header repeated";
        return KJ_TRACE_INVALID_TRACEPARENT;
    }
    if (!from_headers) {
        tp = meta_tp;
        tp_len = strlen(meta_tp);
    }
    if (!kj_traceparent_parse(tp, tp_len, out->traceparent, why))
        return KJ_TRACE_INVALID_TRACEPARENT; /* tracestate is not parsed then (§3.3) */

    const char *ts = NULL;
    size_t ts_len = 0;
    char *to_free = NULL;
    if (from_headers && ts_count > 0) {
        bool too_long;
        ts = combined_tracestate(hdrs, ts_count, &ts_len, &to_free, &too_long);
        if (too_long) {
            *why = "tracestate is longer than 32768 bytes";
            return KJ_TRACE_INVALID_TRACESTATE;
        }
    } else if (!from_headers && meta_ts) {
        ts = meta_ts;
        ts_len = strlen(meta_ts);
    }
    unsigned problems = 0;
    bool truncated = false;
    if (ts && kj_tracestate_parse(ts, ts_len, out->tracestate, &truncated, why) != 0)
        problems |= KJ_TRACE_INVALID_TRACESTATE;
    else if (truncated) {
        *why = "tracestate longer than 512 characters, entries dropped";
        problems |= KJ_TRACE_TRUNCATED_TRACESTATE;
    }
    free(to_free);
    return problems;
}

void kj_trace_context_read(kjobs_job_t *job) {
    rd_kafka_headers_t *hdrs = NULL;
    if (job->msg) rd_kafka_message_headers(job->msg, &hdrs);
    const char *why = NULL;
    unsigned problems = kj_trace_context_resolve(&job->trace, hdrs, &job->record, &why);
    if (!problems) return;
    if (problems & KJ_TRACE_INVALID_TRACEPARENT) kj_metrics_trace_context_invalid("traceparent");
    if (problems & KJ_TRACE_INVALID_TRACESTATE) kj_metrics_trace_context_invalid("tracestate");
    kj_log(KJ_LOG_DEBUG,
           problems == KJ_TRACE_TRUNCATED_TRACESTATE ? "tracestate truncated"
                                                     : "invalid trace context ignored",
           "{s:s,s:s,s:i,s:I,s:s}", "id", job->record.id, "topic", job->topic ? job->topic : "",
           "partition", job->msg ? (int)job->msg->partition : -1, "offset",
           (json_int_t)(job->msg ? job->msg->offset : -1), "error", why ? why : "");
}
