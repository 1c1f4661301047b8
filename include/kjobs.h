/*
 * kjobs.h — the one public header of kjobs: what a job handler sees and how handlers are
 * registered, in-process (built-ins) or from a plugin shared object.
 *
 * Design:
 *  - Jobs are opaque (`kjobs_job_t`) and read through accessors, so the struct can grow without
 *    breaking plugins. Every pointer returned by an accessor is owned by kjobs and valid only for
 *    the duration of the handler call that received the job.
 *  - A handler reports each job's outcome through a `kjobs_result_t`. A result left untouched
 *    means success. `kjobs_result_retry()` asks for another attempt (optionally after a delay of
 *    the handler's choosing); `kjobs_result_fail()` is a permanent failure that goes straight to
 *    the dead-letter topic. The last call wins.
 *  - Two handler shapes: per-job (called once per job, in offset order) and per-batch (called
 *    once with all jobs of one partition batch, in offset order). A batch never mixes partitions,
 *    and one partition is never handled by two threads at once (with batch.ordering = "key":
 *    one key never is; jobs of different keys of a partition may run concurrently).
 *  - Handlers run on worker threads. A handler may be called concurrently for jobs of different
 *    partitions, so any state behind `opaque` must be thread-safe.
 *  - Plugins: a shared object exporting `kjobs_plugin_init` (see KJOBS_PLUGIN_INIT_SYMBOL) that
 *    registers its handlers on the registry it is given, in the style of librdkafka's conf_init
 *    or Redis's OnLoad. The ABI version lets kjobs refuse plugins built against another layout.
 */
#ifndef KJOBS_H
#define KJOBS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KJOBS_ABI_VERSION 1

/*
 * KJOBS_API marks the functions the `kjobs` executable exports for plugins to resolve at load
 * time. kjobs itself is compiled with hidden default visibility (C_VISIBILITY_PRESET hidden), so
 * these declarations are its whole dynamic ABI; ctest lint.exported_symbols checks that the
 * executable exports exactly them. In a plugin the attribute on these (undefined) declarations
 * is harmless.
 */
#if defined(__GNUC__) || defined(__clang__)
#define KJOBS_API __attribute__((visibility("default")))
#else
#define KJOBS_API
#endif

/** A decoded job plus where it came from. Opaque; read it through the accessors below. */
typedef struct kjobs_job kjobs_job_t;

/** The outcome slot of one job. Opaque; set it through kjobs_result_*(). */
typedef struct kjobs_result kjobs_result_t;

/** Where handlers are registered. Opaque; owned by kjobs. */
typedef struct kjobs_registry kjobs_registry_t;

/* --- Job accessors (pointers valid during the handler call only) ----------------------- */

/** Producer-chosen unique id (NUL-terminated UTF-8). */
KJOBS_API const char *kjobs_job_id(const kjobs_job_t *job);
/** Job type (NUL-terminated), the key that selected this handler. */
KJOBS_API const char *kjobs_job_type(const kjobs_job_t *job);
/** Opaque payload bytes; `*lenp` receives the length. Never NULL (may be empty). */
KJOBS_API const void *kjobs_job_payload(const kjobs_job_t *job, size_t *lenp);
/** Kafka message key, or NULL when the job has none; `*lenp` receives the length. */
KJOBS_API const void *kjobs_job_key(const kjobs_job_t *job, size_t *lenp);
/** Producer's creation time, epoch milliseconds. */
KJOBS_API int64_t kjobs_job_created_at(const kjobs_job_t *job);
/** Value of meta entry `name` (e.g. "traceparent"), or NULL when absent. */
KJOBS_API const char *kjobs_job_meta(const kjobs_job_t *job, const char *name);
/**
 * W3C trace context of the job (https://www.w3.org/TR/trace-context-1/): the `traceparent`
 * record header (name in any case), else the meta entry "traceparent"; NULL when the job has
 * none or its value is invalid (invalid values are ignored and counted, never fail the job).
 * Always the 55-character version-00 form, e.g.
 * "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01". NUL-terminated; owned by kjobs,
 * valid during the handler call only. Ladder retries carry the original headers, so every
 * attempt sees the same value.
 */
KJOBS_API const char *kjobs_job_traceparent(const kjobs_job_t *job);
/**
 * The `tracestate` that goes with kjobs_job_traceparent(), from the same carrier (several
 * headers are joined with ","), validated; NULL when there is no valid traceparent, no
 * tracestate, or an invalid one. At most 512 characters (longer values lose whole entries, as
 * W3C Trace Context §3.3.1.5 says). NUL-terminated; owned by kjobs, valid during the handler
 * call only.
 */
KJOBS_API const char *kjobs_job_tracestate(const kjobs_job_t *job);
/** Attempt number of this run: 1 for the first run, 2 for the first retry, ... With
 * retry.in_place_attempts = L every try in place is an attempt too, and each run owns a block of
 * 1 + L attempts: the first run from the ladder is attempt L + 2 (docs/retries.md). */
KJOBS_API int kjobs_job_attempt(const kjobs_job_t *job);
/** Topic, partition and offset of the record being handled (a ladder topic on retries). */
KJOBS_API const char *kjobs_job_topic(const kjobs_job_t *job);
KJOBS_API int32_t kjobs_job_partition(const kjobs_job_t *job);
KJOBS_API int64_t kjobs_job_offset(const kjobs_job_t *job);
/**
 * When this job's time limit runs out (handlers.timeout, handlers.timeouts), epoch
 * milliseconds; 0 when its type has no limit. The jobs of one per-batch call share one
 * deadline (the call's start + the limit times its number of jobs).
 */
KJOBS_API int64_t kjobs_job_deadline(const kjobs_job_t *job);
/**
 * Nonzero once the job's time limit has passed (measured on the monotonic clock from the
 * handler call's start): a long handler should check it between steps and return. Its jobs
 * then fail with error class "timeout" whatever the handler reports; past
 * handlers.timeout_grace more kjobs exits the process (docs/ordering.md, "Time limits").
 * Cheap (one clock read), callable from any thread while the handler call lasts. Always 0
 * for a type without a limit.
 */
KJOBS_API int kjobs_job_cancelled(const kjobs_job_t *job);

/* --- Outcomes ------------------------------------------------------------------------- */

/** Mark the job as succeeded (the default when no kjobs_result_*() call is made). */
KJOBS_API void kjobs_result_ok(kjobs_result_t *result);
/**
 * Ask for another attempt. `delay_ms` < 0 uses the retry ladder's delay for the next step;
 * >= 0 asks for at least that delay (capped at 30 days): the job goes to the ladder step with
 * the longest delay <= delay_ms and hops along the ladder until it is due; the attempt still
 * counts towards retry.max_attempts (docs/retries.md). With retry.in_place_attempts > 0 a retry
 * with `delay_ms` < 0 or <= retry.in_place_delay first runs again in place (docs/retries.md,
 * "Retrying in place"). `fmt` may be NULL.
 * The error text is kept (truncated to 1 KiB) in the `kjobs-error` header.
 */
KJOBS_API void kjobs_result_retry(kjobs_result_t *result, int64_t delay_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Permanent failure: the job goes straight to the dead-letter topic. */
KJOBS_API void kjobs_result_fail(kjobs_result_t *result, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --- Handlers ------------------------------------------------------------------------- */

/** Per-job handler: called once per job, in offset order within a partition. */
typedef void(kjobs_job_handler_fn)(const kjobs_job_t *job, kjobs_result_t *result, void *opaque);

/**
 * Per-batch handler: `jobs[i]`'s outcome goes in `results[i]`, for i < count. All jobs come
 * from one partition, in offset order, and share one type.
 */
typedef void(kjobs_batch_handler_fn)(const kjobs_job_t *const *jobs, kjobs_result_t *const *results,
                                     size_t count, void *opaque);

/**
 * Register a handler for `type`. A type has at most one handler: registering a type twice
 * fails. Returns 0 on success, -1 on error (message in errstr). `type` is copied.
 */
KJOBS_API int kjobs_register_job_handler(kjobs_registry_t *registry, const char *type,
                                         kjobs_job_handler_fn *handler, void *opaque, char *errstr,
                                         size_t errstr_size);
KJOBS_API int kjobs_register_batch_handler(kjobs_registry_t *registry, const char *type,
                                           kjobs_batch_handler_fn *handler, void *opaque,
                                           char *errstr, size_t errstr_size);

/* --- Plugins -------------------------------------------------------------------------- */

#define KJOBS_PLUGIN_INIT_SYMBOL "kjobs_plugin_init"

/**
 * The entry point a plugin exports. `abi_version` is the KJOBS_ABI_VERSION kjobs was built
 * with; a plugin built for another version should return -1. Return 0 on success, -1 with a
 * message in errstr on failure (kjobs then refuses to start).
 */
typedef int(kjobs_plugin_init_fn)(kjobs_registry_t *registry, int abi_version, char *errstr,
                                  size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* KJOBS_H */
