/*
 * buf.h — kjobs' one growable byte buffer, for output built piece by piece: the Avro codec's
 * init-time work (canonical forms, encoded defaults) and the Prometheus text rendering.
 *
 * The bytes are always followed by a NUL (not counted in len), so a buffer of text is a C
 * string as it stands. An allocation failure sets `oom` once; later appends are dropped, and
 * the owner checks `oom` (or kj_buf_take_str's NULL) at the end instead of after every append.
 *
 * @locality any thread; a buffer is not shared (no locks).
 */
#ifndef KJOBS_BUF_H
#define KJOBS_BUF_H

#include <stddef.h>
#include <stdint.h>

/** Zero-initialise ({0}) before use; owns `data` (NULL until the first append). */
typedef struct kj_buf {
    uint8_t *data; /* len bytes, then a NUL; malloc'd */
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends are dropped */
} kj_buf;

/** Appends len bytes (data may be NULL when len is 0); allocates even when len is 0. */
void kj_buf_put(kj_buf *b, const void *data, size_t len);

/** Appends the NUL-terminated s, without its NUL. */
void kj_buf_puts(kj_buf *b, const char *s);

/**
 * Hands the contents over as a malloc'd C string (the caller frees it) of *len bytes (len may
 * be NULL): "" for an empty buffer, NULL when an append failed (the bytes are freed). Resets b.
 */
char *kj_buf_take_str(kj_buf *b, size_t *len);

/** Frees the bytes and resets b to empty. */
void kj_buf_free(kj_buf *b);

#endif /* KJOBS_BUF_H */
