/*
 * router.c — retry-ladder and dead-letter copies (see router.h for the rules).
 * Each copy carries a small context (source, offset, and what is needed to re-send it); the
 * delivery-report callback completes the source offset or re-sends after a failure.
 *
 * Cost per copy (the retry path, bench/README.md "Where the time goes"): routing is a routine
 * path — every failed attempt takes it — so a copy is made with few allocations: the context,
 * its key and its value are one block; topic names and error classes are borrowed (the router's
 * and static strings); the header list built for the copy is handed to librdkafka as it is and
 * taken back from the delivery report only when the copy must be sent again (detached), instead
 * of a second list kept for a re-send that almost never happens.
 */
#include "processor/router.h"
#include "processor/header_contract.h"
#include "common/utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/kafka.h"
#include "common/clock.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/retry_policy.h"
#include "processor/weighted_semaphore.h"

#define RESEND_BACKOFF_MAX_MS 5000
/* A worker thread waits this long for producer queue space (trying again every
 * QUEUE_FULL_RETRY_MS while the poll thread serves delivery reports), and for room for a copy's
 * memory (wait_for_room), before the queue counts as stalled. */
#define QUEUE_FULL_WAIT_MS  10000
#define QUEUE_FULL_RETRY_MS 5
/* What a queued copy holds in memory besides its key, value and headers' names and values
 * (copy_footprint): librdkafka's message (rd_kafka_msg_t, ~250 B after allocator rounding) and
 * header list (~70 B), and the copy's context; per header, librdkafka's rd_kafka_header_t and
 * its rounding. Measured with heaptrack on a 128-partition drain with 10 % retried: 1.4-1.5 KiB
 * per copy of a 100-byte job carrying ten headers (bench/RESULTS.md, "The router's copies"). */
#define COPY_OVERHEAD   320
#define HEADER_OVERHEAD 48
/* Bytes librdkafka adds to key + value + headers when it checks message.max.bytes
 * (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD: length, attributes, timestamp and offset deltas, key,
 * value and header-count varints, each at its widest). */
#define RECORD_MAX_OVERHEAD 36
/* Broker "too large" refusals of one copy before it is reduced (see on_delivery). */
#define BROKER_SIZE_REFUSALS 5
/* kjobs-error of a reduced dead letter */
#define SHRUNK_ERROR_MAX 512

/* How far a copy was reduced to fit (levels only grow). */
enum { SHRINK_NONE, SHRINK_HEADERS, SHRINK_VALUE, SHRINK_KEY };

struct kj_router {
    rd_kafka_t *rk;
    const kj_config *cfg;
    char **retry_topics; /* [0..N-1] */
    char *worker_id;
    kj_route_done_fn *done;
    void *done_opaque;
    kj_route_diverted_fn *diverted; /* set before the first copy; NULL none */
    void *diverted_opaque;
    size_t max_message_bytes; /* the producer's message.max.bytes */
    atomic_long outstanding;  /* routed, source offset not yet completed */
    /* The memory of the copies this router holds (routed, not yet acknowledged), in bytes as
     * copy_footprint counts it, and its bound (batch.max_pending_bytes): librdkafka's
     * queue.buffering.max.kbytes counts only values, and a copy of a 100-byte job holds
     * ~1.4 KiB (its headers, one allocation each), so a 1 MiB queue of copies of jobs with
     * tiny values could hold up to librdkafka's 100,000 messages: ~140 MiB while the broker
     * is slow to acknowledge. A worker thread takes room for a copy before it queues it
     * (wait_for_room), in turn (a large copy is not overtaken by small ones), and
     * route_ctx_free gives it back. */
    kj_wsem copies;
    /* handed to librdkafka, delivery report not yet served: what a transaction commit waits
     * for. Not `outstanding`: a worker thread counts its copy there before it waits for
     * txn_lock, so a commit holding the lock would wait for a copy that cannot be produced. */
    atomic_long in_flight;
    atomic_long failing;
    /* a queue-space wait timed out and no copy got through since: do not wait again (each
     * copy of a batch waiting QUEUE_FULL_WAIT_MS would hold a rebalance for minutes) */
    atomic_bool queue_stalled;
    /* copies waiting for their re-send time: pushed by delivery reports and by worker threads
     * whose produce was refused, re-sent by kj_router_poll */
    pthread_mutex_t resend_lock;
    struct route_ctx *resend_head;
    /* exactly-once mode: copies are produced under txn_lock (read), the commit takes it for
     * writing, so no copy slips into a transaction after its offsets were computed */
    bool transactional;
    pthread_rwlock_t txn_lock;
    atomic_long produced_in_txn;
    /* retry.ordering = "key": copies of partitions below this stay in the ladder partition of
     * their number (ladder_partition); 0 off */
    _Atomic int32_t key_partitions;
    /* A commit that librdkafka never returns from: rd_kafka_send_offsets_to_transaction() can
     * ignore its timeout when the group coordinator goes away (librdkafka #5456, #5511; seen
     * on Kafka 4.1.1: blocked for minutes, holding txn_lock, so nothing ran). The watchdog
     * thread ends the process past this deadline (0: no commit running): the broker aborts
     * the open transaction and a restart resumes from the last committed one. */
    atomic_llong commit_deadline_ms;
    atomic_bool watchdog_stop;
    pthread_t watchdog;
    bool watchdog_running;
};

/* Budgets of one exactly-once commit, in ms: waiting for in-flight copies, sending the
 * offsets, committing (retries included); the watchdog fires COMMIT_WATCHDOG_SLACK_MS after
 * their sum. */
#define COMMIT_FLUSH_MS          30000
#define COMMIT_OFFSETS_MS        15000
#define COMMIT_END_MS            20000
#define COMMIT_WATCHDOG_SLACK_MS 10000

static void *commit_watchdog_main(void *arg) {
    kj_router *r = arg;
    while (!atomic_load(&r->watchdog_stop)) {
        long long deadline = atomic_load(&r->commit_deadline_ms);
        if (deadline > 0 && kj_now_ms() > deadline) {
            kj_log(KJ_LOG_ERROR,
                   "exactly-once commit hung inside librdkafka; exiting (the broker aborts the "
                   "open transaction; a restart resumes from the last committed one)",
                   NULL);
            _exit(1);
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct route_ctx {
    kj_route_source source; /* handed back with the acknowledgement */
    int64_t offset;
    const char *topic; /* borrowed: the router's retry_topics[] or cfg->dlq_topic */
    int32_t partition; /* RD_KAFKA_PARTITION_UA: the partitioner's choice (ladder_partition) */
    void *key;         /* in the context's own block (ctx_from); NULL once dropped */
    size_t key_len;
    void *value; /* likewise */
    size_t value_len;
    /* The copy's headers while the router holds it: NULL while librdkafka owns them (queued,
     * delivery report not served); a failed delivery detaches them back (delivery_failed). */
    rd_kafka_headers_t *headers;
    int step;                /* 0 = DLQ */
    bool hop;                /* a not-yet-due ladder record moved on, not a failure */
    bool scheduled;          /* a not-yet-due main-topic job (kjobs-run-at), not run */
    bool parked;             /* waits behind an earlier job of its key, not run */
    bool queued;             /* handed to queue_copy at least once */
    size_t footprint;        /* counted in copies when first queued (copy_footprint) */
    size_t block;            /* the context's allocation: itself, key and value (ctx_from) */
    int shrink;              /* SHRINK_* */
    const char *first_topic; /* the destination before any reduction (borrowed) */
    /* the job's kjobs-error, for a reduced copy: read from the headers when the copy is first
     * reduced (before they are replaced), so routine copies never allocate it */
    char *job_error;
    const char *error_class; /* static (kj_outcome_error_class, KJ_*_CLASS) */
    int failures;
    int size_refusals; /* consecutive broker "too large" refusals */
    long long resend_at_ms;
    struct route_ctx *next_resend;
} route_ctx;

static void route_ctx_free(kj_router *r, route_ctx *c) {
    kj_wsem_release(&r->copies, (long long)c->footprint);
    if (c->headers) rd_kafka_headers_destroy(c->headers);
    free(c->job_error);
    free(c); /* key and value live in the same block */
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

size_t kj_copy_wire_size(size_t key_len, size_t value_len, const rd_kafka_headers_t *hdrs) {
    size_t size = RECORD_MAX_OVERHEAD + key_len + value_len;
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0; hdrs && rd_kafka_header_get_all(hdrs, i, &name, &val, &len) == 0; i++) {
        size_t nlen = strlen(name);
        if (!val) len = 0;
        /* librdkafka counts each length as a zig-zag varint */
        size += nlen + varint_len((uint64_t)nlen << 1) + len + varint_len((uint64_t)len << 1);
    }
    return size;
}

/* The bytes c holds while queued: its context block (key and value included, also when a
 * reduction dropped them from the copy: they stay in the block), its headers and librdkafka's
 * message, as estimated by COPY_OVERHEAD and HEADER_OVERHEAD. Called before produce_copy hands
 * the headers over. */
static size_t copy_footprint(const route_ctx *c) {
    size_t size = c->block + COPY_OVERHEAD;
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0; c->headers && rd_kafka_header_get_all(c->headers, i, &name, &val, &len) == 0;
         i++)
        size += HEADER_OVERHEAD + strlen(name) + (val ? len : 0) + 2;
    return size;
}

static rd_kafka_resp_err_t produce_copy(kj_router *r, route_ctx *c) {
    /* librdkafka owns the list once producev succeeds (and hands it back in a failed delivery
     * report, delivery_failed); it is taken off c before the call because the delivery report
     * may run on another thread before producev returns, and c must not be touched then */
    rd_kafka_headers_t *hdrs = c->headers;
    c->headers = NULL;
    /* counted first: the delivery report may run on another thread before producev returns */
    atomic_fetch_add(&r->in_flight, 1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        r->rk, RD_KAFKA_V_TOPIC(c->topic), RD_KAFKA_V_PARTITION(c->partition),
        RD_KAFKA_V_KEY(c->key, c->key_len), RD_KAFKA_V_VALUE(c->value, c->value_len),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
    if (err) { /* not queued: no delivery report will come, the list is still ours */
        atomic_fetch_sub(&r->in_flight, 1);
        c->headers = hdrs;
    }
    return err; /* the real code: rd_kafka_producev() does not set rd_kafka_last_error() */
}

/* The headers a reduced dead letter keeps (kjobs-error is rewritten, kjobs-truncated added). */
static const char *const kept_when_reduced[] = {
    KJ_HDR_ATTEMPT,         KJ_HDR_ERROR_CLASS, KJ_HDR_ORIGINAL_TOPIC, KJ_HDR_ORIGINAL_PARTITION,
    KJ_HDR_ORIGINAL_OFFSET, KJ_HDR_FAILED_AT,   KJ_HDR_WORKER};

/* Turns c into a dead letter reduced to `level`: only the kjobs headers above (the original
 * headers and any other kjobs-* dropped), then without its value, then without its key.
 * kjobs-truncated lists what was dropped; kjobs-error says why, then the job's own error. */
static void shrink_copy(kj_router *r, route_ctx *c, int level, size_t full_size,
                        const char *refused_by) {
    static const char *const dropped[] = {"", "headers", "headers,value", "headers,value,key"};
    if (!c->job_error) { /* first reduction: the full headers still carry the job's error */
        char job_error[KJ_ERROR_MAX];
        if (!kj_kafka_header_str(c->headers, KJ_HDR_ERROR, job_error, sizeof(job_error)))
            snprintf(job_error, sizeof(job_error), "(no message)");
        c->job_error = strdup(job_error);
    }
    /* a ladder copy that becomes a dead letter after it was queued (the broker refused it):
     * whoever counted it on its step must forget it (before key and headers go) */
    if (c->queued && c->step > 0 && r->diverted)
        r->diverted(c->partition, c->key, c->key_len, c->headers, c->step, r->diverted_opaque);
    rd_kafka_headers_t *h = rd_kafka_headers_new(12);
    for (size_t i = 0; i < sizeof(kept_when_reduced) / sizeof(kept_when_reduced[0]); i++) {
        const void *val;
        size_t len;
        if (rd_kafka_header_get_last(c->headers, kept_when_reduced[i], &val, &len) == 0)
            rd_kafka_header_add(h, kept_when_reduced[i], -1, val, (ssize_t)len);
    }
    /* a dead letter's kjobs-not-before is its failure time */
    const void *val;
    size_t len;
    if (rd_kafka_header_get_last(c->headers, KJ_HDR_FAILED_AT, &val, &len) == 0)
        rd_kafka_header_add(h, KJ_HDR_NOT_BEFORE, -1, val, (ssize_t)len);
    char *raw = NULL, error[SHRUNK_ERROR_MAX];
    int raw_len =
        asprintf(&raw,
                 "copy for %s too large (%zu bytes, refused by %s): dead-lettered without %s; "
                 "job error: %s",
                 c->first_topic, full_size, refused_by, dropped[level], c->job_error);
    /* cut on a character boundary, with the ellipsis marker, like every kjobs-error */
    size_t error_len =
        raw_len < 0 ? 0 : kj_utf8_clean(error, sizeof(error), raw, (size_t)raw_len, NULL, true);
    free(raw);
    rd_kafka_header_add(h, KJ_HDR_ERROR, -1, error, (ssize_t)error_len);
    rd_kafka_header_add(h, KJ_HDR_TRUNCATED, -1, dropped[level], -1);
    rd_kafka_headers_destroy(c->headers);
    c->headers = h;
    if (level >= SHRINK_VALUE) { /* its bytes stay in c's block until c is freed */
        c->value = NULL;
        c->value_len = 0;
    }
    if (level >= SHRINK_KEY) {
        c->key = NULL;
        c->key_len = 0;
    }
    if (c->step || c->hop) {
        c->step = 0;
        c->hop = false;
        c->topic = r->cfg->dlq_topic;
        c->partition = RD_KAFKA_PARTITION_UA;
    }
    c->shrink = level;
}

/* Reduces c (further than it is, at least to `min_level`) until it fits message.max.bytes.
 * Returns true when it was reduced. */
static bool fit_copy(kj_router *r, route_ctx *c, int min_level, const char *refused_by) {
    size_t full = kj_copy_wire_size(c->key_len, c->value_len, c->headers);
    if (full <= r->max_message_bytes && c->shrink >= min_level) return false;
    if (c->shrink >= SHRINK_KEY) return false; /* nothing left to drop */
    for (int level = c->shrink + 1; level <= SHRINK_KEY; level++) {
        shrink_copy(r, c, level, full, refused_by);
        if (level >= min_level &&
            kj_copy_wire_size(c->key_len, c->value_len, c->headers) <= r->max_message_bytes)
            break;
    }
    kj_metrics_copy_truncated();
    kj_log(KJ_LOG_ERROR, "routed copy too large: dead-lettered in a reduced form",
           "{s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "intended_topic", c->first_topic, "topic", c->topic,
           "source_offset", (json_int_t)c->offset, "bytes", (json_int_t)full, "limit",
           (json_int_t)r->max_message_bytes, "refused_by", refused_by, "dropped",
           c->shrink == SHRINK_HEADERS ? "headers"
           : c->shrink == SHRINK_VALUE ? "headers,value"
                                       : "headers,value,key");
    return true;
}

/* A copy could not be queued or was not acknowledged: never drop it. It goes to the re-send
 * list (kj_router_poll produces it again after a backoff); its source offset stays
 * uncommittable meanwhile, and readiness reports failing copies. */
static void copy_failed(kj_router *r, route_ctx *c, const char *error, const char *what,
                        long long backoff_ms) {
    if (c->failures++ == 0) atomic_fetch_add(&r->failing, 1);
    kj_metrics_route_error();
    kj_log(KJ_LOG_ERROR, what, "{s:s,s:I,s:s,s:i}", "topic", c->topic, "source_offset",
           (json_int_t)c->offset, "error", error, "failures", c->failures);
    c->resend_at_ms = kj_now_ms() + backoff_ms;
    pthread_mutex_lock(&r->resend_lock);
    c->next_resend = r->resend_head;
    r->resend_head = c;
    pthread_mutex_unlock(&r->resend_lock);
}

static long long backoff_for(const route_ctx *c) {
    long long backoff = (long long)(c->failures + 1) * 200;
    return backoff > RESEND_BACKOFF_MAX_MS ? RESEND_BACKOFF_MAX_MS : backoff;
}

static bool size_refusal(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
           err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

/* A copy was not acknowledged: re-send it (reduced first when the broker keeps refusing it
 * as too large). */
/* Take the copy's header list back from librdkafka for a re-send (produce_copy handed it
 * over): detaching leaves the report's message without headers, which librdkafka frees after
 * the callback as usual. A copy produced without headers has none to take (an empty list then
 * keeps "a copy not in flight has headers" true). */
static void take_headers_back(const rd_kafka_message_t *msg, route_ctx *c) {
    if (rd_kafka_message_detach_headers((rd_kafka_message_t *)msg, &c->headers) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->headers = rd_kafka_headers_new(0);
        kj_log(KJ_LOG_ERROR, "routed copy: its delivery report has no headers to send again",
               "{s:s,s:I}", "topic", c->topic, "source_offset", (json_int_t)c->offset);
    }
}

static void delivery_failed(kj_router *r, rd_kafka_t *rk, const rd_kafka_message_t *msg,
                            route_ctx *c, rd_kafka_resp_err_t err) {
    take_headers_back(msg, c);
    if (rd_kafka_fatal_error(rk, NULL, 0)) return; /* kj_router_fatal() stops the worker */
    if (size_refusal(err) && ++c->size_refusals >= BROKER_SIZE_REFUSALS && c->shrink < SHRINK_KEY) {
        /* Refused as too large again and again, in whatever batch it travelled: the broker's
         * limit is below this copy (a single refusal can be the batch's size, not the copy's,
         * and the copy is re-sent as usual). The same bytes will never be accepted. */
        c->size_refusals = 0;
        fit_copy(r, c, c->shrink + 1, "the broker");
        copy_failed(r, c, rd_kafka_err2str(err), "routed copy refused by the broker as too large",
                    0);
        return;
    }
    if (!size_refusal(err)) c->size_refusals = 0;
    copy_failed(r, c, rd_kafka_err2str(err), "routed copy not acknowledged, sending again",
                backoff_for(c));
}

bool kj_copy_confirmed(rd_kafka_resp_err_t err, int64_t offset, bool transactional) {
    return err == RD_KAFKA_RESP_ERR_NO_ERROR && (offset >= 0 || transactional);
}

/* Delivery report: on the poll thread (kj_router_poll), the only one that polls the producer:
 * r->done completes a source offset in the partition table the poll thread alone changes. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    kj_router *r = opaque;
    route_ctx *c = msg->_private;
    if (!msg->err && !kj_copy_confirmed(msg->err, msg->offset, r->transactional)) {
        /* reported delivered without an offset: inferred by librdkafka, not answered by the
         * broker (router.h, kj_copy_confirmed); its source offset is not completed */
        take_headers_back(msg, c);
        copy_failed(r, c, "delivered without an offset (inferred from a later batch's success)",
                    "routed copy not confirmed by the broker, sending again", backoff_for(c));
    } else if (!msg->err) {
        atomic_store(&r->queue_stalled, false);
        if (c->failures) atomic_fetch_sub(&r->failing, 1);
        if (c->hop)
            kj_metrics_retry_hop();
        else if ((c->scheduled || c->parked) && c->step)
            ; /* counted as jobs_total{outcome="scheduled"/"parked"} when routed, not a retry */
        else if (c->step)
            kj_metrics_retry_routed(c->step);
        else
            kj_metrics_dlq_routed(c->error_class);
        /* complete before the count drops: a zero count means every completion has run */
        r->done(&c->source, c->offset, r->done_opaque);
        atomic_fetch_sub(&r->outstanding, 1);
        route_ctx_free(r, c);
    } else {
        delivery_failed(r, rk, msg, c, msg->err);
    }
    /* last: a zero count means every report was served (completed or on the re-send list) */
    atomic_fetch_sub(&r->in_flight, 1);
}

kj_router *kj_router_new(const kj_config *cfg, rd_kafka_conf_t *conf, const char *worker_id,
                         kj_route_done_fn *done, void *done_opaque, char *errstr,
                         size_t errstr_size) {
    kj_router *r = calloc(1, sizeof(*r));
    r->cfg = cfg;
    r->done = done;
    r->done_opaque = done_opaque;
    r->worker_id = strdup(worker_id);
    pthread_mutex_init(&r->resend_lock, NULL);
    /* What the copies hold in memory, headers included, is bounded like the records the
     * process holds: by batch.max_pending_bytes. Not by the queue's size: copies wait about
     * linger.ms plus a produce round trip, so a drain routing 40 k copies a second keeps ~2,000
     * of them (~3 MiB) in flight; bounded to the 1 MiB queue, a 128-partition drain on Kafka
     * 4.1.1 with 10 % retried ran at 142-182 k jobs/s instead of 267-476 k (bench/RESULTS.md,
     * "The router's copies"). */
    kj_wsem_init(&r->copies, cfg->batch_max_pending_bytes);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    /* copies must reach the broker: give librdkafka a long internal retry window */
    if (kj_kafka_conf_set(conf, "linger.ms", "5", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    /* Copies waiting for their acknowledgement count toward the process's memory like the
     * records they come from: a quarter of batch.max_pending_bytes (at least 1 MiB) unless
     * kafka.properties sets it; a full queue makes kj_route wait (QUEUE_FULL_WAIT_MS), which
     * slows the handlers' threads instead of growing (librdkafka's default is 1 GiB). Never
     * below one copy of message.max.bytes: librdkafka answers "queue full" for good to a
     * message larger than the whole queue, and the copy of a failed job of 2 MB (a user who
     * raised message.max.bytes) was retried forever, its partition's commit stuck. */
    if (!kj_kafka_prop_value(cfg, "queue.buffering.max.kbytes")) {
        char kbytes[32];
        long long kb = kj_config_queue_kbytes(cfg);
        long long max_msg_kb = kj_kafka_conf_get_ll(conf, "message.max.bytes", 1000000) / 1024 + 1;
        if (kb < max_msg_kb) kb = max_msg_kb;
        snprintf(kbytes, sizeof(kbytes), "%lld", kb);
        if (kj_kafka_conf_set(conf, "queue.buffering.max.kbytes", kbytes, errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    r->transactional = cfg->retry_exactly_once;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&r->txn_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (r->transactional) {
        /* Unique per worker instance — two processes on one host share worker_id (client id
         * and hostname) and would fence each other — so the pid and a random suffix are
         * added; fencing of zombies relies on the consumer group metadata sent with the
         * offsets (KIP-447), so the id need not survive restarts. */
        char txn_id[512];
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        unsigned suffix = (unsigned)now.tv_nsec ^ ((unsigned)getpid() << 16);
        snprintf(txn_id, sizeof(txn_id), "%s.%s.%ld.%08x", cfg->group, worker_id, (long)getpid(),
                 suffix);
        if (kj_kafka_conf_set(conf, "transactional.id", txn_id, errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    r->rk = kj_kafka_producer_new(conf, errstr, errstr_size);
    if (!r->rk) goto fail;
    r->max_message_bytes = (size_t)kj_kafka_conf_get_ll(rd_kafka_conf(r->rk), "message.max.bytes",
                                                        1000000 /* librdkafka's default */);
    if (r->transactional) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(r->rk, 60000);
        if (!error) error = rd_kafka_begin_transaction(r->rk);
        if (error) {
            snprintf(errstr, errstr_size, "retry.exactly_once: cannot start transactions: %s",
                     rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rd_kafka_destroy(r->rk);
            goto fail;
        }
    }
    if (r->transactional)
        r->watchdog_running = pthread_create(&r->watchdog, NULL, commit_watchdog_main, r) == 0;
    r->retry_topics = calloc(cfg->retry_delay_count + 1, sizeof(char *));
    for (size_t i = 0; i < cfg->retry_delay_count; i++)
        r->retry_topics[i] = kj_config_retry_topic(cfg, (int)i + 1);
    return r;
fail:
    pthread_mutex_destroy(&r->resend_lock);
    kj_wsem_destroy(&r->copies);
    free(r->worker_id);
    free(r);
    return NULL;
}

void kj_router_free(kj_router *r) {
    if (!r) return;
    if (r->rk && r->transactional) {
        /* anything not committed by the last commit is abandoned, never half-visible */
        atomic_store(&r->commit_deadline_ms, kj_now_ms() + 10000 + COMMIT_WATCHDOG_SLACK_MS);
        rd_kafka_error_t *error = rd_kafka_abort_transaction(r->rk, 10000);
        if (error) rd_kafka_error_destroy(error);
    }
    if (r->watchdog_running) {
        atomic_store(&r->watchdog_stop, true);
        pthread_join(r->watchdog, NULL);
    }
    if (r->rk) {
        rd_kafka_flush(r->rk, 5000);
        rd_kafka_destroy(r->rk);
    }
    while (r->resend_head) { /* never acknowledged: their sources were not committed */
        route_ctx *c = r->resend_head;
        r->resend_head = c->next_resend;
        route_ctx_free(r, c);
    }
    for (size_t i = 0; r->retry_topics && i < r->cfg->retry_delay_count; i++)
        free(r->retry_topics[i]);
    free(r->retry_topics);
    pthread_rwlock_destroy(&r->txn_lock);
    pthread_mutex_destroy(&r->resend_lock);
    kj_wsem_destroy(&r->copies);
    free(r->worker_id);
    free(r);
}

/* Stops waiting for room (kj_wsem_acquire): the producer is stalled or has failed. */
static bool copies_unbounded(void *opaque) {
    kj_router *r = opaque;
    return atomic_load(&r->queue_stalled) || rd_kafka_fatal_error(r->rk, NULL, 0);
}

/* Marks the queue stalled and lets every copy waiting for room through. */
static void stall(kj_router *r) {
    atomic_store(&r->queue_stalled, true);
    kj_wsem_open(&r->copies);
}

/* Takes room for `footprint` bytes of copies, in turn (weighted_semaphore.h). The delivery
 * reports that free room are served by the poll thread (kj_router_poll; during a revoke too,
 * worker_rebalance.c revoke_lanes), never here: a worker thread serving one would complete a
 * source offset on a partition the poll thread may be freeing. Bounded by QUEUE_FULL_WAIT_MS;
 * then the queue counts as stalled, every waiter passes, and copies pass without waiting until
 * one is acknowledged (on_delivery). @locality worker thread */
static void wait_for_room(kj_router *r, size_t footprint) {
    if (kj_wsem_acquire(&r->copies, (long long)footprint, QUEUE_FULL_WAIT_MS, copies_unbounded,
                        r) != KJ_WSEM_TIMED_OUT)
        return;
    stall(r);
    kj_log(KJ_LOG_WARN,
           "routed copies not acknowledged for a while: queueing past their memory bound until "
           "one is",
           "{s:I,s:I}", "held_bytes", (json_int_t)kj_wsem_held(&r->copies), "bound",
           (json_int_t)r->copies.limit);
}

/* Queues c from a worker thread, once there is room for its memory (wait_for_room). A full
 * producer queue is back-pressure: try again every QUEUE_FULL_RETRY_MS while the poll thread
 * serves the delivery reports that free it (kj_router_poll: in its loop, and in a revoke while
 * it waits for batches), bounded by QUEUE_FULL_WAIT_MS; then, and on any other refusal, the
 * copy goes to the re-send list. Never dropped. */
static void queue_copy(kj_router *r, route_ctx *c) {
    long long wait_until = 0;
    c->queued = true;
    c->footprint = copy_footprint(c);
    wait_for_room(r, c->footprint); /* counted from now: before anything can free c */
    for (;;) {
        if (r->transactional) pthread_rwlock_rdlock(&r->txn_lock);
        rd_kafka_resp_err_t err = produce_copy(r, c);
        if (r->transactional) {
            if (!err) atomic_fetch_add(&r->produced_in_txn, 1);
            pthread_rwlock_unlock(&r->txn_lock); /* never wait for queue space holding it */
        }
        /* a copy queued past the memory bound is no sign the stall is over */
        if (!err) {
            if (kj_wsem_held(&r->copies) <= r->copies.limit) atomic_store(&r->queue_stalled, false);
            return;
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !rd_kafka_fatal_error(r->rk, NULL, 0) &&
            !atomic_load(&r->queue_stalled)) {
            long long now = kj_now_ms();
            if (!wait_until) wait_until = now + QUEUE_FULL_WAIT_MS;
            if (now < wait_until) {
                nanosleep(&(struct timespec){.tv_nsec = QUEUE_FULL_RETRY_MS * 1000000L}, NULL);
                continue;
            }
            stall(r);
        }
        if (size_refusal(err) && fit_copy(r, c, c->shrink + 1, "message.max.bytes"))
            continue; /* our estimate was short of librdkafka's count: smaller still */
        copy_failed(r, c, rd_kafka_err2str(err), "cannot queue routed copy, sending again later",
                    backoff_for(c));
        return;
    }
}

/* With retry.ordering = "key" a main partition's copies stay in the ladder partitions of its
 * number (the record's own partition number: main or ladder alike), so the member owning it
 * owns every copy that can hold back one of its keys (processor/key_order.h). Otherwise the
 * partitioner's choice (murmur2 of the key, like every kjobs producer). */
static int32_t ladder_partition(const kj_router *r, const rd_kafka_message_t *msg) {
    return msg->partition < atomic_load(&r->key_partitions) ? msg->partition
                                                            : RD_KAFKA_PARTITION_UA;
}

void kj_router_on_diverted(kj_router *r, kj_route_diverted_fn *fn, void *opaque) {
    r->diverted = fn;
    r->diverted_opaque = opaque;
}

void kj_router_key_partitions(kj_router *r, int32_t partitions) {
    atomic_store(&r->key_partitions, partitions);
}

/* The context, the key and the value in one allocation (the copy's key and value live as
 * long as its context: until it is acknowledged). */
static route_ctx *ctx_from(const rd_kafka_message_t *msg, const rd_kafka_headers_t *orig,
                           const kj_route_source *source) {
    size_t key_len = msg->key ? msg->key_len : 0, value_len = msg->payload ? msg->len : 0;
    route_ctx *c = calloc(1, sizeof(*c) + key_len + value_len);
    c->block = sizeof(*c) + key_len + value_len;
    c->source = *source;
    c->offset = msg->offset;
    c->partition = RD_KAFKA_PARTITION_UA;
    char *data = (char *)(c + 1);
    if (msg->key) { /* an empty key stays an empty key (not NULL, which is no key) */
        c->key = data;
        memcpy(c->key, msg->key, key_len);
        c->key_len = key_len;
    }
    if (msg->payload) {
        c->value = data + key_len;
        memcpy(c->value, msg->payload, value_len);
        c->value_len = value_len;
    }
    c->headers = orig ? rd_kafka_headers_copy(orig) : rd_kafka_headers_new(12);
    return c;
}

void kj_router_route(kj_router *r, const kj_route_source *source, const rd_kafka_message_t *msg,
                     const rd_kafka_headers_t *headers, const kjobs_result_t *result,
                     kj_retry_decision *d, const kj_control *origin) {
    route_ctx *c = ctx_from(msg, headers, source);
    const char *topic = d->to_dlq ? r->cfg->dlq_topic : r->retry_topics[d->step - 1];
    c->topic = topic;
    c->first_topic = topic;
    c->step = d->to_dlq ? 0 : d->step;
    if (!d->to_dlq) c->partition = ladder_partition(r, msg);
    c->error_class = d->error_class;

    char error[KJ_ERROR_MAX];
    snprintf(error, sizeof(error), "%s", result->error[0] ? result->error : "(no message)");
    /* kjobs-original-* name where the job was first consumed; they survive the ladder. Only
     * validated values are carried on; on the main topic they are always this record's.
     * The contract puts kjobs-not-before on DLQ copies too: there it is the failure time
     * (a dead letter has no next attempt to delay). */
    kj_hdr_failure f = {
        .original_topic = origin ? origin->original_topic : rd_kafka_topic_name(msg->rkt),
        .original_partition = origin ? origin->original_partition : msg->partition,
        .original_offset = origin ? origin->original_offset : msg->offset,
        .attempt = d->attempt,
        .not_before_ms = d->to_dlq ? d->now_ms : d->not_before_ms,
        .error = error,
        .error_class = c->error_class,
        .failed_at_ms = d->now_ms,
        .worker = r->worker_id,
    };
    kj_hdr_write_failure(c->headers, &f);

    fit_copy(r, c, SHRINK_NONE, "message.max.bytes");
    if (!d->to_dlq && !c->step) { /* a retry copy too large to write: dead-lettered reduced */
        d->to_dlq = true;
        d->step = 0;
        d->not_before_ms = 0;
        d->reason = KJ_DLQ_TOO_LARGE;
    }
    atomic_fetch_add(&r->outstanding, 1);
    queue_copy(r, c);
}

int kj_router_hop(kj_router *r, const kj_route_source *source, const rd_kafka_message_t *msg,
                  const rd_kafka_headers_t *headers, int64_t not_before_ms) {
    int64_t left = not_before_ms - kj_now_ms();
    int step = kj_retry_step_for_delay(r->cfg, left);
    route_ctx *c = ctx_from(msg, headers, source);
    c->hop = true;
    c->step = step;
    c->partition = ladder_partition(r, msg);
    c->topic = r->retry_topics[step - 1];
    c->first_topic = c->topic;
    c->error_class = "";
    fit_copy(r, c, SHRINK_NONE, "message.max.bytes");
    if (!c->hop) { /* reduced: it became a dead letter */
        c->error_class = "retryable";
        step = 0;
    }
    atomic_fetch_add(&r->outstanding, 1);
    queue_copy(r, c);
    return step;
}

int kj_router_schedule(kj_router *r, const kj_route_source *source, const rd_kafka_message_t *msg,
                       const rd_kafka_headers_t *headers, int64_t due_ms, int64_t now_ms) {
    int step = kj_retry_step_for_delay(r->cfg, due_ms - now_ms);
    route_ctx *c = ctx_from(msg, headers, source);
    c->scheduled = true;
    c->step = step;
    c->partition = ladder_partition(r, msg);
    c->topic = r->retry_topics[step - 1];
    c->first_topic = c->topic;
    c->error_class = KJ_SCHEDULED_CLASS;
    char error[96];
    snprintf(error, sizeof(error), "not yet due: " KJ_HDR_RUN_AT " %lld", (long long)due_ms);
    /* attempt 0: no attempt made; the ladder runs it as attempt 1 (header_contract.h) */
    kj_hdr_failure f = {
        .original_topic = rd_kafka_topic_name(msg->rkt),
        .original_partition = msg->partition,
        .original_offset = msg->offset,
        .attempt = 0,
        .not_before_ms = due_ms,
        .error = error,
        .error_class = c->error_class,
        .failed_at_ms = now_ms,
        .worker = r->worker_id,
    };
    kj_hdr_write_failure(c->headers, &f);
    fit_copy(r, c, SHRINK_NONE, "message.max.bytes");
    if (!c->step) step = 0; /* too large to write: dead-lettered reduced */
    atomic_fetch_add(&r->outstanding, 1);
    queue_copy(r, c);
    return step;
}

int kj_router_park(kj_router *r, const kj_route_source *source, const rd_kafka_message_t *msg,
                   const rd_kafka_headers_t *headers, const kj_control *origin, int step,
                   int64_t not_before_ms, int64_t behind_offset) {
    route_ctx *c = ctx_from(msg, headers, source);
    c->parked = true;
    c->step = step;
    c->partition = ladder_partition(r, msg);
    c->topic = r->retry_topics[step - 1];
    c->first_topic = c->topic;
    c->error_class = KJ_PARKED_CLASS;
    char error[160];
    snprintf(error, sizeof(error),
             "waiting behind the job of its key first consumed at offset %lld "
             "(retry.ordering = key)",
             (long long)behind_offset);
    kj_hdr_failure f = {
        .original_topic = origin ? origin->original_topic : rd_kafka_topic_name(msg->rkt),
        .original_partition = origin ? origin->original_partition : msg->partition,
        .original_offset = origin ? origin->original_offset : msg->offset,
        .attempt = origin ? origin->attempt : 0,
        .not_before_ms = not_before_ms,
        .error = error,
        .error_class = c->error_class,
        .failed_at_ms = kj_now_ms(),
        .worker = r->worker_id,
        .parked = true,
        .parked_behind = behind_offset,
    };
    kj_hdr_write_failure(c->headers, &f);
    fit_copy(r, c, SHRINK_NONE, "message.max.bytes");
    /* reduced to a dead letter (too large): it keeps class "parked", like a scheduled copy
     * keeps "scheduled" (docs/dlq.md) */
    int step_taken = c->step;
    atomic_fetch_add(&r->outstanding, 1);
    queue_copy(r, c);
    return step_taken;
}

long kj_router_poll(kj_router *r, int timeout_ms) {
    rd_kafka_poll(r->rk, timeout_ms);
    /* a failed producer acknowledges nothing more: no copy waits for room (copies_unbounded) */
    if (rd_kafka_fatal_error(r->rk, NULL, 0)) kj_wsem_open(&r->copies);
    long long now = kj_now_ms();
    pthread_mutex_lock(&r->resend_lock);
    route_ctx **link = &r->resend_head;
    while (*link) {
        route_ctx *c = *link;
        if (c->resend_at_ms > now) {
            link = &c->next_resend;
            continue;
        }
        *link = c->next_resend;
        rd_kafka_resp_err_t err = produce_copy(r, c);
        if (err && size_refusal(err)) {
            fit_copy(r, c, c->shrink + 1, "message.max.bytes");
            err = produce_copy(r, c);
        }
        if (err) { /* queue full or similar: try again later */
            c->resend_at_ms = now + (err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? 200 : backoff_for(c));
            c->next_resend = *link;
            *link = c;
            link = &c->next_resend;
        }
    }
    pthread_mutex_unlock(&r->resend_lock);
    return atomic_load(&r->outstanding);
}

void kj_router_stop_waiting(kj_router *r) {
    stall(r);
}

long kj_router_outstanding(const kj_router *r) {
    return atomic_load(&r->outstanding);
}

long long kj_router_held_bytes(const kj_router *r) {
    return kj_wsem_held(&r->copies);
}

long kj_router_failing(const kj_router *r) {
    return atomic_load(&r->failing);
}

bool kj_router_fatal(const kj_router *r, char *errstr, size_t errstr_size) {
    return rd_kafka_fatal_error(r->rk, errstr, errstr_size) != RD_KAFKA_RESP_ERR_NO_ERROR;
}

bool kj_router_transactional(const kj_router *r) {
    return r->transactional;
}

int kj_router_commit_transaction(kj_router *r, rd_kafka_t *consumer, kj_router_offsets_fn *collect,
                                 void *opaque, char *errstr, size_t errstr_size) {
    pthread_rwlock_wrlock(&r->txn_lock);
    long long start = kj_now_ms();
    atomic_store(&r->commit_deadline_ms, start + COMMIT_FLUSH_MS + COMMIT_OFFSETS_MS +
                                             COMMIT_END_MS + COMMIT_WATCHDOG_SLACK_MS);
    /* 1. every copy produced in this transaction acknowledged: their source offsets are now
     * completed. Copies routed but not yet produced (a worker thread waiting for txn_lock, or
     * due on the re-send list later) are not in it; their sources stay uncommitted, and they
     * go into the next transaction. */
    long long deadline = start + COMMIT_FLUSH_MS;
    do
        kj_router_poll(r, 10);
    while (atomic_load(&r->in_flight) > 0 && kj_now_ms() < deadline);
    int rc = 0;
    rd_kafka_error_t *error = NULL;
    if (atomic_load(&r->in_flight) > 0) {
        snprintf(errstr, errstr_size, "copies still unacknowledged after %d s",
                 COMMIT_FLUSH_MS / 1000);
        rc = -1;
        goto abort;
    }
    /* 2. the consumed offsets go into the same transaction as the copies */
    rd_kafka_topic_partition_list_t *offsets = collect(opaque);
    if (offsets && offsets->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(consumer);
        error = rd_kafka_send_offsets_to_transaction(r->rk, offsets, cgmd, COMMIT_OFFSETS_MS);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
    } else if (atomic_load(&r->produced_in_txn) == 0) {
        if (offsets) rd_kafka_topic_partition_list_destroy(offsets);
        atomic_store(&r->commit_deadline_ms, 0);
        pthread_rwlock_unlock(&r->txn_lock);
        return 0; /* nothing to commit */
    }
    if (offsets) rd_kafka_topic_partition_list_destroy(offsets);
    /* 3. commit, retrying what librdkafka says is retriable, within COMMIT_END_MS in all */
    if (!error) {
        long long end = kj_now_ms() + COMMIT_END_MS;
        error = rd_kafka_commit_transaction(r->rk, COMMIT_END_MS);
        while (error && rd_kafka_error_is_retriable(error) && kj_now_ms() < end) {
            rd_kafka_error_destroy(error);
            error = rd_kafka_commit_transaction(r->rk, (int)(end - kj_now_ms()));
        }
    }
    if (error) {
        snprintf(errstr, errstr_size, "transaction commit failed: %s",
                 rd_kafka_error_string(error));
        rc = -1;
        goto abort;
    }
    atomic_store(&r->produced_in_txn, 0);
    kj_metrics_commit(true);
    error = rd_kafka_begin_transaction(r->rk);
    if (error) {
        snprintf(errstr, errstr_size, "cannot begin transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rc = -1;
    }
    atomic_store(&r->commit_deadline_ms, 0);
    pthread_rwlock_unlock(&r->txn_lock);
    return rc;
abort:
    kj_metrics_commit(false);
    if (error) rd_kafka_error_destroy(error);
    /* Abort: the copies vanish for read_committed readers; the caller stops the worker so
     * that a restart resumes from the last committed transaction (no loss, no duplicate). The
     * abort has a watchdog deadline of its own. */
    atomic_store(&r->commit_deadline_ms, kj_now_ms() + COMMIT_END_MS + COMMIT_WATCHDOG_SLACK_MS);
    error = rd_kafka_abort_transaction(r->rk, COMMIT_END_MS);
    if (error) rd_kafka_error_destroy(error);
    atomic_store(&r->commit_deadline_ms, 0);
    pthread_rwlock_unlock(&r->txn_lock);
    return rc;
}
