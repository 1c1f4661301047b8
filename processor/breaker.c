/*
 * breaker.c — circuit-breaker rules (see breaker.h).
 */
#include "processor/breaker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kj_breaker_init(kj_breaker *b, int consecutive, int window, int min_window, double ratio) {
    memset(b, 0, sizeof(*b));
    if (consecutive < 0 || window < 0 || min_window < 0 || ratio < 0.0 || ratio > 1.0) return -1;
    b->consecutive_limit = consecutive;
    b->window = window;
    b->min_window = min_window > window ? window : min_window;
    b->ratio = ratio;
    if (window > 0) {
        b->ring = calloc((size_t)window, 1);
        if (!b->ring) return -1;
    }
    return 0;
}

void kj_breaker_free(kj_breaker *b) {
    free(b->ring);
    b->ring = NULL;
}

void kj_breaker_reset(kj_breaker *b) {
    b->consecutive = 0;
    b->ring_pos = b->ring_filled = b->ring_dead = 0;
    if (b->ring) memset(b->ring, 0, (size_t)b->window);
    b->open = false;
    b->reason[0] = '\0';
}

bool kj_breaker_record(kj_breaker *b, bool dead) {
    b->consecutive = dead ? b->consecutive + 1 : 0;
    if (b->ring) {
        if (b->ring_filled == b->window)
            b->ring_dead -= b->ring[b->ring_pos];
        else
            b->ring_filled++;
        b->ring[b->ring_pos] = dead ? 1 : 0;
        b->ring_dead += dead ? 1 : 0;
        b->ring_pos = (b->ring_pos + 1) % b->window;
    }
    if (b->open) return false;
    if (b->consecutive_limit > 0 && b->consecutive >= b->consecutive_limit) {
        snprintf(b->reason, sizeof(b->reason), "%d jobs in a row went to the dead-letter topic",
                 b->consecutive);
        b->open = true;
    } else if (b->ring && b->ratio > 0.0 && b->ring_filled >= b->min_window && b->ring_filled > 0 &&
               (double)b->ring_dead >= b->ratio * (double)b->ring_filled) {
        snprintf(b->reason, sizeof(b->reason),
                 "%d of the last %d jobs went to the dead-letter topic (limit %.0f%%)",
                 b->ring_dead, b->ring_filled, b->ratio * 100.0);
        b->open = true;
    }
    return b->open;
}
