/*
 * buf.c — the growable byte buffer (see buf.h): doubling growth from 64 bytes, checked
 * against size_t overflow, always NUL-terminated.
 */
#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

void kj_buf_put(kj_buf *b, const void *data, size_t len) {
    if (b->oom) return;
    if (len >= SIZE_MAX - b->len) {
        b->oom = 1;
        return;
    }
    size_t need = b->len + len + 1; /* and the NUL */
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void kj_buf_puts(kj_buf *b, const char *s) {
    kj_buf_put(b, s, strlen(s));
}

char *kj_buf_take_str(kj_buf *b, size_t *len) {
    kj_buf_put(b, NULL, 0); /* allocated and terminated even when empty */
    char *s = b->oom ? NULL : (char *)b->data;
    if (!s)
        free(b->data);
    else if (len)
        *len = b->len;
    memset(b, 0, sizeof(*b));
    return s;
}

void kj_buf_free(kj_buf *b) {
    free(b->data);
    memset(b, 0, sizeof(*b));
}
