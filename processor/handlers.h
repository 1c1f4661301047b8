/*
 * handlers.h — the handler side of kjobs.h: what a kjobs_job_t and a kjobs_result_t are
 * inside, the registry that maps a job type to its handler, the built-in job types, and
 * plugin loading. Built-ins and plugins register through the same public calls.
 *
 * Lookup order for a job type: registered handlers (built-ins, then the plugin), then the
 * fallback (the exec handler, if configured, for every type or only handlers.exec_types).
 * The registry is filled before workers start and is read-only afterwards, so lookups take
 * no lock.
 */
#ifndef KJOBS_HANDLERS_H
#define KJOBS_HANDLERS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "kjobs.h"
#include "processor/trace_context.h"
#include "schemas/codec.h"

typedef enum {
    KJ_OUTCOME_OK = 0,
    KJ_OUTCOME_RETRY,          /* retryable failure: next ladder step or the DLQ */
    KJ_OUTCOME_FAIL,           /* permanent: straight to the DLQ */
    KJ_OUTCOME_DECODE,         /* value could not be decoded: DLQ, class "decode" */
    KJ_OUTCOME_UNKNOWN_TYPE,   /* no handler for the type: DLQ, class "unknown-type" */
    KJ_OUTCOME_TIMEOUT,        /* handler ran out of time (a time limit, exec or in-process): like
                                  retry */
    KJ_OUTCOME_INVALID_HEADER, /* ladder record with a bad kjobs control header: DLQ, not run */
    KJ_OUTCOME_CRASH_LOOP,     /* ran alone while dlq.crash_loop_limit workers died: DLQ, not run
                                  again (crash_guard.h) */
} kj_outcome;

#define KJ_ERROR_MAX 1024

struct kjobs_result {
    kj_outcome outcome;
    int64_t delay_ms; /* retry only: < 0 = ladder delay */
    char error[KJ_ERROR_MAX];
};

struct kjobs_job {
    kj_job_record record; /* decoded value */
    const rd_kafka_message_t *msg;
    const char *topic;
    int attempt;              /* 1 = first run */
    kj_trace_context trace;   /* validated traceparent/tracestate (kj_trace_context_read) */
    int64_t deadline_ms;      /* time limit, epoch ms (kjobs_job_deadline); 0 none */
    int64_t deadline_mono_ms; /* the same on the monotonic clock (kjobs_job_cancelled) */
};

typedef struct kj_handler {
    char *type;
    kjobs_job_handler_fn *job_fn; /* exactly one of job_fn/batch_fn is set */
    kjobs_batch_handler_fn *batch_fn;
    void *opaque;
    int64_t timeout_ms; /* time limit per job, 0 none (handlers.timeout[s]; not the exec one) */
    const char *timeout_setting; /* "handlers.timeout" or "handlers.timeouts": where it came from */
} kj_handler;

typedef struct kjobs_registry kj_handler_registry;

kj_handler_registry *kj_handlers_new(void);
void kj_handlers_free(kj_handler_registry *reg);
/** Handler for `type`, or the fallback when it accepts the type, or NULL. Lock-free. */
const kj_handler *kj_handlers_lookup(const kj_handler_registry *reg, const char *type);
/** Catch-all batch handler (the exec handler). `types` NULL/empty = every unclaimed type. */
void kj_handlers_set_fallback(kj_handler_registry *reg, kjobs_batch_handler_fn *fn, void *opaque,
                              char *const *types, size_t type_count);
/**
 * Gives every registered (in-process) handler its time limit: `default_ms` (0 = none), or the
 * limit of its entry in `entries` ("type=duration", handlers.timeouts; already validated). An
 * entry for a type no registered handler claims, or a type named twice, is an error (message in
 * errstr, -1): the exec handler has its own limit, and a typo must not pass silently. Call after
 * plugins loaded, before workers start (run and run --check-config both do: cmd_run.c).
 */
int kj_handlers_set_timeouts(kj_handler_registry *reg, int64_t default_ms, char *const *entries,
                             size_t entry_count, char *errstr, size_t errstr_size);
/** Register kjobs.noop, kjobs.sleep, kjobs.fail, kjobs.fail-permanent, kjobs.flaky. */
int kj_builtins_register(kj_handler_registry *reg, char *errstr, size_t errstr_size);
/** dlopen() a plugin and call its kjobs_plugin_init. 0 ok, -1 with errstr. */
int kj_handlers_load_plugin(kj_handler_registry *reg, const char *path, char *errstr,
                            size_t errstr_size);

/** Human name of an outcome ("ok", "retry", ...) and the DLQ error class of a failure. */
const char *kj_outcome_name(kj_outcome outcome);
const char *kj_outcome_error_class(kj_outcome outcome);

/** Reset a result slot to "ok". */
void kj_result_reset(kjobs_result_t *result);
void kj_result_set(kjobs_result_t *result, kj_outcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* KJOBS_HANDLERS_H */
