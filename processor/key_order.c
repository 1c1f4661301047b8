/*
 * processor/key_order.c — key-ordered retries (key_order.h): one chain per main partition
 * number, the sets' assignment bookkeeping, and the scan that rebuilds a set's chain from its
 * ladder partitions. The scan uses its own consumer (no group membership: assign only; the
 * group id only to read the committed offsets) so the group consumer's pauses, positions and
 * poll loop are untouched, and reads every record's key and control headers up to the end.
 */
#include "processor/key_order.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/topic_reader.h"

typedef enum { SLOT_WAIT, SLOT_SCANNING, SLOT_READY } slot_state;

typedef struct slot {
    pthread_mutex_t lock;
    kj_key_chain *chain;   /* under lock */
    atomic_uint gen;       /* nonzero: ready, and the epoch it was read in */
    unsigned epoch;        /* (poll) changes whenever the set changes */
    uint64_t assigned;     /* (poll) bit s: step s (0 main) is ours */
    slot_state state;      /* (poll) */
    int64_t partial_since; /* (poll) when part of the set was assigned without the rest; 0 */
    bool partial_warned;   /* (poll) that was logged */
} slot;

typedef struct scan {
    struct kj_key_order *ko;
    size_t n;
    int32_t *parts;
    unsigned *epochs;
    kj_key_chain **chains;
    bool ok;
} scan;

struct kj_key_order {
    const kj_config *cfg;
    int nsteps;
    char **topics; /* nsteps + 1: main, then the ladder */
    int32_t nparts;
    slot *slots;
    unsigned epochs; /* (poll) the last epoch handed out */
    bool scanning;   /* (poll) a scan thread exists */
    pthread_t thread;
    atomic_bool scan_done, stop;
    scan *scan;
};

kj_key_order *kj_key_order_new(const kj_config *cfg, int32_t partitions) {
    kj_key_order *ko = calloc(1, sizeof(*ko));
    if (!ko) return NULL;
    ko->cfg = cfg;
    ko->nsteps = (int)cfg->retry_delay_count;
    ko->nparts = partitions;
    ko->topics = calloc((size_t)ko->nsteps + 1, sizeof(*ko->topics));
    ko->slots = calloc((size_t)partitions, sizeof(*ko->slots));
    if (!ko->topics || !ko->slots) {
        free(ko->topics);
        free(ko->slots);
        free(ko);
        return NULL;
    }
    ko->topics[0] = strdup(cfg->main_topic);
    for (int s = 1; s <= ko->nsteps; s++)
        ko->topics[s] = kj_config_retry_topic(cfg, s);
    for (int32_t p = 0; p < partitions; p++) {
        pthread_mutex_init(&ko->slots[p].lock, NULL);
        ko->slots[p].chain = kj_key_chain_new();
    }
    return ko;
}

static void scan_free(scan *sc) {
    if (!sc) return;
    for (size_t i = 0; i < sc->n; i++)
        kj_key_chain_free(sc->chains[i]);
    free(sc->chains);
    free(sc->parts);
    free(sc->epochs);
    free(sc);
}

void kj_key_order_free(kj_key_order *ko) {
    if (!ko) return;
    if (ko->scanning) {
        atomic_store(&ko->stop, true);
        pthread_join(ko->thread, NULL);
        scan_free(ko->scan);
    }
    for (int32_t p = 0; p < ko->nparts; p++) {
        kj_key_chain_free(ko->slots[p].chain);
        pthread_mutex_destroy(&ko->slots[p].lock);
    }
    for (int s = 0; s <= ko->nsteps; s++)
        free(ko->topics[s]);
    free(ko->topics);
    free(ko->slots);
    free(ko);
}

bool kj_key_order_covers(const kj_key_order *ko, int32_t partition) {
    return ko && partition >= 0 && partition < ko->nparts;
}

static uint64_t full_set(const kj_key_order *ko) {
    return ko->nsteps >= 63 ? UINT64_MAX : (UINT64_C(1) << (ko->nsteps + 1)) - 1;
}

/* The set changed: its chain is dropped, its jobs wait for a new scan. */
static void set_changed(kj_key_order *ko, slot *s) {
    atomic_store(&s->gen, 0);
    s->epoch = ++ko->epochs ? ko->epochs : ++ko->epochs; /* never 0 */
    s->state = SLOT_WAIT;
    pthread_mutex_lock(&s->lock);
    kj_key_chain_clear(s->chain);
    pthread_mutex_unlock(&s->lock);
}

void kj_key_order_assigned(kj_key_order *ko, int step, int32_t partition) {
    if (!kj_key_order_covers(ko, partition) || step < 0 || step > ko->nsteps) return;
    slot *s = &ko->slots[partition];
    s->assigned |= UINT64_C(1) << step;
    if (s->state != SLOT_WAIT || s->epoch == 0) set_changed(ko, s); /* new, or not seen to go */
}

void kj_key_order_revoked(kj_key_order *ko, int step, int32_t partition) {
    if (!kj_key_order_covers(ko, partition) || step < 0 || step > ko->nsteps) return;
    slot *s = &ko->slots[partition];
    s->assigned &= ~(UINT64_C(1) << step);
    set_changed(ko, s);
}

unsigned kj_key_order_gen(kj_key_order *ko, int32_t partition) {
    return kj_key_order_covers(ko, partition) ? atomic_load(&ko->slots[partition].gen) : 0;
}

kj_key_verdict kj_key_order_blocker(kj_key_order *ko, int32_t partition, unsigned gen,
                                    const void *key, size_t key_len, int64_t origin,
                                    kj_chain_copy *out) {
    if (!kj_key_order_covers(ko, partition) || !key) return KJ_KEY_FREE;
    slot *s = &ko->slots[partition];
    pthread_mutex_lock(&s->lock);
    kj_key_verdict v = !gen || atomic_load(&s->gen) != gen                         ? KJ_KEY_STALE
                       : kj_key_chain_blocker(s->chain, key, key_len, origin, out) ? KJ_KEY_BLOCKED
                                                                                   : KJ_KEY_FREE;
    pthread_mutex_unlock(&s->lock);
    return v;
}

void kj_key_order_move(kj_key_order *ko, int32_t partition, unsigned gen, const void *key,
                       size_t key_len, int64_t origin, int from_step, int to_step,
                       int64_t not_before_ms, bool to_parked) {
    if (!gen || !kj_key_order_covers(ko, partition) || !key) return;
    slot *s = &ko->slots[partition];
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->gen) == gen) {
        if (to_step > 0) {
            kj_chain_copy copy = {.origin = origin,
                                  .step = to_step,
                                  .not_before_ms = not_before_ms,
                                  .parked = to_parked};
            if (kj_key_chain_add(s->chain, key, key_len, &copy) != 0)
                kj_log(KJ_LOG_ERROR, "key order: out of memory, a key may run out of order",
                       "{s:i,s:I}", "partition", partition, "origin", (json_int_t)origin);
        }
        if (from_step > 0) kj_key_chain_remove(s->chain, key, key_len, origin, from_step);
    }
    pthread_mutex_unlock(&s->lock);
}

void kj_key_order_forget(kj_key_order *ko, int32_t partition, const void *key, size_t key_len,
                         int64_t origin, int step) {
    if (!kj_key_order_covers(ko, partition) || !key) return;
    slot *s = &ko->slots[partition];
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->gen)) kj_key_chain_remove(s->chain, key, key_len, origin, step);
    pthread_mutex_unlock(&s->lock);
}

void kj_key_order_reload(kj_key_order *ko, int32_t partition) {
    if (!kj_key_order_covers(ko, partition)) return;
    kj_log(KJ_LOG_WARN, "key order: ladder records were lost, reading the ladder again", "{s:i}",
           "partition", (int)partition);
    set_changed(ko, &ko->slots[partition]);
}

bool kj_key_order_counted(const rd_kafka_message_t *msg, const kj_control *ctl, int32_t partition) {
    return msg->key && ctl->original_partition == partition && (ctl->attempt >= 1 || ctl->parked);
}

/* ---- the scan ---------------------------------------------------------------------------- */

typedef struct scan_part {
    size_t set; /* index into scan->parts */
    int step;
} scan_part;

static bool scan_stopped(kj_key_order *ko) {
    return atomic_load(&ko->stop);
}

/* A set assigned only in part for long (an assignor that is not range after all, or a ladder
 * partition this member never gets): its jobs wait, so say so, once. @locality poll thread */
static void warn_partial(kj_key_order *ko, int64_t now) {
    for (int32_t p = 0; p < ko->nparts; p++) {
        slot *s = &ko->slots[p];
        if (s->assigned == 0 || s->assigned == full_set(ko)) {
            s->partial_since = 0;
            s->partial_warned = false;
            continue;
        }
        if (!s->partial_since) s->partial_since = now;
        if (s->partial_warned || now - s->partial_since < 30000) continue;
        s->partial_warned = true;
        char missing[512] = "";
        size_t used = 0;
        for (int step = 0; step <= ko->nsteps && used < sizeof(missing); step++)
            if (!(s->assigned & (UINT64_C(1) << step)))
                used += (size_t)snprintf(missing + used, sizeof(missing) - used, "%s%s[%d]",
                                         used ? ", " : "", ko->topics[step], (int)p);
        kj_log(KJ_LOG_WARN,
               "key order: jobs of a partition wait for the rest of its set (main and ladder "
               "partitions of one number must be assigned together: the range assignor)",
               "{s:i,s:s,s:I}", "partition", (int)p, "not_assigned", missing, "waiting_ms",
               (json_int_t)(now - s->partial_since));
    }
}

/* Retries `what` (a librdkafka call returning an error code) each second until it works or the
 * scan is stopped; logs the first failure. */
#define SCAN_RETRY(ko, call, what)                                                                 \
    for (int tries_ = 0;; tries_++) {                                                              \
        rd_kafka_resp_err_t e_ = (call);                                                           \
        if (!e_) break;                                                                            \
        if (tries_ == 0)                                                                           \
            kj_log(KJ_LOG_WARN, "key order: ladder scan waits for the broker", "{s:s,s:s}",        \
                   "step", what, "error", rd_kafka_err2str(e_));                                   \
        for (int ms_ = 0; ms_ < 1000 && !scan_stopped(ko); ms_ += 50)                              \
            nanosleep(&(struct timespec){.tv_nsec = 50 * 1000000L}, NULL);                         \
        if (scan_stopped(ko)) goto out;                                                            \
    }

static bool scan_stopped_fn(void *ko) {
    return scan_stopped(ko);
}

typedef struct scan_read {
    scan *sc;
    const scan_part *elems;
    size_t *copies;
} scan_read;

/* One ladder record of the scan: a copy counted against its key's chain. */
static bool on_scan_record(rd_kafka_message_t *msg, size_t e, void *opaque) {
    scan_read *rd = opaque;
    rd_kafka_headers_t *hdrs = NULL;
    kj_control ctl;
    rd_kafka_message_headers(msg, &hdrs);
    size_t set = rd->elems[e].set;
    if (hdrs && kj_control_parse_ladder(hdrs, kj_now_ms(), &ctl) == 0 &&
        kj_key_order_counted(msg, &ctl, rd->sc->parts[set])) {
        kj_chain_copy copy = {.origin = ctl.original_offset,
                              .step = rd->elems[e].step,
                              .not_before_ms = ctl.not_before_ms,
                              .parked = ctl.parked};
        if (kj_key_chain_add(rd->sc->chains[set], msg->key, msg->key_len, &copy) == 0)
            (*rd->copies)++;
    }
    rd_kafka_message_destroy(msg);
    return true;
}

static void *scan_main(void *arg) {
    scan *sc = arg;
    kj_key_order *ko = sc->ko;
    int64_t started = kj_now_ms();
    char err[512];
    size_t nelems = sc->n * (size_t)ko->nsteps, copies = 0, need = 0;
    scan_part *elems = calloc(nelems ? nelems : 1, sizeof(*elems));
    kj_read_range *ranges = calloc(nelems ? nelems : 1, sizeof(*ranges));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)nelems + 1);
    rd_kafka_t *rk = NULL;
    char client_id[300];
    snprintf(client_id, sizeof(client_id), "%s-key-order-scan", ko->cfg->client_id);
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(ko->cfg, err, sizeof(err));
    if (!conf || kj_kafka_conf_set(conf, "group.id", ko->cfg->group, err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "client.id", client_id, err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof(err)) ||
        !(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        if (conf) rd_kafka_conf_destroy(conf);
        kj_log(KJ_LOG_ERROR, "key order: cannot create the ladder scan's consumer", "{s:s}",
               "error", err);
        goto out;
    }
    rd_kafka_poll_set_consumer(rk);
    for (size_t i = 0, e = 0; i < sc->n; i++)
        for (int s = 1; s <= ko->nsteps; s++, e++) {
            elems[e] = (scan_part){.set = i, .step = s};
            rd_kafka_topic_partition_list_add(list, ko->topics[s], sc->parts[i]);
        }
    SCAN_RETRY(ko, rd_kafka_committed(rk, list, 5000), "committed offsets");
    for (size_t e = 0; e < nelems; e++) {
        rd_kafka_topic_partition_t *tp = &list->elems[e];
        int64_t lo = 0, hi = 0;
        SCAN_RETRY(ko,
                   rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi, 5000),
                   "watermarks");
        int64_t start = tp->offset >= 0 ? tp->offset : lo;
        if (start < lo) start = lo;
        ranges[e] = (kj_read_range){tp->topic, tp->partition, start, hi};
        if (start < hi) need++;
    }
    /* any partition EOF ends a range: in exactly-once mode an open transaction keeps the
     * last stable offset below the high watermark, and the scan does not wait for it */
    kj_read_opts opts = {
        .stop = scan_stopped_fn, .stop_opaque = ko, .eof_is_end = true, .what = "ladder"};
    scan_read rd = {sc, elems, &copies};
    kj_read_result r = need > 0 ? kj_topic_read(rk, ranges, nelems, on_scan_record, &rd, &opts,
                                                NULL, err, sizeof(err))
                                : KJ_READ_DONE;
    if (r == KJ_READ_ASSIGN_ERROR)
        kj_log(KJ_LOG_ERROR, "key order: the ladder scan cannot assign", "{s:s}", "error", err);
    sc->ok = r == KJ_READ_DONE && !scan_stopped(ko);
    kj_log(sc->ok ? KJ_LOG_INFO : KJ_LOG_WARN,
           sc->ok ? "key order: ladder read" : "key order: ladder scan stopped", "{s:I,s:I,s:I}",
           "partitions", (json_int_t)sc->n, "copies", (json_int_t)copies, "duration_ms",
           (json_int_t)(kj_now_ms() - started));
out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    rd_kafka_topic_partition_list_destroy(list);
    free(elems);
    free(ranges);
    atomic_store(&ko->scan_done, true);
    return NULL;
}

void kj_key_order_tick(kj_key_order *ko, kj_key_order_ready_fn *ready, void *opaque) {
    if (!ko) return;
    if (ko->scanning && atomic_load(&ko->scan_done)) {
        pthread_join(ko->thread, NULL);
        ko->scanning = false;
        scan *sc = ko->scan;
        for (size_t i = 0; i < sc->n; i++) {
            slot *s = &ko->slots[sc->parts[i]];
            if (s->state != SLOT_SCANNING || s->epoch != sc->epochs[i]) continue;
            if (!sc->ok || s->assigned != full_set(ko)) {
                s->state = SLOT_WAIT; /* read again */
                continue;
            }
            pthread_mutex_lock(&s->lock);
            kj_key_chain *old = s->chain;
            s->chain = sc->chains[i];
            sc->chains[i] = old;
            pthread_mutex_unlock(&s->lock);
            s->state = SLOT_READY;
            atomic_store(&s->gen, s->epoch);
            ready(sc->parts[i], opaque);
        }
        scan_free(sc);
        ko->scan = NULL;
    }
    warn_partial(ko, kj_now_ms());
    if (ko->scanning || ko->nsteps == 0) return;
    size_t n = 0;
    for (int32_t p = 0; p < ko->nparts; p++)
        if (ko->slots[p].state == SLOT_WAIT && ko->slots[p].assigned == full_set(ko)) n++;
    if (n == 0) return;
    scan *sc = calloc(1, sizeof(*sc));
    sc->ko = ko;
    sc->parts = calloc(n, sizeof(*sc->parts));
    sc->epochs = calloc(n, sizeof(*sc->epochs));
    sc->chains = calloc(n, sizeof(*sc->chains));
    for (int32_t p = 0; p < ko->nparts; p++) {
        slot *s = &ko->slots[p];
        if (s->state != SLOT_WAIT || s->assigned != full_set(ko)) continue;
        s->state = SLOT_SCANNING;
        sc->parts[sc->n] = p;
        sc->epochs[sc->n] = s->epoch;
        sc->chains[sc->n] = kj_key_chain_new();
        sc->n++;
    }
    atomic_store(&ko->scan_done, false);
    ko->scan = sc;
    if (pthread_create(&ko->thread, NULL, scan_main, sc) != 0) {
        for (size_t i = 0; i < sc->n; i++)
            ko->slots[sc->parts[i]].state = SLOT_WAIT;
        scan_free(sc);
        ko->scan = NULL;
        return;
    }
    ko->scanning = true;
}
