/*
 * decode.c — the job decoder: our own bounded Avro binary reader, driven by a resolution plan
 * (kj_writer) built at init for each writer schema version.
 *
 * Why our own reader: record values come from anyone who can produce to the topic. avro-c
 * 1.11.1 (Debian) can malloc a crafted negative/huge length (apache/avro#3622), and its error
 * text (avro_strerror) is one process-wide buffer unless the library was built THREADSAFE
 * (its refcounts are atomic). Here:
 *  - every varint is at most 10 bytes (the 10th may only carry the 64th bit); ints are range
 *    checked;
 *  - every length and every block count is checked against the bytes that remain before it
 *    is used, so work and memory are bounded by the input size. Blocks of zero-size items
 *    (null, records of nulls) are skipped without iterating. Negative block counts (followed
 *    by a byte size) are checked too, and the byte size must match what the block holds;
 *  - trailing bytes after the record are an error;
 *  - nested writer types are skipped generically (records, arrays, maps, unions, enums, fixed)
 *    with a depth limit, so a recursive writer schema cannot blow the stack.
 *
 * One allocation per job: the plan is walked twice, first to validate and measure (meta
 * entries, string bytes), then — after a single malloc sized from that — to copy. The second
 * walk re-reads bytes the first one validated. The layout is [kj_meta_entry × n][strings].
 *
 * Resolution (Avro specification, "Schema Resolution"), done here because avro-c's resolved
 * reader cannot apply defaults ("NIY: Default values"): writer fields are read in writer order;
 * those the C record holds go to their slot ("sink"), all others are skipped, driven by the
 * writer schema. Reader fields the writer lacks take the reader's default, which init encodes
 * to Avro binary once and the decoder then reads like any other field. Promotions accepted:
 * int→long, string↔bytes; a writer union resolves to the branch it carries.
 *
 * @locality any thread: a kj_writer is read-only after kj_writer_build, and the decoder keeps
 * its state on the stack.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/codec_internal.h"

#define KJ_DECODE_MAX_DEPTH 64

typedef struct kj_step {
    kj_sink sink;           /* KJ_SINK_NONE: skip */
    const kj_schema *wtype; /* writer type (for defaults: the reader's type) */
    const char *name;       /* field name, for messages */
    const uint8_t *blob;    /* defaults only: the encoded default */
    size_t blob_len;
} kj_step;

struct kj_writer {
    kj_schema_tree *tree;
    char *canonical;
    uint64_t fingerprint;
    kj_step *steps; /* writer fields in order */
    size_t nsteps;
    kj_step *defaults; /* sinks the writer lacks, read from `blob` */
    size_t ndefaults;
    kj_buf blobs;
};

kj_sink kj_sink_for_field(const char *name) {
    static const char *const names[KJ_SINK_COUNT_] = {
        [KJ_SINK_ID] = "id",           [KJ_SINK_TYPE] = "type",
        [KJ_SINK_PAYLOAD] = "payload", [KJ_SINK_CREATED_AT] = "created_at",
        [KJ_SINK_META] = "meta",
    };
    for (int s = KJ_SINK_ID; s < KJ_SINK_COUNT_; s++)
        if (strcmp(name, names[s]) == 0) return (kj_sink)s;
    return KJ_SINK_NONE;
}

/* --- the reader ------------------------------------------------------------------------- */

typedef struct kj_rd {
    const uint8_t *p, *end;
    const uint8_t *base; /* offsets in messages count from here */
    const char *field;   /* top-level field being read, for messages */
    char *err;
    size_t errsize;
} kj_rd;

__attribute__((format(printf, 2, 3))) static int kj_rd_fail(kj_rd *r, const char *fmt, ...) {
    if (!r->err || r->errsize == 0) return -1;
    int n = snprintf(r->err, r->errsize, "at byte %zu%s%s%s: ", (size_t)(r->p - r->base),
                     r->field ? " (field \"" : "", r->field ? r->field : "", r->field ? "\")" : "");
    if (n < 0 || (size_t)n >= r->errsize) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, r->errsize - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static inline size_t kj_rd_left(const kj_rd *r) {
    return (size_t)(r->end - r->p);
}

static int kj_rd_long(kj_rd *r, int64_t *v) {
    uint64_t acc = 0;
    const uint8_t *start = r->p;
    for (int i = 0; i < 10; i++) {
        if (r->p == r->end) {
            r->p = start;
            return kj_rd_fail(r, "truncated: varint runs past the end of the message");
        }
        uint8_t b = *r->p++;
        if (i == 9 && b > 1) {
            r->p = start;
            return kj_rd_fail(r, "varint does not fit in 64 bits");
        }
        acc |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) break;
    }
    *v = (int64_t)((acc >> 1) ^ (0 - (acc & 1)));
    return 0;
}

static int kj_rd_int(kj_rd *r, int64_t *v) {
    const uint8_t *start = r->p;
    if (kj_rd_long(r, v) != 0) return -1;
    if (*v < INT32_MIN || *v > INT32_MAX) {
        r->p = start;
        return kj_rd_fail(r, "int %" PRId64 " out of 32-bit range", *v);
    }
    return 0;
}

/* A string/bytes length, checked against what remains. */
static int kj_rd_len(kj_rd *r, size_t *n) {
    const uint8_t *start = r->p;
    int64_t v = 0; /* set by kj_rd_long on success; initialised for gcc -O3's analysis */
    if (kj_rd_long(r, &v) != 0) return -1;
    if (v < 0) {
        r->p = start;
        return kj_rd_fail(r, "negative length %" PRId64, v);
    }
    if ((uint64_t)v > kj_rd_left(r)) {
        size_t left = kj_rd_left(r);
        r->p = start;
        return kj_rd_fail(r, "truncated: length %" PRId64 " exceeds the %zu remaining bytes", v,
                          left);
    }
    *n = (size_t)v;
    return 0;
}

static int kj_rd_need(kj_rd *r, size_t n, const char *what) {
    if (n > kj_rd_left(r))
        return kj_rd_fail(r, "truncated: %s needs %zu bytes, %zu remain", what, n, kj_rd_left(r));
    return 0;
}

/*
 * One array/map block header. `*count` > 0 items follow, 0 ends the array/map. For a negative
 * count the byte size that follows is validated and returned in `*size` (else -1).
 */
static int kj_rd_block(kj_rd *r, int64_t *count, int64_t *size) {
    const uint8_t *start = r->p;
    *size = -1;
    if (kj_rd_long(r, count) != 0) return -1;
    if (*count < 0) {
        if (*count == INT64_MIN) {
            r->p = start;
            return kj_rd_fail(r, "block count %" PRId64 " out of range", *count);
        }
        *count = -*count;
        const uint8_t *size_at = r->p;
        if (kj_rd_long(r, size) != 0) return -1;
        if (*size < 0 || (uint64_t)*size > kj_rd_left(r)) {
            size_t left = kj_rd_left(r);
            r->p = size_at;
            return kj_rd_fail(
                r, "block byte size %" PRId64 " is negative or exceeds the %zu remaining bytes",
                *size, left);
        }
    }
    return 0;
}

/* A union branch index, resolved to the branch's schema. */
static int kj_rd_branch(kj_rd *r, const kj_schema **s) {
    while ((*s)->type == KJ_AVRO_UNION) {
        const uint8_t *start = r->p;
        int64_t idx = 0;
        if (kj_rd_long(r, &idx) != 0) return -1;
        if (idx < 0 || (uint64_t)idx >= (*s)->n) {
            r->p = start;
            return kj_rd_fail(r, "union branch %" PRId64 " out of range (the union has %zu)", idx,
                              (*s)->n);
        }
        *s = (*s)->branches[idx];
    }
    return 0;
}

/* Skip one value of writer type `s`. A value of a zero-size type (null, records of nothing
 * else) is skipped without walking its schema: a registry schema of nested records of a hundred
 * null fields six deep is 20 kB and would otherwise cost 10^12 steps for zero bytes of input. With
 * that rule every step below a record consumes input or ends at a leaf, so the work is bounded
 * by the value's length times the schema's largest record. */
static int kj_skip(kj_rd *r, const kj_schema *s, int depth) {
    if (depth > KJ_DECODE_MAX_DEPTH)
        return kj_rd_fail(r, "value nested deeper than %d levels", KJ_DECODE_MAX_DEPTH);
    if (s->zero_size) return 0;
    int64_t v;
    size_t n;
    switch (s->type) {
    case KJ_AVRO_NULL:
        return 0;
    case KJ_AVRO_BOOLEAN:
        if (kj_rd_need(r, 1, "boolean") != 0) return -1;
        if (*r->p > 1) return kj_rd_fail(r, "boolean byte is %u, not 0 or 1", *r->p);
        r->p++;
        return 0;
    case KJ_AVRO_INT:
        return kj_rd_int(r, &v);
    case KJ_AVRO_LONG:
        return kj_rd_long(r, &v);
    case KJ_AVRO_FLOAT:
        if (kj_rd_need(r, 4, "float") != 0) return -1;
        r->p += 4;
        return 0;
    case KJ_AVRO_DOUBLE:
        if (kj_rd_need(r, 8, "double") != 0) return -1;
        r->p += 8;
        return 0;
    case KJ_AVRO_BYTES:
    case KJ_AVRO_STRING:
        if (kj_rd_len(r, &n) != 0) return -1;
        r->p += n;
        return 0;
    case KJ_AVRO_FIXED:
        if (kj_rd_need(r, s->n, "fixed") != 0) return -1;
        r->p += s->n;
        return 0;
    case KJ_AVRO_ENUM: {
        const uint8_t *start = r->p;
        if (kj_rd_int(r, &v) != 0) return -1;
        if (v < 0 || (uint64_t)v >= s->n) {
            r->p = start;
            return kj_rd_fail(r, "enum index %" PRId64 " out of range (%s has %zu symbols)", v,
                              s->fullname, s->n);
        }
        return 0;
    }
    case KJ_AVRO_UNION:
        if (kj_rd_branch(r, &s) != 0) return -1;
        return kj_skip(r, s, depth + 1);
    case KJ_AVRO_RECORD:
        for (size_t i = 0; i < s->n; i++)
            if (kj_skip(r, s->fields[i].type, depth + 1) != 0) return -1;
        return 0;
    case KJ_AVRO_ARRAY:
    case KJ_AVRO_MAP: {
        int is_map = s->type == KJ_AVRO_MAP;
        for (;;) {
            int64_t count, size;
            if (kj_rd_block(r, &count, &size) != 0) return -1;
            if (count == 0) return 0;
            if (size >= 0) { /* the writer told us the block's size: skip it whole */
                r->p += size;
                continue;
            }
            if (!is_map && s->items->zero_size) continue; /* `count` items of zero bytes each */
            /* Every item (and map key) takes at least one byte. */
            if ((uint64_t)count > kj_rd_left(r))
                return kj_rd_fail(r, "block count %" PRId64 " exceeds the %zu remaining bytes",
                                  count, kj_rd_left(r));
            for (int64_t i = 0; i < count; i++) {
                if (is_map) { /* the key */
                    if (kj_rd_len(r, &n) != 0) return -1;
                    r->p += n;
                }
                if (kj_skip(r, s->items, depth + 1) != 0) return -1;
            }
        }
    }
    }
    return kj_rd_fail(r, "unknown writer type");
}

/* --- sinks: the fields the C record holds ----------------------------------------------- */

typedef struct kj_fill {
    int fill;            /* 0: validate and measure; 1: copy into storage */
    size_t str_bytes;    /* measured bytes of all strings, NULs included */
    size_t meta_n;       /* entries measured / filled so far */
    char *cur;           /* fill: next free byte of the string area */
    kj_meta_entry *meta; /* fill: the entry array */
    kj_job_record *out;  /* fill */
} kj_fill;

/* Read a string or bytes value (after union resolution), as text when `text` is set. */
static int kj_rd_blob(kj_rd *r, const kj_schema *w, int text, const char *what, const uint8_t **s,
                      size_t *n) {
    if (kj_rd_branch(r, &w) != 0) return -1;
    if (w->type != KJ_AVRO_STRING && w->type != KJ_AVRO_BYTES)
        return kj_rd_fail(r, "writer union branch %s cannot be read as %s",
                          kj_avro_type_name(w->type), text ? "string" : "bytes");
    if (kj_rd_len(r, n) != 0) return -1;
    *s = r->p;
    if (text) {
        size_t at;
        int bad = kj_utf8_check(*s, *n, &at);
        if (bad)
            return kj_rd_fail(r, "%s %s at its byte %zu", what,
                              bad == 1 ? "contains a NUL character" : "is not valid UTF-8", at);
    }
    r->p += *n;
    return 0;
}

static const char *kj_fill_copy(kj_fill *f, const uint8_t *s, size_t n) {
    char *dst = f->cur;
    if (n) memcpy(dst, s, n);
    dst[n] = '\0';
    f->cur += n + 1;
    return dst;
}

static int kj_sink_meta(kj_rd *r, const kj_schema *w, kj_fill *f) {
    if (kj_rd_branch(r, &w) != 0) return -1;
    if (w->type != KJ_AVRO_MAP)
        return kj_rd_fail(r, "writer union branch %s cannot be read as a map",
                          kj_avro_type_name(w->type));
    for (;;) {
        int64_t count, size;
        if (kj_rd_block(r, &count, &size) != 0) return -1;
        if (count == 0) return 0;
        /* Every entry takes at least two bytes: two lengths. */
        if ((uint64_t)count > kj_rd_left(r) / 2)
            return kj_rd_fail(
                r, "map block count %" PRId64 " exceeds what the %zu remaining bytes can hold",
                count, kj_rd_left(r));
        const uint8_t *block_start = r->p;
        for (int64_t i = 0; i < count; i++) {
            const uint8_t *k, *v = NULL;
            size_t kn = 0, vn = 0; /* set by kj_rd_len/_blob; GCC 12 -O3 cannot tell */
            if (kj_rd_len(r, &kn) != 0) return -1;
            k = r->p;
            size_t at;
            int bad = f->fill ? 0 : kj_utf8_check(k, kn, &at);
            if (bad)
                return kj_rd_fail(r, "meta key %s at its byte %zu",
                                  bad == 1 ? "contains a NUL character" : "is not valid UTF-8", at);
            r->p += kn;
            if (kj_rd_blob(r, w->items, !f->fill, "meta value", &v, &vn) != 0) return -1;
            if (f->fill) {
                kj_meta_entry *e = &f->meta[f->meta_n];
                e->key = kj_fill_copy(f, k, kn);
                e->value = kj_fill_copy(f, v, vn);
            } else {
                f->str_bytes += kn + vn + 2;
            }
            f->meta_n++;
        }
        if (size >= 0 && (size_t)(r->p - block_start) != (size_t)size)
            return kj_rd_fail(r,
                              "map block byte size %" PRId64 " does not match its %" PRId64
                              " entries (%zu bytes)",
                              size, count, (size_t)(r->p - block_start));
    }
}

static int kj_sink_read(kj_rd *r, const kj_step *st, kj_fill *f) {
    const uint8_t *s = NULL;
    size_t n = 0;
    int64_t v;
    const kj_schema *w = st->wtype;
    switch (st->sink) {
    case KJ_SINK_ID:
    case KJ_SINK_TYPE:
        if (kj_rd_blob(r, w, !f->fill, st->name, &s, &n) != 0) return -1;
        if (f->fill) {
            const char *str = kj_fill_copy(f, s, n);
            if (st->sink == KJ_SINK_ID)
                f->out->id = str;
            else
                f->out->type = str;
        } else {
            f->str_bytes += n + 1;
        }
        return 0;
    case KJ_SINK_PAYLOAD:
        if (kj_rd_blob(r, w, 0, st->name, &s, &n) != 0) return -1;
        if (f->fill) {
            f->out->payload = (const uint8_t *)kj_fill_copy(f, s, n);
            f->out->payload_len = n;
        } else {
            f->str_bytes += n + 1;
        }
        return 0;
    case KJ_SINK_CREATED_AT:
        if (kj_rd_branch(r, &w) != 0) return -1;
        if (w->type == KJ_AVRO_INT) {
            if (kj_rd_int(r, &v) != 0) return -1;
        } else if (w->type == KJ_AVRO_LONG) {
            if (kj_rd_long(r, &v) != 0) return -1;
        } else {
            return kj_rd_fail(r, "writer union branch %s cannot be read as long",
                              kj_avro_type_name(w->type));
        }
        if (f->fill) f->out->created_at = v;
        return 0;
    case KJ_SINK_META:
        return kj_sink_meta(r, w, f);
    default:
        return kj_skip(r, w, 0);
    }
}

/* One walk over a body: the writer's fields, the end check, then the defaults. */
static int kj_walk(const kj_writer *w, const uint8_t *base, const uint8_t *body, size_t len,
                   kj_fill *f, char *errstr, size_t errstr_size) {
    kj_rd r = {.p = body, .end = body + len, .base = base, .err = errstr, .errsize = errstr_size};
    for (size_t i = 0; i < w->nsteps; i++) {
        r.field = w->steps[i].name;
        if (kj_sink_read(&r, &w->steps[i], f) != 0) return -1;
    }
    r.field = NULL;
    if (r.p != r.end)
        return kj_rd_fail(&r, "%zu bytes of trailing data after the job", kj_rd_left(&r));
    for (size_t i = 0; i < w->ndefaults; i++) {
        const kj_step *st = &w->defaults[i];
        kj_rd d = {.p = st->blob,
                   .end = st->blob + st->blob_len,
                   .base = st->blob,
                   .field = st->name,
                   .err = errstr,
                   .errsize = errstr_size};
        if (kj_sink_read(&d, st, f) != 0) return -1;
    }
    return 0;
}

int kj_job_decode_body(const kj_writer *w, const uint8_t *msg, const uint8_t *body, size_t len,
                       kj_job_record *out, char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof(*out));
    kj_fill f = {0};
    if (kj_walk(w, msg, body, len, &f, errstr, errstr_size) != 0) return -1;
    /* Both terms are bounded by a small multiple of `len` (each entry takes >= 2 input bytes,
     * each string byte one input byte) plus the defaults, so this cannot overflow. */
    size_t entries = f.meta_n * sizeof(kj_meta_entry);
    size_t total = entries + f.str_bytes;
    uint8_t *storage = malloc(total ? total : 1);
    if (!storage) {
        kj_seterr(errstr, errstr_size, "out of memory (%zu bytes for one job)", total);
        return -1;
    }
    kj_fill g = {.fill = 1,
                 .cur = (char *)storage + entries,
                 .meta = (kj_meta_entry *)(void *)storage,
                 .out = out};
    if (kj_walk(w, msg, body, len, &g, errstr, errstr_size) != 0 || g.meta_n != f.meta_n ||
        (size_t)(g.cur - (char *)storage) != total) {
        free(storage);
        memset(out, 0, sizeof(*out));
        kj_seterr(errstr, errstr_size, "internal error: second decoding pass disagreed");
        return -1;
    }
    out->meta = f.meta_n ? g.meta : NULL;
    out->meta_count = f.meta_n;
    out->storage_ = storage;
    return 0;
}

/* --- plans ------------------------------------------------------------------------------ */

/* Can a writer value of type `w` feed `sink`? A union can when one of its branches can; the
 * branch actually written is checked per message. */
static int kj_sink_accepts(kj_sink sink, const kj_schema *w) {
    if (w->type == KJ_AVRO_UNION) {
        for (size_t i = 0; i < w->n; i++)
            if (kj_sink_accepts(sink, w->branches[i])) return 1;
        return 0;
    }
    switch (sink) {
    case KJ_SINK_ID:
    case KJ_SINK_TYPE:
    case KJ_SINK_PAYLOAD:
        return w->type == KJ_AVRO_STRING || w->type == KJ_AVRO_BYTES;
    case KJ_SINK_CREATED_AT:
        return w->type == KJ_AVRO_INT || w->type == KJ_AVRO_LONG;
    case KJ_SINK_META:
        return w->type == KJ_AVRO_MAP &&
               (kj_sink_accepts(KJ_SINK_ID, w->items)); /* values: string or bytes */
    default:
        return 1;
    }
}

/* Unqualified name of a full name. */
static const char *kj_short_name(const char *fullname) {
    const char *dot = strrchr(fullname, '.');
    return dot ? dot + 1 : fullname;
}

kj_writer *kj_writer_build(kj_schema_tree *wtree, const kj_schema_tree *reader, char *errstr,
                           size_t errstr_size) {
    kj_writer *w = calloc(1, sizeof(*w));
    if (!w) {
        kj_schema_tree_free(wtree);
        kj_seterr(errstr, errstr_size, "out of memory");
        return NULL;
    }
    w->tree = wtree;
    const kj_schema *ws = wtree->root, *rs = reader->root;
    if (kj_schema_tree_canonical(wtree, &w->canonical, errstr, errstr_size) != 0) goto fail;
    w->fingerprint = kj_crc64_avro(w->canonical, strlen(w->canonical));
    if (ws->type != KJ_AVRO_RECORD || rs->type != KJ_AVRO_RECORD ||
        strcmp(kj_short_name(ws->fullname), kj_short_name(rs->fullname)) != 0) {
        kj_seterr(errstr, errstr_size,
                  "writer schema %s does not resolve to record %s: not a record of the same name",
                  ws->fullname ? ws->fullname : kj_avro_type_name(ws->type), rs->fullname);
        goto fail;
    }
    w->steps = calloc(ws->n ? ws->n : 1, sizeof(*w->steps));
    w->defaults = calloc(KJ_SINK_COUNT_, sizeof(*w->defaults));
    if (!w->steps || !w->defaults) {
        kj_seterr(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < ws->n; i++) {
        const kj_schema_field *wf = &ws->fields[i];
        kj_step *st = &w->steps[w->nsteps++];
        st->wtype = wf->type;
        st->name = wf->name;
        st->sink = KJ_SINK_NONE;
        for (size_t k = 0; k < rs->n; k++) {
            if (strcmp(rs->fields[k].name, wf->name) == 0) {
                st->sink = kj_sink_for_field(wf->name);
                break;
            }
        }
        if (st->sink != KJ_SINK_NONE && !kj_sink_accepts(st->sink, wf->type)) {
            kj_seterr(errstr, errstr_size,
                      "field \"%s\": writer type %s cannot be read as the reader's", wf->name,
                      kj_avro_type_name(wf->type->type));
            goto fail;
        }
    }
    /* Reader fields the writer lacks: every one needs a default; those we hold are read from
     * their encoded default. Offsets into `blobs` are fixed up once it stops growing. */
    size_t offsets[KJ_SINK_COUNT_];
    for (size_t k = 0; k < rs->n; k++) {
        const kj_schema_field *rf = &rs->fields[k];
        int in_writer = 0;
        for (size_t i = 0; i < ws->n && !in_writer; i++)
            in_writer = strcmp(ws->fields[i].name, rf->name) == 0;
        if (in_writer) continue;
        if (!rf->default_value) {
            kj_seterr(errstr, errstr_size,
                      "reader field \"%s\" is missing from the writer schema and has no default",
                      rf->name);
            goto fail;
        }
        kj_sink sink = kj_sink_for_field(rf->name);
        if (sink == KJ_SINK_NONE) continue;
        char why[160];
        offsets[w->ndefaults] = w->blobs.len;
        if (kj_schema_encode_json(&w->blobs, rf->type, rf->default_value, why, sizeof(why)) != 0) {
            kj_seterr(errstr, errstr_size, "reader field \"%s\": %s", rf->name, why);
            goto fail;
        }
        kj_step *st = &w->defaults[w->ndefaults++];
        st->sink = sink;
        st->wtype = rf->type;
        st->name = rf->name;
        st->blob_len = w->blobs.len - offsets[w->ndefaults - 1];
    }
    for (size_t i = 0; i < w->ndefaults; i++)
        w->defaults[i].blob = w->blobs.data + offsets[i];
    /* Validate the defaults as the decoder will read them (UTF-8, no NUL, types). */
    for (size_t i = 0; i < w->ndefaults; i++) {
        kj_fill f = {0};
        char why[200];
        kj_rd d = {.p = w->defaults[i].blob,
                   .end = w->defaults[i].blob + w->defaults[i].blob_len,
                   .base = w->defaults[i].blob,
                   .field = w->defaults[i].name,
                   .err = why,
                   .errsize = sizeof(why)};
        if (!kj_sink_accepts(w->defaults[i].sink, w->defaults[i].wtype) ||
            kj_sink_read(&d, &w->defaults[i], &f) != 0 || d.p != d.end) {
            kj_seterr(errstr, errstr_size, "default of reader field \"%s\" is unusable: %s",
                      w->defaults[i].name, why);
            goto fail;
        }
    }
    return w;
fail:
    kj_writer_free(w);
    return NULL;
}

void kj_writer_free(kj_writer *w) {
    if (!w) return;
    kj_schema_tree_free(w->tree);
    free(w->canonical);
    free(w->steps);
    free(w->defaults);
    kj_buf_free(&w->blobs);
    free(w);
}

uint64_t kj_writer_fingerprint(const kj_writer *w) {
    return w->fingerprint;
}
const char *kj_writer_canonical(const kj_writer *w) {
    return w->canonical;
}

/* --- entry point ------------------------------------------------------------------------ */

int kj_job_decode_ex(const void *buf, size_t len, kj_job_record *out, kj_encoding *enc_out,
                     uint32_t *schema_id_out, char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof(*out));
    const kj_codec_state *st = kj_codec_state_get(errstr, errstr_size);
    if (!st) return -1;
    const uint8_t *b = buf;
    if (len == 0 || !b) {
        kj_seterr(errstr, errstr_size, "empty message: not a job");
        return -1;
    }
    /*
     * Single-object messages start with C3 01. A plain-binary job never does: its first field
     * is the id string, whose length varint C3 01 would be zig-zag -98, a negative length that
     * no valid writer produces (init checks that the current schema still starts with id).
     */
    if (len >= 2 && b[0] == 0xC3 && b[1] == 0x01) {
        if (len < 10) {
            kj_seterr(errstr, errstr_size,
                      "truncated single-object header: %zu bytes, the C3 01 marker and fingerprint "
                      "need 10",
                      len);
            return -1;
        }
        uint64_t fp = 0;
        for (int i = 7; i >= 0; i--)
            fp = (fp << 8) | b[2 + i];
        for (size_t i = 0; i < st->nversions; i++) {
            if (kj_writer_fingerprint(st->versions[i]) == fp) {
                if (enc_out) *enc_out = KJ_ENCODING_SINGLE_OBJECT;
                return kj_job_decode_body(st->versions[i], b, b + 10, len - 10, out, errstr,
                                          errstr_size);
            }
        }
        kj_seterr(errstr, errstr_size,
                  "single-object message names unknown writer schema fingerprint 0x%016" PRIx64
                  " (not one of the %zu schema versions in schemas/)",
                  fp, st->nversions);
        return -1;
    }
    if (enc_out) *enc_out = KJ_ENCODING_BINARY;
    char plain_err[256] = "";
    if (kj_job_decode_body(st->current, b, b, len, out, plain_err, sizeof(plain_err)) == 0)
        return 0;
    /*
     * Confluent Schema Registry framing: magic byte 00, 4-byte big-endian schema id, then the
     * Avro body written with the schema the id names. A plain job can start with 00 too (an
     * empty id), so the plain reading above always comes first and wins; a value that is not a
     * plain job and starts with 00 and a full header is handed back as framed, with its id.
     */
    uint32_t schema_id = 0;
    if (kj_confluent_header_parse(b, len, &schema_id) == 0) {
        if (schema_id_out) *schema_id_out = schema_id;
        if (enc_out) *enc_out = KJ_ENCODING_CONFLUENT;
        kj_job_record probe;
        char perr[8];
        int body_is_job =
            kj_job_decode_body(st->current, b, b + KJ_CONFLUENT_HEADER_LEN,
                               len - KJ_CONFLUENT_HEADER_LEN, &probe, perr, sizeof(perr)) == 0;
        kj_job_record_free(&probe);
        if (body_is_job)
            kj_seterr(errstr, errstr_size,
                      "Confluent Schema Registry framing, schema id %" PRIu32
                      ", but kafka.schema_registry_url is not set",
                      schema_id);
        else
            kj_seterr(errstr, errstr_size,
                      "Confluent Schema Registry framing, schema id %" PRIu32
                      ", but kafka.schema_registry_url is not set (as plain Avro binary: %s)",
                      schema_id, plain_err);
        return KJ_DECODE_CONFLUENT;
    }
    kj_seterr(errstr, errstr_size, "%s", plain_err);
    return -1;
}

int kj_job_decode(const void *buf, size_t len, kj_job_record *out, kj_encoding *enc_out,
                  char *errstr, size_t errstr_size) {
    kj_encoding enc = KJ_ENCODING_BINARY;
    int rc = kj_job_decode_ex(buf, len, out, &enc, NULL, errstr, errstr_size);
    if (rc == 0 && enc_out) *enc_out = enc;
    return rc == 0 ? 0 : -1;
}

int kj_confluent_header_parse(const void *buf, size_t len, uint32_t *schema_id) {
    const uint8_t *b = buf;
    if (!b || len < KJ_CONFLUENT_HEADER_LEN || b[0] != 0x00) return -1;
    *schema_id = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
    return 0;
}

kj_writer *kj_writer_resolve(const char *writer_json, char *errstr, size_t errstr_size) {
    return kj_codec_writer_new(writer_json, errstr, errstr_size);
}

int kj_job_decode_confluent(const kj_writer *w, const void *buf, size_t len, kj_job_record *out,
                            char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof(*out));
    uint32_t id;
    if (!w || kj_confluent_header_parse(buf, len, &id) != 0) {
        kj_seterr(errstr, errstr_size, "not Confluent Schema Registry framing");
        return -1;
    }
    const uint8_t *b = buf;
    return kj_job_decode_body(w, b, b + KJ_CONFLUENT_HEADER_LEN, len - KJ_CONFLUENT_HEADER_LEN, out,
                              errstr, errstr_size);
}

void kj_job_record_free(kj_job_record *job) {
    if (!job) return;
    free(job->storage_);
    memset(job, 0, sizeof(*job));
}
