/*
 * partitions/in_place.c — the set of a partition's jobs retried in place (see in_place.h):
 * linear probing over offsets with backward-shift deletion.
 */
#include "partitions/in_place.h"

#include <errno.h>
#include <stdlib.h>

/* Fibonacci hashing of the offset (Knuth, TAOCP vol. 3, 6.4): consecutive offsets, the usual
 * case, spread over the table instead of filling one run. */
static size_t home(const kj_in_place *s, int64_t offset) {
    return (size_t)(((uint64_t)offset * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (s->cap - 1);
}

kj_in_place_entry *kj_in_place_find(const kj_in_place *s, int64_t offset) {
    if (s->count == 0) return NULL;
    for (size_t i = home(s, offset);; i = (i + 1) & (s->cap - 1)) {
        if (s->slots[i].offset == offset) return &s->slots[i];
        if (s->slots[i].offset < 0) return NULL;
    }
}

static void insert_new(kj_in_place *s, const kj_in_place_entry *e) {
    size_t i = home(s, e->offset);
    while (s->slots[i].offset >= 0)
        i = (i + 1) & (s->cap - 1);
    s->slots[i] = *e;
    s->count++;
}

static int grow(kj_in_place *s) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    kj_in_place_entry *slots = malloc(cap * sizeof(*slots));
    if (!slots) {
        errno = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        slots[i].offset = -1;
    kj_in_place old = *s;
    *s = (kj_in_place){.slots = slots, .cap = cap, .count = 0};
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].offset >= 0) insert_new(s, &old.slots[i]);
    free(old.slots);
    return 0;
}

int kj_in_place_put(kj_in_place *s, const kj_in_place_entry *e) {
    kj_in_place_entry *at = kj_in_place_find(s, e->offset);
    if (at) {
        *at = *e;
        return 0;
    }
    if ((s->count + 1) * 2 > s->cap && grow(s) != 0) return -1;
    insert_new(s, e);
    return 0;
}

bool kj_in_place_remove(kj_in_place *s, int64_t offset) {
    kj_in_place_entry *at = kj_in_place_find(s, offset);
    if (!at) return false;
    size_t mask = s->cap - 1, hole = (size_t)(at - s->slots);
    /* Backward shift: move each later member of the probe run into the hole when its home
     * does not lie cyclically in (hole, j]; stop at a free slot. */
    for (size_t j = (hole + 1) & mask; s->slots[j].offset >= 0; j = (j + 1) & mask) {
        size_t h = home(s, s->slots[j].offset);
        bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
        if (stays) continue;
        s->slots[hole] = s->slots[j];
        hole = j;
    }
    s->slots[hole].offset = -1;
    s->count--;
    return true;
}

void kj_in_place_clear(kj_in_place *s) {
    free(s->slots);
    *s = (kj_in_place){0};
}
