/*
 * encoding.c — base64 and UUIDv7 job ids (see encoding.h).
 */
#include "common/encoding.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kj_base64_encode(const void *data, size_t len) {
    const uint8_t *in = data;
    char *out = malloc(((len + 2) / 3) * 4 + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

int kj_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len) {
    while (text_len > 0 && text[text_len - 1] == '=')
        text_len--;
    if (text_len % 4 == 1) return -1;
    uint8_t *buf = malloc(text_len / 4 * 3 + 3 + 1);
    if (!buf) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < text_len; i++) {
        int v = b64_value(text[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
}

void kj_job_id_new(char out[37]) {
    uint8_t b[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (getrandom(b + 6, 10, 0) != 10) {
        /* getrandom on Linux does not fail for <= 256 bytes once the pool is ready; fall back
         * to the clock's nanoseconds rather than emitting a fixed id */
        uint64_t ns = (uint64_t)ts.tv_nsec * 2654435761u;
        memcpy(b + 6, &ns, 8);
        b[14] = (uint8_t)(ms >> 3);
        b[15] = (uint8_t)ts.tv_nsec;
    }
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (b[6] & 0x0F)); /* version 7 */
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3F)); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}
