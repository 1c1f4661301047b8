/*
 * processor/topic_reader.c — the one "read up to the snapshot's end" loop (topic_reader.h).
 * A record is matched to its range by (topic, partition), trying the previous record's range
 * first: a fetch delivers runs of one partition, so the linear search is rare.
 */
#include "processor/topic_reader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/log.h"

static void seterr(char *err, size_t size, const char *fmt, ...) {
    if (!err || size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

static size_t range_of(const kj_read_range *ranges, size_t n, const rd_kafka_message_t *msg,
                       size_t hint) {
    const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "";
    if (hint < n && ranges[hint].partition == msg->partition &&
        strcmp(ranges[hint].topic, topic) == 0)
        return hint;
    for (size_t i = 0; i < n; i++)
        if (ranges[i].partition == msg->partition && strcmp(ranges[i].topic, topic) == 0) return i;
    return n;
}

kj_read_result kj_topic_read(rd_kafka_t *rk, const kj_read_range *ranges, size_t n,
                             kj_read_record_fn *fn, void *opaque, const kj_read_opts *opts,
                             bool *done, char *err, size_t err_size) {
    const char *what = opts && opts->what ? opts->what : "topic";
    bool local[64];
    bool *fin = done ? done : n <= 64 ? local : calloc(n, sizeof(*fin));
    if (!fin) abort();
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n + 1);
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        fin[i] = ranges[i].start < 0 || ranges[i].start >= ranges[i].end;
        if (fin[i]) continue;
        rd_kafka_topic_partition_list_add(list, ranges[i].topic, ranges[i].partition)->offset =
            ranges[i].start;
        pending++;
    }
    kj_read_result rc = KJ_READ_DONE;
    if (pending > 0) {
        rd_kafka_resp_err_t e = rd_kafka_assign(rk, list);
        if (e) {
            seterr(err, err_size, "%s: cannot assign: %s", what, rd_kafka_err2str(e));
            rc = KJ_READ_ASSIGN_ERROR;
            pending = 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    size_t hint = 0;
    while (pending > 0) {
        if (opts && opts->stop && opts->stop(opts->stop_opaque)) {
            rc = KJ_READ_STOPPED;
            break;
        }
        if (opts && opts->deadline_ms > 0 && kj_now_ms() >= opts->deadline_ms) {
            seterr(err, err_size, "timed out reading the %s (%zu partition(s) unfinished)", what,
                   pending);
            rc = KJ_READ_TIMEOUT;
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg) continue;
        size_t i = range_of(ranges, n, msg, hint);
        if (msg->err && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* librdkafka retries transient faults itself and reports them here as well */
            char why[512];
            snprintf(why, sizeof(why), "%s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            kj_log(opts && opts->errors_fatal ? KJ_LOG_ERROR : KJ_LOG_WARN, "consume error",
                   "{s:s,s:s}", "reading", what, "error", why);
            if (opts && opts->errors_fatal) {
                seterr(err, err_size, "consume error reading the %s: %s", what, why);
                rc = KJ_READ_CONSUME_ERROR;
                break;
            }
            continue;
        }
        if (i == n || fin[i]) { /* not ours, or already finished */
            rd_kafka_message_destroy(msg);
            continue;
        }
        hint = i;
        if (msg->err) { /* partition EOF: msg->offset is the partition's end right now */
            bool at_end = msg->offset >= ranges[i].end || (opts && opts->eof_is_end);
            rd_kafka_message_destroy(msg);
            if (at_end) {
                fin[i] = true;
                pending--;
            }
            continue;
        }
        if (msg->offset >= ranges[i].end) { /* the partition grew past the snapshot */
            rd_kafka_message_destroy(msg);
            fin[i] = true;
            pending--;
            continue;
        }
        bool last = msg->offset >= ranges[i].end - 1;
        if (last) {
            fin[i] = true;
            pending--;
        }
        if (!fn(msg, i, opaque)) {
            rc = KJ_READ_ENDED_BY_CALLER;
            break;
        }
    }
    rd_kafka_assign(rk, NULL);
    if (fin != done && fin != local) free(fin);
    return rc;
}
