/*
 * group_lag.c — a consumer group's committed offsets and watermarks per partition of the main
 * and ladder topics (see group_lag.h). Moved here from cmd_lag.c unchanged in behaviour.
 */
#include "processor/group_lag.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/kafka.h"
#include "processor/log.h"

int kj_group_lag_read(rd_kafka_t *rk, const kj_config *cfg, int timeout_ms, kj_lag_row **rows_out,
                      size_t *count_out) {
    *rows_out = NULL;
    *count_out = 0;
    char err[512];
    int result = 0;
    kj_topic_spec *specs = NULL;
    size_t spec_count = kj_topic_layout(cfg, &specs);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    bool unreachable = false;
    for (size_t i = 0; i < spec_count; i++) {
        if (specs[i].role == KJ_TOPIC_DLQ) continue;
        long long t0 = kj_now_ms();
        int n = kj_kafka_partition_count(rk, specs[i].name, timeout_ms, err, sizeof(err));
        if (n < 0) {
            kj_log(KJ_LOG_ERROR, "cannot read topic", "{s:s,s:s}", "topic", specs[i].name, "error",
                   err);
            result = 1;
            /* a missing topic fails fast; a timeout means the cluster is unreachable: do not
             * wait that long again for every other topic */
            if (kj_now_ms() - t0 >= timeout_ms - 100) {
                unreachable = true;
                break;
            }
            continue;
        }
        for (int p = 0; p < n; p++)
            rd_kafka_topic_partition_list_add(list, specs[i].name, p)->opaque = &specs[i];
    }
    kj_lag_row *rows = NULL;
    size_t count = 0;
    if (unreachable) {
        result = -1;
        goto out;
    }
    rd_kafka_resp_err_t cerr = list->cnt ? rd_kafka_committed(rk, list, timeout_ms) : 0;
    if (cerr) {
        kj_log(KJ_LOG_ERROR, "cannot read committed offsets", "{s:s,s:s}", "group", cfg->group,
               "error", rd_kafka_err2str(cerr));
        result = -1;
        goto out;
    }
    rows = calloc((size_t)list->cnt + 1, sizeof(*rows));
    if (!rows) abort();
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        if (tp->err) {
            kj_log(KJ_LOG_ERROR, "cannot read committed offset", "{s:s,s:i,s:s}", "topic",
                   tp->topic, "partition", (int)tp->partition, "error", rd_kafka_err2str(tp->err));
            result = 1;
            continue;
        }
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t werr =
            rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi, timeout_ms);
        if (werr) {
            kj_log(KJ_LOG_ERROR, "cannot read log end offset", "{s:s,s:i,s:s}", "topic", tp->topic,
                   "partition", (int)tp->partition, "error", rd_kafka_err2str(werr));
            result = 1;
            continue;
        }
        const kj_topic_spec *spec = tp->opaque;
        kj_lag_row *r = &rows[count++];
        r->topic = strdup(tp->topic);
        if (!r->topic) abort();
        r->role = spec->role;
        r->step = spec->step;
        r->partition = tp->partition;
        r->committed = tp->offset >= 0 ? tp->offset : -1;
        r->log_start = lo;
        r->log_end = hi;
        r->lag = r->committed >= 0 ? hi - r->committed : hi - lo;
        if (r->lag < 0) r->lag = 0; /* committed past the end: log truncated/recreated */
    }
out:
    rd_kafka_topic_partition_list_destroy(list);
    kj_topic_layout_free(specs, spec_count);
    *rows_out = rows;
    *count_out = count;
    return result;
}

void kj_group_lag_free(kj_lag_row *rows, size_t count) {
    for (size_t i = 0; rows && i < count; i++)
        free(rows[i].topic);
    free(rows);
}

int kj_group_lag_conf_set(rd_kafka_conf_t *conf, const char *group, char *err, size_t errsz) {
    return kj_kafka_conf_set(conf, "group.id", group, err, errsz) ||
                   kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, errsz) ||
                   kj_kafka_conf_set(conf, "isolation.level", "read_uncommitted", err, errsz)
               ? -1
               : 0;
}
