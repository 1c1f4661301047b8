/*
 * console_metrics.h — the console's own gauges: what `kjobs ui` sees cluster-wide, for
 * Prometheus. A worker sees only its own partitions, so the age of the oldest waiting job, the
 * ladder's depth and the DLQ's depth are one series per topic here, from the one process that
 * reads the whole group, instead of one per replica that a query would have to reconcile.
 *
 * A thread refreshes them once at start and then every `interval_ms` (`kjobs ui` passes
 * ui.report_interval, the workers' reporting cadence; KJ_CONSOLE_METRICS_INTERVAL_MS when it
 * is 0), through the console's reads (processor/console_data.h: the overview's oldest waiting job
 * per main topic, the retries page's waiting jobs per ladder step) and the DLQ model's depth
 * (processor/dlq_model.h, kj_dlq_depth: watermarks and markers, no record read). A refresh that
 * cannot read a part leaves that part's gauges as they were (the overview says why). Gauges
 * (processor/metrics.h): kjobs_oldest_waiting_job_age_seconds{topic}   0 when nothing waits
 *   kjobs_retry_waiting_jobs{step,topic}
 *   kjobs_dlq_dead_letters{topic}, kjobs_dlq_unresolved_dead_letters{topic}
 *
 * @locality start/stop: the controlling thread; the refresh runs on its own thread.
 */
#ifndef KJOBS_CONSOLE_METRICS_H
#define KJOBS_CONSOLE_METRICS_H

#include <stdint.h>

#include "processor/config.h"
#include "processor/console_data.h"

typedef struct kj_console_metrics kj_console_metrics;

/** The refresh interval when none is given (milliseconds). */
#define KJ_CONSOLE_METRICS_INTERVAL_MS 10000

/**
 * Starts the refresher for `cfg` reading through `data` (both borrowed; they must outlive it).
 * NULL (logged) when the thread cannot start; the console then runs without these gauges.
 */
kj_console_metrics *kj_console_metrics_start(const kj_config *cfg, kj_console_data *data,
                                             int64_t interval_ms);
/** Stops the thread (waits for a refresh in progress) and frees it; NULL is a no-op. */
void kj_console_metrics_stop(kj_console_metrics *m);

#endif /* KJOBS_CONSOLE_METRICS_H */
