/*
 * metrics.h — the Prometheus metrics registry and kjobs' metric set.
 *
 * DESIGN
 *   The registry is built for a hot path that runs on every job: a metric *family* (name, type,
 *   help, label names) holds *series* (one per label-value set). A series is resolved once to a
 *   `kj_metric_handle *` — a lookup under the family's mutex — and the handle then stays valid
 *   for the life of the registry, so the hot path is one relaxed atomic add and never takes a
 *   lock. Rendering takes each family's mutex only to walk its series list and reads the values
 *   with relaxed atomic loads: it never blocks an increment, and an increment never waits for a
 *   scrape.
 *
 *   - Counters are `_Atomic uint64_t` (kjobs only counts events).
 *   - Gauges are doubles kept as bits in an `_Atomic uint64_t`; set is a store, add is a CAS loop.
 *   - Histograms have fixed upper bounds chosen at registration: one atomic counter per bucket
 *     (non-cumulative) plus a CAS'd double sum. `_count` and the `+Inf` bucket are rendered from
 *     the same bucket reads, so a scrape always sees `+Inf == _count` and cumulative buckets.
 *   - Removing a label set (a revoked partition's lag gauge) hides the series and zeroes it; the
 *     memory is kept (a cached handle may still point at it), so writes through a stale handle
 *     are harmless and invisible until that label set is resolved again, which revives it.
 *     Memory is bounded by the number of distinct label sets ever seen.
 *   - Cardinality is capped per family (KJ_METRICS_MAX_SERIES): label values come partly from
 *     untrusted input (job types), so once a family is full further label sets resolve to one
 *     overflow series whose every label value is "_overflow" (logged once). Label values are
 *     truncated to KJ_METRICS_MAX_LABEL_LEN bytes and invalid UTF-8 bytes become '?', so the
 *     exposition is always valid. Handles are therefore never NULL for a registered family.
 *   - A family may also have a *collect callback*, run at scrape time (on the HTTP thread, with
 *     the family mutex held), that emits computed samples — e.g. lag computed by the runtime.
 *
 *   Output is the Prometheus text exposition format 0.0.4: `# HELP` / `# TYPE` per family in
 *   registration order, series in creation order, label values escaped (\\ \" \n).
 *
 * THE KJOBS METRIC SET (registered by the process-wide registry, kj_metrics_registry())
 *
 *   kjobs_jobs_total{topic,type,outcome}  counter
 *       Jobs finished, by the topic they were consumed from, job type and outcome (below).
 *   kjobs_job_duration_seconds{type}  histogram, buckets 0.001 .. 300
 *       Handler wall-clock time per job. A per-batch handler call is observed once per job with
 *       the call's time divided by its jobs. Jobs no handler ran (decode errors, unknown types)
 *       are not observed.
 *   kjobs_throttle_wait_seconds{type,limit}  histogram, buckets 0.001 .. 300
 *       How long a partition's head job of `type` waited for its flow-control limit
 *       (limit = rate | concurrency; `limits` in the configuration) before it ran. The jobs
 *       behind it in that partition waited with it; _sum is the partition-time lost to limits.
 *   kjobs_batch_size  histogram, buckets 1 .. 1000
 *       Jobs per handler call.
 *   kjobs_consumer_lag{topic,partition}  gauge
 *       Log end offset minus committed offset, per assigned partition; the series disappears
 *       when the partition is revoked.
 *   kjobs_commits_total{result}  counter
 *       Offset commits; result = ok | error.
 *   kjobs_rebalances_total  counter
 *       Rebalances (assign or revoke callbacks) seen by this member.
 *   kjobs_in_flight_jobs  gauge
 *       Jobs handed to handlers and not yet finished.
 *   kjobs_held_record_bytes  gauge
 *       Bytes of fetched records held (queued or running), as batch.max_pending_bytes counts.
 *   kjobs_routed_copy_bytes  gauge
 *       Bytes of retry/DLQ copies held until acknowledged (kj_router_held_bytes).
 *   kjobs_offset_resets_total  counter
 *       Consumer offset resets (jobs deleted by retention before they ran).
 *   kjobs_retry_routed_total{step}  counter
 *       Jobs produced to retry ladder step N ("1" .. "N", as in <topic>.retry.N).
 *   kjobs_dlq_routed_total{class}  counter
 *       Jobs produced to the DLQ, by kjobs-error-class: retryable (attempts exhausted),
 *       permanent, decode, unknown-type, timeout.
 *   kjobs_route_errors_total  counter
 *       Failed produces to a retry or DLQ topic.
 *   kjobs_copies_truncated_total  counter
 *       Copies that did not fit the producer's message.max.bytes (or the broker's limit) and
 *       went to the DLQ in a reduced form (header kjobs-truncated says what was dropped).
 *   kjobs_invalid_headers_total{header}  counter
 *       Ladder records dead-lettered (class invalid-header) because a kjobs control header
 *       (kjobs-attempt, kjobs-not-before, kjobs-original-*) was missing or invalid.
 *   kjobs_trace_context_invalid_total{field}  counter
 *       W3C trace context values ignored as invalid (field = traceparent | tracestate; see
 *       trace_context.h): the job still runs, without that value.
 *   kjobs_retry_hops_total  counter
 *       Ladder records released by their step before their kjobs-not-before (a per-job delay
 *       longer than the step's): re-routed down the ladder instead of run.
 *   kjobs_retries_in_place_total  counter
 *       Tries made in place (retry.in_place_attempts; N tries of a job count N): sent back to their
 * lane after retry.in_place_delay instead of copied to the ladder. kjobs_decode_errors_total
 * counter Messages that could not be decoded as a kjobs.Job.
 *   kjobs_schema_registry_requests_total{result}  counter
 *       GET /schemas/ids/{id} requests to the Schema Registry by result: found (resolves to
 *       kjobs.Job), unknown (40403), incompatible (not Avro, or not a kjobs.Job schema), error
 *       (unreachable, timeout, TLS, auth, 5xx, unexpected answer: retried, never dead-lettered).
 *   kjobs_schema_registry_waiting_batches  gauge
 *       Batches held because the registry could not be asked (their partitions do not advance).
 *   kjobs_exec_stray_replies_total  counter
 *       Lines an exec handler child wrote to stdout that answer no pending batch (a repeated
 *       or late reply, a batch_id never sent, output between batches): discarded with a warning.
 *   kjobs_console_actions_total{action,result}  counter
 *       Actions taken from the operator console (`kjobs ui`, processor/console.h): action =
 *       replay, pause, resume, breaker-resume; result = ok | partial | error | refused. Served
 *       on the console's /metrics.
 *   kjobs_partitions_paused_by_operator  gauge
 *       Partitions assigned to this member held by an operator's pause (group_control.h).
 *   kjobs_circuit_breaker_open  gauge
 *       1 while the circuit breaker is open (handlers not called), else 0.
 *   kjobs_ready  gauge
 *       1 while the worker is ready (/readyz answers 200), else 0.
 *   kjobs_build_info{version}  gauge
 *       Always 1; the version label says which kjobs build is running.
 *
 *   Outcome values of kjobs_jobs_total (kj_job_outcome):
 *     ok             the handler succeeded;
 *     retry          the job was routed to a retry ladder step;
 *     dead_lettered  the job was routed to the DLQ (attempts exhausted, permanent failure, decode
 *                    error, unknown type, timeout — kjobs_dlq_routed_total{class} says which).
 *   A job that could not be decoded has type label "_undecodable" (KJ_METRICS_TYPE_UNDECODABLE).
 *
 * @locality any thread, unless a function says otherwise
 */
#ifndef KJOBS_METRICS_H
#define KJOBS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Series per family before further label sets share the overflow series. */
#define KJ_METRICS_MAX_SERIES 4096
/** Label values longer than this (bytes) are truncated. */
#define KJ_METRICS_MAX_LABEL_LEN 256
/** Label names per family. */
#define KJ_METRICS_MAX_LABELS 8
/** Buckets per histogram (excluding +Inf). */
#define KJ_METRICS_MAX_BUCKETS 32
/** The label value every label of a family's overflow series has. */
#define KJ_METRICS_OVERFLOW_VALUE "_overflow"

typedef enum { KJ_METRIC_COUNTER, KJ_METRIC_GAUGE, KJ_METRIC_HISTOGRAM } kj_metric_type;

typedef struct kj_registry kj_registry;           /* a set of families; renders to text */
typedef struct kj_metric_family kj_metric_family; /* name, type, help, label names */
typedef struct kj_metric_handle kj_metric_handle; /* one series: family + label values */
typedef struct kj_collect kj_collect;             /* emitter passed to collect callbacks */

/* ---- Registry ------------------------------------------------------------------------------ */

kj_registry *kj_registry_new(void);
/** Frees the registry, its families and every handle. No other thread may use them then. */
void kj_registry_free(kj_registry *reg);

/**
 * Register a family. `label_names` has `nlabels` valid Prometheus label names (not "le" for
 * histograms); `buckets` (histograms only) is `nbuckets` strictly increasing finite upper bounds,
 * +Inf is implicit. Strings are copied. Returns NULL (and logs) on an invalid or duplicate name
 * or bad arguments: a programming error, so callers may treat it as fatal.
 * An unlabelled family has its single series created here (it renders 0 from the start).
 */
kj_metric_family *kj_registry_add(kj_registry *reg, const char *name, kj_metric_type type,
                                  const char *help, const char *const *label_names, size_t nlabels,
                                  const double *buckets, size_t nbuckets);

/**
 * Render every family in text format 0.0.4. Returns a NUL-terminated malloc'd buffer (free()
 * it) and its length in *len (may be NULL), or NULL if out of memory. Runs collect callbacks.
 */
char *kj_registry_render(kj_registry *reg, size_t *len);

/* ---- Families and handles ------------------------------------------------------------------ */

/**
 * Resolve a label-value set (`nlabels` strings, in label-name order; NULL reads as "") to its
 * series, creating it if needed. Takes the family mutex: do it once and cache the handle.
 * Never returns NULL for a non-NULL family (see overflow above). Revives a removed series.
 */
kj_metric_handle *kj_family_series(kj_metric_family *fam, const char *const *label_values);
/** The series of an unlabelled family (no lookup). */
kj_metric_handle *kj_family_default(kj_metric_family *fam);
/**
 * Hide the series with these label values from rendering and reset it to zero. Cached handles
 * stay valid (writes through them are invisible until the set is resolved again).
 * Returns 1 if a visible series was removed, 0 if there was none.
 */
int kj_family_remove(kj_metric_family *fam, const char *const *label_values);

/**
 * Emits one sample from a collect callback. `label_values` as for kj_family_series; the values
 * are escaped and sanitised the same way. For histogram families this is ignored.
 */
void kj_collect_emit(kj_collect *c, const char *const *label_values, double value);
typedef void(kj_collect_fn)(kj_collect *c, void *opaque);
/**
 * Install (or with fn NULL, remove) the family's collect callback, run at every render after the
 * family's own series. It runs on the scraping thread with the family mutex held: it must not
 * resolve or remove series of the same family. When this returns, a previous callback is no
 * longer running and will not be called again, so its `opaque` can be freed.
 */
void kj_family_set_collector(kj_metric_family *fam, kj_collect_fn *fn, void *opaque);

/* ---- Hot path: no locks, one atomic operation (histograms: bucket add + sum CAS) ----------- */

void kj_counter_add(kj_metric_handle *h, uint64_t n);
static inline void kj_counter_inc(kj_metric_handle *h) {
    kj_counter_add(h, 1);
}
void kj_gauge_set(kj_metric_handle *h, double v);
void kj_gauge_add(kj_metric_handle *h, double delta);
void kj_histogram_observe(kj_metric_handle *h, double v);

/* Reading values (tests, and the runtime when it needs a value back). */
uint64_t kj_counter_value(const kj_metric_handle *h);
double kj_gauge_value(const kj_metric_handle *h);
uint64_t kj_histogram_count(const kj_metric_handle *h);
double kj_histogram_sum(const kj_metric_handle *h);
/** Cumulative count of observations <= bucket i's bound; i == nbuckets is +Inf. */
uint64_t kj_histogram_bucket(const kj_metric_handle *h, size_t i);

/* ---- The kjobs metric set on the process-wide registry ------------------------------------- */

typedef enum {
    KJ_JOB_OK = 0,        /* "ok" */
    KJ_JOB_RETRY,         /* "retry" */
    KJ_JOB_DEAD_LETTERED, /* "dead_lettered" */
    KJ_JOB_SCHEDULED,     /* "scheduled": not yet due (kjobs-run-at), handed to the ladder */
    KJ_JOB_PARKED,        /* "parked": waits behind an earlier job of its key on the ladder
                           * (retry.ordering = "key"), handed to the ladder, not run */
} kj_job_outcome;
#define KJ_JOB_OUTCOME_COUNT 5
/** The label value for an outcome ("ok", "retry", "dead_lettered", "scheduled", "parked");
 * "unknown" if out of range. */
const char *kj_job_outcome_name(kj_job_outcome o);

/** The `type` label of a job whose value could not be decoded. */
#define KJ_METRICS_TYPE_UNDECODABLE "_undecodable"

/**
 * The process-wide registry holding the kjobs metric set, created on first use (any kj_metrics_*
 * call creates it; it lives until exit). kjobs_build_info starts with version "unknown" unless
 * KJOBS_VERSION is defined at compile time.
 */
kj_registry *kj_metrics_registry(void);
/** Set kjobs_build_info{version} = 1 (replacing any previous version). */
void kj_metrics_set_version(const char *version);

/* Cached handles for the hot path: resolve once per (topic, type), then kj_counter_inc(h). */
kj_metric_handle *kj_metrics_jobs_handle(const char *topic, const char *type,
                                         kj_job_outcome outcome);
kj_metric_handle *kj_metrics_duration_handle(const char *type);
kj_metric_handle *kj_metrics_lag_handle(const char *topic, int32_t partition);

/**
 * One finished job: kjobs_jobs_total{topic,type,outcome} += 1 and, if duration_seconds >= 0,
 * observe it in kjobs_job_duration_seconds{type}. Resolves labels on every call (two mutex
 * lookups): use the cached handles above on the per-job path.
 */
void kj_metrics_job_done(const char *topic, const char *type, kj_job_outcome outcome,
                         double duration_seconds);
void kj_metrics_batch_size(size_t njobs);
void kj_metrics_commit(bool ok);
void kj_metrics_rebalance(void);
void kj_metrics_in_flight_add(int64_t delta);
/** kjobs_held_record_bytes; set by the poll thread each tick (as it is: a negative value would
 * be an accounting bug, and must show). */
void kj_metrics_held_bytes_set(int64_t bytes);
/** kjobs_routed_copy_bytes; set by the poll thread each tick from kj_router_held_bytes. */
void kj_metrics_copy_bytes_set(int64_t bytes);
void kj_metrics_offset_reset(void);
/** step is 1-based, as in the topic name <topic>.retry.<step>. */
void kj_metrics_retry_routed(int step);
/** error_class is the kjobs-error-class header value. */
void kj_metrics_dlq_routed(const char *error_class);
void kj_metrics_route_error(void);
void kj_metrics_decode_error(void);
void kj_metrics_exec_stray_reply(void);
void kj_metrics_copy_truncated(void);
/** header: the kjobs control header that was missing or invalid. */
void kj_metrics_invalid_header(const char *header);
/** field: "traceparent" or "tracestate", a value ignored as invalid. */
void kj_metrics_trace_context_invalid(const char *field);
/** A partition's head job of `type` waited `seconds` for its `limit` ("rate", "concurrency"). */
void kj_metrics_throttle_wait(const char *type, const char *limit, double seconds);
void kj_metrics_retry_hop(void);
/** Count n jobs tried again in place (kjobs_retries_in_place_total). */
void kj_metrics_retried_in_place(size_t n);
/** kjobs_periodic_enqueued_total{name} += 1 (processor/periodic.c). */
void kj_metrics_periodic_enqueued(const char *name);
/** kjobs_periodic_next_tick_seconds{name} = tick_ms / 1000; tick_ms < 0 removes the series. */
void kj_metrics_periodic_next_tick(const char *name, int64_t tick_ms);
/** Remove kjobs_periodic_next_tick_seconds{name} (the member no longer owns the schedule). */
void kj_metrics_periodic_clear(const char *name);
/** kjobs_console_actions_total{action,result} += 1: action "replay"; result "ok", "partial"
 *  (some copies not acknowledged), "error" or "refused" (a guard said no). */
void kj_metrics_console_action(const char *action, const char *result);
/* The console's gauges (kjobs ui refreshes them; docs/operations.md, "The console's metrics"). */
/** kjobs_oldest_waiting_job_age_seconds{topic}: 0 when no job waits on `topic`. */
void kj_metrics_console_oldest_waiting(const char *topic, double seconds);
/** kjobs_retry_waiting_jobs{step,topic}: step is 1-based. */
void kj_metrics_console_retry_waiting(int step, const char *topic, int64_t jobs);
/** kjobs_dlq_dead_letters{topic} and kjobs_dlq_unresolved_dead_letters{topic}. */
void kj_metrics_console_dlq(const char *topic, int64_t retained, int64_t unresolved);
void kj_metrics_circuit_breaker_set(bool open);
/** kjobs_partitions_paused_by_operator: assigned partitions held by an operator's pause. */
void kj_metrics_operator_paused_set(int partitions);
/** result: "found", "unknown", "incompatible" or "error" (one GET /schemas/ids/{id}). */
void kj_metrics_schema_registry_request(const char *result);
/** +1 when a batch starts waiting for the Schema Registry, -1 when it stops. */
void kj_metrics_schema_registry_waiting_add(int delta);
void kj_metrics_ready_set(bool ready);

/** What a worker's status report says about its jobs (processor/status_report.h): the kjobs
 *  metric set read back, summed over its labels. */
typedef struct kj_metrics_summary {
    uint64_t jobs[KJ_JOB_OUTCOME_COUNT]; /* kjobs_jobs_total by outcome, over topics and types */
    uint64_t handled;                    /* kjobs_job_duration_seconds observations, all types */
    double p50_seconds, p99_seconds;     /* of those, as histogram_quantile estimates them
                                          * (linear within a bucket; the largest finite bound
                                          * past it); -1 with no observation */
    double in_flight;                    /* kjobs_in_flight_jobs */
    bool breaker_open;                   /* kjobs_circuit_breaker_open == 1 */
    uint64_t route_errors, decode_errors, offset_resets, rebalances;
    uint64_t retries_in_place; /* kjobs_retries_in_place_total */
} kj_metrics_summary;

/** Fill *out from the process-wide registry (takes the two families' mutexes in turn). */
void kj_metrics_summary_get(kj_metrics_summary *out);

/**
 * The q-quantile (0 < q < 1) of a histogram given as `n` finite upper bounds and n + 1
 * non-cumulative bucket counts (the last one is +Inf), estimated as Prometheus'
 * histogram_quantile does; -1 when every count is 0. Pure: for the summary and its tests.
 */
double kj_metrics_quantile(double q, const double *bounds, const uint64_t *counts, size_t n);

/* Consumer lag: either set/remove per partition, or install a collector — not both. */
void kj_metrics_lag_set(const char *topic, int32_t partition, int64_t lag);
/** On revoke: the partition's lag series disappears from /metrics. */
void kj_metrics_lag_remove(const char *topic, int32_t partition);
/**
 * Lag computed at scrape time: fn is called on the HTTP thread and calls kj_metrics_lag_emit
 * for each partition. Same rules as kj_family_set_collector (pass NULL to remove).
 */
void kj_metrics_lag_set_collector(kj_collect_fn *fn, void *opaque);
void kj_metrics_lag_emit(kj_collect *c, const char *topic, int32_t partition, int64_t lag);

#endif /* KJOBS_METRICS_H */
