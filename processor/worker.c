/*
 * worker.c — the worker runtime: consumer loop, rebalances, batches, commits, shutdown.
 * The design (threads, ordering, commit rule, back-pressure, resets, shutdown) is stated in
 * worker.h; this file follows it section by section.
 */
#include "processor/worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "partitions/engine.h"
#include "partitions/flow_control.h"
#include "partitions/offset_tracker.h"
#include "processor/breaker.h"
#include "processor/kafka.h"
#include "processor/clock.h"
#include "processor/crash_guard.h"
#include "processor/handler_deadline.h"
#include "processor/hash.h"
#include "processor/header_contract.h"
#include "processor/key_order.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/periodic.h"
#include "processor/retry_policy.h"
#include "processor/router.h"
#include "processor/schema_registry.h"
#include "processor/topic_layout.h"

#define KJ_TICK_MS          20
#define KJ_STALL_CONFIRM_MS 3000 /* after a stall: wait this long for the group to answer */
#define KJ_LAG_INTERVAL_MS  1000
/* A partition with records beyond its position, none of them running or waiting for a due time,
 * and no progress for this long is logged as not progressing (stuck_check). */
#define KJ_STUCK_AFTER_MS       30000
#define KJ_PROGRESS_INTERVAL_MS 10000
#define KJ_REVOKE_ROUTE_WAIT_MS 2000 /* unacked copies only hold their offsets back */
#define KJ_REVOKE_SLICE_MS      100  /* a revoke waiting for a batch stays alive this often */
#define KJ_CLOSE_WAIT_MS        5000
#define KJ_REBALANCE_COMMIT_MS  2000
#define KJ_SR_BACKOFF_MIN_MS    250   /* Schema Registry unavailable: first wait */
#define KJ_SR_BACKOFF_MAX_MS    10000 /* ... doubling up to this */
#define KJ_SR_LOG_EVERY_MS      30000 /* a waiting batch says so again this often */
#define KJ_PROBE_COMMIT_WAIT_MS 10000 /* crash guard: longest wait for a probe commit */

struct kj_part;

/* Key lanes. With batch.ordering = "partition" (the default) a partition has one engine lane
 * and runs in offset order, one batch at a time. With "key", a main-topic partition gets
 * kj_config_key_lanes() lanes and the poll thread pushes each record to the lane of its key
 * (lane_for), so batches of different keys run on several threads at once while one key's
 * jobs stay on one lane: in offset order, one batch at a time (engine.h, "Ordering"). The
 * tracker is the partition's, so commits stay contiguous: the lowest offset not yet done on
 * any lane. What depends on one lane per partition takes all of them: back-pressure (the
 * partition pauses on its tracker's held count, kj_offset_tracker_held, which covers every
 * lane and what finished out of order above the committed offset), revoke (every lane stops,
 * then each is waited for), drop_pending, a breaker or stall rewind (to the committed offset,
 * the lowest uncompleted one of all lanes), the crash guard's wake-up. Careful mode (crash
 * guard) runs on lane 0 alone: while a partition is careful every record goes to lane 0, and
 * it switches to key lanes only once lane 0 is idle (everything pushed before ran), so no key
 * is ever on two lanes with work. Ladder partitions keep one lane (their jobs already left
 * key order; docs/ordering.md) — except with key-ordered retries, where parked copies get
 * lanes of their own (lane_for). One lane = one kj_vlane, the engine's lane_opaque. */
typedef struct kj_vlane {
    struct kj_part *part;
    kj_lane *lane;
    /* flow control: since when the lane's head has waited for a limit (0: not waiting), which
     * limit and why; written by the lane's batches only (one at a time) */
    int64_t throttled_since;
    int throttle_flow;
    kj_flow_reason throttle_reason;
} kj_vlane;

/* One assigned topic-partition. Fields marked (poll) are touched by the poll thread only;
 * `lock` guards the tracker, which workers and the poll thread both complete into. */
typedef struct kj_part {
    struct kj_worker *w;
    char *topic;
    int32_t partition;
    kj_topic_role role;
    int step;              /* ladder step 1..N; 0 for the main topic */
    int64_t step_delay_ms; /* ladder partitions: the step's delay */
    kj_vlane *lanes;       /* nlanes engine lanes (key lanes above); NULL once removed */
    int nlanes;            /* 1, or kj_config_key_lanes() for a main-topic partition */
    bool one_lane;         /* (poll) key lanes, but every record goes to lane 0 (careful mode) */
    bool to_keys;          /* (poll) careful mode's range is pushed: key lanes once lane 0 idles */
    int64_t careful_end;   /* (poll) careful mode's end as planned on assignment; 0 none */
    pthread_mutex_t lock;
    kj_offset_tracker *tracker;
    int64_t committed;            /* (poll) last committed offset, -1 none */
    bool paused;                  /* (poll) we paused it */
    bool paused_for_delay;        /* (poll) ... because the ladder head is not due */
    atomic_bool needs_rewind;     /* batches were skipped while the breaker was open */
    atomic_bool revoking;         /* being revoked: a batch waiting for the registry gives up */
    atomic_bool abandoned;        /* revoked while a batch still ran (revoke_lanes): that batch's
                                   * outcomes are dropped */
    atomic_int abandoned_batches; /* abandoned lanes whose batch has not returned yet */
    kj_vlane *old_lanes;          /* (poll) the lanes array while such a batch runs on it */
    struct kj_part *held_by; /* (poll) a retired part of the same partition still running here */
    atomic_bool held;        /* its jobs wait (parked, paused) until held_by's batches return */
    struct kj_part *retired_next; /* (poll) w->retired list */
    /* A retired part's given-up batch ran on while its partition came back here (held_by):
     * the jobs it finished are carried over to the new part (under each part's `lock`, the
     * retired one's first), which completes them unrun instead of running them again. */
    struct kj_part *adopted_by; /* (retired part, under lock) the new part of its partition */
    int64_t *carried;           /* (new part, under lock) offsets finished by that batch */
    size_t ncarried, carried_cap;
    atomic_bool has_carried;
    atomic_llong key_wait_logged; /* when a long in-memory wait (key order) was last logged */
    /* crash-loop guard (crash_guard.h). guarded/arm_offset/meta_sent: (poll); arming: written
     * by the poll thread, read by the lane's batches too (run_batch). crash: set by the poll
     * thread before the first record is pushed, then the lane's batches'. meta: what the next
     * commit carries, under `lock` (batches write it when probing). */
    bool guarded;        /* the guard covers it: its "live" mark is (being) written */
    atomic_bool arming;  /* paused, and no job of it runs, until the "live" mark is acknowledged */
    int64_t arm_offset;  /* the committed offset when assigned (absolute) */
    int64_t arm_sent_at; /* when the "live" mark was last sent (an unanswered one: again) */
    kj_crash_plan crash; /* careful mode and the suspect, from the previous owner's mark */
    char meta[KJ_CRASH_META_MAX];
    char meta_sent[KJ_CRASH_META_MAX];
    bool start_unknown;  /* (poll) assigned without knowing the committed offset */
    bool consumed;       /* (poll) at least one record arrived since assignment */
    int64_t start;       /* (poll) the offset it was assigned at (may be logical) */
    bool position_known; /* (poll) a record arrived since the last assign/seek: the consumer's
                          * position is current (before, it may be stale: a lost partition's) */
    int64_t watch_pos;   /* (poll) stuck_check: the position last seen moving, and when */
    int64_t watch_since;
    bool watch_warned;    /* (poll) "partition not progressing" logged for this stall */
    struct kj_part *next; /* (poll) assignment list */
} kj_part;

typedef struct kj_topic_slot {
    kj_topic_spec spec;
    const rd_kafka_topic_t *rkt; /* cache of the handle records carry */
    kj_part **parts;             /* by partition number */
    int32_t nparts;
} kj_topic_slot;

struct kj_worker {
    const kj_config *cfg;
    kj_handler_registry *handlers;
    rd_kafka_t *consumer;
    kj_router *router;
    kj_engine *engine;
    kj_sr_client *registry; /* NULL without kafka.schema_registry_url */
    kj_periodic *periodic;  /* NULL without schedule.periodic; runs while we own main partition 0 */
    kj_flow *flow;          /* limits per job type; NULL without `limits` */
    kj_deadline_watch *deadlines; /* handler time limits' watchdog; NULL when no type has one */
    kj_key_order *key_order;      /* retry.ordering = "key" with a ladder; else NULL */
    bool crash_guard;             /* dlq.crash_loop_limit > 0 and not exactly-once */
    pthread_mutex_t commit_lock;  /* commit contents + enqueue order (commit_offsets) */
    int total_partitions;    /* of the main and ladder topics (check_topics), for group scope */
    int32_t main_partitions; /* of the main topic (check_topics) */
    kj_topic_slot *topics;
    size_t topic_count;
    kj_part *parts;
    kj_part *retired; /* (poll) removed parts still referenced (abandoned batch, routed copy) */
    char worker_id[256];
    atomic_bool joined, draining;
    atomic_int assigned;
    bool shutdown_timed_out;      /* grace ran out: lanes may still be busy, do not free them */
    bool fatal;                   /* (poll) exactly-once commit failed: stop, commit nothing more */
    bool consumer_closed;         /* (poll) left the group cleanly; else never destroy it */
    int64_t drain_deadline;       /* (poll) end of the shutdown grace period, 0 before */
    bool in_rebalance;            /* (poll) inside on_rebalance */
    bool cooperative;             /* (poll) the group's rebalance protocol is incremental */
    kj_group_protocol protocol;   /* what the consumer joins with; may fall back once */
    rd_kafka_queue_t *wake_queue; /* (poll) answers of wake_fetchers' requests, dropped */
    int64_t subscribed_at;        /* (poll) when the current consumer subscribed */
    bool kip848_confirmed;        /* (poll) the KIP-848 member got an epoch or an assignment */
    int64_t kip848_checked_at;    /* (poll) last look at the member epoch */
    atomic_int registry_waiting;  /* batches held by a Schema Registry outage (decode_job) */
    atomic_llong jobs_ok, jobs_retried, jobs_dead, resets;
    /* DLQ circuit breaker: workers record outcomes under breaker_lock and set breaker_open;
     * the poll thread pauses, rewinds and resumes (see "circuit breaker" below). */
    pthread_mutex_t breaker_lock;
    kj_breaker breaker;
    atomic_bool breaker_open, breaker_reset_requested;
    bool breaker_handled;      /* (poll) the open breaker has paused everything */
    int64_t breaker_opened_at; /* (poll) */
    atomic_llong jobs_skipped;
    /* Stall guard: a process frozen (SIGSTOP, a VM pause, swap) past session.timeout.ms has
     * lost its partitions without knowing it. Worker threads compare last_poll_ms with the
     * session timeout before each batch; the poll thread sets stall_hold first when it sees
     * the gap, and holds every partition until the group answers (see stall_tick). */
    atomic_llong last_poll_ms;
    atomic_bool stall_hold;
    int64_t session_timeout_ms; /* from the consumer's configuration */
    int64_t revoke_wait_ms;     /* longest wait for a revoked partition's batch: half of
                                 * max.poll.interval.ms, the group's rebalance timeout */
    kj_heartbeat *heartbeat;    /* kj_worker_run's, or NULL */
    int64_t stall_detected_at;  /* (poll) 0 when not held */
    unsigned rebalances;        /* (poll) rebalance callbacks served, for stall_tick */
    unsigned stall_rebalances;  /* (poll) that count when the stall was detected */
};

/* One job of a running batch: per-thread scratch, reused across batches. */
typedef struct batch_slot {
    kjobs_job_t job;
    kjobs_result_t result;
    const kj_handler *handler;
    bool decoded;
    bool ladder;            /* consumed from a ladder topic: ctl holds its control headers */
    bool hop;               /* released before its kjobs-not-before: re-routed, not run */
    bool scheduled;         /* main topic, kjobs-run-at ahead: handed to the ladder, not run */
    bool carried;           /* already finished here before a rebalance (carry_over): not run */
    bool keyed;             /* retry.ordering = "key" orders it: keyed, origin known */
    bool counted;           /* ... and it is a ladder copy the key chain counts */
    bool parked;            /* must wait behind `behind`: parked on the ladder, not run */
    int64_t origin;         /* keyed only: its main-topic offset */
    kj_chain_copy behind;   /* parked only: the copy it waits behind */
    int64_t due_ms;         /* scheduled only: its kjobs-run-at */
    kj_control ctl;         /* ladder only, validated */
    kj_job_outcome outcome; /* where it went: ok, retry or dead-lettered */
    int flow;               /* flow-control limit of its type, -1 none */
    bool flow_slot;         /* this job took its type's concurrency slot for the batch */
    int flow_release;       /* limit index + 1 whose slot is given back after this job; 0 none */
    /* failed jobs only: the retry policy's decision, as routed */
    kj_retry_decision decision;
} batch_slot;

/* Per worker thread, grown to the largest batch seen, freed when the thread exits (a
 * pthread key destructor: _Thread_local storage would leak the buffers). */
typedef struct batch_scratch {
    batch_slot *slots;
    const kjobs_job_t **jobs;
    kjobs_result_t **results;
    size_t capacity;
} batch_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    batch_scratch *sc = p;
    free(sc->slots);
    free(sc->jobs);
    free(sc->results);
    free(sc);
}

static void scratch_key_create(void) {
    pthread_key_create(&scratch_key, scratch_free);
}

/* ---- partitions ------------------------------------------------------------------------ */

static kj_topic_slot *topic_slot_of(kj_worker *w, const rd_kafka_topic_t *rkt, const char *name) {
    for (size_t i = 0; i < w->topic_count; i++)
        if (w->topics[i].rkt == rkt && rkt) return &w->topics[i];
    if (!name) name = rd_kafka_topic_name(rkt);
    for (size_t i = 0; i < w->topic_count; i++) {
        if (strcmp(w->topics[i].spec.name, name) == 0) {
            if (rkt) w->topics[i].rkt = rkt;
            return &w->topics[i];
        }
    }
    return NULL;
}

static kj_part *part_lookup(kj_worker *w, const rd_kafka_topic_t *rkt, const char *topic,
                            int32_t partition) {
    kj_topic_slot *slot = topic_slot_of(w, rkt, topic);
    if (!slot || partition < 0 || partition >= slot->nparts) return NULL;
    return slot->parts[partition];
}

static void run_batch(kj_lane *lane, void *lane_opaque, void **items, size_t count, void *opaque);

/* Lanes for the parked copies of a key-ordered ladder partition (lane_for). */
#define PARKED_LANES(w) ((w)->cfg->workers < 8 ? (w)->cfg->workers : 8)

static kj_part *part_add(kj_worker *w, const char *topic, int32_t partition) {
    kj_topic_slot *slot = topic_slot_of(w, NULL, topic);
    if (!slot) return NULL;
    if (partition >= slot->nparts) {
        int32_t n = partition + 1;
        slot->parts = realloc(slot->parts, (size_t)n * sizeof(*slot->parts));
        for (int32_t i = slot->nparts; i < n; i++)
            slot->parts[i] = NULL;
        slot->nparts = n;
    }
    if (slot->parts[partition]) {
        atomic_store(&slot->parts[partition]->revoking, false);
        return slot->parts[partition];
    }
    kj_part *p = calloc(1, sizeof(*p));
    p->w = w;
    p->topic = slot->spec.name;
    p->partition = partition;
    p->role = slot->spec.role;
    p->step = slot->spec.step;
    p->step_delay_ms = slot->spec.delay_ms;
    p->committed = -1;
    pthread_mutex_init(&p->lock, NULL);
    p->tracker = kj_offset_tracker_new(1024);
    p->nlanes = p->role == KJ_TOPIC_MAIN                       ? kj_config_key_lanes(w->cfg)
                : kj_key_order_covers(w->key_order, partition) ? 1 + PARKED_LANES(w)
                                                               : 1;
    p->lanes = calloc((size_t)p->nlanes, sizeof(*p->lanes));
    for (int i = 0; i < p->nlanes; i++) {
        p->lanes[i].part = p;
        p->lanes[i].lane = kj_engine_lane_add(w->engine, &p->lanes[i]);
    }
    p->next = w->parts;
    w->parts = p;
    slot->parts[partition] = p;
    atomic_fetch_add(&w->assigned, 1);
    return p;
}

static void discard_message(void *item, void *opaque) {
    (void)opaque;
    rd_kafka_message_destroy(item);
}

/* Stops and removes every lane of @p p (all stop dispatching first, then each in-flight batch
 * is waited for), giving their undispatched records back; p->lanes is NULL afterwards.
 * @locality poll thread */
static void part_remove_lanes(kj_worker *w, kj_part *p) {
    if (!p->lanes) return;
    kj_lane *lanes[p->nlanes];
    for (int i = 0; i < p->nlanes; i++) {
        lanes[i] = p->lanes[i].lane;
        kj_flow_forget_lane(w->flow, lanes[i], true);
    }
    kj_engine_lanes_remove(lanes, (size_t)p->nlanes, discard_message, NULL);
    for (int i = 0; i < p->nlanes; i++)
        kj_flow_lane_removed(w->flow, lanes[i]);
    free(p->lanes);
    p->lanes = NULL;
}

/* The lane of a record of @p p (key lanes, above): lane 0 with one lane or in careful mode;
 * else by a hash of its key — FNV-1a, not the producer's murmur2: the keys of one partition
 * share murmur2(key) % partitions, so murmur2 % lanes would leave lanes unused — or, for a
 * record without a key, by its offset (spread; no order among them).
 * A ladder partition with key-ordered retries (processor/key_order.h) keeps its retry copies,
 * released by time in offset order, on lane 0, and its parked copies (kjobs-parked-behind) on
 * lanes 1..PARKED_LANES by key: a parked copy comes due when the job it waits for does, and
 * must not wait behind other keys' retries written before it. @locality poll thread */
static kj_vlane *lane_for(kj_part *p, const rd_kafka_message_t *msg) {
    if (p->nlanes == 1 || p->one_lane) return &p->lanes[0];
    if (p->role == KJ_TOPIC_RETRY) {
        rd_kafka_headers_t *hdrs = NULL;
        const void *v;
        size_t n;
        if (!msg->key || rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            rd_kafka_header_get_last(hdrs, KJ_HDR_PARKED_BEHIND, &v, &n) !=
                RD_KAFKA_RESP_ERR_NO_ERROR)
            return &p->lanes[0];
        uint64_t h = kj_hash_bytes(KJ_HASH_INIT, msg->key, msg->key_len);
        return &p->lanes[1 + (h ^ (h >> 29)) % (uint64_t)(p->nlanes - 1)];
    }
    uint64_t h;
    if (msg->key) {
        h = kj_hash_bytes(KJ_HASH_INIT, msg->key, msg->key_len);
        h ^= h >> 29; /* fold the high bits in: FNV-1a's low bits mix least */
    } else {
        h = (uint64_t)msg->offset;
    }
    return &p->lanes[h % (uint64_t)p->nlanes];
}

/* Jobs of @p p must not run yet: its crash-guard mark is not on record (arming), a batch of
 * its previous assignment still runs here (held), or with key-ordered retries its key chain is
 * not read yet (processor/key_order.h). */
static bool part_held(kj_part *p) {
    return atomic_load(&p->arming) || atomic_load(&p->held) ||
           (kj_key_order_covers(p->w->key_order, p->partition) &&
            kj_key_order_gen(p->w->key_order, p->partition) == 0);
}

static void part_free(kj_part *p) {
    free(p->carried);
    free(p->lanes);
    free(p->old_lanes);
    kj_offset_tracker_free(p->tracker);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Remove a partition after its lane is drained of in-flight work. @locality poll thread */
static void part_remove(kj_worker *w, kj_part *p, bool free_memory) {
    if (p->held_by) { /* revoked again before its given-up batch returned: nothing to carry */
        pthread_mutex_lock(&p->held_by->lock);
        if (p->held_by->adopted_by == p) p->held_by->adopted_by = NULL;
        pthread_mutex_unlock(&p->held_by->lock);
        p->held_by = NULL;
    }
    kj_topic_slot *slot = topic_slot_of(w, NULL, p->topic);
    if (slot && p->partition < slot->nparts) slot->parts[p->partition] = NULL;
    for (kj_part **link = &w->parts; *link; link = &(*link)->next) {
        if (*link == p) {
            *link = p->next;
            break;
        }
    }
    atomic_fetch_sub(&w->assigned, 1);
    kj_metrics_lag_remove(p->topic, p->partition);
    if (free_memory) {
        part_free(p);
        return;
    }
    /* an abandoned batch still runs on it, or a routed copy may still complete into it:
     * retired, freed by the tick once neither is left (retired_tick) */
    p->retired_next = w->retired;
    w->retired = p;
}

/* Releases what retired parts still hold: a partition assigned again while its given-up batch
 * ran here waits for that batch (held), and a retired part nothing references any more is
 * freed. @locality poll thread */
static void retired_tick(kj_worker *w) {
    for (kj_part *p = w->parts; p; p = p->next) {
        if (!p->held_by || atomic_load(&p->held_by->abandoned_batches) > 0) continue;
        pthread_mutex_lock(&p->held_by->lock);
        p->held_by->adopted_by = NULL;
        pthread_mutex_unlock(&p->held_by->lock);
        p->held_by = NULL;
        atomic_store(&p->held, false);
        for (int i = 0; p->lanes && i < p->nlanes; i++)
            kj_engine_lane_wake(p->lanes[i].lane);
        kj_log(KJ_LOG_INFO,
               "partition released: the given-up batch of its previous assignment "
               "here returned",
               "{s:s,s:i}", "topic", p->topic, "partition", p->partition);
    }
    if (!w->retired || kj_router_outstanding(w->router) > 0) return;
    for (kj_part **link = &w->retired; *link;) {
        kj_part *r = *link;
        if (atomic_load(&r->abandoned_batches) > 0 || r->lanes) { /* lanes: shutdown timed out */
            link = &r->retired_next;
            continue;
        }
        *link = r->retired_next;
        part_free(r);
    }
}

/* Router callback: a ladder copy the key chain counted became a dead letter after it was
 * queued (the broker refused it as too large): forget it, or its key would wait for it until
 * the next rebalance. Any thread (router.h). */
static void key_copy_diverted(int32_t partition, const void *key, size_t key_len,
                              const rd_kafka_headers_t *headers, int step, void *opaque) {
    kj_worker *w = opaque;
    kj_control ctl;
    if (partition < 0 || kj_control_parse_ladder(headers, kj_now_ms(), &ctl) != 0 ||
        ctl.original_partition != partition)
        return;
    kj_key_order_forget(w->key_order, partition, key, key_len, ctl.original_offset, step);
}

/* Router callback: a copy of (p, offset) was acknowledged. @locality poll thread */
static void on_route_done(void *owner, int64_t offset, void *opaque) {
    (void)opaque;
    kj_part *p = owner;
    pthread_mutex_lock(&p->lock);
    kj_offset_tracker_complete(p->tracker, offset);
    pthread_mutex_unlock(&p->lock);
}

/* ---- commits ----------------------------------------------------------------------------- */

/* Committable offsets of every assigned partition that moved (all of them when `all`).
 * A partition with nothing pending commits the consumer's position, not "last delivered + 1":
 * its tail may hold records that are never delivered (transaction markers, aborted records,
 * compaction gaps), and lag would otherwise never reach 0. The position only counts records
 * this (poll) thread already took from rd_kafka_consumer_poll, so none is skipped; and it is
 * used only once a record arrived since the partition's last assign or seek (position_known),
 * since librdkafka may keep a position from an earlier assignment of the same partition. */
static rd_kafka_topic_partition_list_t *collect_offsets(kj_worker *w, bool all) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_new(8);
    for (kj_part *p = w->parts; p; p = p->next)
        rd_kafka_topic_partition_list_add(pos, p->topic, p->partition);
    if (rd_kafka_position(w->consumer, pos) != RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < pos->cnt; i++)
            pos->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    int i = 0;
    for (kj_part *p = w->parts; p; p = p->next, i++) {
        pthread_mutex_lock(&p->lock);
        if (p->position_known) kj_offset_tracker_advance(p->tracker, pos->elems[i].offset);
        int64_t committable = kj_offset_tracker_committable(p->tracker);
        char meta[KJ_CRASH_META_MAX];
        memcpy(meta, p->meta, sizeof(meta));
        pthread_mutex_unlock(&p->lock);
        /* a guarded partition also commits when only its crash-guard mark changed */
        bool mark = p->guarded && strcmp(meta, p->meta_sent) != 0;
        if (committable < 0 && mark) committable = p->arm_offset;
        if (committable < 0 || (committable <= p->committed && !all && !mark)) continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
        tp->offset = committable;
        if (p->guarded) {
            tp->metadata_size = strlen(meta);
            tp->metadata = strdup(meta);
            memcpy(p->meta_sent, meta, sizeof(meta));
            if (p->arming) p->arm_sent_at = kj_now_ms();
        }
        p->committed = committable;
    }
    rd_kafka_topic_partition_list_destroy(pos);
    return list;
}

/* A synchronous commit that gives up after max(shutdown.grace_ms, 5 s): rd_kafka_commit()
 * itself would wait for a lost coordinator until the session times out. */
static rd_kafka_resp_err_t commit_bounded(kj_worker *w, rd_kafka_topic_partition_list_t *list,
                                          pthread_mutex_t *held) {
    int64_t wait_ms = w->cfg->shutdown_grace_ms > 5000 ? w->cfg->shutdown_grace_ms : 5000;
    if (w->in_rebalance) {
        /* inside the rebalance callback: librdkafka retries a commit the coordinator rejects
         * as "rebalance in progress", and a callback that blocks misses the join window,
         * so the group reassigns our partitions while we still hold them */
        wait_ms = KJ_REBALANCE_COMMIT_MS;
    } else if (w->drain_deadline > 0) { /* draining: what is left of the grace period, >= 1 s */
        wait_ms = w->drain_deadline - kj_now_ms();
        if (wait_ms < 1000) wait_ms = 1000;
    }
    rd_kafka_queue_t *queue = rd_kafka_queue_new(w->consumer);
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(w->consumer, list, queue, NULL, NULL);
    if (held) pthread_mutex_unlock(held); /* enqueued: commits keep this order */
    if (!err) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, (int)wait_ms);
        err = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
        if (ev) rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(queue);
    return err;
}

static rd_kafka_topic_partition_list_t *collect_for_transaction(void *opaque) {
    return collect_offsets(opaque, false);
}

/* Commit the committable offsets of every assigned partition: through the consumer (async in
 * steady state, sync on revocation and shutdown), or in exactly-once mode inside the router's
 * transaction together with the copies. @locality poll thread */
/* A commit carrying an arming partition's "live" mark succeeded (async or sync, whichever got
 * through first): the mark is on record, its jobs may run. @locality poll thread */
static void crash_guard_armed(kj_part *p, int64_t offset) {
    if (!p || !p->arming || offset != p->arm_offset) return;
    p->arming = false;
    for (int i = 0; p->lanes && i < p->nlanes; i++)
        kj_engine_lane_wake(p->lanes[i].lane);
    kj_log(KJ_LOG_DEBUG, "crash guard armed", "{s:s,s:i,s:I}", "topic", p->topic, "partition",
           p->partition, "offset", (json_int_t)offset);
}

static void commit_offsets(kj_worker *w, bool sync) {
    if (kj_router_transactional(w->router)) {
        char err[512];
        if (!w->fatal &&
            kj_router_commit_transaction(w->router, w->consumer, collect_for_transaction, w, err,
                                         sizeof(err)) != 0) {
            kj_log(KJ_LOG_ERROR, "exactly-once commit failed: transaction aborted, stopping",
                   "{s:s}", "error", err);
            w->fatal = true;
        }
        return;
    }
    /* commit_lock: what a commit carries (offsets and crash-guard marks) and the order in which
     * commits reach librdkafka's queue go together, so a mark read here can never overwrite a
     * newer one a worker thread committed meanwhile (crash_probe_commit) */
    pthread_mutex_lock(&w->commit_lock);
    rd_kafka_topic_partition_list_t *list = collect_offsets(w, sync);
    if (list->cnt == 0) pthread_mutex_unlock(&w->commit_lock);
    if (list->cnt > 0) {
        if (sync) {
            rd_kafka_resp_err_t err = commit_bounded(w, list, &w->commit_lock);
            kj_metrics_commit(err == RD_KAFKA_RESP_ERR_NO_ERROR);
            if (err) {
                kj_log(KJ_LOG_ERROR, "commit failed", "{s:s}", "error", rd_kafka_err2str(err));
                for (int i = 0; i < list->cnt; i++) { /* send them again next time */
                    kj_part *p =
                        part_lookup(w, NULL, list->elems[i].topic, list->elems[i].partition);
                    if (p) p->committed = -1;
                    if (p) p->meta_sent[0] = '\0';
                }
            } else {
                for (int i = 0; i < list->cnt; i++)
                    crash_guard_armed(
                        part_lookup(w, NULL, list->elems[i].topic, list->elems[i].partition),
                        list->elems[i].offset);
                kj_log(KJ_LOG_DEBUG, "offsets committed", "{s:i}", "partitions", list->cnt);
            }
        } else {
            rd_kafka_resp_err_t err = rd_kafka_commit(w->consumer, list, 1);
            pthread_mutex_unlock(&w->commit_lock);
            if (err) {
                kj_metrics_commit(false);
                kj_log(KJ_LOG_WARN, "async commit not sent", "{s:s}", "error",
                       rd_kafka_err2str(err));
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
}

/* Result of an async commit (served on the poll thread by rd_kafka_consumer_poll). A failed
 * partition forgets its "committed" mark, so the next tick sends its offset again even when
 * nothing new completed — otherwise an idle partition would keep a stale commit forever. */
static void on_offset_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    (void)rk;
    kj_worker *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return; /* nothing to commit */
    int failed = 0;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        kj_part *p = part_lookup(w, NULL, tp->topic, tp->partition);
        if (!err && !tp->err) {
            crash_guard_armed(p, tp->offset);
            continue;
        }
        if (p && p->committed == tp->offset) p->committed = -1;
        if (p) p->meta_sent[0] = '\0'; /* send the mark again */
        failed++;
    }
    kj_metrics_commit(!err && failed == 0);
    if (err || failed)
        kj_log(KJ_LOG_WARN, "async commit failed", "{s:s,s:i,s:b}", "error",
               rd_kafka_err2str(err ? err : offsets->elems[0].err), "partitions", failed,
               "will_retry", 1);
}

/* ---- rebalances ---------------------------------------------------------------------------- */

#define KJ_COMMITTED_LOOKUP_MS 2000

static void wake_fetchers(kj_worker *w, rd_kafka_t *rk);
static void pause_part(kj_worker *w, kj_part *p, bool for_delay);

/* Group-scoped rate limits follow this member's share of the group's partitions (main and
 * ladder topics alike: every assignor spreads them all). @locality poll thread */
static void update_flow_share(kj_worker *w) {
    int assigned = atomic_load(&w->assigned);
    if (!w->flow || assigned <= 0 || w->total_partitions <= 0) return;
    double share = (double)assigned / (double)w->total_partitions;
    kj_flow_set_share(w->flow, share > 1 ? 1 : share);
}

/* Crash-loop guard, on assignment (crash_guard.h): read the previous owner's mark, plan careful
 * mode, and hold the partition (arming) until our own "live" mark is acknowledged, so a crash in
 * its very first job is on record. `found` is what the committed lookup returned for it.
 * Without an absolute start offset (no commit, and the low watermark unknown) the partition is
 * left unguarded this time. @locality poll thread, in the rebalance callback */
static void arm_crash_guard(kj_worker *w, rd_kafka_t *rk, kj_part *p,
                            const rd_kafka_topic_partition_t *found) {
    int64_t committed = found->offset;
    if (committed < 0) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi,
                                             KJ_COMMITTED_LOOKUP_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
            return;
        committed = lo;
    }
    kj_crash_meta mark = kj_crash_meta_parse(found->metadata, found->metadata_size);
    p->crash = kj_crash_plan_for(&mark, committed,
                                 (int64_t)w->cfg->batch_max_pending + w->cfg->batch_max_jobs);
    p->guarded = true;
    p->arming = true;
    p->arm_offset = committed;
    p->meta_sent[0] = '\0';
    kj_crash_meta live = {.kind = KJ_CRASH_META_LIVE};
    pthread_mutex_lock(&p->lock);
    kj_crash_meta_format(&live, p->meta, sizeof(p->meta));
    pthread_mutex_unlock(&p->lock);
    if (p->crash.careful_until > 0)
        kj_log(KJ_LOG_WARN,
               "the partition's previous owner died holding it: running the jobs it may have had "
               "in flight carefully",
               "{s:s,s:i,s:I,s:I,s:I,s:i}", "topic", p->topic, "partition", p->partition, "from",
               (json_int_t)committed, "until", (json_int_t)p->crash.careful_until, "suspect",
               (json_int_t)p->crash.suspect, "suspect_crashes", p->crash.suspect_count);
}

/* Whether parts holds partition 0 of the main topic: the designated partition whose owner runs
 * the periodic schedule (processor/periodic.h). @locality poll thread */
static bool holds_schedule_partition(const kj_worker *w,
                                     const rd_kafka_topic_partition_list_t *parts) {
    for (int i = 0; w->periodic && i < parts->cnt; i++)
        if (parts->elems[i].partition == 0 &&
            strcmp(parts->elems[i].topic, w->cfg->main_topic) == 0)
            return true;
    return false;
}

static void assign_partitions(kj_worker *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                              bool cooperative) {
    /* Start at the committed offset, or at the beginning where the group has none: with
     * auto.offset.reset=error, a later reset then always means lost jobs. The lookup is kept
     * short: a rebalance callback that blocks makes this member miss the next join window (a
     * broker rejects OffsetFetch while the group rebalances). If it fails, or while draining,
     * librdkafka looks the offsets up itself, and a reset on such a partition before its
     * first record means "no committed offset yet", not lost jobs (handle_offset_reset). */
    rd_kafka_topic_partition_list_t *start = rd_kafka_topic_partition_list_copy(parts);
    bool known = false;
    if (start->cnt > 0 && !atomic_load(&w->draining)) {
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, start, KJ_COMMITTED_LOOKUP_MS);
        known = err == RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!known)
            kj_log(KJ_LOG_WARN, "committed offsets not read in time; librdkafka will", "{s:s}",
                   "error", rd_kafka_err2str(err));
    }
    bool arming = false, held = false;
    for (int i = 0; i < start->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &start->elems[i];
        kj_part *p = part_add(w, tp->topic, tp->partition);
        /* Given up here while a batch of it still runs (revoke_lanes), and back: its jobs wait
         * for that batch to return, so one process never runs two batches of a partition at
         * once (the given-up batch's outcomes were dropped: its jobs run again after it). */
        for (kj_part *r = w->retired; p && r; r = r->retired_next)
            if (r->partition == p->partition && strcmp(r->topic, p->topic) == 0 &&
                atomic_load(&r->abandoned_batches) > 0) {
                p->held_by = r;
                atomic_store(&p->held, true);
                pthread_mutex_lock(&r->lock);
                r->adopted_by = p;
                pthread_mutex_unlock(&r->lock);
                held = true;
                kj_log(KJ_LOG_WARN,
                       "partition assigned while its given-up batch still runs here: held until "
                       "that batch returns",
                       "{s:s,s:i}", "topic", p->topic, "partition", p->partition);
            }
        if (p) {
            p->guarded = false;
            p->arming = false;
            p->crash = (kj_crash_plan){.careful_until = 0, .suspect = -1};
            if (w->crash_guard && known && !atomic_load(&w->draining))
                arm_crash_guard(w, rk, p, tp);
            /* careful mode runs on one lane (key lanes, above) */
            p->careful_end = p->crash.careful_until;
            p->one_lane = p->nlanes > 1 && p->careful_end > 0;
            p->to_keys = false;
            arming |= p->arming;
            if (w->key_order) { /* its jobs wait until its set is here and read (tick) */
                kj_key_order_assigned(w->key_order, p->step, p->partition);
                held |= part_held(p);
            }
        }
        if (p && known) /* what the group has committed (lag gauges until a record arrives) */
            p->committed = tp->offset >= 0 ? tp->offset : -1;
        if (!known)
            tp->offset = RD_KAFKA_OFFSET_INVALID; /* = the committed offset */
        else if (tp->offset < 0)
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
        if (!p) continue;
        p->start_unknown = !known;
        p->consumed = false;
        p->position_known = false;
        p->start = tp->offset;
        kj_log(KJ_LOG_INFO, "partition assigned", "{s:s,s:i,s:I}", "topic", tp->topic, "partition",
               tp->partition, "offset", (json_int_t)tp->offset);
    }
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (cooperative)
        error = rd_kafka_incremental_assign(rk, start);
    else
        err = rd_kafka_assign(rk, start);
    if (error || err) {
        kj_log(KJ_LOG_ERROR, "assign failed", "{s:s}", "error",
               error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
        if (error) rd_kafka_error_destroy(error);
    } else if (cooperative && !atomic_load(&w->draining))
        wake_fetchers(w, rk);
    if (!error && !err && !atomic_load(&w->draining) && holds_schedule_partition(w, parts))
        kj_periodic_start(w->periodic);
    /* librdkafka 2.0.2 keeps a partition paused across a rebalance: clear it explicitly
     * (unless we are draining: then nothing new should be fetched) */
    if (start->cnt > 0) {
        if (atomic_load(&w->draining))
            rd_kafka_pause_partitions(rk, start);
        else
            rd_kafka_resume_partitions(rk, start);
    }
    rd_kafka_topic_partition_list_destroy(start);
    if (arming || held) { /* hold them until their "live" mark is on record (on_offset_commit),
                           * or their given-up batch returned (retired_tick) */
        for (int i = 0; i < parts->cnt; i++) {
            kj_part *p = part_lookup(w, NULL, parts->elems[i].topic, parts->elems[i].partition);
            if (p && part_held(p) && !p->paused) pause_part(w, p, true);
        }
        if (arming) commit_offsets(w, false);
    }
    update_flow_share(w);
}

/* librdkafka pauses every assigned partition while an incremental rebalance is handed to the
 * application and resumes the ones that stay after rd_kafka_incremental_(un)assign, but the
 * resume does not wake the broker threads (rdkafka_partition.c, rd_kafka_toppar_pause_resume):
 * a broker thread that went idle while all its partitions were paused sleeps out its 1 s block
 * before it fetches again. Measured on Kafka 4.1.1 with KIP-848 and librdkafka 2.15.1: every
 * partition that stayed on a member stalled 1.01-1.03 s when a second member joined, in 2 runs
 * of 3. Any request queued to a broker wakes its thread, so after an incremental change this
 * sends a ListOffsets for the remaining assignment (one request per leader; the answer is
 * dropped in tick). ListOffsets needs librdkafka >= 2.3; before that the stall stays.
 * @locality poll thread */
static void wake_fetchers(kj_worker *w, rd_kafka_t *rk) {
#if RD_KAFKA_VERSION >= 0x020300ff
    rd_kafka_topic_partition_list_t *held = NULL;
    if (rd_kafka_assignment(rk, &held) != RD_KAFKA_RESP_ERR_NO_ERROR || !held) return;
    if (held->cnt > 0) {
        for (int i = 0; i < held->cnt; i++)
            held->elems[i].offset = RD_KAFKA_OFFSET_SPEC_LATEST;
        if (!w->wake_queue) w->wake_queue = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTOFFSETS);
        char why[128];
        rd_kafka_AdminOptions_set_request_timeout(opt, 5000, why, sizeof(why));
        rd_kafka_ListOffsets(rk, held, opt, w->wake_queue);
        rd_kafka_AdminOptions_destroy(opt);
    }
    rd_kafka_topic_partition_list_destroy(held);
#else
    (void)w;
    (void)rk;
#endif
}

static void drop_wake_answers(kj_worker *w);

/* The queue goes before its consumer: a queue holds the client open. @locality poll thread */
static void release_wake_queue(kj_worker *w) {
    if (!w->wake_queue) return;
    drop_wake_answers(w);
    rd_kafka_queue_destroy(w->wake_queue);
    w->wake_queue = NULL;
}

/* Drops the answers wake_fetchers asked for. @locality poll thread */
static void drop_wake_answers(kj_worker *w) {
    rd_kafka_event_t *ev;
    while (w->wake_queue && (ev = rd_kafka_queue_poll(w->wake_queue, 0)) != NULL)
        rd_kafka_event_destroy(ev);
}

/* Removes a revoked partition's lanes, waiting for their in-flight batches — but not past
 * revoke_wait_ms from `wait_start`: the group's rebalance timeout (max.poll.interval.ms) runs
 * while this callback waits, and a member that misses it is dropped, losing every partition and
 * restarting the rebalance for all (a job longer than the timeout then moved from member to
 * member without end, run each time: seen with a 30 s job and a 10 s interval). Past the bound
 * the lane is abandoned: the partition goes while its batch still runs here, that batch's
 * outcomes are dropped (run_batch), and the next owner runs those jobs again from the committed
 * offset — a duplicate run, never a lost job. p->lanes is NULL afterwards.
 * @locality poll thread, inside the rebalance callback */
/* The engine's word that an abandoned lane's last batch returned (kj_released_fn): the lane
 * leaves flow control's closed list only now, so it is never woken after it is freed.
 * @locality the worker thread that ran the batch */
static void abandoned_lane_released(kj_lane *lane, void *opaque) {
    kj_part *p = opaque;
    kj_flow_lane_removed(p->w->flow, lane);
    atomic_fetch_sub(&p->abandoned_batches, 1);
}

static void revoke_lanes(kj_worker *w, kj_part *p, int64_t wait_start) {
    kj_lane *lanes[p->nlanes];
    for (int i = 0; i < p->nlanes; i++) {
        lanes[i] = p->lanes[i].lane;
        kj_flow_forget_lane(w->flow, lanes[i], true);
        kj_engine_lane_stop(lanes[i]); /* all stop before any is waited for */
    }
    for (int i = 0; i < p->nlanes; i++) {
        while (kj_engine_lane_remove_wait(lanes[i], discard_message, NULL, KJ_REVOKE_SLICE_MS) !=
               0) {
            /* Waiting, not frozen: librdkafka's own thread heartbeats meanwhile, so the stall
             * guard and /livez must not count this as a stopped loop. */
            atomic_store(&w->last_poll_ms, kj_now_ms());
            if (w->heartbeat) kj_heartbeat_beat(w->heartbeat);
            int64_t waited = kj_now_ms() - wait_start;
            if (waited < w->revoke_wait_ms) continue;
            atomic_store(&p->abandoned, true);
            atomic_fetch_add(&p->abandoned_batches, 1); /* before: the release may come at once */
            kj_log(KJ_LOG_WARN,
                   "partition revoked while a batch still runs: given up without waiting longer "
                   "(half of max.poll.interval.ms); the next owner runs its jobs again",
                   "{s:s,s:i,s:I,s:I}", "topic", p->topic, "partition", p->partition, "waited_ms",
                   (json_int_t)waited, "in_flight", (json_int_t)kj_engine_lane_in_flight(lanes[i]));
            if (kj_engine_lane_abandon(lanes[i], discard_message, NULL, abandoned_lane_released, p))
                lanes[i] = NULL; /* its flow entry goes when the batch returned */
            else
                atomic_fetch_sub(&p->abandoned_batches, 1); /* it returned meanwhile: removed */
            break;
        }
    }
    for (int i = 0; i < p->nlanes; i++)
        if (lanes[i]) kj_flow_lane_removed(w->flow, lanes[i]);
    /* an abandoned batch still runs with its kj_vlane as lane_opaque: kept until it returned */
    if (atomic_load(&p->abandoned_batches) > 0)
        p->old_lanes = p->lanes;
    else
        free(p->lanes);
    p->lanes = NULL;
}

static void revoke_partitions(kj_worker *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                              bool cooperative) {
    bool lost = rd_kafka_assignment_lost(rk);
    if (holds_schedule_partition(w, parts)) kj_periodic_stop(w->periodic); /* first: one owner */
    /* 1. wait for in-flight batches of these partitions (ownership moves only once no job of
     * theirs runs here: as long as the longest batch takes); drop what never started */
    int64_t wait_start = kj_now_ms();
    for (int i = 0; i < parts->cnt && !w->shutdown_timed_out; i++) {
        kj_part *p = part_lookup(w, NULL, parts->elems[i].topic, parts->elems[i].partition);
        if (p) atomic_store(&p->revoking, true);
    }
    for (int i = 0; i < parts->cnt && !w->shutdown_timed_out; i++) {
        kj_part *p = part_lookup(w, NULL, parts->elems[i].topic, parts->elems[i].partition);
        if (p && p->lanes) {
            revoke_lanes(w, p, wait_start);
            /* nothing of it runs any more: give it up cleanly — unless a batch of it still runs
             * here (abandoned): "clean" would tell the next owner nothing was in flight */
            if (p->guarded && !atomic_load(&p->abandoned)) {
                kj_crash_meta clean = {.kind = KJ_CRASH_META_CLEAN};
                pthread_mutex_lock(&p->lock);
                kj_crash_meta_format(&clean, p->meta, sizeof(p->meta));
                pthread_mutex_unlock(&p->lock);
            }
        }
    }
    int64_t batches_ms = kj_now_ms() - wait_start;
    /* 2. wait (bounded) for routed copies to be acknowledged, so their offsets commit */
    int64_t deadline = kj_now_ms() + KJ_REVOKE_ROUTE_WAIT_MS;
    while (kj_router_outstanding(w->router) > 0 && kj_now_ms() < deadline &&
           !kj_router_fatal(w->router, NULL, 0))
        kj_router_poll(w->router, 10);
    bool copies_pending = kj_router_outstanding(w->router) > 0;
    /* 3. commit before giving them up (pointless if they are already lost) */
    int64_t commit_start = kj_now_ms();
    if (!lost) commit_offsets(w, true);
    int64_t commit_ms = kj_now_ms() - commit_start;
    for (int i = 0; i < parts->cnt; i++) {
        kj_part *p = part_lookup(w, NULL, parts->elems[i].topic, parts->elems[i].partition);
        if (!p) continue;
        if (w->key_order) kj_key_order_revoked(w->key_order, p->step, p->partition);
        kj_log(lost ? KJ_LOG_WARN : KJ_LOG_INFO, lost ? "partition lost" : "partition revoked",
               "{s:s,s:i,s:I,s:I,s:I}", "topic", p->topic, "partition", p->partition, "committed",
               (json_int_t)p->committed, "batches_ms", (json_int_t)batches_ms, "commit_ms",
               (json_int_t)commit_ms);
        part_remove(w, p,
                    !copies_pending && !w->shutdown_timed_out && p->lanes == NULL &&
                        p->old_lanes == NULL);
    }
    update_flow_share(w);
    rd_kafka_error_t *error = NULL;
    if (cooperative)
        error = rd_kafka_incremental_unassign(rk, parts);
    else
        rd_kafka_assign(rk, NULL);
    if (error) {
        kj_log(KJ_LOG_ERROR, "unassign failed", "{s:s}", "error", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (cooperative && !atomic_load(&w->draining))
        wake_fetchers(w, rk);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    kj_worker *w = opaque;
    /* NULL once the group handle is terminating — a revocation served while the consumer
     * closes (seen on 2.15.1: SIGSEGV in strcmp). A consumer's protocol never changes, so the
     * last one seen (first: the configured one, kj_worker_new) stays right. */
    const char *protocol = rd_kafka_rebalance_protocol(rk);
    if (protocol && strcmp(protocol, "NONE") != 0)
        w->cooperative = strcmp(protocol, "COOPERATIVE") == 0;
    bool cooperative = w->cooperative;
    kj_metrics_rebalance();
    w->rebalances++;
    w->in_rebalance = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign_partitions(w, rk, parts, cooperative);
        atomic_store(&w->joined, true);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        revoke_partitions(w, rk, parts, cooperative);
    } else {
        kj_log(KJ_LOG_ERROR, "rebalance error", "{s:s}", "error", rd_kafka_err2str(err));
        revoke_partitions(w, rk, parts, false);
    }
    w->in_rebalance = false;
}

/* ---- the batch path (worker threads) -------------------------------------------------------- */

/* A main-topic job's kjobs-run-at (or its deprecated alias kjobs-deliver-at; untrusted input,
 * docs/scheduling.md): none or due now: run; ahead: scheduled (handed to the ladder, not run);
 * malformed, ambiguous, too far ahead or no ladder to hold it: dead-lettered, class
 * invalid-header, never run early nor dropped.
 * @locality worker thread */
static void read_run_at(kj_part *part, batch_slot *s, rd_kafka_headers_t *hdrs, int64_t now) {
    const kj_config *cfg = part->w->cfg;
    char reason[192];
    int64_t due = 0;
    const char *header = NULL;
    kj_run_at_status st = kj_run_at_parse(hdrs, now, kj_config_schedule_max_delay(cfg), &due,
                                          &header, reason, sizeof(reason));
    if (st == KJ_RUN_AT_NONE || (st == KJ_RUN_AT_VALID && due <= now)) return;
    if (st == KJ_RUN_AT_VALID && cfg->retry_delay_count > 0) {
        s->scheduled = true;
        s->due_ms = due;
        return;
    }
    if (st == KJ_RUN_AT_VALID)
        snprintf(reason, sizeof(reason),
                 "%s ahead but no retry ladder (retry.delays is empty) to hold the job until due",
                 header);
    kj_result_set(&s->result, KJ_OUTCOME_INVALID_HEADER, "%s", reason);
    kj_metrics_invalid_header(header);
    kj_log(KJ_LOG_WARN, "cannot schedule a delayed job", "{s:s,s:i,s:I,s:s}", "topic", part->topic,
           "partition", part->partition, "offset", (json_int_t)s->job.msg->offset, "error", reason);
}

/* Reads and validates the control headers of a ladder record (untrusted input). On the main
 * topic they are ignored: the first run is attempt 1; only kjobs-run-at (and its alias) is
 * read there.
 * @locality worker thread */
static void read_control(kj_part *part, batch_slot *s, int64_t now) {
    const rd_kafka_message_t *msg = s->job.msg;
    s->ladder = part->role == KJ_TOPIC_RETRY;
    s->hop = false;
    s->scheduled = false;
    s->job.attempt = 1;
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_message_headers(msg, &hdrs);
    if (!s->ladder) {
        read_run_at(part, s, hdrs, now);
        return;
    }
    if (kj_control_parse_ladder(hdrs, now, &s->ctl) != 0) {
        kj_result_set(&s->result, KJ_OUTCOME_INVALID_HEADER, "%s", s->ctl.reason);
        kj_metrics_invalid_header(s->ctl.invalid_header);
        kj_log(KJ_LOG_WARN, "invalid control header on a ladder record", "{s:s,s:i,s:I,s:s}",
               "topic", part->topic, "partition", part->partition, "offset",
               (json_int_t)msg->offset, "error", s->ctl.reason);
        return;
    }
    s->job.attempt = s->ctl.attempt + 1;
    s->hop = s->ctl.not_before_ms > now;
}

/* Key-ordered retries: whether the job of slot `s` is ordered by its key, its origin, and
 * whether it is one of the chain's copies (processor/key_order.h). */
static void key_position(const kj_part *part, batch_slot *s) {
    const rd_kafka_message_t *msg = s->job.msg;
    if (!msg->key || s->scheduled || s->result.outcome == KJ_OUTCOME_INVALID_HEADER) return;
    if (!s->ladder) {
        s->keyed = true;
        s->origin = msg->offset;
        return;
    }
    if (s->ctl.original_partition != part->partition) return; /* written before "key" */
    s->keyed = true;
    s->origin = s->ctl.original_offset;
    s->counted = kj_key_order_counted(msg, &s->ctl, part->partition);
}

/* The chain after a finished job of slot `s`: its copy here is gone (when counted), and its
 * job is now on step `to` due `not_before_ms` (0: nowhere — done or dead-lettered). */
static void key_move(kj_worker *w, const kj_part *part, unsigned gen, const batch_slot *s, int to,
                     int64_t not_before_ms, bool to_parked) {
    if (!s->keyed) return;
    const rd_kafka_message_t *msg = s->job.msg;
    kj_key_order_move(w->key_order, part->partition, gen, msg->key, msg->key_len, s->origin,
                      s->counted ? part->step : 0, to, not_before_ms, to_parked);
}

/* How long a parked copy waits in memory for the job it waits behind when that job is due on
 * the same ladder step (run_batch), before it looks again. */
#define KEY_WAIT_MS 20

/* The first item whose key an earlier item of the batch has, or count. */
static size_t first_repeated_key(void **items, size_t count) {
    for (size_t i = 1; i < count; i++) {
        const rd_kafka_message_t *m = items[i];
        if (!m->key) continue; /* an empty key is a key; a null one is none */
        for (size_t k = 0; k < i; k++) {
            const rd_kafka_message_t *o = items[k];
            if (o->key && o->key_len == m->key_len && memcmp(o->key, m->key, m->key_len) == 0)
                return i;
        }
    }
    return count;
}

static batch_scratch *scratch_for(size_t count) {
    pthread_once(&scratch_key_once, scratch_key_create);
    batch_scratch *sc = pthread_getspecific(scratch_key);
    if (!sc) {
        sc = calloc(1, sizeof(*sc));
        pthread_setspecific(scratch_key, sc);
    }
    if (count > sc->capacity) {
        free(sc->slots);
        free(sc->jobs);
        free(sc->results);
        sc->slots = calloc(count, sizeof(*sc->slots));
        sc->jobs = calloc(count, sizeof(*sc->jobs));
        sc->results = calloc(count, sizeof(*sc->results));
        sc->capacity = count;
    }
    return sc;
}

/* Feed a finished batch's outcomes to the breaker, in order. @locality worker thread */
static void record_breaker(kj_worker *w, const batch_slot *slots, size_t count) {
    pthread_mutex_lock(&w->breaker_lock);
    for (size_t i = 0; i < count; i++) {
        if (slots[i].hop || slots[i].carried || slots[i].outcome == KJ_JOB_SCHEDULED ||
            slots[i].outcome == KJ_JOB_PARKED)
            continue; /* not run */
        bool dead = slots[i].outcome == KJ_JOB_DEAD_LETTERED;
        if (kj_breaker_record(&w->breaker, dead)) {
            atomic_store(&w->breaker_open, true);
            kj_metrics_circuit_breaker_set(true);
            kj_log(KJ_LOG_ERROR, "circuit breaker OPEN: consumption stopped", "{s:s,s:I}", "reason",
                   w->breaker.reason, "cooldown_ms", (json_int_t)w->cfg->breaker_cooldown_ms);
        }
    }
    pthread_mutex_unlock(&w->breaker_lock);
}

/* Schema Registry: a batch whose framed job cannot be decoded because the registry cannot be
 * asked now waits here (backoff KJ_SR_BACKOFF_MIN_MS doubling to _MAX_MS), on its worker
 * thread: the partition's lane stays busy, so nothing after the job runs and its offset stays
 * uncompleted (the commit rule holds it). Other partitions keep running on the other threads;
 * back-pressure pauses this one once batch.max_pending jobs wait. The wait gives up — and the
 * whole batch is skipped like a breaker skip (not run, not committed, rewound or re-fetched
 * by the next owner) — when the worker drains, the partition is revoked, the breaker opens or
 * the stall guard holds. It never dead-letters: the registry's outage says nothing about the
 * job. @locality worker thread */
static int registry_wait_cancelled(void *opaque) {
    kj_part *p = opaque;
    return atomic_load(&p->w->draining) || atomic_load(&p->revoking) ||
           atomic_load(&p->w->breaker_open) || atomic_load(&p->w->stall_hold);
}

static int registry_never(void *opaque) {
    (void)opaque;
    return 1; /* cache only: never wait or ask */
}

/* Sleep up to ms in small steps; true when cancelled. @locality worker thread */
static bool registry_sleep(kj_part *p, int64_t ms) {
    for (int64_t slept = 0; slept < ms; slept += 50) {
        if (registry_wait_cancelled(p)) return true;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return registry_wait_cancelled(p);
}

/* Decode one job, waiting out a registry outage (see above). 0 decoded, -1 not a job (err),
 * KJ_SR_UNAVAILABLE: gave up waiting (cancelled). @locality worker thread */
static int decode_job(kj_worker *w, kj_part *part, rd_kafka_message_t *msg, kj_job_record *rec,
                      char *err, size_t err_size) {
    int rc = kj_sr_decode(w->registry, msg->payload, msg->len, rec, NULL, registry_wait_cancelled,
                          part, err, err_size);
    if (rc != KJ_SR_UNAVAILABLE) return rc;
    int64_t backoff = KJ_SR_BACKOFF_MIN_MS, started = kj_now_ms(), logged = 0;
    kj_metrics_schema_registry_waiting_add(1);
    atomic_fetch_add(&w->registry_waiting, 1);
    while (rc == KJ_SR_UNAVAILABLE && !registry_wait_cancelled(part)) {
        int64_t now = kj_now_ms();
        if (logged == 0 || now - logged >= KJ_SR_LOG_EVERY_MS) {
            kj_log(KJ_LOG_WARN, "waiting for the schema registry: batch held",
                   "{s:s,s:i,s:I,s:I,s:s}", "topic", part->topic, "partition", part->partition,
                   "offset", (json_int_t)msg->offset, "waited_ms", (json_int_t)(now - started),
                   "error", err);
            logged = now;
        }
        if (registry_sleep(part, backoff)) break;
        backoff = backoff * 2 > KJ_SR_BACKOFF_MAX_MS ? KJ_SR_BACKOFF_MAX_MS : backoff * 2;
        rc = kj_sr_decode(w->registry, msg->payload, msg->len, rec, NULL, registry_wait_cancelled,
                          part, err, err_size);
    }
    kj_metrics_schema_registry_waiting_add(-1);
    atomic_fetch_sub(&w->registry_waiting, 1);
    if (rc != KJ_SR_UNAVAILABLE)
        kj_log(KJ_LOG_INFO, "schema registry answered: batch released", "{s:s,s:i,s:I,s:I}",
               "topic", part->topic, "partition", part->partition, "offset",
               (json_int_t)msg->offset, "waited_ms", (json_int_t)(kj_now_ms() - started));
    return rc;
}

/* Give a batch back unrun: offsets stay uncompleted, the partition is rewound before it
 * resumes (breaker, stall) or re-fetched by its next owner. @locality worker thread */
static void skip_batch(kj_worker *w, kj_vlane *vl, void **items, size_t count) {
    atomic_store(&vl->part->needs_rewind, true);
    kj_flow_forget_lane(w->flow, vl->lane, false); /* a slot promised to it passes on */
    vl->throttled_since = 0;
    for (size_t i = 0; i < count; i++)
        rd_kafka_message_destroy(items[i]);
    atomic_fetch_add(&w->jobs_skipped, (long long)count);
}

/* Items i..count-1 of a running batch, counted in flight, go back to the head of their lane,
 * due at `until` (0 now, KJ_ENGINE_PARKED until woken); the batch goes on with the first i.
 * Returns i, the batch's new count. */
static size_t give_back(kj_worker *w, kj_lane *lane, kj_vlane *vl, void **items, size_t i,
                        size_t count, int64_t until) {
    if (kj_engine_lane_requeue(lane, items + i, count - i, until) != 0)
        skip_batch(w, vl, items + i, count - i); /* no memory: rewind instead */
    kj_metrics_in_flight_add(-(int64_t)(count - i));
    return i;
}

/* Flow control: may slots[i] (a job of limited type slots[i].flow) run now? One concurrency slot
 * covers every job of the type in this batch (they run one after another on this thread).
 * Measures how long the lane's head waited. @locality worker thread, in run_batch */
static bool flow_admit(kj_worker *w, kj_vlane *vl, batch_slot *slots, size_t i, int64_t now,
                       kj_flow_wait *wait) {
    kj_part *part = vl->part;
    batch_slot *s = &slots[i];
    bool take_slot = kj_flow_has_cap(w->flow, s->flow);
    for (size_t k = 0; k < i && take_slot; k++)
        if (slots[k].flow_slot && slots[k].flow == s->flow) take_slot = false;
    if (!kj_flow_admit(w->flow, s->flow, take_slot, vl->lane, now, wait)) {
        if (!vl->throttled_since) {
            vl->throttled_since = now;
            vl->throttle_flow = s->flow;
            vl->throttle_reason = wait->reason;
            kj_log(KJ_LOG_DEBUG, "job over its type's limit, partition waits",
                   "{s:s,s:s,s:i,s:I,s:s}", "type", s->job.record.type, "topic", part->topic,
                   "partition", part->partition, "offset", (json_int_t)s->job.msg->offset, "limit",
                   wait->reason == KJ_FLOW_RATE ? "rate" : "concurrency");
        }
        return false;
    }
    s->flow_slot = take_slot;
    if (vl->throttled_since && i == 0) {
        kj_metrics_throttle_wait(s->job.record.type,
                                 vl->throttle_reason == KJ_FLOW_RATE ? "rate" : "concurrency",
                                 (double)(now - vl->throttled_since) / 1000.0);
        vl->throttled_since = 0;
    }
    return true;
}

/* Careful mode: put "probe:X:n" on record, synchronously, before the job at X runs alone. A
 * failed commit is logged and the job runs anyway (the guard then misses this crash, never a
 * job). @locality worker thread, in run_batch */
static void crash_probe_commit(kj_worker *w, kj_part *part, const kj_crash_meta *mark) {
    int64_t offset = mark->offset;
    char meta[KJ_CRASH_META_MAX];
    kj_crash_meta_format(mark, meta, sizeof(meta));
    pthread_mutex_lock(&w->commit_lock);
    pthread_mutex_lock(&part->lock);
    memcpy(part->meta, meta, sizeof(meta));
    int64_t committable = kj_offset_tracker_committable(part->tracker);
    pthread_mutex_unlock(&part->lock);
    if (committable < 0 || committable > offset) committable = offset;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_add(list, part->topic, part->partition);
    tp->offset = committable;
    tp->metadata_size = strlen(meta);
    tp->metadata = strdup(meta);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(w->consumer);
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(w->consumer, list, queue, NULL, NULL);
    pthread_mutex_unlock(&w->commit_lock); /* enqueued: commits keep this order */
    if (!err) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, KJ_PROBE_COMMIT_WAIT_MS);
        err = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
        if (ev) rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(queue);
    rd_kafka_topic_partition_list_destroy(list);
    bool alone = mark->kind == KJ_CRASH_META_PROBE;
    kj_log(
        err ? KJ_LOG_WARN : (alone ? KJ_LOG_INFO : KJ_LOG_DEBUG),
        err ? "crash guard: probe not recorded, running anyway"
            : (alone ? "crash guard: running a job alone" : "crash guard: running a careful batch"),
        "{s:s,s:i,s:I,s:I,s:i,s:s?}", "topic", part->topic, "partition", part->partition, "offset",
        (json_int_t)offset, "end", (json_int_t)(alone ? offset + 1 : mark->end), "probe",
        alone ? mark->count : 0, "error", err ? rd_kafka_err2str(err) : NULL);
}

/* Careful mode over for this job: the mark goes back to "live" with the next commit. */
static void crash_probe_done(kj_part *part, int64_t offset) {
    kj_crash_meta live = {.kind = KJ_CRASH_META_LIVE};
    pthread_mutex_lock(&part->lock);
    kj_crash_meta_format(&live, part->meta, sizeof(part->meta));
    pthread_mutex_unlock(&part->lock);
    if (part->crash.suspect == offset) part->crash.suspect = -1;
}

/* A given-up batch (part->abandoned) that ends after its partition came back to this process:
 * the offsets of the jobs it finished go to the new part, which completes them unrun
 * (carried_take). Returns how many. Lock order: the retired part, then the new one.
 * @locality worker thread */
static size_t carry_over(kj_part *part, const batch_slot *slots, size_t count) {
    size_t n = 0;
    pthread_mutex_lock(&part->lock);
    kj_part *np = part->adopted_by;
    if (np) {
        pthread_mutex_lock(&np->lock);
        for (size_t i = 0; i < count; i++) {
            const batch_slot *s = &slots[i];
            if (s->result.outcome != KJ_OUTCOME_OK || s->hop || s->scheduled || s->parked)
                continue; /* not run: the next owner must see it */
            if (np->ncarried == np->carried_cap) {
                size_t cap = np->carried_cap ? np->carried_cap * 2 : 64;
                int64_t *grown = realloc(np->carried, cap * sizeof(*grown));
                if (!grown) break; /* no memory: those jobs just run again */
                np->carried = grown;
                np->carried_cap = cap;
            }
            np->carried[np->ncarried++] = s->job.msg->offset;
            n++;
        }
        if (np->ncarried) atomic_store(&np->has_carried, true);
        pthread_mutex_unlock(&np->lock);
    }
    pthread_mutex_unlock(&part->lock);
    return n;
}

/* Whether `offset` was finished by a given-up batch of this partition (carry_over); each one
 * is taken once. @locality worker thread */
static bool carried_take(kj_part *p, int64_t offset) {
    bool found = false;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->ncarried; i++)
        if (p->carried[i] == offset) {
            p->carried[i] = p->carried[--p->ncarried];
            found = true;
            break;
        }
    if (p->ncarried == 0) atomic_store(&p->has_carried, false);
    pthread_mutex_unlock(&p->lock);
    return found;
}

/* Time limits (handler_deadline.h): the jobs of one handler call get one deadline, the call's
 * start + limit_ms × count; the watchdog sees the call while it runs. @locality worker thread */
static void limit_enter(kj_worker *w, kj_deadline_call *call, int64_t limit_ms,
                        const kjobs_job_t *const *jobs, size_t count) {
    int64_t total =
        limit_ms > INT64_MAX / 4 / (int64_t)count ? INT64_MAX / 4 : limit_ms * (int64_t)count;
    int64_t mono = kj_mono_ms(), epoch = kj_now_ms();
    *call = (kj_deadline_call){
        .deadline_mono_ms = mono + total, .limit_ms = total, .jobs = jobs, .count = count};
    for (size_t k = 0; k < count; k++) {
        kjobs_job_t *job = (kjobs_job_t *)jobs[k];
        job->deadline_mono_ms = mono + total;
        job->deadline_ms = epoch + total;
    }
    kj_deadline_watch_enter(w->deadlines, call);
}

/* The call returned: past its deadline, each of its jobs fails with class timeout, whatever the
 * handler reported (its own text kept after ours). @locality worker thread */
static void limit_leave(kj_worker *w, kj_deadline_call *call, const kj_handler *h,
                        kjobs_result_t *const *results, double start) {
    kj_deadline_watch_leave(w->deadlines, call);
    if (kj_mono_ms() < call->deadline_mono_ms) return;
    long long ran = (long long)((kj_mono_seconds() - start) * 1000);
    char per[64] = "";
    if (call->count > 1)
        snprintf(per, sizeof(per), ": %lld ms per job x %zu jobs", (long long)h->timeout_ms,
                 call->count);
    for (size_t k = 0; k < call->count; k++) {
        kjobs_result_t *r = results[k];
        char said[KJ_ERROR_MAX];
        snprintf(said, sizeof(said), "%s", r->error);
        kj_result_set(r, KJ_OUTCOME_TIMEOUT,
                      "handler ran %lld ms, over its time limit of %lld ms (%s%s)%s%s", ran,
                      (long long)call->limit_ms, h->timeout_setting, per,
                      said[0] ? "; the handler said: " : "", said);
    }
}

static void run_batch(kj_lane *lane, void *lane_opaque, void **items, size_t count, void *opaque) {
    kj_vlane *vl = lane_opaque;
    kj_part *part = vl->part;
    kj_worker *w = opaque;
    /* last_poll_ms before stall_hold: the poll thread stores them in the other order, so a
     * fresh last_poll_ms here implies a stall_hold set by that same wake-up is visible. */
    int64_t since_poll = kj_now_ms() - atomic_load(&w->last_poll_ms);
    bool stalled = since_poll > w->session_timeout_ms || atomic_load(&w->stall_hold);
    if (atomic_load(&w->breaker_open) || stalled) {
        /* Breaker open, or the process was frozen past its session (the partition may be
         * someone else's now): do not run these jobs. Their offsets stay uncompleted, so
         * nothing commits past them; the poll thread rewinds the partition before resuming. */
        skip_batch(w, vl, items, count);
        return;
    }
    /* Crash-loop guard: no job of a partition runs before its "live" mark is on record. A batch
     * due before that waits parked, holding no worker; crash_guard_armed wakes the lanes (a
     * wake racing this requeue makes it due at once: kj_engine_lane_wake). */
    if (part_held(part)) { /* the same for a partition held behind its given-up batch */
        if (kj_engine_lane_requeue(lane, items, count, KJ_ENGINE_PARKED) != 0)
            skip_batch(w, vl, items, count); /* no memory: rewind instead */
        return;
    }
    /* Key-ordered retries: the chain generation this batch reads and updates, and at most one
     * job per key in a batch, so that a job's outcome is in the chain before the next job of
     * its key is looked at (the rest goes back to the head of the lane, due now). */
    unsigned key_gen = kj_key_order_gen(w->key_order, part->partition);
    if (key_gen) {
        size_t cut = first_repeated_key(items, count);
        if (cut < count) {
            if (kj_engine_lane_requeue(lane, items + cut, count - cut, 0) != 0)
                skip_batch(w, vl, items + cut, count - cut); /* no memory: rewind instead */
            count = cut;
        }
    }
    /* Crash-loop guard: after a crash, the jobs the dead owner may have had in flight run one
     * at a time, each probe on record first; a job that was run alone by dlq.crash_loop_limit
     * owners in a row that all died is dead-lettered, not run (crash_guard.h). */
    bool careful = false, crash_dlq = false;
    int64_t head_offset = ((rd_kafka_message_t *)items[0])->offset;
    if (part->crash.careful_until > 0 && head_offset >= part->crash.careful_until) {
        part->crash.careful_until = 0;
        kj_log(KJ_LOG_INFO, "crash guard: careful mode over, batches again", "{s:s,s:i,s:I}",
               "topic", part->topic, "partition", part->partition, "offset",
               (json_int_t)head_offset);
    } else if (part->crash.careful_until > 0) {
        careful = true;
        int probe = 1, chunk = 1;
        kj_crash_verdict v = kj_crash_decide(&part->crash, head_offset, w->cfg->crash_loop_limit,
                                             w->cfg->batch_max_jobs, &probe, &chunk);
        size_t keep = v == KJ_CRASH_CHUNK ? (size_t)chunk : 1;
        if (count > keep) {
            if (kj_engine_lane_requeue(lane, items + keep, count - keep, 0) != 0)
                skip_batch(w, vl, items + keep, count - keep); /* no memory: rewind instead */
            count = keep;
        }
        int64_t last = ((rd_kafka_message_t *)items[count - 1])->offset;
        kj_crash_meta mark = {.kind = KJ_CRASH_META_PROBE, .offset = head_offset, .count = probe};
        if (v == KJ_CRASH_CHUNK && count > 1)
            mark = (kj_crash_meta){
                .kind = KJ_CRASH_META_RANGE, .offset = head_offset, .end = last + 1};
        if (v == KJ_CRASH_DEAD_LETTER)
            crash_dlq = true;
        else
            crash_probe_commit(w, part, &mark);
    }
    batch_scratch *scratch = scratch_for(count);
    batch_slot *slots = scratch->slots;
    kj_metrics_in_flight_add((int64_t)count);

    /* control headers, decode, find handlers */
    int64_t now = kj_now_ms();
    for (size_t i = 0; i < count; i++) {
        batch_slot *s = &slots[i];
        rd_kafka_message_t *msg = items[i];
        memset(&s->job, 0, sizeof(s->job));
        kj_result_reset(&s->result);
        s->handler = NULL;
        s->job.msg = msg;
        s->job.topic = part->topic;
        s->flow = -1;
        s->flow_slot = false;
        s->flow_release = 0;
        read_control(part, s, now);
        s->keyed = s->counted = s->parked = false;
        if (key_gen) key_position(part, s);
        s->decoded = false;
        s->carried = false;
        if (atomic_load(&part->has_carried) && carried_take(part, msg->offset)) {
            /* finished by this process's given-up batch of the partition (carry_over) */
            s->carried = true;
            s->hop = s->scheduled = false;
            continue;
        }
        char err[256];
        if (crash_dlq) { /* not decoded either: decoding may be what crashed */
            s->hop = s->scheduled = false;
            kj_result_set(&s->result, KJ_OUTCOME_CRASH_LOOP,
                          "job was running alone when %d worker processes in a row died "
                          "(dlq.crash_loop_limit %d); not run again",
                          part->crash.suspect_count, w->cfg->crash_loop_limit);
            continue;
        }
        if (s->result.outcome == KJ_OUTCOME_INVALID_HEADER || s->scheduled) {
            /* not run; named (logs, metrics) if decodable without asking the registry */
            s->decoded =
                msg->payload && kj_sr_decode(w->registry, msg->payload, msg->len, &s->job.record,
                                             NULL, registry_never, NULL, err, sizeof(err)) == 0;
            continue;
        }
        if (s->hop) continue; /* not run */
        kj_key_verdict kv =
            s->keyed ? kj_key_order_blocker(w->key_order, part->partition, key_gen, msg->key,
                                            msg->key_len, s->origin, &s->behind)
                     : KJ_KEY_FREE;
        if (kv == KJ_KEY_STALE) {
            /* its partition's set changed since this batch began (a rebalance): this job and
             * everything behind it wait, parked, until the set is read again (key_order_ready
             * wakes them); the rest of the batch runs */
            if (s->decoded) kj_job_record_free(&s->job.record);
            count = give_back(w, lane, vl, items, i, count, KJ_ENGINE_PARKED);
            break;
        }
        if (kv == KJ_KEY_BLOCKED && s->ladder && vl != &part->lanes[0] && !s->behind.parked &&
            s->behind.step == part->step && s->behind.not_before_ms <= kj_now_ms()) {
            /* the job it waits for is a retry due on this very step (running, or about to run
             * on lane 0, while this parked copy is on a lane of its own): wait for it here, in
             * memory, a moment at a time, instead of writing another copy; this job and those
             * behind it on its lane go back to the lane's head. Never for a parked copy (it may
             * be behind this one on this lane) nor on lane 0 (careful mode puts everything
             * there): those are parked again, behind what they wait for. Past
             * a minute that job is late (a long backlog on this step) or gone: say so, once a
             * minute per partition. */
            int64_t late = kj_now_ms() - s->behind.not_before_ms;
            if (late > 60000 && kj_now_ms() - atomic_load(&part->key_wait_logged) > 60000) {
                atomic_store(&part->key_wait_logged, kj_now_ms());
                kj_log(KJ_LOG_WARN,
                       "key order: a job waits for an earlier job of its key that is a minute "
                       "late on its step",
                       "{s:s,s:i,s:I,s:I,s:I}", "topic", part->topic, "partition", part->partition,
                       "offset", (json_int_t)msg->offset, "behind_offset",
                       (json_int_t)s->behind.origin, "late_ms", (json_int_t)late);
            }
            count = give_back(w, lane, vl, items, i, count, kj_now_ms() + KEY_WAIT_MS);
            break;
        }
        if (kv == KJ_KEY_BLOCKED) {
            /* an earlier job of its key is on the ladder: parked behind it, not run; named in
             * logs and metrics if decodable without asking the registry */
            s->parked = true;
            s->decoded =
                msg->payload && kj_sr_decode(w->registry, msg->payload, msg->len, &s->job.record,
                                             NULL, registry_never, NULL, err, sizeof(err)) == 0;
            continue;
        }
        int rc = msg->payload ? decode_job(w, part, msg, &s->job.record, err, sizeof(err)) : -1;
        if (rc == KJ_SR_UNAVAILABLE) { /* gave up waiting for the registry: run nothing */
            for (size_t k = 0; k < i; k++) {
                if (slots[k].decoded) kj_job_record_free(&slots[k].job.record);
                if (slots[k].flow_slot) kj_flow_release(w->flow, slots[k].flow);
            }
            kj_metrics_in_flight_add(-(int64_t)count);
            skip_batch(w, vl, items, count);
            return;
        }
        s->decoded = rc == 0;
        if (!s->decoded) {
            kj_result_set(&s->result, KJ_OUTCOME_DECODE, "cannot decode job: %s",
                          msg->payload ? err : "empty value");
            kj_metrics_decode_error();
            continue;
        }
        kj_trace_context_read(&s->job); /* traceparent/tracestate for the handler */
        s->handler = kj_handlers_lookup(w->handlers, s->job.record.type);
        if (!s->handler) {
            kj_result_set(&s->result, KJ_OUTCOME_UNKNOWN_TYPE, "no handler for job type \"%s\"",
                          s->job.record.type);
            continue;
        }
        kj_flow_wait wait;
        if ((s->flow = kj_flow_find(w->flow, s->job.record.type)) >= 0 &&
            !flow_admit(w, vl, slots, i, now, &wait)) {
            /* Over its limit: this job and everything behind it go back to the head of the
             * lane, due when a token is (rate) or parked until a slot frees (concurrency). The
             * partition waits there, in order, holding no thread; the rest of the batch runs. */
            kj_job_record_free(&s->job.record);
            count = give_back(w, lane, vl, items, i, count, wait.until_ms);
            break;
        }
    }
    if (count == 0) return;
    kj_metrics_batch_size(count);
    /* a concurrency slot is given back after the batch's last job of its type */
    for (size_t k = 0; k < count; k++) {
        if (!slots[k].flow_slot) continue;
        size_t last = k;
        for (size_t m = k + 1; m < count; m++)
            if (slots[m].handler && slots[m].flow == slots[k].flow) last = m;
        slots[last].flow_release = slots[k].flow + 1;
    }

    /* run handlers: per-job ones one by one, per-batch ones over runs of one handler */
    for (size_t i = 0; i < count;) {
        const kj_handler *h = slots[i].handler;
        if (!h) {
            i++;
            continue;
        }
        size_t j = i + 1;
        if (!h->job_fn)
            while (j < count && slots[j].handler == h)
                j++;
        for (size_t k = i; k < j; k++) {
            scratch->jobs[k - i] = &slots[k].job;
            scratch->results[k - i] = &slots[k].result;
        }
        kj_deadline_call limit = {.limit_ms = 0};
        if (h->timeout_ms > 0 && w->deadlines) /* the call's limit: per job, times its jobs */
            limit_enter(w, &limit, h->timeout_ms, (const kjobs_job_t *const *)scratch->jobs, j - i);
        double start = kj_mono_seconds();
        if (h->job_fn)
            h->job_fn(&slots[i].job, &slots[i].result, h->opaque);
        else
            h->batch_fn((const kjobs_job_t *const *)scratch->jobs, scratch->results, j - i,
                        h->opaque);
        if (limit.limit_ms > 0) limit_leave(w, &limit, h, scratch->results, start);
        double per_job = (kj_mono_seconds() - start) / (double)(j - i);
        kj_metric_handle *duration = kj_metrics_duration_handle(slots[i].job.record.type);
        for (size_t k = i; k < j; k++) {
            kj_histogram_observe(duration, per_job);
            if (slots[k].flow_release) kj_flow_release(w->flow, slots[k].flow_release - 1);
        }
        i = j;
    }

    if (atomic_load(&part->abandoned)) {
        /* revoked while this batch ran (revoke_lanes): its next owner runs these jobs again
         * from the committed offset, so nothing is completed, routed or counted here */
        size_t carried = carry_over(part, slots, count);
        kj_log(KJ_LOG_WARN, "batch of a given-up partition finished: outcomes dropped",
               "{s:s,s:i,s:I,s:I,s:I}", "topic", part->topic, "partition", part->partition,
               "offset", (json_int_t)slots[0].job.msg->offset, "jobs", (json_int_t)count,
               "carried_to_new_assignment", (json_int_t)carried);
        for (size_t i = 0; i < count; i++) {
            if (slots[i].decoded) kj_job_record_free(&slots[i].job.record);
            rd_kafka_message_destroy((rd_kafka_message_t *)slots[i].job.msg);
        }
        kj_metrics_in_flight_add(-(int64_t)count);
        return;
    }
    /* outcomes: successes complete now; failures, hops, scheduled and parked jobs when their copy
     * is acked */
    long long ok = 0, retried = 0, dead = 0;
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count; i++)
        if (slots[i].result.outcome == KJ_OUTCOME_OK && !slots[i].hop && !slots[i].scheduled &&
            !slots[i].parked)
            kj_offset_tracker_complete(part->tracker, slots[i].job.msg->offset);
    pthread_mutex_unlock(&part->lock);
    bool debug = kj_log_get_level() <= KJ_LOG_DEBUG;
    for (size_t i = 0; i < count; i++) {
        batch_slot *s = &slots[i];
        const char *t = s->decoded ? s->job.record.type : KJ_METRICS_TYPE_UNDECODABLE;
        if (s->hop) {
            int step = kj_router_hop(w->router, part, s->job.msg, s->ctl.not_before_ms);
            if (s->counted)
                key_move(w, part, key_gen, s, step, s->ctl.not_before_ms, s->ctl.parked);
            kj_log(KJ_LOG_DEBUG, "ladder record not due yet, hopped", "{s:s,s:i,s:I,s:I,s:i}",
                   "topic", part->topic, "partition", part->partition, "offset",
                   (json_int_t)s->job.msg->offset, "not_before", (json_int_t)s->ctl.not_before_ms,
                   "to_step", step);
            continue;
        }
        if (s->parked) {
            int step = kj_router_park(w->router, part, s->job.msg, s->ladder ? &s->ctl : NULL,
                                      s->behind.step, s->behind.not_before_ms, s->behind.origin);
            key_move(w, part, key_gen, s, step, s->behind.not_before_ms, true);
            s->outcome = step ? KJ_JOB_PARKED : KJ_JOB_DEAD_LETTERED;
            kj_log(step ? KJ_LOG_DEBUG : KJ_LOG_WARN,
                   step ? "job parked behind an earlier job of its key"
                        : "parked job too large for its ladder copy, dead-lettered",
                   "{s:s?,s:s,s:s,s:i,s:I,s:I,s:i}", "id", s->decoded ? s->job.record.id : NULL,
                   "type", t, "topic", part->topic, "partition", part->partition, "offset",
                   (json_int_t)s->job.msg->offset, "behind_offset", (json_int_t)s->behind.origin,
                   "to_step", step);
            continue;
        }
        if (s->scheduled) {
            int step = kj_router_schedule(w->router, part, s->job.msg, s->due_ms, kj_now_ms());
            s->outcome = step ? KJ_JOB_SCHEDULED : KJ_JOB_DEAD_LETTERED;
            kj_log(step ? KJ_LOG_DEBUG : KJ_LOG_WARN,
                   step ? "job not due yet, scheduled"
                        : "scheduled job too large for its ladder copy, dead-lettered",
                   "{s:s?,s:s,s:s,s:i,s:I,s:I,s:i}", "id", s->decoded ? s->job.record.id : NULL,
                   "type", t, "topic", part->topic, "partition", part->partition, "offset",
                   (json_int_t)s->job.msg->offset, "due", (json_int_t)s->due_ms, "to_step", step);
            continue;
        }
        if (s->result.outcome == KJ_OUTCOME_OK) {
            s->outcome = KJ_JOB_OK;
            key_move(w, part, key_gen, s, 0, 0, false);
            if (debug && s->carried)
                kj_log(KJ_LOG_DEBUG, "job finished before the rebalance, not run again",
                       "{s:s,s:i,s:I}", "topic", part->topic, "partition", part->partition,
                       "offset", (json_int_t)s->job.msg->offset);
            else if (debug)
                kj_log(KJ_LOG_DEBUG, "job done", "{s:s,s:s,s:s,s:i,s:I,s:i}", "id",
                       s->job.record.id, "type", t, "topic", part->topic, "partition",
                       part->partition, "offset", (json_int_t)s->job.msg->offset, "attempt",
                       s->job.attempt);
            continue;
        }
        /* decided once; the router writes that copy and the decision says where it really
         * went (a retry copy too large to write is dead-lettered); logs, metrics and the
         * breaker follow it */
        const kj_control *origin =
            s->ladder && s->result.outcome != KJ_OUTCOME_INVALID_HEADER ? &s->ctl : NULL;
        kj_retry_decide(w->cfg, s->job.attempt, &s->result, kj_now_ms(), &s->decision);
        kj_router_route(w->router, part, s->job.msg, &s->result, &s->decision, origin);
        s->outcome = s->decision.to_dlq ? KJ_JOB_DEAD_LETTERED : KJ_JOB_RETRY;
        key_move(w, part, key_gen, s, s->decision.to_dlq ? 0 : s->decision.step,
                 s->decision.not_before_ms, false);
        /* retries are routine (debug); dead letters need attention (warn) */
        kj_log(s->decision.to_dlq ? KJ_LOG_WARN : KJ_LOG_DEBUG,
               s->decision.to_dlq ? "job failed, dead-lettered" : "job failed, retry routed",
               "{s:s?,s:s,s:s,s:i,s:I,s:i,s:s,s:s,s:I,s:I}", "id",
               s->decoded ? s->job.record.id : NULL, "type", t, "topic", part->topic, "partition",
               part->partition, "offset", (json_int_t)s->job.msg->offset, "attempt",
               s->decision.attempt, "class", s->decision.error_class, "error", s->result.error,
               "failed_at", (json_int_t)s->decision.now_ms, "not_before",
               (json_int_t)(s->decision.to_dlq ? s->decision.now_ms : s->decision.not_before_ms));
    }
    /* count runs of one (type, outcome) with one metric lookup */
    for (size_t i = 0; i < count;) {
        if (slots[i].hop || slots[i].carried) { /* not run here (carried: counted when it ran) */
            i++;
            continue;
        }
        kj_job_outcome outcome = slots[i].outcome;
        const char *type =
            slots[i].decoded ? slots[i].job.record.type : KJ_METRICS_TYPE_UNDECODABLE;
        size_t j = i + 1;
        for (; j < count; j++) {
            const batch_slot *s = &slots[j];
            const char *t = s->decoded ? s->job.record.type : KJ_METRICS_TYPE_UNDECODABLE;
            if (s->hop || s->carried || s->outcome != outcome || strcmp(t, type) != 0) break;
        }
        kj_counter_add(kj_metrics_jobs_handle(part->topic, type, outcome), j - i);
        if (outcome == KJ_JOB_OK)
            ok += (long long)(j - i);
        else if (outcome == KJ_JOB_RETRY)
            retried += (long long)(j - i);
        else if (outcome == KJ_JOB_DEAD_LETTERED)
            dead += (long long)(j - i);
        i = j;
    }
    for (size_t i = 0; i < count; i++) {
        if (slots[i].decoded) kj_job_record_free(&slots[i].job.record);
        rd_kafka_message_destroy((rd_kafka_message_t *)slots[i].job.msg);
    }
    if (careful) crash_probe_done(part, head_offset);
    atomic_fetch_add(&w->jobs_ok, ok);
    atomic_fetch_add(&w->jobs_retried, retried);
    atomic_fetch_add(&w->jobs_dead, dead);
    record_breaker(w, slots, count);
    kj_metrics_in_flight_add(-(int64_t)count);
}

/* ---- the poll loop ------------------------------------------------------------------------ */

static void pause_part(kj_worker *w, kj_part *p, bool for_delay) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_pause_partitions(w->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    p->paused = true;
    p->paused_for_delay = for_delay;
    kj_log(KJ_LOG_DEBUG,
           for_delay ? "partition paused until due" : "partition paused (back-pressure)",
           "{s:s,s:i}", "topic", p->topic, "partition", p->partition);
}

static void resume_part(kj_worker *w, kj_part *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_resume_partitions(w->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    p->paused = p->paused_for_delay = false;
    kj_log(KJ_LOG_DEBUG, "partition resumed", "{s:s,s:i}", "topic", p->topic, "partition",
           p->partition);
}

/* After an auto.offset.reset=error, librdkafka stops fetching the partition for good (a seek
 * then fails with "Erroneous state"): assign it again, at the beginning. An eager assignment
 * can only be replaced whole, so every other partition is assigned again at its position (the
 * next offset it would hand us; where it handed nothing yet, where it was assigned): nothing
 * is skipped, and a record fetched twice is dropped by its tracker. */
static void restart_at_beginning(kj_worker *w, kj_part *p) {
    p->start = RD_KAFKA_OFFSET_BEGINNING; /* also where a later re-assignment puts it */
    /* ladder copies the key chain counts may be among the lost records: read the set again */
    if (p->role == KJ_TOPIC_RETRY) kj_key_order_reload(w->key_order, p->partition);
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (strcmp(rd_kafka_rebalance_protocol(w->consumer), "COOPERATIVE") == 0) {
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        error = rd_kafka_incremental_unassign(w->consumer, l);
        if (!error) error = rd_kafka_incremental_assign(w->consumer, l);
    } else if (!(err = rd_kafka_assignment(w->consumer, &l))) {
        rd_kafka_position(w->consumer, l);
        for (int i = 0; i < l->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &l->elems[i];
            kj_part *q = part_lookup(w, NULL, tp->topic, tp->partition);
            if (q == p)
                tp->offset = RD_KAFKA_OFFSET_BEGINNING;
            else if (tp->offset < 0 && q)
                tp->offset = q->start;
        }
        err = rd_kafka_assign(w->consumer, l);
    }
    if (error || err)
        kj_log(KJ_LOG_ERROR, "restart after offset reset failed", "{s:s,s:s,s:i}", "error",
               error ? rd_kafka_error_string(error) : rd_kafka_err2str(err), "topic", p->topic,
               "partition", p->partition);
    if (error) rd_kafka_error_destroy(error);
    if (l && !err) { /* assign() may forget pauses: keep ours */
        for (kj_part *q = w->parts; q; q = q->next) {
            if (q->paused) pause_part(w, q, q->paused_for_delay);
            q->position_known = false;
        }
    }
    if (l) rd_kafka_topic_partition_list_destroy(l);
}

static void handle_offset_reset(kj_worker *w, rd_kafka_message_t *msg) {
    const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "?";
    kj_part *p = part_lookup(w, msg->rkt, NULL, msg->partition);
    if (p && p->start == RD_KAFKA_OFFSET_BEGINNING && !p->consumed)
        return; /* already restarted at the beginning: an error queued before that */
    if (p && p->start_unknown && !p->consumed) {
        /* assigned without a committed-offset lookup, and the group has none: a first start */
        kj_log(KJ_LOG_INFO, "no committed offset: starting at the beginning", "{s:s,s:i}", "topic",
               topic, "partition", msg->partition);
    } else {
        atomic_fetch_add(&w->resets, 1);
        kj_metrics_offset_reset();
        kj_log(KJ_LOG_ERROR, "offset reset: committed position is gone (jobs lost to retention?)",
               "{s:s,s:i,s:s}", "topic", topic, "partition", msg->partition, "error",
               rd_kafka_message_errstr(msg));
    }
    if (p) restart_at_beginning(w, p);
}

static void handle_message(kj_worker *w, rd_kafka_message_t *msg) {
    if (msg->err) {
        if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
            handle_offset_reset(w, msg);
        else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kj_log(KJ_LOG_WARN, "consumer error", "{s:s}", "error", rd_kafka_message_errstr(msg));
        rd_kafka_message_destroy(msg);
        return;
    }
    kj_part *p = part_lookup(w, msg->rkt, NULL, msg->partition);
    if (!p || !p->lanes) { /* not (or no longer) ours */
        rd_kafka_message_destroy(msg);
        return;
    }
    p->consumed = true;
    p->position_known = true;
    size_t held = 0; /* key lanes: what a restart would run again (back-pressure) */
    pthread_mutex_lock(&p->lock);
    int added = kj_offset_tracker_add(p->tracker, msg->offset);
    if (p->nlanes > 1) held = kj_offset_tracker_held(p->tracker);
    pthread_mutex_unlock(&p->lock);
    if (added != 0) { /* at or below an offset already taken: a re-delivery after pause */
        rd_kafka_message_destroy(msg);
        return;
    }
    int64_t not_before = 0;
    if (p->role == KJ_TOPIC_RETRY) {
        /* Held until its not-before, but never longer than the step's delay after it was
         * written: release times then follow offsets, so no record waits behind a later-due
         * one. Released early (a longer per-job delay), it hops instead of running
         * (run_batch); an invalid header releases it at once, to be dead-lettered. */
        rd_kafka_headers_t *hdrs = NULL;
        int64_t nb, now = kj_now_ms();
        rd_kafka_message_headers(msg, &hdrs);
        if (kj_control_not_before(hdrs, now, &nb) == 0)
            not_before = kj_control_hold_until(nb, rd_kafka_message_timestamp(msg, NULL), now,
                                               p->step_delay_ms);
    }
    /* An arming partition's records (fetched before the pause took, or while a stall or
     * breaker rewind had resumed it) are pushed on their own schedule, not parked here: an item
     * pushed with KJ_ENGINE_PARKED is never woken (kj_engine_lane_wake wakes requeued items
     * only), so it stayed at the lane's head for good once armed, and the partition with it
     * (seen on real Kafka: a worker frozen past its session, resumed, lost the jobs of the
     * partitions it got back). run_batch requeues a batch that comes due while arming. */
    if (part_held(p) && !p->paused) pause_part(w, p, true);
    if (p->one_lane && !p->to_keys && msg->offset >= p->careful_end) {
        /* careful mode's range is all on lane 0: key lanes once it ran (tick); pausing lets
         * lane 0 drain even under a steady stream */
        p->to_keys = true;
        if (!p->paused) pause_part(w, p, false);
    }
    kj_vlane *vl = lane_for(p, msg);
    size_t pending = kj_engine_push(vl->lane, msg, not_before > 0 ? not_before : 0);
    if (pending == 0) { /* out of memory: the offset stays uncommittable; stop fetching it */
        kj_log(KJ_LOG_ERROR, "cannot queue job (out of memory)", "{s:s,s:i}", "topic", p->topic,
               "partition", p->partition);
        rd_kafka_message_destroy(msg);
        if (!p->paused) pause_part(w, p, false);
        return;
    }
    /* A not-yet-due ladder head pauses its partition (nothing behind it could run sooner) —
     * unless parked copies have lanes of their own there (lane_for): those behind it may be
     * due sooner, so it keeps fetching, bounded by batch.max_pending */
    bool parked_lanes = p->role == KJ_TOPIC_RETRY && p->nlanes > 1;
    if (!p->paused && (p->nlanes > 1 ? held : pending) >= (size_t)w->cfg->batch_max_pending)
        pause_part(w, p, false);
    else if (!p->paused && !parked_lanes && not_before > kj_now_ms())
        pause_part(w, p, true);
}

/* Periodic work of the poll loop, everything in one place:
 *  - resume partitions whose back-pressure cleared or whose ladder head became due,
 *  - commit committable offsets (every KJ_COMMIT_INTERVAL_MS, async),
 *  - refresh consumer-lag gauges (every KJ_LAG_INTERVAL_MS),
 *  - log a progress line (every KJ_PROGRESS_INTERVAL_MS). */
/* Held partitions whose batches were skipped (breaker, stall) restart at their first
 * uncompleted offset: seek there, forget the skipped tail, resume. All partitions resume but
 * arming ones (crash guard), which the tick resumes once armed.
 * @locality poll thread, with no batch in flight and nothing pending in the lanes */
/* What the lanes still hold is not run either (breaker, stall): dropped at once and re-fetched
 * by the rewind, rather than dispatched only to be skipped — records not due for a while (a
 * ladder step, a rate limit's next token) would otherwise hold the resume back that long.
 * @locality poll thread, with the partitions paused (nothing is pushed meanwhile) */
static void drop_pending(kj_worker *w) {
    for (kj_part *p = w->parts; p; p = p->next) {
        for (int i = 0; p->lanes && i < p->nlanes; i++) {
            kj_lane *lane = p->lanes[i].lane;
            size_t n = kj_engine_lane_discard_pending(lane, discard_message, NULL);
            if (n == 0) continue;
            atomic_store(&p->needs_rewind, true);
            atomic_fetch_add(&w->jobs_skipped, (long long)n);
            kj_flow_forget_lane(w->flow, lane, false);
        }
    }
}

static void rewind_and_resume_all(kj_worker *w) {
    for (kj_part *p = w->parts; p; p = p->next) {
        if (atomic_exchange(&p->needs_rewind, false)) {
            pthread_mutex_lock(&p->lock);
            int64_t from = kj_offset_tracker_committable(p->tracker);
            if (from >= 0) kj_offset_tracker_reset(p->tracker, from);
            pthread_mutex_unlock(&p->lock);
            p->position_known = false; /* until a record arrives from the new position */
            if (from >= 0) {
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = from;
                rd_kafka_error_t *error = rd_kafka_seek_partitions(w->consumer, l, 10000);
                if (error) {
                    kj_log(KJ_LOG_ERROR, "rewind: seek failed", "{s:s,s:i,s:s}", "topic", p->topic,
                           "partition", p->partition, "error", rd_kafka_error_string(error));
                    rd_kafka_error_destroy(error);
                }
                rd_kafka_topic_partition_list_destroy(l);
            }
        }
        /* an arming (or held) partition stays paused: the tick resumes it once armed */
        if (!part_held(p)) resume_part(w, p);
    }
}

/* The stall guard's poll side. A loop iteration that starts more than session.timeout.ms
 * after the previous one means the process was frozen long enough for the group coordinator
 * to have expired its session: its partitions may already run elsewhere. Hold everything
 * (worker threads skip batches, nothing is committed) until the group answers: a rebalance
 * callback (the loss, or a new assignment), or — when the session survived after all — a few
 * heartbeat intervals with librdkafka still holding the assignment. Then rewind what was
 * skipped and resume. Returns true while holding. */
static bool stall_tick(kj_worker *w, int64_t now, int64_t gap) {
    if (gap > w->session_timeout_ms && !w->stall_detected_at) {
        atomic_store(&w->stall_hold, true);
        w->stall_detected_at = now;
        w->stall_rebalances = w->rebalances;
        kj_log(KJ_LOG_WARN,
               "worker stalled past its session timeout: holding its partitions "
               "until the group answers",
               "{s:I,s:I}", "stalled_ms", (json_int_t)gap, "session_timeout_ms",
               (json_int_t)w->session_timeout_ms);
    }
    if (!w->stall_detected_at) return false;
    for (kj_part *p = w->parts; p; p = p->next)
        if (!p->paused) pause_part(w, p, false);
    bool answered = w->rebalances != w->stall_rebalances;
    bool survived =
        now - w->stall_detected_at >= KJ_STALL_CONFIRM_MS && !rd_kafka_assignment_lost(w->consumer);
    if (!answered && !survived) return true;
    if (kj_engine_in_flight_items(w->engine) > 0) return true;
    drop_pending(w);
    rewind_and_resume_all(w);
    atomic_store(&w->stall_hold, false);
    kj_log(KJ_LOG_WARN, "stall hold released", "{s:s,s:I}", "by",
           answered ? "rebalance" : "session still valid", "held_ms",
           (json_int_t)(now - w->stall_detected_at));
    w->stall_detected_at = 0;
    return false;
}

/* Circuit breaker, poll-thread side. Open: pause every partition (also ones assigned later).
 * Resume (SIGUSR1 / kj_worker_request_breaker_reset, or after dlq.breaker_cooldown): once no
 * batch, queued job or routed copy is left, seek every partition that skipped jobs back to its
 * first uncompleted offset, then resume. Returns true while the breaker holds consumption. */
static bool breaker_tick(kj_worker *w, int64_t now) {
    if (!atomic_load(&w->breaker_open)) {
        atomic_store(&w->breaker_reset_requested, false);
        return false;
    }
    if (!w->breaker_handled) {
        w->breaker_handled = true;
        w->breaker_opened_at = now;
    }
    for (kj_part *p = w->parts; p; p = p->next)
        if (!p->paused) pause_part(w, p, false);
    bool cooled = w->cfg->breaker_cooldown_ms > 0 &&
                  now - w->breaker_opened_at >= w->cfg->breaker_cooldown_ms;
    if (!cooled && !atomic_load(&w->breaker_reset_requested)) return true;
    if (kj_engine_in_flight_items(w->engine) > 0 || kj_router_outstanding(w->router) > 0)
        return true;
    drop_pending(w);
    rewind_and_resume_all(w);
    pthread_mutex_lock(&w->breaker_lock);
    kj_breaker_reset(&w->breaker);
    pthread_mutex_unlock(&w->breaker_lock);
    atomic_store(&w->breaker_reset_requested, false);
    atomic_store(&w->breaker_open, false);
    w->breaker_handled = false;
    kj_metrics_circuit_breaker_set(false);
    kj_log(KJ_LOG_WARN, "circuit breaker closed: consumption resumed", "{s:s,s:I}", "by",
           cooled ? "cooldown" : "operator", "skipped_jobs_to_rerun",
           (json_int_t)atomic_exchange(&w->jobs_skipped, 0));
    return false;
}

/* Back-pressure load of @p p: its lane's undispatched jobs; with key lanes, its tracker's held
 * count (every lane, and what finished out of order above the committed offset; key lanes,
 * above). @locality poll thread */
static size_t part_load(kj_part *p) {
    if (p->nlanes == 1) return kj_engine_lane_pending(p->lanes[0].lane);
    pthread_mutex_lock(&p->lock);
    size_t held = kj_offset_tracker_held(p->tracker);
    pthread_mutex_unlock(&p->lock);
    return held;
}

/* When @p p's latest not-yet-due lane head is due (0: every head is due). @locality poll
 * thread */
static int64_t part_head_not_before(kj_part *p) {
    int64_t latest = 0;
    for (int i = 0; i < p->nlanes; i++) {
        int64_t nb = kj_engine_lane_head_not_before(p->lanes[i].lane);
        if (nb > latest) latest = nb;
    }
    return latest;
}

/* Careful mode is over for a key-lane partition once lane 0 ran everything pushed to it
 * (kj_engine_lane_idle: no batch of the partition runs, and none can start before the next
 * push from this thread): its records go to their key lanes from now on. @locality poll thread
 */
static void part_to_key_lanes(kj_part *p) {
    if (!kj_engine_lane_idle(p->lanes[0].lane)) return;
    p->crash.careful_until = 0; /* no batch of it runs (above): no race with run_batch */
    p->one_lane = p->to_keys = false;
    kj_log(KJ_LOG_INFO, "crash guard: careful mode over, key lanes again", "{s:s,s:i,s:i}", "topic",
           p->topic, "partition", p->partition, "lanes", p->nlanes);
}

/* Key-ordered retries: the set of main partition `partition` (main + ladder partitions of
 * that number) is here and its key chain read: wake its parked batches (the tick resumes the
 * paused partitions). @locality poll thread */
static void key_order_ready(int32_t partition, void *opaque) {
    kj_worker *w = opaque;
    for (size_t t = 0; t < w->topic_count; t++) {
        kj_topic_slot *slot = &w->topics[t];
        kj_part *p = partition < slot->nparts ? slot->parts[partition] : NULL;
        for (int i = 0; p && p->lanes && i < p->nlanes; i++)
            kj_engine_lane_wake(p->lanes[i].lane);
    }
}

/* The partition stopped: records wait beyond its position, none of them runs or waits for a due
 * time, the breaker and the stall guard hold nothing, and the position has not moved for
 * KJ_STUCK_AFTER_MS. Nothing in kjobs should ever leave a partition so; if something does, the
 * line names every state that holds a partition, so the cause can be read off it. Logged once
 * per stall. @locality poll thread */
static void stuck_check(kj_worker *w, kj_part *p, int64_t now, int64_t pos, int64_t hi, bool held) {
    bool running = false, due_later = false;
    size_t queued = 0;
    for (int i = 0; p->lanes && i < p->nlanes; i++) {
        running |= kj_engine_lane_in_flight(p->lanes[i].lane) > 0;
        queued += kj_engine_lane_pending(p->lanes[i].lane);
        due_later |= kj_engine_lane_head_not_before(p->lanes[i].lane) > now;
    }
    if (pos != p->watch_pos || hi <= pos || held || running || due_later || !p->lanes) {
        p->watch_pos = pos;
        p->watch_since = now;
        p->watch_warned = false;
        return;
    }
    if (p->watch_warned || now - p->watch_since < KJ_STUCK_AFTER_MS) return;
    p->watch_warned = true;
    pthread_mutex_lock(&p->lock);
    size_t tracked = kj_offset_tracker_pending(p->tracker);
    pthread_mutex_unlock(&p->lock);
    kj_log(KJ_LOG_WARN, "partition not progressing",
           "{s:s,s:i,s:I,s:I,s:I,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:I,s:I,s:b,s:b,s:I,s:s}", "topic",
           p->topic, "partition", p->partition, "position", (json_int_t)pos, "high_watermark",
           (json_int_t)hi, "stalled_ms", (json_int_t)(now - p->watch_since), "paused", p->paused,
           "paused_for_delay", p->paused_for_delay, "arming", (int)atomic_load(&p->arming), "held",
           (int)atomic_load(&p->held), "needs_rewind", (int)atomic_load(&p->needs_rewind),
           "one_lane", p->one_lane, "to_keys", p->to_keys, "queued", (json_int_t)queued, "tracked",
           (json_int_t)tracked, "position_known", p->position_known, "key_order_wait",
           kj_key_order_covers(w->key_order, p->partition) &&
               kj_key_order_gen(w->key_order, p->partition) == 0,
           "committed", (json_int_t)p->committed, "mark_sent", p->meta_sent);
}

static void tick(kj_worker *w, int64_t now, int64_t *last_commit, int64_t *last_lag,
                 int64_t *last_progress) {
    size_t low = (size_t)w->cfg->batch_max_pending / 2;
    drop_wake_answers(w);
    kj_key_order_tick(w->key_order, key_order_ready, w);
    bool held = breaker_tick(w, now);
    if (w->stall_detected_at) {
        held = true;
        *last_commit = now; /* nothing is committed while the group may have moved on */
    }
    char why[96];
    kj_metrics_ready_set(kj_worker_ready(w, why, sizeof(why))); /* kjobs_ready mirrors /readyz */
    for (kj_part *p = w->parts; p; p = p->next) /* an arming mark unanswered for 3 s: again */
        if (p->arming && p->meta_sent[0] && now - p->arm_sent_at > 3000) p->meta_sent[0] = '\0';
    for (kj_part *p = w->parts; p; p = p->next)
        if (p->to_keys && p->lanes) part_to_key_lanes(p);
    retired_tick(w);
    for (kj_part *p = w->parts; p && !held; p = p->next) {
        if (!p->paused || !p->lanes || part_held(p) || p->to_keys) continue;
        size_t pending = part_load(p);
        if (pending > low) continue;
        if (p->paused_for_delay && part_head_not_before(p) > now) continue;
        resume_part(w, p);
    }
    if (now - *last_commit >= KJ_COMMIT_INTERVAL_MS) {
        commit_offsets(w, false);
        *last_commit = now;
    }
    if (now - *last_lag >= KJ_LAG_INTERVAL_MS) {
        for (kj_part *p = w->parts; p; p = p->next) {
            int64_t lo, hi;
            if (rd_kafka_get_watermark_offsets(w->consumer, p->topic, p->partition, &lo, &hi) ||
                hi < 0)
                continue;
            pthread_mutex_lock(&p->lock);
            int64_t pos = kj_offset_tracker_committable(p->tracker);
            pthread_mutex_unlock(&p->lock);
            if (pos < 0) pos = p->committed >= 0 ? p->committed : lo;
            kj_metrics_lag_set(p->topic, p->partition, hi > pos ? hi - pos : 0);
            stuck_check(w, p, now, pos, hi, held);
        }
        *last_lag = now;
    }
    if (now - *last_progress >= KJ_PROGRESS_INTERVAL_MS) {
        kj_log(KJ_LOG_INFO, "progress", "{s:I,s:I,s:I,s:i,s:I}", "ok",
               (json_int_t)atomic_load(&w->jobs_ok), "retried",
               (json_int_t)atomic_load(&w->jobs_retried), "dead_lettered",
               (json_int_t)atomic_load(&w->jobs_dead), "partitions", atomic_load(&w->assigned),
               "in_flight", (json_int_t)kj_engine_in_flight_items(w->engine));
        *last_progress = now;
    }
}

static void pause_all(kj_worker *w) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (w->consumer && rd_kafka_assignment(w->consumer, &l) == RD_KAFKA_RESP_ERR_NO_ERROR && l) {
        rd_kafka_pause_partitions(w->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    for (kj_part *p = w->parts; p; p = p->next)
        p->paused = true;
}

/* Leave the group: revoke (committing again) and LeaveGroup, serving the close from a queue so
 * the wait is bounded: a clean close takes milliseconds, and an unreachable coordinator (or one
 * that already dropped us) would otherwise hold rd_kafka_consumer_close() for
 * session.timeout.ms. At most KJ_CLOSE_WAIT_MS, less if the grace period ends sooner. */
typedef struct close_watchdog {
    atomic_bool done;
    int64_t fire_at_ms;
    int exit_code;
} close_watchdog;

/* Still needed. The revocation served during the close calls rd_kafka_assign() /
 * rd_kafka_incremental_unassign(), which wait without a timeout for librdkafka's main thread;
 * when a member leaves during a rebalance that wait can last for good — on 2.0.2 and, less
 * often, on 2.15.1 (the rolling-restart test in test_runtime.py, embedded broker, after the
 * coordinator answered "Unknown member"). Jobs are finished and committed by then, so after
 * the close deadline the watchdog ends the process with the drain's exit code rather than let
 * SIGTERM hang until the kubelet's SIGKILL. A timer thread: it sleeps, it never synchronises. */
static void *close_watchdog_main(void *arg) {
    close_watchdog *wd = arg;
    while (!atomic_load(&wd->done)) {
        int64_t left = wd->fire_at_ms - kj_now_ms();
        if (left <= 0) {
            kj_log(KJ_LOG_ERROR,
                   "consumer close hung inside librdkafka; exiting (work is "
                   "drained and committed; the group rebalances after "
                   "session.timeout.ms)",
                   NULL);
            _exit(wd->exit_code);
        }
        struct timespec ts = {0, (left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(wd);
    return NULL;
}

/* One event from the close queue. rd_kafka_consumer_close_queue() forwards the consumer
 * group's queue to it, so besides the revocation it carries offset-commit results, consumer
 * errors and even fetched messages. They must be served with the event API and each event
 * destroyed (rdkafka.h, rd_kafka_consumer_close_queue): rd_kafka_queue_poll_callback() on this
 * queue aborted the process (rd_kafka_q_serve: "res != RD_KAFKA_OP_RES_PASS") whenever an op
 * without a callback — a consumer error or a message, typical of a close that races a
 * rebalance — reached it. */
static void serve_close_event(kj_worker *w, rd_kafka_event_t *ev) {
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_REBALANCE: /* as an event, the assign/unassign is ours to do */
        on_rebalance(w->consumer, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev),
                     w);
        break;
    case RD_KAFKA_EVENT_OFFSET_COMMIT:
        on_offset_commit(w->consumer, rd_kafka_event_error(ev),
                         rd_kafka_event_topic_partition_list(ev), w);
        break;
    case RD_KAFKA_EVENT_ERROR:
        kj_log(KJ_LOG_WARN, "consumer error while leaving the group", "{s:s}", "error",
               rd_kafka_event_error_string(ev));
        break;
    default: /* fetched messages (never handed out now: they run again on the next owner) */
        break;
    }
    rd_kafka_event_destroy(ev);
}

/* Unsubscribe and serve the revocation before closing, so the close finds no assignment to
 * take apart. A close that itself revokes partitions while a rebalance is under way aborts
 * librdkafka now and then (rdkafka_cgrp.c rd_kafka_cgrp_terminated: "assert:
 * !rd_kafka_assignment_in_progress", seen with 2.15.1 on the embedded broker; librdkafka #4792,
 * whose reporter names unsubscribing first as the way around it). Bounded by `deadline`; what
 * is left is the close's to do. Fetched messages polled here are dropped: their partitions are
 * paused and revoked, they run again on the next owner. @locality poll thread */
static void leave_group_first(kj_worker *w, int64_t deadline) {
    if (rd_kafka_fatal_error(w->consumer, NULL, 0)) return;
    rd_kafka_resp_err_t err = rd_kafka_unsubscribe(w->consumer);
    if (err) {
        kj_log(KJ_LOG_WARN, "unsubscribe failed", "{s:s}", "error", rd_kafka_err2str(err));
        return;
    }
    while (kj_now_ms() < deadline - 500) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(w->consumer, 50);
        if (msg) rd_kafka_message_destroy(msg); /* serves the revocation callback too */
        rd_kafka_topic_partition_list_t *held = NULL;
        if (rd_kafka_assignment(w->consumer, &held) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
        int n = held->cnt;
        rd_kafka_topic_partition_list_destroy(held);
        if (n == 0 && !w->parts) break;
    }
}

static void close_consumer(kj_worker *w, int64_t deadline, int exit_code) {
    if (!w->consumer) return; /* a failed fallback to classic (fall_back_to_classic) */
    release_wake_queue(w);
    int64_t now = kj_now_ms();
    if (deadline > now + KJ_CLOSE_WAIT_MS) deadline = now + KJ_CLOSE_WAIT_MS;
    if (deadline < now + 1000) deadline = now + 1000;
    close_watchdog *wd = calloc(1, sizeof(*wd));
    wd->fire_at_ms = deadline + 2000;
    wd->exit_code = exit_code;
    pthread_t watchdog;
    bool watching = pthread_create(&watchdog, NULL, close_watchdog_main, wd) == 0;
    if (watching) pthread_detach(watchdog);
    leave_group_first(w, deadline);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(w->consumer);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(w->consumer, queue);
    if (error) {
        kj_log(KJ_LOG_WARN, "consumer close failed", "{s:s}", "error",
               rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    /* a consumer in a fatal state can neither revoke nor leave: nothing to wait for */
    while (!rd_kafka_consumer_closed(w->consumer) && kj_now_ms() < deadline &&
           !rd_kafka_fatal_error(w->consumer, NULL, 0)) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, 100);
        if (ev) serve_close_event(w, ev);
    }
    w->consumer_closed = rd_kafka_consumer_closed(w->consumer);
    if (w->consumer_closed) { /* what arrived with the close, e.g. the last commit's result */
        rd_kafka_event_t *ev;
        while ((ev = rd_kafka_queue_poll(queue, 0)) != NULL)
            serve_close_event(w, ev);
    }
    if (watching)
        atomic_store(&wd->done, true); /* the watchdog frees it */
    else
        free(wd);
    if (!w->consumer_closed && !rd_kafka_fatal_error(w->consumer, NULL, 0))
        kj_log(KJ_LOG_WARN,
               "could not leave the consumer group in time (coordinator unreachable?); the group "
               "reassigns these partitions after session.timeout.ms",
               NULL);
    rd_kafka_queue_destroy(queue);
}

static int consumer_new(kj_worker *w, char *errstr, size_t errstr_size);

/* Subscribe to the main topic and the ladder (never to the DLQ). Returns 0, or -1 (logged). */
static int subscribe(kj_worker *w) {
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)w->topic_count);
    for (size_t i = 0; i < w->topic_count; i++)
        if (w->topics[i].spec.role != KJ_TOPIC_DLQ)
            rd_kafka_topic_partition_list_add(subs, w->topics[i].spec.name, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(w->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        kj_log(KJ_LOG_ERROR, "subscribe failed", "{s:s}", "error", rd_kafka_err2str(err));
        return -1;
    }
    w->subscribed_at = kj_now_ms();
    return 0;
}

/* kafka.group_protocol=auto chose KIP-848 and the broker refused it (Kafka < 4.0, or the
 * consumer protocol disabled) before any partition was assigned: nothing is held, nothing is
 * to commit, so the refused consumer is destroyed without a close and a classic one joins in
 * its place. Once: classic never falls back. Returns 0, or -1 (logged; the caller stops with
 * the original fatal error). @locality poll thread */
static int fall_back_to_classic(kj_worker *w, const char *code, const char *why) {
    kj_log(KJ_LOG_WARN,
           "the broker does not offer the KIP-848 consumer group protocol; joining "
           "with classic",
           "{s:s,s:s}", "error", why, "code", code);
    release_wake_queue(w);
    rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    w->consumer = NULL;
    w->protocol.kip848 = w->protocol.may_fall_back = false;
    snprintf(w->protocol.why, sizeof(w->protocol.why), "auto: the broker refused KIP-848 (%s)",
             code);
    char errstr[512];
    if (consumer_new(w, errstr, sizeof(errstr)) != 0) {
        kj_log(KJ_LOG_ERROR, "cannot create the classic consumer", "{s:s}", "error", errstr);
        return -1;
    }
    if (subscribe(w) != 0) return -1;
    kj_log(KJ_LOG_INFO, "group protocol", "{s:s,s:s}", "group_protocol", "classic",
           "group_protocol_why", w->protocol.why);
    return 0;
}

/* How long kafka.group_protocol=auto waits for a first KIP-848 heartbeat answer. */
#define KJ_KIP848_PROBE_MS 15000

/* The silent way a broker refuses KIP-848: one that does not list ConsumerGroupHeartbeat (v1)
 * in ApiVersions (Kafka before 4.0) raises no error in librdkafka 2.15 — it marks the
 * coordinator dead and looks it up again, for good (rdkafka_request.c,
 * rd_kafka_ConsumerGroupHeartbeatRequest). So when auto chose KIP-848 and the member has no
 * epoch KJ_KIP848_PROBE_MS after subscribing, the broker never answered a heartbeat: fall back
 * to classic. A member with an epoch has joined (maybe with no partitions): the choice stands.
 * The cluster answered a metadata request moments before (check_topics), so an unreachable
 * cluster is not mistaken for a refusal. With kafka.group_protocol=consumer there is no
 * fallback: the worker stops (exit 1) with the reason instead of waiting for good. Returns
 * false when the worker must stop. @locality poll thread */
static bool kip848_probe(kj_worker *w, int64_t now) {
    if (!w->protocol.kip848 || w->kip848_confirmed) return true;
    if (atomic_load(&w->joined)) {
        w->kip848_confirmed = true;
        return true;
    }
    if (now - w->kip848_checked_at < 500) return true;
    w->kip848_checked_at = now;
    int32_t epoch = -1;
#if RD_KAFKA_VERSION >= 0x020c0000
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(w->consumer);
    if (md) {
        epoch = rd_kafka_consumer_group_metadata_generation_id(md);
        rd_kafka_consumer_group_metadata_destroy(md);
    }
#endif
    if (epoch > 0) {
        /* in the group: with no partitions librdkafka calls no rebalance callback (more
         * members than partitions), so this is where such a member becomes ready */
        w->kip848_confirmed = true;
        atomic_store(&w->joined, true);
        return true;
    }
    if (now - w->subscribed_at < KJ_KIP848_PROBE_MS) return true;
    /* Before blaming the protocol: is the cluster answering at all? A broker paused or
     * restarting for the whole window is not a refusal: look again for another window. */
    const struct rd_kafka_metadata *cluster = NULL;
    if (rd_kafka_metadata(w->consumer, 0, NULL, &cluster, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        kj_log(KJ_LOG_WARN,
               "no KIP-848 heartbeat answer yet and the cluster does not answer metadata "
               "requests: waiting",
               "{s:i}", "waited_s", (int)((now - w->subscribed_at) / 1000));
        w->subscribed_at = kj_now_ms();
        return true;
    }
    rd_kafka_metadata_destroy(cluster);
    char why[200];
    snprintf(why, sizeof(why),
             "the cluster answers but no ConsumerGroupHeartbeat was answered in %d s: the "
             "broker does not offer KIP-848 (Kafka before 4.0?)",
             KJ_KIP848_PROBE_MS / 1000);
    if (!w->protocol.may_fall_back) { /* kafka.group_protocol=consumer: KIP-848 or nothing */
        kj_log(KJ_LOG_ERROR, "fatal consumer error: stopping", "{s:s,s:s,s:s}", "error", why,
               "code", "NO_HEARTBEAT_ANSWER", "hint",
               "kafka.group_protocol=consumer (KIP-848) needs Kafka 4.0 or later with the "
               "consumer protocol enabled; kafka.group_protocol=auto falls back to classic by "
               "itself");
        w->fatal = true;
        return false;
    }
    if (fall_back_to_classic(w, "NO_HEARTBEAT_ANSWER", why) == 0) return true;
    w->fatal = true; /* no consumer left: nothing to commit through */
    return false;
}

/* A fatal consumer error (librdkafka: the instance is unusable — e.g. this static member was
 * fenced by another process with the same group.instance.id, or the broker refused the KIP-848
 * protocol) stops the worker with a clear error: it would otherwise poll on, silently holding
 * nothing. Work in flight still drains; no offset is committed through the dead consumer.
 * @locality poll thread */
static bool consumer_fatal(kj_worker *w) {
    char why[512];
    rd_kafka_resp_err_t err = rd_kafka_fatal_error(w->consumer, why, sizeof(why));
    if (!err) return false;
    if (w->protocol.may_fall_back && !atomic_load(&w->joined) && !w->parts &&
        kj_kafka_kip848_refused(err) && fall_back_to_classic(w, rd_kafka_err2name(err), why) == 0)
        return false;
    const char *hint = "";
    if (err == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID)
        hint = "another process joined with the same kafka.group_instance_id";
    else if (strcmp(rd_kafka_err2name(err), "UNRELEASED_INSTANCE_ID") == 0) /* not in 2.0.2 */
        hint = "another member of the group holds the same kafka.group_instance_id: the KIP-848 "
               "protocol refuses a newcomer until that member leaves or its session times out "
               "(after a crash, this process is started again until it does)";
    else if (w->protocol.kip848 && kj_kafka_kip848_refused(err))
        hint = "kafka.group_protocol=consumer (KIP-848) needs Kafka 4.0 or later with the "
               "consumer protocol enabled, and a group.remote.assignor the broker offers; "
               "kafka.group_protocol=auto falls back to classic by itself";
    kj_log(KJ_LOG_ERROR, "fatal consumer error: stopping", "{s:s,s:s,s:s}", "error", why, "code",
           rd_kafka_err2name(err), "hint", hint);
    w->fatal = true;
    return true;
}

int kj_worker_run(kj_worker *w, volatile sig_atomic_t *stop, kj_heartbeat *heartbeat) {
    w->heartbeat = heartbeat;
    if (subscribe(w) != 0) return 1;
    kj_log(KJ_LOG_INFO, "worker started", "{s:s,s:s,s:i,s:i,s:i,s:s,s:s,s:s,s:s,s:s,s:i}", "group",
           w->cfg->group, "topic", w->cfg->main_topic, "workers", w->cfg->workers, "batch_max_jobs",
           w->cfg->batch_max_jobs, "retry_steps", (int)w->cfg->retry_delay_count, "librdkafka",
           rd_kafka_version_str(), "group_protocol", w->protocol.kip848 ? "consumer" : "classic",
           "group_protocol_why", w->protocol.why, "batch_ordering", w->cfg->batch_ordering,
           "retry_ordering", w->cfg->retry_ordering, "lanes_per_main_partition",
           kj_config_key_lanes(w->cfg));

    int exit_code = 0;
    int64_t last_commit = kj_now_ms(), last_lag = 0, last_progress = kj_now_ms();
    char fatal[512];
    atomic_store(&w->last_poll_ms, kj_now_ms());
    while (!*stop) {
        if (heartbeat) kj_heartbeat_beat(heartbeat);
        int64_t loop_start = kj_now_ms();
        /* stall guard: hold first, then the fresh timestamp (run_batch reads them reversed) */
        stall_tick(w, loop_start, loop_start - atomic_load(&w->last_poll_ms));
        atomic_store(&w->last_poll_ms, loop_start);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(w->consumer, KJ_TICK_MS);
        /* drain what is ready without waiting, bounded so ticks keep their pace */
        for (int n = 0; msg && n < 10000; n++) {
            handle_message(w, msg);
            msg = rd_kafka_consumer_poll(w->consumer, 0);
        }
        if (msg) handle_message(w, msg);
        kj_router_poll(w->router, 0);
        if (kj_router_fatal(w->router, fatal, sizeof(fatal))) {
            kj_log(KJ_LOG_ERROR, "fatal producer error: stopping without committing", "{s:s}",
                   "error", fatal);
            return 1;
        }
        if (consumer_fatal(w)) {
            exit_code = 1;
            break;
        }
        if (!kip848_probe(w, kj_now_ms())) {
            exit_code = 1;
            break;
        }
        tick(w, kj_now_ms(), &last_commit, &last_lag, &last_progress);
        if (w->fatal) {
            exit_code = 1;
            break;
        }
    }

    /* Drain: stop fetching, start nothing new, finish in-flight batches and copies, commit. */
    atomic_store(&w->draining, true);
    kj_metrics_ready_set(false);
    kj_log(KJ_LOG_INFO, "draining", "{s:I,s:I}", "in_flight",
           (json_int_t)kj_engine_in_flight_items(w->engine), "grace_ms",
           (json_int_t)w->cfg->shutdown_grace_ms);
    pause_all(w);
    kj_engine_stop_dispatch(w->engine);
    int64_t deadline = kj_now_ms() + w->cfg->shutdown_grace_ms;
    w->drain_deadline = deadline;
    while (kj_engine_wait_idle(w->engine, 10) != 0 && kj_now_ms() < deadline)
        kj_router_poll(w->router, 0);
    if (kj_engine_in_flight_items(w->engine) == 0)
        /* from here on no job of this process runs: ownership of its partitions is moot */
        kj_log(KJ_LOG_INFO, "drained", "{s:I}", "waited_ms",
               (json_int_t)(kj_now_ms() - (deadline - w->cfg->shutdown_grace_ms)));
    if (kj_engine_in_flight_items(w->engine) > 0) {
        w->shutdown_timed_out = true;
        exit_code = 1;
        kj_log(KJ_LOG_ERROR, "shutdown grace expired with jobs in flight; they will run again",
               "{s:I}", "in_flight", (json_int_t)kj_engine_in_flight_items(w->engine));
    }
    while (kj_router_outstanding(w->router) > 0 && kj_now_ms() < deadline)
        kj_router_poll(w->router, 10);
    if (kj_router_outstanding(w->router) > 0)
        kj_log(KJ_LOG_ERROR, "routed copies unacknowledged at shutdown; their jobs will run again",
               "{s:I}", "copies", (json_int_t)kj_router_outstanding(w->router));
    if (!w->fatal) commit_offsets(w, true);
    close_consumer(w, deadline, w->fatal ? 1 : exit_code);
    kj_log(KJ_LOG_INFO, "worker stopped", "{s:I,s:I,s:I,s:I}", "ok",
           (json_int_t)atomic_load(&w->jobs_ok), "retried",
           (json_int_t)atomic_load(&w->jobs_retried), "dead_lettered",
           (json_int_t)atomic_load(&w->jobs_dead), "offset_resets",
           (json_int_t)atomic_load(&w->resets));
    return exit_code;
}

bool kj_worker_ready(void *opaque, char *reason, size_t reason_size) {
    kj_worker *w = opaque;
    const char *why = NULL;
    if (atomic_load(&w->draining))
        why = "draining";
    else if (!atomic_load(&w->joined))
        why = "not ready: joining the consumer group";
    else if (atomic_load(&w->stall_hold))
        why = "not ready: stalled past the session timeout, waiting for the group";
    else if (kj_now_ms() - atomic_load(&w->last_poll_ms) > w->session_timeout_ms)
        /* the poll thread is stuck (e.g. inside librdkafka): the group has dropped us */
        why = "not ready: the main loop has not polled the group for longer than the session "
              "timeout";
    else if (atomic_load(&w->breaker_open))
        why = "not ready: circuit breaker open (dead-letter rate too high)";
    else if (kj_router_failing(w->router) > 0)
        why = "not ready: retry/DLQ copies are failing";
    else if (atomic_load(&w->registry_waiting) > 0)
        why = "not ready: waiting for the schema registry (batches held)";
    snprintf(reason, reason_size, "%s", why ? why : "ready");
    return why == NULL;
}

/* ---- construction -------------------------------------------------------------------------- */

/* The assignor of the classic group protocol. The rebalance callback handles cooperative-sticky
 * (incremental assign/unassign) as well as the eager ones, yet the default is eager roundrobin,
 * whatever the librdkafka version:
 *  - before 2.1 (Debian 12 ships 2.0.2) librdkafka treats an offset commit that races a
 *    cooperative rebalance (ILLEGAL_GENERATION) as a lost assignment (librdkafka #4059): a
 *    third worker joining a busy group re-ran tens of thousands of jobs with cooperative-sticky,
 *    1,500 of 40,000 with roundrobin (embedded broker);
 *  - 2.15 fixes that, but the sticky assignor balances the number of partitions per member over
 *    all subscribed topics, not per topic. kjobs subscribes to the main topic and its ladder: on
 *    librdkafka 2.15.1 (4 topics x 8 partitions, 3 workers) a fourth worker joining was handed
 *    all 8 main-topic partitions and the others kept only ladder partitions, so one process did
 *    all the work. Roundrobin deals each topic's partitions out evenly.
 * kafka.properties = ["partition.assignment.strategy=cooperative-sticky"] opts in.
 * range is offered second: with retry.ordering = "key" a member offers range alone (it needs a
 * main partition and the ladder partitions of its number together, key_order.h), and a group
 * takes an assignor every member offers — so while members of both settings share the group (a
 * rolling change of retry.ordering), all use range instead of failing to join (JoinGroup:
 * INCONSISTENT_GROUP_PROTOCOL). Once every member offers roundrobin first, roundrobin wins the
 * vote again. */
#define KJ_DEFAULT_ASSIGNOR "roundrobin,range"
/* With group.protocol=consumer (KIP-848) the broker assigns, incrementally. Its default
 * `uniform` assignor has the sticky assignor's flaw above: on Kafka 4.1.1 (4 topics x 8
 * partitions, 2 workers) it gave one worker the main topic and the first ladder step, the other
 * only the later ladder steps — all the work on one process. `range` assigns each topic's
 * partitions separately, so every member gets its share of the main topic. */
#define KJ_DEFAULT_REMOTE_ASSIGNOR "range"

/* One metadata request for the whole layout: every topic must exist. */
static int check_topics(kj_worker *w, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(w->consumer, 1, NULL, &md, 15000);
    if (err) {
        char cause[512];
        if (kj_kafka_last_error(cause, sizeof(cause)))
            snprintf(errstr, errstr_size,
                     "cannot read topic metadata from %s: %s (librdkafka's last error: %s)",
                     w->cfg->bootstrap, rd_kafka_err2str(err), cause);
        else
            snprintf(errstr, errstr_size, "cannot read topic metadata from %s: %s",
                     w->cfg->bootstrap, rd_kafka_err2str(err));
        return -1;
    }
    char missing[1024] = "";
    size_t used = 0;
    int nmissing = 0;
    for (size_t i = 0; i < w->topic_count; i++) {
        bool found = false;
        for (int t = 0; t < md->topic_cnt && !found; t++) {
            found = !md->topics[t].err && md->topics[t].partition_cnt > 0 &&
                    strcmp(md->topics[t].topic, w->topics[i].spec.name) == 0;
            if (found && w->topics[i].spec.role != KJ_TOPIC_DLQ) /* the DLQ is not consumed */
                w->total_partitions += md->topics[t].partition_cnt;
            if (found && w->topics[i].spec.role == KJ_TOPIC_MAIN)
                w->main_partitions = md->topics[t].partition_cnt;
        }
        if (found) continue;
        nmissing++;
        if (used < sizeof(missing))
            used += (size_t)snprintf(missing + used, sizeof(missing) - used, "%s%s",
                                     nmissing > 1 ? ", " : "", w->topics[i].spec.name);
    }
    /* key-ordered retries keep main partition p's copies in ladder partition p of each step */
    for (size_t i = 0; nmissing == 0 && kj_config_retry_key_ordered(w->cfg) && i < w->topic_count;
         i++) {
        if (w->topics[i].spec.role != KJ_TOPIC_RETRY) continue;
        for (int t = 0; t < md->topic_cnt; t++) {
            if (strcmp(md->topics[t].topic, w->topics[i].spec.name) != 0 ||
                md->topics[t].partition_cnt == w->main_partitions)
                continue;
            snprintf(errstr, errstr_size,
                     "retry.ordering = \"key\": ladder topic %s has %d partitions, the main topic "
                     "%s %d (each main partition's copies stay in the ladder partition of the "
                     "same number, and the range assignor keeps them on one member only when "
                     "the counts are equal): give them the same number of partitions",
                     w->topics[i].spec.name, md->topics[t].partition_cnt, w->cfg->main_topic,
                     (int)w->main_partitions);
            rd_kafka_metadata_destroy(md);
            return -1;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (nmissing == 0) return 0;
    snprintf(errstr, errstr_size,
             "missing topics: %s (create them with `kjobs topics --create`, or use "
             "`kjobs broker` / `kjobs run --embedded` in development)",
             missing);
    return -1;
}

/* The group consumer, for the protocol in w->protocol: kjobs' settings, then the passthrough
 * properties (the ones the commit rule depends on forced again). Returns 0, or -1 with errstr.
 * @locality poll thread (construction, and the one fallback to classic in kj_worker_run) */
static int consumer_new(kj_worker *w, char *errstr, size_t errstr_size) {
    const kj_config *cfg = w->cfg;
    bool kip848 = w->protocol.kip848;
    rd_kafka_conf_t *conf = kj_kafka_conf_new(cfg, errstr, errstr_size);
    if (!conf) return -1;
    if (kj_kafka_conf_set(conf, "group.id", cfg->group, errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        kj_kafka_conf_set(conf, "auto.offset.reset", "error", errstr, errstr_size) ||
        /* jobs of an aborted producer transaction never run (a passthrough may override) */
        kj_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        (kip848 && kj_kafka_conf_set(conf, "group.protocol", "consumer", errstr, errstr_size)) ||
        (!kip848 &&
         kj_kafka_conf_set(conf, "partition.assignment.strategy",
                           kj_config_retry_key_ordered(cfg) ? "range" : KJ_DEFAULT_ASSIGNOR, errstr,
                           errstr_size)) ||
        (kip848 && !kj_kafka_prop_value(cfg, "group.remote.assignor") &&
         kj_kafka_conf_set(conf, "group.remote.assignor", KJ_DEFAULT_REMOTE_ASSIGNOR, errstr,
                           errstr_size)) ||
        /* the embedded broker (librdkafka's mock) forgets a classic member that left only
         * after its session timeout: keep it short there (its KIP-848 timing is set on the
         * mock itself, embedded_broker.c) */
        (!kip848 && cfg->embedded_broker && !kj_kafka_prop_value(cfg, "session.timeout.ms") &&
         kj_kafka_conf_set(conf, "session.timeout.ms", "6000", errstr, errstr_size)) ||
        (!kip848 && cfg->embedded_broker && !kj_kafka_prop_value(cfg, "heartbeat.interval.ms") &&
         kj_kafka_conf_set(conf, "heartbeat.interval.ms", "500", errstr, errstr_size)) ||
        (cfg->group_instance_id[0] &&
         kj_kafka_conf_set(conf, "group.instance.id", cfg->group_instance_id, errstr,
                           errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* user properties win over our defaults above only where they do not break the contract:
     * re-apply the passthrough list, then force the settings the commit rule depends on */
    for (size_t i = 0; i < cfg->rdkafka_prop_count; i++) {
        const char *prop = cfg->rdkafka_props[i];
        if (strncmp(prop, "partition.assignment.strategy=", 30) == 0 ||
            strncmp(prop, "auto.offset.reset=", 18) == 0 ||
            strncmp(prop, "isolation.level=", 16) == 0) {
            const char *eq = strchr(prop, '=');
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(eq - prop), prop);
            if (kj_kafka_conf_set(conf, name, eq + 1, errstr, errstr_size)) {
                rd_kafka_conf_destroy(conf);
                return -1;
            }
        }
    }
    {
        char value[32];
        size_t value_size = sizeof(value);
        w->session_timeout_ms = 45000; /* librdkafka's and Kafka's default */
        if (kip848 && cfg->embedded_broker)
            w->session_timeout_ms = 6000; /* embedded_broker.c */
        else if (!kip848 &&
                 rd_kafka_conf_get(conf, "session.timeout.ms", value, &value_size) ==
                     RD_KAFKA_CONF_OK &&
                 atoll(value) > 0)
            w->session_timeout_ms = atoll(value);
        value_size = sizeof(value);
        w->revoke_wait_ms = 150000; /* librdkafka's default max.poll.interval.ms, halved */
        if (rd_kafka_conf_get(conf, "max.poll.interval.ms", value, &value_size) ==
                RD_KAFKA_CONF_OK &&
            atoll(value) > 0)
            w->revoke_wait_ms = atoll(value) / 2;
    }
    const char *strategy = kj_kafka_prop_value(cfg, "partition.assignment.strategy");
    w->cooperative = kip848 || (strategy && strstr(strategy, "cooperative-sticky") != NULL);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_offset_commit);
    rd_kafka_conf_set_opaque(conf, w);
    w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!w->consumer) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_poll_set_consumer(w->consumer);
    return 0;
}

kj_worker *kj_worker_new(const kj_config *cfg, kj_handler_registry *handlers, char *errstr,
                         size_t errstr_size) {
    kj_worker *w = calloc(1, sizeof(*w));
    w->cfg = cfg;
    w->handlers = handlers;
    pthread_mutex_init(&w->breaker_lock, NULL);
    pthread_mutex_init(&w->commit_lock, NULL);
    if (kj_breaker_init(&w->breaker, cfg->breaker_consecutive, cfg->breaker_window,
                        cfg->breaker_min_window, cfg->breaker_ratio) != 0) {
        snprintf(errstr, errstr_size, "dlq.breaker_*: invalid circuit breaker settings");
        free(w);
        return NULL;
    }
    char host[128] = "unknown";
    gethostname(host, sizeof(host) - 1);
    snprintf(w->worker_id, sizeof(w->worker_id), "%s@%s", cfg->client_id, host);

    kj_topic_spec *specs;
    w->topic_count = kj_topic_layout(cfg, &specs);
    w->topics = calloc(w->topic_count, sizeof(*w->topics));
    for (size_t i = 0; i < w->topic_count; i++)
        w->topics[i].spec = specs[i];
    free(specs); /* names now owned by the slots */

    if (kj_codec_init(errstr, errstr_size) != 0) goto fail;
    if (cfg->sr_url[0] && !(w->registry = kj_sr_client_new(cfg, errstr, errstr_size))) goto fail;

    if (kj_kafka_group_protocol(cfg, &w->protocol, errstr, errstr_size) != 0) goto fail;
    if (consumer_new(w, errstr, errstr_size) != 0) goto fail;

    if (check_topics(w, errstr, errstr_size) != 0) goto fail;
    if (kj_config_retry_key_ordered(cfg) && cfg->retry_delay_count == 0)
        kj_log(KJ_LOG_WARN,
               "retry.ordering = \"key\" has no effect without a ladder (retry.delays is "
               "empty: every failure is dead-lettered, and a dead letter holds back no one)",
               "{}");
    if (kj_config_retry_key_ordered(cfg) && cfg->retry_delay_count > 0 &&
        !(w->key_order = kj_key_order_new(cfg, w->main_partitions))) {
        snprintf(errstr, errstr_size, "retry.ordering: out of memory");
        goto fail;
    }
    if (cfg->periodic_count > 0 &&
        !(w->periodic = kj_periodic_new(cfg, w->worker_id, errstr, errstr_size)))
        goto fail;

    rd_kafka_conf_t *pconf = kj_kafka_producer_conf_new(cfg, errstr, errstr_size);
    if (!pconf) goto fail;
    w->router = kj_router_new(cfg, pconf, w->worker_id, on_route_done, w, errstr, errstr_size);
    if (!w->router) goto fail;
    if (w->key_order) {
        kj_router_key_partitions(w->router, w->main_partitions);
        kj_router_on_diverted(w->router, key_copy_diverted, w);
    }

    w->crash_guard = cfg->crash_loop_limit > 0 && !cfg->retry_exactly_once;
    if (cfg->handlers_timeout_ms > 0 || cfg->handlers_timeout_count > 0) {
        if (!(w->deadlines = kj_deadline_watch_start(cfg->handlers_timeout_grace_ms))) {
            snprintf(errstr, errstr_size, "handlers.timeout: cannot start its watchdog thread");
            goto fail;
        }
        if (cfg->handlers_timeout_grace_ms > 0 && !w->crash_guard)
            kj_log(KJ_LOG_WARN,
                   "handler time limits exit the process past handlers.timeout_grace; without "
                   "dlq.crash_loop_limit a job that always hangs does so on every restart",
                   "{s:I}", "timeout_grace_ms", (json_int_t)cfg->handlers_timeout_grace_ms);
    }
    if (cfg->limit_count > 0) {
        kj_flow_limit *limits = calloc(cfg->limit_count, sizeof(*limits));
        for (size_t i = 0; i < cfg->limit_count; i++)
            limits[i] = (kj_flow_limit){.type = cfg->limits[i].type,
                                        .rate = cfg->limits[i].rate,
                                        .burst = cfg->limits[i].burst,
                                        .concurrency = cfg->limits[i].concurrency,
                                        .group_scope = cfg->limits[i].group_scope};
        w->flow = kj_flow_new(limits, cfg->limit_count);
        free(limits);
        if (!w->flow) {
            snprintf(errstr, errstr_size, "limits: %s", strerror(errno));
            goto fail;
        }
    }
    kj_engine_config ecfg = {.workers = cfg->workers,
                             .max_batch = (size_t)cfg->batch_max_jobs,
                             .max_wait_ms = cfg->batch_max_wait_ms};
    w->engine = kj_engine_new(&ecfg, run_batch, w);
    if (!w->engine) {
        snprintf(errstr, errstr_size, "cannot start %d worker threads", cfg->workers);
        goto fail;
    }
    return w;
fail:
    kj_worker_free(w);
    return NULL;
}

void kj_worker_free(kj_worker *w) {
    if (!w) return;
    if (w->shutdown_timed_out) return; /* handler threads may still run: leave it to exit() */
    kj_periodic_free(w->periodic);
    /* lanes still present (e.g. consumer never closed) hold messages: give them back */
    while (w->parts) {
        kj_part *p = w->parts;
        part_remove_lanes(w, p);
        part_remove(w, p, true);
    }
    if (w->engine) kj_engine_destroy(w->engine);
    kj_key_order_free(w->key_order);      /* after the handler threads are joined */
    kj_deadline_watch_stop(w->deadlines); /* after the handler threads are joined */
    if (w->router) kj_router_free(w->router);
    while (w->retired) { /* no batch runs and no copy completes any more */
        kj_part *r = w->retired;
        w->retired = r->retired_next;
        part_free(r);
    }
    kj_flow_free(w->flow);
    /* A consumer that could not leave the group still has a close in flight that waits for
     * the coordinator; destroying it would wait too. The process is exiting: let it go. */
    if (w->consumer && w->consumer_closed) rd_kafka_destroy(w->consumer);
    for (size_t i = 0; i < w->topic_count; i++) {
        free(w->topics[i].spec.name);
        free(w->topics[i].parts);
    }
    free(w->topics);
    kj_sr_client_free(w->registry);
    kj_breaker_free(&w->breaker);
    pthread_mutex_destroy(&w->breaker_lock);
    pthread_mutex_destroy(&w->commit_lock);
    free(w);
}

void kj_worker_request_breaker_reset(kj_worker *w) {
    atomic_store(&w->breaker_reset_requested, true);
}
