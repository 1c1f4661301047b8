/*
 * dlq_marker.c — the replay marker's range set, its metadata text and the rule that moves it
 * (processor/dlq_marker.h says what the marker means). Pure: the Kafka side, reading the
 * committed offset and committing the new one, is processor/dlq_model.c.
 */
#include "processor/dlq_marker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void push(kj_dlq_ranges *s, kj_dlq_range r) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = r;
}

void kj_dlq_ranges_add(kj_dlq_ranges *s, int64_t offset) {
    if (!kj_dlq_ranges_has(s, offset)) push(s, (kj_dlq_range){offset, offset});
}

bool kj_dlq_ranges_has(const kj_dlq_ranges *s, int64_t offset) {
    for (size_t i = 0; i < s->n; i++)
        if (offset >= s->v[i].lo && offset <= s->v[i].hi) return true;
    return false;
}

static int range_cmp(const void *a, const void *b) {
    const kj_dlq_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

void kj_dlq_ranges_normalize(kj_dlq_ranges *s, int64_t floor) {
    if (s->n > 1) qsort(s->v, s->n, sizeof(*s->v), range_cmp); /* v may be NULL when empty */
    size_t out = 0;
    for (size_t i = 0; i < s->n; i++) {
        kj_dlq_range r = s->v[i];
        if (r.hi < floor) continue;
        if (r.lo < floor) r.lo = floor;
        if (out && r.lo <= s->v[out - 1].hi + 1) {
            if (r.hi > s->v[out - 1].hi) s->v[out - 1].hi = r.hi;
        } else {
            s->v[out++] = r;
        }
    }
    s->n = out;
}

void kj_dlq_ranges_free(kj_dlq_ranges *s) {
    free(s->v);
    memset(s, 0, sizeof(*s));
}

char *kj_dlq_marker_format(const kj_dlq_ranges *s) {
    /* per range: two 19-digit offsets, '-' and ',' fit in 42 */
    size_t cap = sizeof(KJ_DLQ_MARKER_PREFIX) + s->n * 42;
    char *out = malloc(cap), *p = out;
    p += sprintf(p, "%s", KJ_DLQ_MARKER_PREFIX);
    for (size_t i = 0; i < s->n; i++) {
        if (i) *p++ = ',';
        if (s->v[i].lo == s->v[i].hi)
            p += sprintf(p, "%" PRId64, s->v[i].lo);
        else
            p += sprintf(p, "%" PRId64 "-%" PRId64, s->v[i].lo, s->v[i].hi);
    }
    *p = '\0';
    return out;
}

int kj_dlq_marker_parse(const char *text, kj_dlq_ranges *s) {
    size_t plen = strlen(KJ_DLQ_MARKER_PREFIX);
    if (strncmp(text, KJ_DLQ_MARKER_PREFIX, plen) != 0) return -1;
    const char *p = text + plen;
    while (*p) {
        char *end;
        long long lo = strtoll(p, &end, 10), hi = lo;
        if (end == p || lo < 0) return -1;
        p = end;
        if (*p == '-') {
            hi = strtoll(p + 1, &end, 10);
            if (end == p + 1 || hi < lo) return -1;
            p = end;
        }
        push(s, (kj_dlq_range){lo, hi});
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return 0;
}

int64_t kj_dlq_marker_next(const kj_dlq_marker_step *st, kj_dlq_ranges *out) {
    int64_t w = st->end;
    if (st->first_new >= 0 && st->first_new < w) w = st->first_new;
    if (!st->read_to_end && st->next_expected < w) w = st->next_expected;
    if (st->committed > w) w = st->committed; /* never move the marker back */
    for (size_t i = 0; st->acked && i < st->acked->n; i++)
        push(out, st->acked->v[i]);
    for (size_t i = 0; st->marks && i < st->marks->n; i++) /* keep the old ranges */
        push(out, st->marks->v[i]);
    kj_dlq_ranges_normalize(out, w);
    return w;
}

bool kj_dlq_marker_changed(int64_t committed, const char *text_read, int64_t low, int64_t w,
                           const char *text) {
    return strcmp(text, text_read ? text_read : KJ_DLQ_MARKER_PREFIX) != 0 ||
           (w != committed && !(committed < 0 && w <= low));
}

int64_t kj_dlq_marker_unsettled(int64_t low, int64_t end, const kj_dlq_marker_view *markers,
                                size_t count) {
    int64_t from = low; /* everything below the highest W is settled */
    for (size_t i = 0; i < count; i++)
        if (markers[i].committed > from) from = markers[i].committed;
    if (end <= from) return 0;
    kj_dlq_ranges all = {0};
    for (size_t i = 0; i < count; i++) {
        for (size_t j = 0; markers[i].marks && j < markers[i].marks->n; j++) {
            kj_dlq_range r = markers[i].marks->v[j];
            if (r.hi < from || r.lo >= end) continue;
            if (all.n == all.cap) {
                all.cap = all.cap ? all.cap * 2 : 8;
                all.v = realloc(all.v, all.cap * sizeof(*all.v));
                if (!all.v) abort();
            }
            all.v[all.n++] = (kj_dlq_range){r.lo, r.hi < end ? r.hi : end - 1};
        }
    }
    kj_dlq_ranges_normalize(&all, from); /* merged: no offset counted twice */
    int64_t settled = 0;
    for (size_t i = 0; i < all.n; i++)
        settled += all.v[i].hi - all.v[i].lo + 1;
    kj_dlq_ranges_free(&all);
    return end - from - settled;
}
