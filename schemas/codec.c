/*
 * codec.c — codec initialisation: turns the embedded .avsc files of schemas/ into the read-only
 * kj_codec_state every encode/decode call uses.
 *
 * kj_codec_init runs once (pthread_once) and:
 *  1. parses job.avsc (the current schema) and checks it is still what the C record and the
 *     encoder expect: record kjobs.Job starting with `id` (the plain/single-object detection
 *     relies on that), with id/type string, payload bytes, created_at long, meta map of string;
 *     any other field must have a default (contract: later versions only add such fields);
 *  2. computes its Parsing Canonical Form and CRC-64-AVRO fingerprint;
 *  3. builds the encoder's step list (field order from job.avsc, defaults pre-encoded);
 *  4. resolves EVERY embedded .avsc (job.avsc included) against job.avsc into a kj_writer,
 *     the table single-object fingerprints are looked up in. A version that does not resolve
 *     (e.g. a field added without a default) fails init with the file's name: that is a
 *     packaging bug, better caught at start-up than on the first message.
 * The outcome, including the error text, is kept: later calls see the same result.
 *
 * @locality any thread; the state is written only inside pthread_once
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/codec_internal.h"
#include "schemas/embedded.h"

#define KJ_CURRENT_SCHEMA_FILE "job.avsc"
#define KJ_JOB_RECORD_NAME     "kjobs.Job"

static pthread_once_t kj_codec_once = PTHREAD_ONCE_INIT;
static kj_codec_state kj_codec;
static int kj_codec_ok;
static char kj_codec_err[512];

/* Which Avro type each field of the C record must have in the current schema. */
static int kj_reader_field_ok(kj_sink sink, const kj_schema *t) {
    switch (sink) {
    case KJ_SINK_ID:
    case KJ_SINK_TYPE:
        return t->type == KJ_AVRO_STRING;
    case KJ_SINK_PAYLOAD:
        return t->type == KJ_AVRO_BYTES;
    case KJ_SINK_CREATED_AT:
        return t->type == KJ_AVRO_LONG;
    case KJ_SINK_META:
        return t->type == KJ_AVRO_MAP && t->items->type == KJ_AVRO_STRING;
    default:
        return 0;
    }
}

static int kj_check_reader(kj_codec_state *st, char *err, size_t errsize) {
    const kj_schema *r = st->reader->root;
    if (r->type != KJ_AVRO_RECORD || strcmp(r->fullname, KJ_JOB_RECORD_NAME) != 0) {
        kj_seterr(err, errsize, "%s: the top-level type must be record %s", KJ_CURRENT_SCHEMA_FILE,
                  KJ_JOB_RECORD_NAME);
        return -1;
    }
    if (r->n == 0 || strcmp(r->fields[0].name, "id") != 0) {
        kj_seterr(err, errsize,
                  "%s: the first field must stay \"id\" (single-object detection relies on it)",
                  KJ_CURRENT_SCHEMA_FILE);
        return -1;
    }
    unsigned have = 0;
    st->enc = calloc(r->n, sizeof(*st->enc));
    if (!st->enc) {
        kj_seterr(err, errsize, "out of memory");
        return -1;
    }
    size_t offsets[r->n];
    for (size_t i = 0; i < r->n; i++) {
        const kj_schema_field *f = &r->fields[i];
        kj_sink sink = kj_sink_for_field(f->name);
        st->enc[i].sink = sink;
        offsets[i] = st->enc_blobs.len;
        if (sink != KJ_SINK_NONE) {
            if (!kj_reader_field_ok(sink, f->type)) {
                kj_seterr(err, errsize,
                          "%s: field \"%s\" has type %s, which the job record cannot hold",
                          KJ_CURRENT_SCHEMA_FILE, f->name, kj_avro_type_name(f->type->type));
                return -1;
            }
            have |= 1u << sink;
            continue;
        }
        char why[200];
        if (!f->default_value) {
            kj_seterr(err, errsize, "%s: field \"%s\" needs a default (new fields must have one)",
                      KJ_CURRENT_SCHEMA_FILE, f->name);
            return -1;
        }
        if (kj_schema_encode_json(&st->enc_blobs, f->type, f->default_value, why, sizeof(why)) !=
            0) {
            kj_seterr(err, errsize, "%s: field \"%s\": %s", KJ_CURRENT_SCHEMA_FILE, f->name, why);
            return -1;
        }
        st->enc[i].blob_len = st->enc_blobs.len - offsets[i];
    }
    st->nenc = r->n;
    for (size_t i = 0; i < r->n; i++)
        if (st->enc[i].sink == KJ_SINK_NONE) st->enc[i].blob = st->enc_blobs.data + offsets[i];
    for (int s = KJ_SINK_ID; s < KJ_SINK_COUNT_; s++) {
        if (!(have & (1u << s))) {
            kj_seterr(
                err, errsize,
                "%s: a field the job record holds is missing (id, type, payload, created_at, meta)",
                KJ_CURRENT_SCHEMA_FILE);
            return -1;
        }
    }
    return 0;
}

static int kj_codec_build(kj_codec_state *st, char *err, size_t errsize) {
    for (size_t i = 0; i < kj_embedded_schema_count; i++)
        if (strcmp(kj_embedded_schemas[i].file, KJ_CURRENT_SCHEMA_FILE) == 0)
            st->json = kj_embedded_schemas[i].json;
    if (!st->json) {
        kj_seterr(err, errsize, "no %s among the embedded schemas", KJ_CURRENT_SCHEMA_FILE);
        return -1;
    }
    char why[400];
    st->reader = kj_schema_tree_parse(st->json, why, sizeof(why));
    if (!st->reader) {
        kj_seterr(err, errsize, "%s: %s", KJ_CURRENT_SCHEMA_FILE, why);
        return -1;
    }
    if (kj_check_reader(st, err, errsize) != 0) return -1;
    if (kj_schema_tree_canonical(st->reader, &st->canonical, err, errsize) != 0) return -1;
    st->fingerprint = kj_crc64_avro(st->canonical, strlen(st->canonical));

    st->versions = calloc(kj_embedded_schema_count, sizeof(*st->versions));
    st->version_files = calloc(kj_embedded_schema_count, sizeof(*st->version_files));
    if (!st->versions || !st->version_files) {
        kj_seterr(err, errsize, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < kj_embedded_schema_count; i++) {
        const kj_embedded_schema *e = &kj_embedded_schemas[i];
        kj_schema_tree *t = kj_schema_tree_parse(e->json, why, sizeof(why));
        kj_writer *w = t ? kj_writer_build(t, st->reader, why, sizeof(why)) : NULL;
        if (!w) {
            kj_seterr(err, errsize, "schemas/%s: %s", e->file, why);
            return -1;
        }
        st->versions[st->nversions] = w;
        st->version_files[st->nversions++] = e->file;
        if (strcmp(e->file, KJ_CURRENT_SCHEMA_FILE) == 0) st->current = w;
    }
    return 0;
}

static void kj_codec_do_init(void) {
    kj_codec_ok = kj_codec_build(&kj_codec, kj_codec_err, sizeof(kj_codec_err)) == 0;
    /* On failure the partial state is kept (and unused): init never runs again. */
}

int kj_codec_init(char *errstr, size_t errstr_size) {
    pthread_once(&kj_codec_once, kj_codec_do_init);
    if (!kj_codec_ok) {
        kj_seterr(errstr, errstr_size, "job codec: %s", kj_codec_err);
        return -1;
    }
    return 0;
}

const kj_codec_state *kj_codec_state_get(char *errstr, size_t errstr_size) {
    return kj_codec_init(errstr, errstr_size) == 0 ? &kj_codec : NULL;
}

kj_writer *kj_codec_writer_new(const char *writer_json, char *errstr, size_t errstr_size) {
    const kj_codec_state *st = kj_codec_state_get(errstr, errstr_size);
    if (!st) return NULL;
    kj_schema_tree *t = kj_schema_tree_parse(writer_json, errstr, errstr_size);
    return t ? kj_writer_build(t, st->reader, errstr, errstr_size) : NULL;
}

const char *kj_schema_json(void) {
    const kj_codec_state *st = kj_codec_state_get(NULL, 0);
    return st ? st->json : NULL;
}

const char *kj_schema_canonical(void) {
    const kj_codec_state *st = kj_codec_state_get(NULL, 0);
    return st ? st->canonical : NULL;
}

uint64_t kj_schema_fingerprint(void) {
    const kj_codec_state *st = kj_codec_state_get(NULL, 0);
    return st ? st->fingerprint : 0;
}

int kj_encoding_parse(const char *name, kj_encoding *out) {
    if (name && strcmp(name, "binary") == 0) {
        *out = KJ_ENCODING_BINARY;
        return 0;
    }
    if (name && strcmp(name, "single-object") == 0) {
        *out = KJ_ENCODING_SINGLE_OBJECT;
        return 0;
    }
    return -1;
}

const char *kj_encoding_name(kj_encoding enc) {
    if (enc == KJ_ENCODING_CONFLUENT) return "confluent";
    return enc == KJ_ENCODING_SINGLE_OBJECT ? "single-object" : "binary";
}
