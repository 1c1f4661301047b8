/*
 * util.c — small helpers the codec's files share: Avro varint writing (into common/buf.h's
 * buffer), UTF-8 checking (by common/utf8.h's validator) and errstr formatting.
 *
 * @locality any thread (no shared state)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "schemas/codec_internal.h"

void kj_seterr(char *errstr, size_t errstr_size, const char *fmt, ...) {
    if (!errstr || errstr_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}

void kj_buf_put_long(kj_buf *b, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    uint8_t tmp[10];
    size_t n = 0;
    while (z >= 0x80) {
        tmp[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    tmp[n++] = (uint8_t)z;
    kj_buf_put(b, tmp, n);
}

/* Strict UTF-8 (RFC 3629) by kjobs' one validator (common/utf8.h), plus "no NUL". */
int kj_utf8_check(const uint8_t *s, size_t n, size_t *at) {
    for (size_t i = 0; i < n;) {
        i += kj_utf8_ascii_run(s + i, n - i); /* fast path: ASCII without NUL */
        if (i == n) break;
        size_t len = s[i] ? kj_utf8_seq_len(s + i, n - i) : 0;
        if (len == 0) {
            *at = i;
            return s[i] ? 2 : 1;
        }
        i += len;
    }
    return 0;
}
