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
    } else if (size > 6 && (memcmp(s, "probe:", 6) == 0 || memcmp(s, "range:", 6) == 0)) {
        bool probe = s[0] == 'p';
        const char *x = s + 6, *end = s + size;
        const char *colon = memchr(x, ':', (size_t)(end - x));
        int64_t a, b;
        if (!colon || !parse_decimal(x, (size_t)(colon - x), &a) ||
            !parse_decimal(colon + 1, (size_t)(end - colon - 1), &b))
            return m;
        if (probe && (b < 1 || b > 1000000)) return m;
        if (!probe && b <= a) return m;
        m.kind = probe ? KJ_CRASH_META_PROBE : KJ_CRASH_META_RANGE;
        m.offset = a;
        if (probe)
            m.count = (int)b;
        else
            m.end = b;
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
    case KJ_CRASH_META_RANGE:
        snprintf(buf, size, PREFIX "range:%" PRId64 ":%" PRId64, m->offset, m->end);
        break;
    default:
        snprintf(buf, size, "%s", "");
    }
    return buf;
}

kj_crash_plan kj_crash_plan_for(const kj_crash_meta *found, int64_t committed, int64_t window) {
    kj_crash_plan p = {.careful_until = 0, .single_until = 0, .suspect = -1, .chunk = 1};
    if (found->kind == KJ_CRASH_META_NONE || found->kind == KJ_CRASH_META_CLEAN) return p;
    p.careful_until = committed + (window > 0 ? window : 1);
    if (found->kind == KJ_CRASH_META_PROBE && found->offset >= committed) {
        p.suspect = found->offset;
        p.suspect_count = found->count;
        p.single_until = found->offset + 1;
    } else if (found->kind == KJ_CRASH_META_RANGE && found->end > committed) {
        p.single_until = found->end;
    }
    if (p.careful_until < p.single_until) p.careful_until = p.single_until;
    return p;
}

kj_crash_verdict kj_crash_decide(kj_crash_plan *plan, int64_t offset, int limit, int max_chunk,
                                 int *probe_count, int *chunk) {
    if (offset < plan->single_until) {
        if (offset == plan->suspect) {
            if (plan->suspect_count >= limit) return KJ_CRASH_DEAD_LETTER;
            *probe_count = plan->suspect_count + 1;
        } else {
            *probe_count = 1;
        }
        return KJ_CRASH_PROBE;
    }
    *chunk = plan->chunk;
    if (plan->chunk < max_chunk)
        plan->chunk = plan->chunk * 2 < max_chunk ? plan->chunk * 2 : max_chunk;
    return KJ_CRASH_CHUNK;
}
