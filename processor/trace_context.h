/*
 * trace_context.h — W3C Trace Context (`traceparent`, `tracestate`) carried by a job: where it
 * is read from, how it is validated, and what a handler gets. Owns the parsing so that the
 * batch path (job_pipeline.c) only calls kj_trace_context_read() once per decoded job.
 *
 * Carriers, in order: the record's Kafka headers (names matched case-insensitively, W3C
 * §3.2.1/§3.3.1), then the job's Avro `meta` entries "traceparent"/"tracestate" (exact names).
 * The first carrier holding a traceparent is used, with that carrier's tracestate. Producers
 * instrumented with OpenTelemetry write the headers; `meta` serves clients that cannot set
 * headers.
 *
 * Everything here is untrusted input. Validation follows W3C Trace Context Level 1
 * (Recommendation, 23 November 2021, https://www.w3.org/TR/trace-context-1/):
 *  - traceparent (§3.2.2): `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex
 *    only; version ff is invalid (§3.2.2.1); version 00 is exactly 55 characters (§3.2.2.2);
 *    an all-zero trace-id (§3.2.2.3) or parent-id (§3.2.2.4) is invalid. A higher version is
 *    parsed as §3.2.4 says (at least 55 characters, the 00 fields each followed by "-" or the
 *    end for the flags) and handed on downgraded to version 00 (§3.4 "Downgrade the version")
 *    with only the sampled flag kept (§4.3 step 2.2). Repeated traceparent headers are invalid.
 *  - tracestate (§3.3): parsed only when the traceparent is valid (§3.3); one without a
 *    traceparent is discarded (§4.2 step 3). Repeated headers are combined with "," in order
 *    (§3.3.1.1). Members are separated by ",", with spaces/tabs around them ignored and empty
 *    members allowed (§3.3.1.1); at most 32 members (§3.3.1.2); keys per §3.3.1.3.1, values per
 *    §3.3.1.3.2, each key at most once (§3.3.1.4). One bad member makes the whole value invalid
 *    (§4.3 step 3: "MAY discard the entire header"). An empty list is no tracestate.
 *  - Size (§3.3.1.5): kjobs propagates tracestate values of up to KJ_TRACESTATE_MAX (512)
 *    characters unchanged (§3.4: an unchanged traceparent means an unchanged tracestate). A
 *    longer valid value is truncated by whole entries: entries longer than 128 characters go
 *    first, then entries from the end, and the kept entries are joined with "," (OWS dropped).
 *    Inputs longer than KJ_TRACE_INPUT_MAX are refused unparsed (invalid).
 * Invalid values are ignored (the handler sees NULL), counted in
 * kjobs_trace_context_invalid_total{field}, and logged at debug level; they never fail a job.
 */
#ifndef KJOBS_TRACE_CONTEXT_H
#define KJOBS_TRACE_CONTEXT_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "kjobs.h"
#include "schemas/codec.h"

#define KJ_TRACEPARENT_LEN    55    /* version 00: 2 + 1 + 32 + 1 + 16 + 1 + 2 */
#define KJ_TRACEPARENT_MAX    512   /* a higher version longer than this is refused */
#define KJ_TRACESTATE_MAX     512   /* longest tracestate handed on (§3.3.1.5) */
#define KJ_TRACESTATE_ENTRY   128   /* entries longer than this are dropped first */
#define KJ_TRACESTATE_MEMBERS 32    /* §3.3.1.2 */
#define KJ_TRACE_INPUT_MAX    32768 /* combined tracestate input refused beyond this */

/** What a job carries, validated. Empty strings mean "none". */
typedef struct kj_trace_context {
    char traceparent[KJ_TRACEPARENT_LEN + 1];
    char tracestate[KJ_TRACESTATE_MAX + 1];
} kj_trace_context;

/** Problems found by kj_trace_context_resolve (bit set). */
enum {
    KJ_TRACE_INVALID_TRACEPARENT = 1, /* ignored: no traceparent (and no tracestate) */
    KJ_TRACE_INVALID_TRACESTATE = 2,  /* ignored: no tracestate */
    KJ_TRACE_TRUNCATED_TRACESTATE = 4 /* valid but longer than KJ_TRACESTATE_MAX: cut */
};

/**
 * Validate one traceparent value (`len` bytes, not NUL-terminated). On success writes the
 * version-00 form (55 characters + NUL) to `out` and returns true; else `*why` (static text)
 * says what is wrong and `out` is "".
 */
bool kj_traceparent_parse(const char *value, size_t len, char out[KJ_TRACEPARENT_LEN + 1],
                          const char **why);

/**
 * Validate a (combined) tracestate value. Returns 0 and writes the value to hand on to `out`
 * (KJ_TRACESTATE_MAX + 1 bytes; "" for an empty list), with `*truncated` set when entries
 * had to be dropped to fit; or -1 with `*why` (static text) and `out` = "".
 */
int kj_tracestate_parse(const char *value, size_t len, char out[KJ_TRACESTATE_MAX + 1],
                        bool *truncated, const char **why);

/**
 * The trace context of one record: from `hdrs` (may be NULL), else from `rec`'s meta (may be
 * NULL). Fills `out` and returns the KJ_TRACE_* problems found; `*why` names the first one.
 * Pure: no metrics, no logging. @locality any thread
 */
unsigned kj_trace_context_resolve(kj_trace_context *out, const rd_kafka_headers_t *hdrs,
                                  const kj_job_record *rec, const char **why);

/**
 * Resolve `job`'s trace context from its message headers and decoded record into job->trace,
 * counting and logging (debug) what was ignored. Called once per decoded job, before its
 * handler runs. @locality worker thread
 */
void kj_trace_context_read(kjobs_job_t *job);

#endif /* KJOBS_TRACE_CONTEXT_H */
