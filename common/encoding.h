/*
 * encoding.h — small text encodings kjobs needs at its edges: base64 (payloads in JSON for
 * peek, DLQ tooling and exec handlers) and time-ordered job ids (UUIDv7: 48-bit epoch ms + 74
 * random bits, so ids sort by creation time and never collide in practice across producers).
 */
#ifndef KJOBS_ENCODING_H
#define KJOBS_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/utf8.h" /* kj_utf8_valid: UTF-8 lives there */

/** Base64 (RFC 4648, padded) of len bytes; malloc'd NUL-terminated string. */
char *kj_base64_encode(const void *data, size_t len);
/** Decode padded or unpadded base64; malloc'd buffer in *out (NUL-terminated for convenience). */
int kj_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len);
/** Write a new UUIDv7 into out (37 bytes incl. NUL). */
void kj_job_id_new(char out[37]);

#endif /* KJOBS_ENCODING_H */
