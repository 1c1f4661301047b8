/*
 * encode.c — the job encoder: a hand-written Avro binary writer for the current schema.
 *
 * The field order comes from job.avsc (the kj_enc_step list built at init), so the bytes are
 * exactly what any Avro implementation writes for that schema. Fields the C record does not
 * hold (a later schema version may add some, always with a default) are written from their
 * default, encoded once at init. One pass sizes the output, one malloc, one pass writes.
 * Single-object encoding prefixes C3 01 and the current schema's fingerprint, little-endian.
 *
 * Inputs are checked so that we never write what our own decoder would reject: id, type and
 * meta strings must be valid UTF-8 (a C string cannot hold a NUL anyway).
 *
 * @locality any thread (reads the immutable codec state only)
 */
#include <stdlib.h>
#include <string.h>

#include "schemas/codec_internal.h"

static inline size_t kj_varint_size(int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *kj_put_long(uint8_t *p, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

static inline uint8_t *kj_put_bytes(uint8_t *p, const void *s, size_t n) {
    p = kj_put_long(p, (int64_t)n);
    if (n) memcpy(p, s, n);
    return p + n;
}

static int kj_check_text(const char *what, const char *s, size_t n, char *errstr,
                         size_t errstr_size) {
    size_t at;
    if (kj_utf8_check((const uint8_t *)s, n, &at) != 0) {
        kj_seterr(errstr, errstr_size, "%s is not valid UTF-8 (at its byte %zu)", what, at);
        return -1;
    }
    return 0;
}

/* size += n, failing on overflow */
static inline int kj_add(size_t *size, size_t n) {
    if (n > SIZE_MAX - *size) return -1;
    *size += n;
    return 0;
}

int kj_job_encode(const kj_job_record *job, kj_encoding enc, uint8_t **out, size_t *out_len,
                  char *errstr, size_t errstr_size) {
    *out = NULL;
    *out_len = 0;
    const kj_codec_state *st = kj_codec_state_get(errstr, errstr_size);
    if (!st) return -1;
    if (!job || !job->id || !job->type) {
        kj_seterr(errstr, errstr_size, "a job needs an id and a type");
        return -1;
    }
    if (enc != KJ_ENCODING_BINARY && enc != KJ_ENCODING_SINGLE_OBJECT) {
        kj_seterr(errstr, errstr_size, "unknown encoding %d", (int)enc);
        return -1;
    }
    if ((!job->payload && job->payload_len) || (!job->meta && job->meta_count)) {
        kj_seterr(errstr, errstr_size, "payload or meta is NULL with a non-zero length");
        return -1;
    }
    size_t id_len = strlen(job->id), type_len = strlen(job->type);
    if (kj_check_text("id", job->id, id_len, errstr, errstr_size) != 0 ||
        kj_check_text("type", job->type, type_len, errstr, errstr_size) != 0)
        return -1;

    size_t size = enc == KJ_ENCODING_SINGLE_OBJECT ? 10 : 0;
    int ovf = 0;
    for (size_t i = 0; i < st->nenc; i++) {
        switch (st->enc[i].sink) {
        case KJ_SINK_ID:
            ovf |= kj_add(&size, kj_varint_size((int64_t)id_len) + id_len);
            break;
        case KJ_SINK_TYPE:
            ovf |= kj_add(&size, kj_varint_size((int64_t)type_len) + type_len);
            break;
        case KJ_SINK_PAYLOAD:
            ovf |= job->payload_len > INT64_MAX;
            ovf |= kj_add(&size, kj_varint_size((int64_t)job->payload_len)) |
                   kj_add(&size, job->payload_len);
            break;
        case KJ_SINK_CREATED_AT:
            ovf |= kj_add(&size, kj_varint_size(job->created_at));
            break;
        case KJ_SINK_META:
            ovf |=
                kj_add(&size, job->meta_count ? kj_varint_size((int64_t)job->meta_count) + 1 : 1);
            for (size_t m = 0; m < job->meta_count; m++) {
                const kj_meta_entry *e = &job->meta[m];
                if (!e->key || !e->value) {
                    kj_seterr(errstr, errstr_size, "meta entry %zu has a NULL key or value", m);
                    return -1;
                }
                size_t kn = strlen(e->key), vn = strlen(e->value);
                if (kj_check_text("meta key", e->key, kn, errstr, errstr_size) != 0 ||
                    kj_check_text("meta value", e->value, vn, errstr, errstr_size) != 0)
                    return -1;
                ovf |= kj_add(&size, kj_varint_size((int64_t)kn) + kn) |
                       kj_add(&size, kj_varint_size((int64_t)vn) + vn);
            }
            break;
        default:
            ovf |= kj_add(&size, st->enc[i].blob_len);
            break;
        }
    }
    if (ovf) {
        kj_seterr(errstr, errstr_size, "job too large to encode");
        return -1;
    }
    uint8_t *buf = malloc(size), *p = buf;
    if (!buf) {
        kj_seterr(errstr, errstr_size, "out of memory (%zu bytes)", size);
        return -1;
    }
    if (enc == KJ_ENCODING_SINGLE_OBJECT) {
        *p++ = 0xC3;
        *p++ = 0x01;
        for (int i = 0; i < 8; i++)
            *p++ = (uint8_t)(st->fingerprint >> (8 * i));
    }
    for (size_t i = 0; i < st->nenc; i++) {
        switch (st->enc[i].sink) {
        case KJ_SINK_ID:
            p = kj_put_bytes(p, job->id, id_len);
            break;
        case KJ_SINK_TYPE:
            p = kj_put_bytes(p, job->type, type_len);
            break;
        case KJ_SINK_PAYLOAD:
            p = kj_put_bytes(p, job->payload, job->payload_len);
            break;
        case KJ_SINK_CREATED_AT:
            p = kj_put_long(p, job->created_at);
            break;
        case KJ_SINK_META:
            if (job->meta_count) {
                p = kj_put_long(p, (int64_t)job->meta_count);
                for (size_t m = 0; m < job->meta_count; m++) {
                    p = kj_put_bytes(p, job->meta[m].key, strlen(job->meta[m].key));
                    p = kj_put_bytes(p, job->meta[m].value, strlen(job->meta[m].value));
                }
            }
            *p++ = 0;
            break;
        default:
            memcpy(p, st->enc[i].blob, st->enc[i].blob_len);
            p += st->enc[i].blob_len;
            break;
        }
    }
    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}
