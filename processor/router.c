/*
 * router.c — retry-ladder and dead-letter copies (see router.h for the rules).
 * Each copy carries a small context (owner, offset, and what is needed to re-send it); the
 * delivery-report callback completes the source offset or re-sends after a failure.
 */
#include "processor/router.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/kafka.h"
#include "processor/clock.h"
#include "processor/log.h"
#include "processor/metrics.h"

#define RESEND_BACKOFF_MAX_MS 5000

struct kj_router {
    rd_kafka_t *rk;
    const kj_config *cfg;
    char **retry_topics; /* [0..N-1] */
    char *worker_id;
    kj_route_done_fn *done;
    void *done_opaque;
    atomic_long outstanding;
    atomic_long failing;
    struct route_ctx *resend_head; /* copies waiting for their re-send time (poll thread only) */
    /* exactly-once mode: copies are produced under txn_lock (read), the commit takes it for
     * writing, so no copy slips into a transaction after its offsets were computed */
    bool transactional;
    pthread_rwlock_t txn_lock;
    atomic_long produced_in_txn;
};

typedef struct route_ctx {
    void *owner;
    int64_t offset;
    char *topic;
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    rd_kafka_headers_t *headers; /* a copy kept for re-sending */
    int step;                    /* 0 = DLQ */
    char *error_class;
    int failures;
    long long resend_at_ms;
    struct route_ctx *next_resend;
} route_ctx;

static void route_ctx_free(route_ctx *c) {
    free(c->topic);
    free(c->key);
    free(c->value);
    if (c->headers) rd_kafka_headers_destroy(c->headers);
    free(c->error_class);
    free(c);
}

static int produce_copy(kj_router *r, route_ctx *c) {
    rd_kafka_headers_t *hdrs = rd_kafka_headers_copy(c->headers);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        r->rk, RD_KAFKA_V_TOPIC(c->topic), RD_KAFKA_V_KEY(c->key, c->key_len),
        RD_KAFKA_V_VALUE(c->value, c->value_len), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
    if (err) rd_kafka_headers_destroy(hdrs);
    return err ? -1 : 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    kj_router *r = opaque;
    route_ctx *c = msg->_private;
    if (!msg->err) {
        if (c->failures) atomic_fetch_sub(&r->failing, 1);
        if (c->step)
            kj_metrics_retry_routed(c->step);
        else
            kj_metrics_dlq_routed(c->error_class);
        atomic_fetch_sub(&r->outstanding, 1);
        r->done(c->owner, c->offset, r->done_opaque);
        route_ctx_free(c);
        return;
    }
    /* Not acknowledged: never drop it. Re-send; the source offset stays uncommittable. */
    if (c->failures++ == 0) atomic_fetch_add(&r->failing, 1);
    kj_metrics_route_error();
    kj_log(KJ_LOG_ERROR, "routed copy not acknowledged, sending again", "{s:s,s:I,s:s,s:i}",
           "topic", c->topic, "source_offset", (json_int_t)c->offset, "error",
           rd_kafka_err2str(msg->err), "failures", c->failures);
    if (rd_kafka_fatal_error(rk, NULL, 0)) return; /* kj_router_fatal() stops the worker */
    long long backoff = (long long)c->failures * 200;
    if (backoff > RESEND_BACKOFF_MAX_MS) backoff = RESEND_BACKOFF_MAX_MS;
    c->resend_at_ms = kj_now_ms() + backoff; /* re-sent by kj_router_poll: no sleep here */
    c->next_resend = r->resend_head;
    r->resend_head = c;
}

kj_router *kj_router_new(const kj_config *cfg, rd_kafka_conf_t *conf, const char *worker_id,
                         kj_route_done_fn *done, void *done_opaque, char *errstr,
                         size_t errstr_size) {
    kj_router *r = calloc(1, sizeof(*r));
    r->cfg = cfg;
    r->done = done;
    r->done_opaque = done_opaque;
    r->worker_id = strdup(worker_id);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    /* copies must reach the broker: give librdkafka a long internal retry window */
    if (kj_kafka_conf_set(conf, "linger.ms", "5", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    r->transactional = cfg->retry_exactly_once;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&r->txn_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (r->transactional) {
        /* unique per worker instance; fencing of zombies relies on the consumer group
         * metadata sent with the offsets (KIP-447), so it need not survive restarts */
        char txn_id[512];
        snprintf(txn_id, sizeof(txn_id), "%s.%s", cfg->group, worker_id);
        if (kj_kafka_conf_set(conf, "transactional.id", txn_id, errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    r->rk = kj_kafka_producer_new(conf, errstr, errstr_size);
    if (!r->rk) goto fail;
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
    r->retry_topics = calloc(cfg->retry_delay_count + 1, sizeof(char *));
    for (size_t i = 0; i < cfg->retry_delay_count; i++)
        r->retry_topics[i] = kj_config_retry_topic(cfg, (int)i + 1);
    return r;
fail:
    free(r->worker_id);
    free(r);
    return NULL;
}

void kj_router_free(kj_router *r) {
    if (!r) return;
    if (r->rk && r->transactional) {
        /* anything not committed by the last commit is abandoned, never half-visible */
        rd_kafka_error_t *error = rd_kafka_abort_transaction(r->rk, 10000);
        if (error) rd_kafka_error_destroy(error);
    }
    if (r->rk) {
        rd_kafka_flush(r->rk, 5000);
        rd_kafka_destroy(r->rk);
    }
    for (size_t i = 0; r->retry_topics && i < r->cfg->retry_delay_count; i++)
        free(r->retry_topics[i]);
    free(r->retry_topics);
    pthread_rwlock_destroy(&r->txn_lock);
    free(r->worker_id);
    free(r);
}

void kj_router_decide(const kj_router *r, int attempt, const kjobs_result_t *result,
                      int64_t now, kj_route_decision *out) {
    const kj_config *cfg = r->cfg;
    bool retryable = result->outcome == KJ_OUTCOME_RETRY || result->outcome == KJ_OUTCOME_TIMEOUT;
    memset(out, 0, sizeof(*out));
    if (!retryable || attempt >= cfg->retry_max_attempts || cfg->retry_delay_count == 0) {
        out->to_dlq = true;
        out->topic = cfg->dlq_topic;
        return;
    }
    size_t step = (size_t)attempt < cfg->retry_delay_count ? (size_t)attempt
                                                            : cfg->retry_delay_count;
    int64_t delay = cfg->retry_delays_ms[step - 1];
    if (result->outcome == KJ_OUTCOME_RETRY && result->delay_ms >= 0) delay = result->delay_ms;
    out->step = (int)step;
    out->not_before_ms = now + delay;
    out->topic = r->retry_topics[step - 1];
}

static void header_set(rd_kafka_headers_t *h, const char *name, const char *value) {
    rd_kafka_header_remove(h, name);
    rd_kafka_header_add(h, name, -1, value, -1);
}

int kj_router_route(kj_router *r, void *owner, const rd_kafka_message_t *msg, int attempt,
                    const kjobs_result_t *result) {
    long long now = kj_now_ms();
    kj_route_decision d;
    kj_router_decide(r, attempt, result, now, &d);

    route_ctx *c = calloc(1, sizeof(*c));
    c->owner = owner;
    c->offset = msg->offset;
    c->topic = strdup(d.topic);
    c->step = d.to_dlq ? 0 : d.step;
    c->error_class = strdup(kj_outcome_error_class(result->outcome));
    if (msg->key) {
        c->key = malloc(msg->key_len);
        memcpy(c->key, msg->key, msg->key_len);
        c->key_len = msg->key_len;
    }
    if (msg->payload) {
        c->value = malloc(msg->len ? msg->len : 1);
        memcpy(c->value, msg->payload, msg->len);
        c->value_len = msg->len;
    }
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_message_headers(msg, &orig);
    c->headers = orig ? rd_kafka_headers_copy(orig) : rd_kafka_headers_new(12);

    char buf[64], hbuf[256];
    const char *src_topic = rd_kafka_topic_name(msg->rkt);
    /* kjobs-original-* name where the job was first consumed; they survive the ladder */
    if (!kj_kafka_header_str(orig, "kjobs-original-topic", hbuf, sizeof(hbuf))) {
        header_set(c->headers, "kjobs-original-topic", src_topic);
        snprintf(buf, sizeof(buf), "%" PRId32, msg->partition);
        header_set(c->headers, "kjobs-original-partition", buf);
        snprintf(buf, sizeof(buf), "%" PRId64, msg->offset);
        header_set(c->headers, "kjobs-original-offset", buf);
    }
    snprintf(buf, sizeof(buf), "%d", attempt);
    header_set(c->headers, "kjobs-attempt", buf);
    /* the contract puts kjobs-not-before on DLQ copies too: there it is the failure time
     * (a dead letter has no next attempt to delay) */
    snprintf(buf, sizeof(buf), "%" PRId64, d.to_dlq ? (int64_t)now : d.not_before_ms);
    header_set(c->headers, "kjobs-not-before", buf);
    char error[KJ_ERROR_MAX];
    snprintf(error, sizeof(error), "%s", result->error[0] ? result->error : "(no message)");
    header_set(c->headers, "kjobs-error", error);
    header_set(c->headers, "kjobs-error-class", c->error_class);
    snprintf(buf, sizeof(buf), "%lld", now);
    header_set(c->headers, "kjobs-failed-at", buf);
    header_set(c->headers, "kjobs-worker", r->worker_id);

    atomic_fetch_add(&r->outstanding, 1);
    for (int tries = 0;; tries++) {
        if (r->transactional) pthread_rwlock_rdlock(&r->txn_lock);
        int rc = produce_copy(r, c);
        if (r->transactional) {
            if (rc == 0) atomic_fetch_add(&r->produced_in_txn, 1);
            pthread_rwlock_unlock(&r->txn_lock); /* never wait for queue space holding it */
        }
        if (rc == 0) return 0;
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries > 600) {
            kj_log(KJ_LOG_ERROR, "cannot queue routed copy", "{s:s,s:I,s:s}", "topic", c->topic,
                   "source_offset", (json_int_t)c->offset, "error", rd_kafka_err2str(err));
            kj_metrics_route_error();
            atomic_fetch_add(&r->failing, 1);
            route_ctx_free(c); /* the source offset never completes: nothing is lost */
            return -1;
        }
        /* queue full: delivery reports drain it on the poll thread; wait a little */
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

long kj_router_poll(kj_router *r, int timeout_ms) {
    rd_kafka_poll(r->rk, timeout_ms);
    long long now = kj_now_ms();
    route_ctx **link = &r->resend_head;
    while (*link) {
        route_ctx *c = *link;
        if (c->resend_at_ms > now) {
            link = &c->next_resend;
            continue;
        }
        *link = c->next_resend;
        if (produce_copy(r, c) != 0) { /* queue full or similar: try again later */
            c->resend_at_ms = now + RESEND_BACKOFF_MAX_MS;
            c->next_resend = *link;
            *link = c;
            link = &c->next_resend;
        }
    }
    return atomic_load(&r->outstanding);
}

long kj_router_outstanding(const kj_router *r) {
    return atomic_load(&r->outstanding);
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

int kj_router_commit_transaction(kj_router *r, rd_kafka_t *consumer,
                                 kj_router_offsets_fn *collect, void *opaque, char *errstr,
                                 size_t errstr_size) {
    pthread_rwlock_wrlock(&r->txn_lock);
    /* 1. every copy of this transaction acknowledged: their offsets are now completed */
    long long deadline = kj_now_ms() + 60000;
    while (kj_router_poll(r, 10) > 0 && kj_now_ms() < deadline) {
    }
    int rc = 0;
    rd_kafka_error_t *error = NULL;
    if (atomic_load(&r->outstanding) > 0) {
        snprintf(errstr, errstr_size, "copies still unacknowledged after 60 s");
        rc = -1;
        goto abort;
    }
    /* 2. the consumed offsets go into the same transaction as the copies */
    rd_kafka_topic_partition_list_t *offsets = collect(opaque);
    if (offsets && offsets->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(consumer);
        error = rd_kafka_send_offsets_to_transaction(r->rk, offsets, cgmd, 30000);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
    } else if (atomic_load(&r->produced_in_txn) == 0) {
        if (offsets) rd_kafka_topic_partition_list_destroy(offsets);
        pthread_rwlock_unlock(&r->txn_lock);
        return 0; /* nothing to commit */
    }
    if (offsets) rd_kafka_topic_partition_list_destroy(offsets);
    /* 3. commit, retrying what librdkafka says is retriable */
    for (int tries = 0; !error && tries < 1; tries++) {
        error = rd_kafka_commit_transaction(r->rk, 30000);
        while (error && rd_kafka_error_is_retriable(error) && tries++ < 5) {
            rd_kafka_error_destroy(error);
            error = rd_kafka_commit_transaction(r->rk, 30000);
        }
    }
    if (error) {
        snprintf(errstr, errstr_size, "transaction commit failed: %s", rd_kafka_error_string(error));
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
    pthread_rwlock_unlock(&r->txn_lock);
    return rc;
abort:
    kj_metrics_commit(false);
    if (error) rd_kafka_error_destroy(error);
    /* Abort: the copies vanish for read_committed readers; the caller stops the worker so
     * that a restart resumes from the last committed transaction (no loss, no duplicate). */
    error = rd_kafka_abort_transaction(r->rk, 30000);
    if (error) rd_kafka_error_destroy(error);
    pthread_rwlock_unlock(&r->txn_lock);
    return rc;
}
