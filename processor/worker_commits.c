/*
 * worker_commits.c — the commit rule (worker.h, "Commits"): which offset of each partition is
 * committed (collect_offsets: the tracker's watermark, partitions/offset_tracker.h), when and how
 * (commit_offsets: async in steady state, bounded sync on revocation and shutdown, inside the
 * router's transaction in exactly-once mode), acknowledged copies completing their offsets
 * (on_route_done), and the crash-loop guard's marks that ride on the same commits (arming,
 * probes; the rule itself is processor/crash_guard.h). Types: worker_internal.h.
 */
#include "processor/worker_internal.h"

/* Router callback: the copy of the record at `offset` of `src` was acknowledged: that offset is
 * done — if the partition is still ours under the same assignment (generation). An
 * acknowledgement for a revoked partition, or for an earlier assignment of one we hold again,
 * completes nothing: this member no longer commits that assignment, and its next owner starts
 * from the committed offset (the job runs again, at least once). @locality poll thread */
void on_route_done(const kj_route_source *src, int64_t offset, void *opaque) {
    kj_worker *w = opaque;
    kj_part *p = part_lookup(w, NULL, src->topic, src->partition);
    if (!p || p->generation != src->generation) return;
    pthread_mutex_lock(&p->lock);
    kj_offset_tracker_complete(p->tracker, offset);
    pthread_mutex_unlock(&p->lock);
}

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

void commit_offsets(kj_worker *w, bool sync) {
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
void on_offset_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
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

/* Crash-loop guard, on assignment (crash_guard.h): read the previous owner's mark, plan careful
 * mode, and hold the partition (arming) until our own "live" mark is acknowledged, so a crash in
 * its very first job is on record. `found` is what the committed lookup returned for it.
 * Without an absolute start offset (no commit, and the low watermark unknown) the partition is
 * left unguarded this time. @locality poll thread, in the rebalance callback */
void arm_crash_guard(kj_worker *w, rd_kafka_t *rk, kj_part *p,
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

/* Careful mode: put "probe:X:n" on record, synchronously, before the job at X runs alone. A
 * failed commit is logged and the job runs anyway (the guard then misses this crash, never a
 * job). @locality worker thread, in run_batch */
void crash_probe_commit(kj_worker *w, kj_part *part, const kj_crash_meta *mark) {
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
void crash_probe_done(kj_part *part, int64_t offset) {
    kj_crash_meta live = {.kind = KJ_CRASH_META_LIVE};
    pthread_mutex_lock(&part->lock);
    kj_crash_meta_format(&live, part->meta, sizeof(part->meta));
    pthread_mutex_unlock(&part->lock);
    if (part->crash.suspect == offset) part->crash.suspect = -1;
}
