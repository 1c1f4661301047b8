/*
 * crash_guard.c — the crash-loop guard's metadata and decisions (the rule: crash_guard.h).
 */
#include "processor/crash_guard.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define PREFIX "kjobs1:"

/* Strict decimal, no sign, no leading zeros beyond "0", at most 18 digits. */
static bool parse_decimal(const char *s, size_t len, int64_t *out) {
    if (len == 0 || len > 18 || (len > 1 && s[0] == '0')) return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

kj_crash_meta kj_crash_meta_parse(const void *metadata, size_t size) {
    kj_crash_meta m = {.kind = KJ_CRASH_META_NONE, .offset = -1, .count = 0};
    const char *s = metadata;
    size_t plen = strlen(PREFIX);
    if (!s || size < plen || size > KJ_CRASH_META_MAX || memcmp(s, PREFIX, plen) != 0) return m;
    s += plen;
    size -= plen;
    if (size == 5 && memcmp(s, "clean", 5) == 0) {
        m.kind = KJ_CRASH_META_CLEAN;
    } else if (size == 4 && memcmp(s, "live", 4) == 0) {
        m.kind = KJ_CRASH_META_LIVE;
    } else if (size > 6 && memcmp(s, "probe:", 6) == 0) {
        const char *x = s + 6, *end = s + size;
        const char *colon = memchr(x, ':', (size_t)(end - x));
        int64_t off, n;
        if (!colon || !parse_decimal(x, (size_t)(colon - x), &off) ||
            !parse_decimal(colon + 1, (size_t)(end - colon - 1), &n) || n < 1 || n > 1000000)
            return m;
        m.kind = KJ_CRASH_META_PROBE;
        m.offset = off;
        m.count = (int)n;
    }
    return m;
}

const char *kj_crash_meta_format(const kj_crash_meta *m, char *buf, size_t size) {
    switch (m->kind) {
    case KJ_CRASH_META_CLEAN:
        snprintf(buf, size, PREFIX "clean");
        break;
    case KJ_CRASH_META_LIVE:
        snprintf(buf, size, PREFIX "live");
        break;
    case KJ_CRASH_META_PROBE:
        snprintf(buf, size, PREFIX "probe:%" PRId64 ":%d", m->offset, m->count);
        break;
    default:
        snprintf(buf, size, "%s", "");
    }
    return buf;
}

kj_crash_plan kj_crash_plan_for(const kj_crash_meta *found, int64_t committed, int64_t window) {
    kj_crash_plan p = {.careful_until = 0, .suspect = -1, .suspect_count = 0};
    if (found->kind != KJ_CRASH_META_LIVE && found->kind != KJ_CRASH_META_PROBE) return p;
    p.careful_until = committed + (window > 0 ? window : 1);
    if (found->kind == KJ_CRASH_META_PROBE && found->offset >= committed) {
        p.suspect = found->offset;
        p.suspect_count = found->count;
        if (p.careful_until <= p.suspect) p.careful_until = p.suspect + 1;
    }
    return p;
}

kj_crash_verdict kj_crash_decide(const kj_crash_plan *plan, int64_t offset, int limit,
                                 int *probe_count) {
    if (offset == plan->suspect) {
        if (plan->suspect_count >= limit) return KJ_CRASH_DEAD_LETTER;
        *probe_count = plan->suspect_count + 1;
    } else {
        *probe_count = 1;
    }
    return KJ_CRASH_PROBE;
}
