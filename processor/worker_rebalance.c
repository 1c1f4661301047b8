/*
 * worker_rebalance.c — the rebalance callback: assigning partitions (start offsets, the crash
 * guard's arming, a partition held behind its own given-up batch, key-order sets) and revoking
 * them (wait for their batches, bounded; wait for their copies; commit; retire), eager and
 * incremental, plus the fetch wake-up after an incremental change. Types: worker_internal.h;
 * design: worker.h ("Rebalances").
 */
#include "processor/worker_internal.h"

static void wake_fetchers(kj_worker *w, rd_kafka_t *rk);

/* Group-scoped rate limits follow this member's share of the group's partitions (main and
 * ladder topics alike: every assignor spreads them all). @locality poll thread */
static void update_flow_share(kj_worker *w) {
    int assigned = atomic_load(&w->assigned);
    if (!w->flow || assigned <= 0 || w->total_partitions <= 0) return;
    double share = (double)assigned / (double)w->total_partitions;
    kj_flow_set_share(w->flow, share > 1 ? 1 : share);
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

/* Where the group has no offset, the partitions of start (offset RD_KAFKA_OFFSET_BEGINNING)
 * get their log start offset, looked up here for all of them at once (ListOffsets with the
 * earliest timestamp, -2, one request per leader) instead of by librdkafka when it starts
 * fetching: librdkafka resolves a logical offset per partition, and a partition whose leader's
 * broker handle it has not delegated yet waits 500 ms before it asks (rdkafka_partition.c,
 * rd_kafka_toppar_offset_request). Seen on Kafka 4.1.1 with a fresh group: 11 of 16 partitions
 * started ~550 ms after the other 5 (bench/RESULTS.md, "Partitions of a new group started half a
 * second late"). Partitions not resolved within the wait keep RD_KAFKA_OFFSET_BEGINNING.
 * @locality poll thread (rebalance callback) */
static void resolve_log_starts(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *start) {
    rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(start->cnt);
    for (int i = 0; i < start->cnt; i++)
        if (start->elems[i].offset == RD_KAFKA_OFFSET_BEGINNING)
            rd_kafka_topic_partition_list_add(q, start->elems[i].topic, start->elems[i].partition)
                ->offset = RD_KAFKA_OFFSET_BEGINNING; /* the timestamp: earliest */
    if (q->cnt > 0 &&
        rd_kafka_offsets_for_times(rk, q, KJ_COMMITTED_LOOKUP_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < q->cnt; i++) {
            const rd_kafka_topic_partition_t *r = &q->elems[i];
            rd_kafka_topic_partition_t *tp =
                rd_kafka_topic_partition_list_find(start, r->topic, r->partition);
            if (tp && !r->err && r->offset >= 0) tp->offset = r->offset;
        }
    rd_kafka_topic_partition_list_destroy(q);
}

/* The state of list's i-th partition: added[i] when assign_partitions could keep what it
 * added (list is parts or its copy start, same order), else looked up. NULL: not added. */
static kj_part *assigned_part(kj_worker *w, kj_part **added,
                              const rd_kafka_topic_partition_list_t *list, int i) {
    return added ? added[i] : part_lookup(w, NULL, list->elems[i].topic, list->elems[i].partition);
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
    /* start is a copy of parts: added[i] is the state of both lists' i-th partition (NULL
     * where it could not be added) */
    kj_part **added = calloc(start->cnt > 0 ? (size_t)start->cnt : 1, sizeof *added);
    for (int i = 0; i < start->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &start->elems[i];
        kj_part *p = part_add(w, tp->topic, tp->partition);
        if (added) added[i] = p;
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
    }
    if (known) resolve_log_starts(rk, start);
    for (int i = 0; i < start->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &start->elems[i];
        kj_part *p = assigned_part(w, added, start, i);
        if (!p) continue;
        /* no committed offset: a reset before its first record is not lost jobs (the log
         * start moved between the lookup and the first fetch) */
        p->start_unknown = !known || p->committed < 0;
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
            kj_part *p = assigned_part(w, added, parts, i);
            if (p && part_held(p) && !p->paused) pause_part(w, p, true);
        }
        if (arming) commit_offsets(w, false);
    }
    free(added);
    control_assigned(w, parts); /* an operator's pauses, before a record is handed out */
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

/* The queue goes before its consumer: a queue holds the client open. @locality poll thread */
void release_wake_queue(kj_worker *w) {
    if (!w->wake_queue) return;
    drop_wake_answers(w);
    rd_kafka_queue_destroy(w->wake_queue);
    w->wake_queue = NULL;
}

/* Drops the answers wake_fetchers asked for. @locality poll thread */
void drop_wake_answers(kj_worker *w) {
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
        while (kj_engine_lane_remove_wait(lanes[i], discard_message, p, KJ_REVOKE_SLICE_MS) != 0) {
            /* Waiting, not frozen: librdkafka's own thread heartbeats meanwhile, so the stall
             * guard and /livez must not count this as a stopped loop. */
            atomic_store(&w->last_poll_ms, kj_now_ms());
            if (w->heartbeat) kj_heartbeat_beat(w->heartbeat);
            /* the batch may be waiting for room for its routed copies (router.c wait_for_room):
             * their delivery reports are served on this thread, also now */
            kj_router_poll(w->router, 0);
            int64_t waited = kj_now_ms() - wait_start;
            if (waited < w->revoke_wait_ms) continue;
            atomic_store(&p->abandoned, true);
            atomic_fetch_add(&p->abandoned_batches, 1); /* before: the release may come at once */
            kj_log(KJ_LOG_WARN,
                   "partition revoked while a batch still runs: given up without waiting longer "
                   "(half of max.poll.interval.ms); the next owner runs its jobs again",
                   "{s:s,s:i,s:I,s:I}", "topic", p->topic, "partition", p->partition, "waited_ms",
                   (json_int_t)waited, "in_flight", (json_int_t)kj_engine_lane_in_flight(lanes[i]));
            if (kj_engine_lane_abandon(lanes[i], discard_message, p, abandoned_lane_released, p))
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
        part_remove(w, p, !w->shutdown_timed_out && p->lanes == NULL && p->old_lanes == NULL);
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

void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                  void *opaque) {
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
