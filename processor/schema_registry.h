/*
 * schema_registry.h — decoding jobs written in Confluent Schema Registry framing: the registry
 * client (HTTP through libcurl), its answers, and the decode entry point the worker and the
 * CLI use for every record value.
 *
 * DESIGN
 * ------
 * Wire format: magic byte 00, a 4-byte big-endian schema id, the Avro body written with the
 * schema the id names. The codec (schemas/codec.h) recognises the framing and decodes a body
 * once given a resolved writer; this module gets the writer: GET <url>/schemas/ids/<id> (the
 * Confluent API; Apicurio Registry serves it under /apis/ccompat/v7), the answer's "schema"
 * parsed and resolved against schemas/job.avsc (kj_writer_resolve), the verdict cached
 * (schema_cache.h: found and incompatible for good, "not found" for
 * kafka.schema_registry_unknown_ttl).
 *
 * What goes to the DLQ and what waits. A job is dead-lettered (class decode, the reason naming
 * the schema id) only on a verdict about the id itself: the registry answered 404 with error
 * code 40403 ("not found"), or its schema is not Avro, or does not resolve to kjobs.Job, or the
 * body does not decode with it. Everything else — no connection, a timeout, TLS or auth
 * failures, 5xx, a 404 without code 40403 (a wrong URL), an answer that is not the expected
 * JSON — says nothing about the job: kj_sr_decode returns KJ_SR_UNAVAILABLE and the caller
 * retries later (the worker holds the batch, so its partition's committed offset cannot pass
 * the job; job_pipeline.c, decode_job).
 *
 * URLs: kafka.schema_registry_url may list several; a request tries them in turn, starting with
 * the last one that answered, and the first definite answer wins.
 *
 * Threads: one client is shared by all worker threads. Requests run on the calling thread, one
 * curl easy handle each (ids are fetched about once per process, so connection reuse is not
 * worth a shared handle); two threads may fetch the same id at once, the cache keeps one answer.
 * Secrets (the basic-auth password, the key passphrase) are handed to libcurl only, never logged.
 *
 * @locality any thread (kj_sr_client_new/_free: main thread, before/after the workers)
 */
#ifndef KJOBS_SCHEMA_REGISTRY_H
#define KJOBS_SCHEMA_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"
#include "schemas/codec.h"

typedef struct kj_sr_client kj_sr_client;

/** kj_sr_decode's answer when the schema could not be fetched now: try again later. */
#define KJ_SR_UNAVAILABLE 1

/** Most bytes of a registry answer read (a larger 200 answer is an incompatible schema). */
#define KJ_SR_MAX_ANSWER (1024 * 1024)

/** Nonzero: stop now (give up waiting, abort a request in progress). Called often; cheap. */
typedef int (*kj_sr_cancel_fn)(void *opaque);

/**
 * A client for cfg's kafka.schema_registry_* settings (cfg->sr_url must not be ""); it copies
 * what it needs, cfg may go away. Initialises libcurl (call before starting threads). Returns
 * NULL with errstr on a bad setting or out of memory.
 */
kj_sr_client *kj_sr_client_new(const kj_config *cfg, char *errstr, size_t errstr_size);

/** Free the client (no request may be running). NULL is ok. */
void kj_sr_client_free(kj_sr_client *c);

/**
 * Decode one record value: plain binary, single-object, or Confluent framing (with the
 * registry). Returns
 *   0                  decoded: *out (free with kj_job_record_free), *enc_out when not NULL;
 *   -1                 not a job: errstr holds the dead-letter reason (for a framed value it
 *                      names the schema id; with `c` NULL it says kafka.schema_registry_url is
 *                      not set);
 *   KJ_SR_UNAVAILABLE  framed, and the schema could not be fetched now (errstr says why; nothing
 *                      cached): retry later. Also returned, without a request, when `cancel`
 *                      answers nonzero before one would start.
 * `c` may be NULL (no registry configured). `cancel` (may be NULL) is also checked during a
 * request, which it aborts. Cache hits never block on the network.
 */
int kj_sr_decode(kj_sr_client *c, const void *buf, size_t len, kj_job_record *out,
                 kj_encoding *enc_out, kj_sr_cancel_fn cancel, void *cancel_opaque, char *errstr,
                 size_t errstr_size);

/* ---- exposed for unit tests and the fuzzer ---- */

typedef enum {
    KJ_SR_ANSWER_SCHEMA = 0, /* 200 with an Avro "schema": *schema_out is it */
    KJ_SR_ANSWER_NOT_FOUND,  /* 404 with error_code 40403 (or 40401, subject not found) */
    KJ_SR_ANSWER_NOT_AVRO,   /* 200, but "schemaType" is not AVRO (or the answer is too large) */
    KJ_SR_ANSWER_ERROR,      /* anything else: says nothing about the id */
} kj_sr_answer;

/**
 * Classify one HTTP answer to GET /schemas/ids/{id}: `status` is the HTTP status, `body` its
 * first `len` bytes (any bytes; need not be NUL-terminated), `truncated` nonzero when the body
 * was longer than KJ_SR_MAX_ANSWER. For KJ_SR_ANSWER_SCHEMA, `*schema_out` is the malloc'd
 * schema text (caller frees); otherwise NULL and `why` says what the answer was, in printable
 * ASCII (registry messages quoted, at most 200 bytes of them).
 */
kj_sr_answer kj_sr_parse_answer(long status, const char *body, size_t len, int truncated,
                                char **schema_out, char *why, size_t why_size);

/**
 * `url` without credentials for logs: "https://user:pw@host/x" → "https://host/x". Writes at
 * most `size` bytes (NUL included) to buf.
 */
void kj_sr_redact_url(const char *url, char *buf, size_t size);

#endif /* KJOBS_SCHEMA_REGISTRY_H */
