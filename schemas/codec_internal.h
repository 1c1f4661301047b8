/*
 * codec_internal.h — what the codec's files share (not a public API; tests may use it).
 *
 *  - kj_buf (common/buf.h): the growable byte buffer, for init-time work (canonical forms,
 *    encoded defaults).
 *  - kj_schema / kj_schema_tree (schema.c): our own model of an Avro schema, parsed from
 *    trusted JSON with jansson. Named-type references point at the defining node, so a tree
 *    may be cyclic (recursive records); every node is owned by its tree's `nodes` list.
 *    The canonical form (canonical.c) and the resolution plans (decode.c) both walk it.
 *  - kj_writer (decode.c): one writer schema version resolved against the current schema —
 *    the plan the decoder follows for bodies written with that version.
 *  - kj_codec_state (codec.c): everything kj_codec_init builds; read-only afterwards.
 *
 * Trees and writers are immutable once built, so any number of threads may read them.
 */
#ifndef KJOBS_SCHEMAS_CODEC_INTERNAL_H
#define KJOBS_SCHEMAS_CODEC_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "schemas/codec.h"

/* --- buffers and text ------------------------------------------------------------------- */

/* kj_buf, the growable buffer, is common/buf.h's */
void kj_buf_put_long(kj_buf *b, int64_t v); /* Avro zig-zag varint */

/** 0: valid UTF-8 without NUL; 1: contains a NUL byte; 2: invalid UTF-8. `*at` = offending index.
 */
int kj_utf8_check(const uint8_t *s, size_t n, size_t *at);

/** snprintf into errstr when errstr_size > 0 (errstr may then not be NULL). */
void kj_seterr(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- schema model ----------------------------------------------------------------------- */

typedef enum {
    KJ_AVRO_NULL,
    KJ_AVRO_BOOLEAN,
    KJ_AVRO_INT,
    KJ_AVRO_LONG,
    KJ_AVRO_FLOAT,
    KJ_AVRO_DOUBLE,
    KJ_AVRO_BYTES,
    KJ_AVRO_STRING,
    KJ_AVRO_RECORD,
    KJ_AVRO_ENUM,
    KJ_AVRO_ARRAY,
    KJ_AVRO_MAP,
    KJ_AVRO_UNION,
    KJ_AVRO_FIXED
} kj_avro_type;

typedef struct kj_schema kj_schema;

typedef struct kj_schema_field {
    const char *name; /* points into the tree's JSON */
    kj_schema *type;
    json_t *default_value; /* borrowed from the tree's JSON; NULL when the field has none */
} kj_schema_field;

struct kj_schema {
    kj_avro_type type;
    char *fullname;          /* record/enum/fixed: namespace-qualified name */
    size_t n;                /* fields, symbols or branches; fixed: size in bytes */
    kj_schema_field *fields; /* record */
    const char **symbols;    /* enum; point into the tree's JSON */
    kj_schema **branches;    /* union */
    kj_schema *items;        /* array items, map values */
    int zero_size;           /* always encoded as zero bytes (null, records of those, fixed 0) */
    kj_schema *next_node;    /* the tree's list of nodes it owns */
};

typedef struct kj_schema_tree {
    kj_schema *root;
    kj_schema *nodes;
    json_t *json;
} kj_schema_tree;

/** Parse schema JSON into a tree. NULL with a reason on error. */
kj_schema_tree *kj_schema_tree_parse(const char *schema_json, char *errstr, size_t errstr_size);
void kj_schema_tree_free(kj_schema_tree *tree);
const char *kj_avro_type_name(kj_avro_type t);
/** Parsing Canonical Form of a parsed tree, malloc'd. */
int kj_schema_tree_canonical(const kj_schema_tree *tree, char **out, char *errstr,
                             size_t errstr_size);
/** Avro-binary-encode the JSON `value` (a default) as schema `s`, appending to `out`. */
int kj_schema_encode_json(kj_buf *out, const kj_schema *s, json_t *value, char *errstr,
                          size_t errstr_size);

/* --- resolution ------------------------------------------------------------------------- */

/** The job fields the C record holds ("sinks"); any other field is skipped or ignored. */
typedef enum {
    KJ_SINK_NONE = 0,
    KJ_SINK_ID,
    KJ_SINK_TYPE,
    KJ_SINK_PAYLOAD,
    KJ_SINK_CREATED_AT,
    KJ_SINK_META,
    KJ_SINK_COUNT_
} kj_sink;

kj_sink kj_sink_for_field(const char *name);

/**
 * Resolve the writer schema `writer_tree` (ownership taken, also on error) against the
 * reader tree `reader` (the current job schema, borrowed; must outlive the writer).
 */
kj_writer *kj_writer_build(kj_schema_tree *writer_tree, const kj_schema_tree *reader, char *errstr,
                           size_t errstr_size);
/** Parse `writer_json` and resolve it against the current schema (kj_codec_init first). */
kj_writer *kj_codec_writer_new(const char *writer_json, char *errstr, size_t errstr_size);
const char *kj_writer_canonical(const kj_writer *w);

/**
 * Decode a binary body written with `w`'s schema into `out` (one allocation). `msg`/`msg_len`
 * is the whole record value, used only so error offsets count from its first byte.
 */
int kj_job_decode_body(const kj_writer *w, const uint8_t *msg, const uint8_t *body, size_t len,
                       kj_job_record *out, char *errstr, size_t errstr_size);

/* --- codec state ------------------------------------------------------------------------ */

/** One step of the encoder: a job field, or a field the C record lacks (its encoded default). */
typedef struct kj_enc_step {
    kj_sink sink;
    const uint8_t *blob; /* KJ_SINK_NONE: pre-encoded default */
    size_t blob_len;
} kj_enc_step;

typedef struct kj_codec_state {
    kj_schema_tree *reader; /* job.avsc */
    const char *json;
    char *canonical;
    uint64_t fingerprint;
    const kj_writer *current; /* job.avsc as writer: plain binary */
    kj_writer **versions;     /* every embedded .avsc, job.avsc included */
    const char **version_files;
    size_t nversions;
    kj_enc_step *enc;
    size_t nenc;
    kj_buf enc_blobs;
} kj_codec_state;

/** The state built by kj_codec_init, or NULL (with the reason) when init failed. */
const kj_codec_state *kj_codec_state_get(char *errstr, size_t errstr_size);

#endif /* KJOBS_SCHEMAS_CODEC_INTERNAL_H */
