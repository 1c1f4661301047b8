/*
 * console_metrics.c — the console's gauges, refreshed on a thread of their own (see
 * console_metrics.h): the reads are the console pages' own (console_data.h) and the DLQ model's
 * depth, so a gauge never disagrees with what the page shows.
 */
#include "processor/console_metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "processor/dlq_model.h"
#include "processor/log.h"
#include "processor/metrics.h"

struct kj_console_metrics {
    const kj_config *cfg;
    kj_console_data *data;
    int64_t interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled by stop */
    bool stop;         /* guarded by mu */
};

/* Whether one of the page's "errors" (each "what: why") is about `what`. */
static bool failed(json_t *errors, const char *what) {
    size_t i, n = strlen(what);
    json_t *e;
    json_array_foreach(errors, i, e) {
        const char *t = json_string_value(e);
        if (t && strncmp(t, what, n) == 0 && t[n] == ':') return true;
    }
    return false;
}

static void refresh_oldest(kj_console_data *data) {
    json_t *ov = kj_console_overview(data);
    json_t *errors = json_object_get(ov, "errors");
    if (!failed(errors, "lag") && !failed(errors, "oldest waiting job")) {
        json_t *oldest = json_object_get(ov, "oldest_waiting_ms"), *row;
        size_t i;
        json_array_foreach(json_object_get(ov, "lag"), i, row) {
            const char *role = json_string_value(json_object_get(row, "role"));
            const char *topic = json_string_value(json_object_get(row, "topic"));
            if (!role || !topic || strcmp(role, "main") != 0) continue;
            json_t *ms = json_object_get(oldest, topic);
            kj_metrics_console_oldest_waiting(topic, ms ? json_integer_value(ms) / 1000.0 : 0);
        }
    }
    json_decref(ov);
}

static void refresh_ladder(kj_console_data *data) {
    json_t *rt = kj_console_retries(data);
    if (!failed(json_object_get(rt, "errors"), "lag")) {
        json_t *step;
        size_t i;
        json_array_foreach(json_object_get(rt, "steps"), i, step) {
            const char *topic = json_string_value(json_object_get(step, "topic"));
            if (!topic) continue;
            kj_metrics_console_retry_waiting((int)json_integer_value(json_object_get(step, "step")),
                                             topic,
                                             json_integer_value(json_object_get(step, "waiting")));
        }
    }
    json_decref(rt);
}

static void refresh_dlq(const kj_config *cfg) {
    kj_dlq_params params = {.cfg = cfg, .deadline_ms = kj_now_ms() + KJ_CONSOLE_TIMEOUT_MS};
    kj_dlq *dlq = NULL;
    char err[512];
    if (kj_dlq_open(&params, &dlq, err, sizeof(err)) != KJ_DLQ_OK) return; /* logged there */
    int64_t retained = 0, unresolved = 0;
    kj_dlq_depth(dlq, &retained, &unresolved);
    kj_metrics_console_dlq(kj_dlq_topic(dlq), retained, unresolved);
    kj_dlq_close(dlq);
}

static bool stopping(kj_console_metrics *m) {
    pthread_mutex_lock(&m->mu);
    bool stop = m->stop;
    pthread_mutex_unlock(&m->mu);
    return stop;
}

/* One round of reads; each step may wait KJ_CONSOLE_TIMEOUT_MS on an unreachable cluster, so a
 * stop is looked at between steps (a round would otherwise hold the stop for ~30 s). */
static void *refresh_main(void *arg) {
    kj_console_metrics *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        pthread_mutex_unlock(&m->mu);
        refresh_oldest(m->data);
        if (!stopping(m)) refresh_ladder(m->data);
        if (!stopping(m)) refresh_dlq(m->cfg);
        pthread_mutex_lock(&m->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += m->interval_ms / 1000;
        until.tv_nsec += (m->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &until) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

kj_console_metrics *kj_console_metrics_start(const kj_config *cfg, kj_console_data *data,
                                             int64_t interval_ms) {
    kj_console_metrics *m = calloc(1, sizeof(*m));
    if (!m) abort();
    m->cfg = cfg;
    m->data = data;
    m->interval_ms = interval_ms > 0 ? interval_ms : KJ_CONSOLE_METRICS_INTERVAL_MS;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, refresh_main, m) != 0) {
        kj_log(KJ_LOG_ERROR, "console: metrics refresher not started", NULL);
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    return m;
}

void kj_console_metrics_stop(kj_console_metrics *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
