/*
 * codec.h — the job codec: kjobs.Job (schemas/job.avsc) to and from Kafka record values.
 *
 * Wire formats (detected per message by kj_job_decode):
 *  - plain Avro binary written with the current schema (schemas/job.avsc), as fastavro's
 *    schemaless_writer, avsc's toBuffer or avro-c write it;
 *  - Avro single-object encoding: C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint of
 *    the writer schema's Parsing Canonical Form, then the binary body. The writer may be any
 *    schema version kept in schemas/ (all embedded at build time); it is resolved to the
 *    current schema: writer fields the reader lacks are skipped, reader fields the writer
 *    lacks take the reader's default.
 *
 *  - Confluent Schema Registry framing: magic byte 00, the 4-byte big-endian schema id, then
 *    the Avro body written with the schema that id names in a registry. The codec does not talk
 *    to a registry: kj_job_decode_ex recognises the framing and hands back the id; the caller
 *    (processor/schema_registry.h) fetches that writer schema, resolves it with
 *    kj_writer_resolve and decodes with kj_job_decode_confluent. The plain reading always comes
 *    first, because a plain job whose id is "" also starts with 00.
 *
 * Design:
 *  - Untrusted bytes are only ever read by our own bounded reader (schemas/decode.c), never
 *    by avro-c: every length is checked against the bytes that remain before anything is
 *    allocated, and a decoded job costs exactly one allocation, sized from the input.
 *  - The schemas are parsed once (kj_codec_init, pthread_once). After that, all state is
 *    read-only: every function here may be called from any thread concurrently.
 *  - Errors: functions return 0 / -1 and write a human-readable reason to `errstr`
 *    (always NUL-terminated when errstr_size > 0; errstr may be NULL when errstr_size is 0).
 *
 * @locality any thread
 */
#ifndef KJOBS_SCHEMAS_CODEC_H
#define KJOBS_SCHEMAS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One meta map entry. Both strings are NUL-terminated UTF-8 without embedded NULs. */
typedef struct kj_meta_entry {
    const char *key;
    const char *value;
} kj_meta_entry;

/**
 * A decoded or to-be-encoded job.
 *
 * Decoded records: every pointer points into `storage_`, the decoder's single allocation;
 * release it with kj_job_record_free(). `id`, `type` and meta strings are NUL-terminated
 * valid UTF-8 without embedded NULs; `payload` is never NULL (it is also followed by a NUL
 * that is not counted in payload_len). Meta entries keep the wire order.
 *
 * Caller-built records (for kj_job_encode): `storage_` is NULL and the caller owns everything;
 * `payload` may be NULL when payload_len is 0 and `meta` may be NULL when meta_count is 0.
 */
typedef struct kj_job_record {
    const char *id;
    const char *type;
    const uint8_t *payload;
    size_t payload_len;
    int64_t created_at; /* epoch ms */
    kj_meta_entry *meta;
    size_t meta_count;
    void *storage_; /* decoder's single allocation; NULL for caller-built records */
} kj_job_record;

/** Wire formats. KJ_ENCODING_CONFLUENT is detected by the decoder only (kj_job_encode refuses
 *  it: writing it needs a schema id from a registry). */
typedef enum {
    KJ_ENCODING_BINARY = 0,
    KJ_ENCODING_SINGLE_OBJECT = 1,
    KJ_ENCODING_CONFLUENT = 2
} kj_encoding;

/**
 * Parse the embedded schemas, compute their canonical forms and fingerprints and build the
 * resolution plans. Idempotent and thread-safe (pthread_once); every other function calls it
 * implicitly, so calling it first only matters to report a broken build early.
 * Returns 0, or -1 with the reason (the same reason on every later call).
 */
int kj_codec_init(char *errstr, size_t errstr_size);

/**
 * Encode `job` with the current schema. On success `*out` is a malloc'd buffer of `*out_len`
 * bytes that the caller frees. Fails (-1) on a NULL id/type, a string that is not valid UTF-8,
 * or a NULL meta key/value.
 */
int kj_job_encode(const kj_job_record *job, kj_encoding enc, uint8_t **out, size_t *out_len,
                  char *errstr, size_t errstr_size);

/** Bytes of the Confluent Schema Registry header: magic 00 and a big-endian schema id. */
#define KJ_CONFLUENT_HEADER_LEN 5

/**
 * Decode one record value. Returns 0 and fills `*out` (free with kj_job_record_free), and the
 * detected encoding in `*enc_out` when not NULL; or -1 with the reason in errstr, leaving
 * `*out` zeroed (kj_job_record_free on it is harmless). Never reads past buf[len-1].
 */
int kj_job_decode(const void *buf, size_t len, kj_job_record *out, kj_encoding *enc_out,
                  char *errstr, size_t errstr_size);

/** kj_job_decode_ex's answer for a value in Confluent Schema Registry framing. */
#define KJ_DECODE_CONFLUENT 1

/**
 * kj_job_decode, telling Confluent Schema Registry framing apart. Returns 0 (decoded, as
 * kj_job_decode), -1 (not a job: the reason in errstr), or KJ_DECODE_CONFLUENT: the value is
 * not a plain job, starts with 00 and holds a full 5-byte header; `*schema_id_out` (when not
 * NULL) is its schema id, `*enc_out` is KJ_ENCODING_CONFLUENT, `*out` is zeroed, and errstr
 * says "Confluent Schema Registry framing, schema id N, but kafka.schema_registry_url is not
 * set" (the reason to report when no registry is configured; when the body is not a job of
 * the current schema either, the plain reading's error follows in parentheses).
 */
int kj_job_decode_ex(const void *buf, size_t len, kj_job_record *out, kj_encoding *enc_out,
                     uint32_t *schema_id_out, char *errstr, size_t errstr_size);

/**
 * Parse a Confluent Schema Registry header: 0 with `*schema_id` when `len` >= 5 and buf[0] is
 * the magic byte 00, else -1 (nothing read past buf[len-1]). Says nothing about the body.
 */
int kj_confluent_header_parse(const void *buf, size_t len, uint32_t *schema_id);

/** A writer schema resolved against the current job schema (opaque, immutable once built). */
typedef struct kj_writer kj_writer;

/**
 * Parse the Avro schema JSON `writer_json` (e.g. a Schema Registry's answer) and resolve it
 * against schemas/job.avsc (Avro specification, "Schema Resolution", as schemas/README.md
 * describes: a record named Job, writer fields the job lacks are skipped, job fields the writer
 * lacks take their default, int→long and string↔bytes promotions). Returns a new writer (free
 * with kj_writer_free; read-only, so any number of threads may decode with it), or NULL with
 * the reason ("not a record of the same name", "field \"x\": writer type ... cannot be read",
 * a JSON or schema syntax error, ...).
 */
kj_writer *kj_writer_resolve(const char *writer_json, char *errstr, size_t errstr_size);

/** Free a writer from kj_writer_resolve. NULL is ok. */
void kj_writer_free(kj_writer *w);

/** CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form. */
uint64_t kj_writer_fingerprint(const kj_writer *w);

/**
 * Decode a Confluent-framed value (header included: `buf`/`len` is the whole record value) whose
 * body was written with `w`'s schema. 0 with `*out` (free with kj_job_record_free), or -1 with
 * the reason (byte offsets count from the value's first byte).
 */
int kj_job_decode_confluent(const kj_writer *w, const void *buf, size_t len, kj_job_record *out,
                            char *errstr, size_t errstr_size);

/** Free a decoded record's storage and zero the record. Frees `storage_` only. NULL is ok. */
void kj_job_record_free(kj_job_record *job);

/** The current schema's JSON text, as in schemas/job.avsc (NULL if init failed). */
const char *kj_schema_json(void);
/** Parsing Canonical Form of the current schema (NULL if init failed). */
const char *kj_schema_canonical(void);
/** CRC-64-AVRO of kj_schema_canonical() (0 if init failed). */
uint64_t kj_schema_fingerprint(void);

/**
 * Parsing Canonical Form (Avro specification, "Parsing Canonical Form for Schemas") of any
 * schema JSON. `*out` is malloc'd; the caller frees it. Does not need kj_codec_init.
 */
int kj_schema_canonical_form(const char *schema_json, char **out, char *errstr, size_t errstr_size);

/** CRC-64-AVRO (the Avro specification's 64-bit Rabin fingerprint) of `len` bytes. */
uint64_t kj_crc64_avro(const void *data, size_t len);

/** Parse an encoding name: "binary" or "single-object". Returns 0, or -1 if unknown. */
int kj_encoding_parse(const char *name, kj_encoding *out);

/** The name of `enc`: "binary", "single-object" (both accepted by kj_encoding_parse) or
 *  "confluent". */
const char *kj_encoding_name(kj_encoding enc);

#ifdef __cplusplus
}
#endif
#endif /* KJOBS_SCHEMAS_CODEC_H */
