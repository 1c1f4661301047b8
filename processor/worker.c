/*
 * worker.c — the worker runtime's poll thread: construction (consumer, topics, group protocol
 * and its fallback), the poll loop (kj_worker_run) and its intake (handle_message: records to
 * their lanes, pauses, offset resets), the periodic tick (resumes, commits, lag, the circuit
 * breaker and the stall guard) and shutdown. The design (threads, ordering, commit rule,
 * back-pressure, resets, shutdown) is stated in worker.h; the worker's other concerns are in
 * worker_partitions.c, worker_commits.c, worker_rebalance.c and job_pipeline.c
 * (worker_internal.h lists them).
 */
#include "processor/worker.h"

#include "processor/worker_internal.h"
#include "processor/allocator.h"

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

/* A partition's share of batch.max_pending_bytes: the bound over the partitions assigned. */
static int64_t fair_share(kj_worker *w) {
    int n = atomic_load(&w->assigned);
    return w->cfg->batch_max_pending_bytes / (n > 0 ? n : 1);
}

/* How far ahead a ladder partition reads: an eighth of its step's delay, at most
 * KJ_LADDER_READ_AHEAD_MAX_MS (a long step, minutes, would otherwise fill the read-ahead budget
 * with copies due long after the short steps' ones). */
#define KJ_LADDER_READ_AHEAD_DIVISOR 8
#define KJ_LADDER_READ_AHEAD_MAX_MS  5000

/* How far ahead ladder partition @p p reads (ms): see ladder_reads_ahead */
static int64_t ladder_read_ahead_ms(const kj_part *p) {
    int64_t ahead = p->step_delay_ms / KJ_LADDER_READ_AHEAD_DIVISOR;
    return ahead > KJ_LADDER_READ_AHEAD_MAX_MS ? KJ_LADDER_READ_AHEAD_MAX_MS : ahead;
}

/* Whether ladder partition @p p keeps fetching after a record due at @p not_before (engine
 * clock ms, read at @p now): yes when it is due now, or due within its read-ahead (an eighth of
 * its step's delay, at most KJ_LADDER_READ_AHEAD_MAX_MS) while the ladder records held
 * process-wide stay below half of batch.max_pending_bytes. Otherwise the partition pauses until
 * that record is due.
 * Why read ahead: a pause drops what librdkafka has prefetched for the partition, and a resume
 * fetches again from the record after the pausing one. A ladder step fed without pause holds
 * about a step's delay of copies not yet due; pausing at the first of them and resuming when it
 * comes due fetched them all again at every tick (20 ms): with a 1 s step, each copy about 50
 * times (seen on Kafka 4.1.1: thousands of prefetched copies dropped per cycle). Copies come due
 * a grain at a time (kj_ladder_grain_ms: a tenth of the step, at most 1 s), so for steps up to
 * 10 s reading ahead an eighth keeps the next grain's copies (a cycle about two grains long);
 * longer steps read 1.25-5 grains ahead.
 * Why no further (it was half the step): the price is memory beyond what the bound counts. A
 * held record keeps librdkafka's whole fetch response alive (its payload points into it), and
 * a ladder partition that follows its step's tail receives its copies a few at a time, in small
 * responses that carry other partitions' records too: each copy held pins far more than its own
 * bytes, for as long as it is held. At 128 partitions on Kafka with 10 % of 2 M jobs retried
 * (1 s step) an eighth peaked well below half a step, at the same CPU per job and bytes
 * received (bench/RESULTS.md, "How far ahead the ladder reads"). Resuming a little before the
 * pausing record is due (so the rest of its grain, fetched by then, runs in its batch rather
 * than one tick later) was tried and not kept: it moved the horizon too, so the next grain fell
 * outside it and a cycle became one grain long, +20 % CPU per job. The half of the bound left over
 * keeps runnable records from being throttled by copies that are waiting; the budget is
 * deliberately not shared out per partition. @locality poll thread */
static bool ladder_reads_ahead(kj_worker *w, const kj_part *p, int64_t not_before, int64_t now) {
    if (not_before <= now) return true;
    if (not_before - now > ladder_read_ahead_ms(p)) return false;
    return atomic_load_explicit(&w->ladder_bytes, memory_order_relaxed) <
           w->cfg->batch_max_pending_bytes / 2;
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
    errno = 0; /* a re-delivery fails without setting it: only ENOMEM from this call counts */
    int added = kj_offset_tracker_add(p->tracker, msg->offset);
    int add_errno = added ? errno : 0; /* a success may leave errno set */
    if (p->nlanes > 1) held = kj_offset_tracker_held(p->tracker);
    pthread_mutex_unlock(&p->lock);
    if (add_errno == ENOMEM) {
        /* dropping the record would let the offsets after it commit past it: stop instead, so
         * the next owner of the partition runs it from the committed offset */
        kj_log(KJ_LOG_ERROR, "out of memory tracking a record's offset: exiting", "{s:s,s:i,s:I}",
               "topic", p->topic, "partition", p->partition, "offset", (json_int_t)msg->offset);
        abort();
    }
    if (added != 0) { /* at or below an offset already taken: a re-delivery after pause */
        rd_kafka_message_destroy(msg);
        return;
    }
    if (atomic_load(&p->op_hold)) {
        /* an operator paused it and this record was fetched before the pause took: it is not
         * run (its offset stays uncompleted, so nothing commits past it) and is fetched again
         * when the partition is resumed */
        atomic_store(&p->needs_rewind, true);
        rd_kafka_message_destroy(msg);
        if (!p->paused) pause_part(w, p, false);
        return;
    }
    int64_t not_before = 0, now = 0;
    if (p->role == KJ_TOPIC_RETRY) {
        /* Held until its not-before, but never longer than the step's delay (plus its grain)
         * after it was written: release times then follow offsets, so no record waits behind a
         * later-due one. Retries come due on the step's grain, so those due within one grain
         * run as one batch; a scheduled copy (attempt 0) to the millisecond. Released early (a
         * longer per-job delay), it hops instead of running (run_batch); an invalid header releases
         * it at once, to be dead-lettered. */
        rd_kafka_headers_t *hdrs = NULL;
        int64_t nb;
        now = kj_now_ms();
        rd_kafka_message_headers(msg, &hdrs);
        if (kj_control_not_before(hdrs, now, &nb) == 0) /* hdrs may be NULL: none */
            not_before = kj_control_hold_until(nb, rd_kafka_message_timestamp(msg, NULL), now,
                                               p->step_delay_ms,
                                               kj_ladder_release_grain_ms(hdrs, p->step_delay_ms));
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
    int64_t bytes = record_bytes(msg); /* read before the push: a worker may free it at once */
    size_t pending = kj_engine_push(vl->lane, msg, not_before > 0 ? not_before : 0);
    if (pending == 0) { /* out of memory: the offset stays uncommittable; stop fetching it */
        kj_log(KJ_LOG_ERROR, "cannot queue job (out of memory)", "{s:s,s:i}", "topic", p->topic,
               "partition", p->partition);
        rd_kafka_message_destroy(msg);
        if (!p->paused) pause_part(w, p, false);
        return;
    }
    /* The process-wide byte bound pauses the partition a record arrives on while the total is
     * at the bound and the partition holds its fair share (the bound over the partitions
     * assigned) or more: every partition may always hold its share, so records that cannot run
     * yet (a ladder's parked copies, not due for minutes) filling the bound do not starve the
     * others, and the total stays below twice the bound (plus the few records librdkafka hands
     * out before a pause takes effect). The tick resumes it once the total is down to half or
     * it holds less than its share.
     * A ladder record not due within the read-ahead (ladder_reads_ahead) pauses its partition
     * until it is due (nothing behind it could run sooner) — unless parked copies have lanes of
     * their own there (lane_for): those behind it may be due sooner, so it keeps fetching,
     * bounded by batch.max_pending */
    if (p->role == KJ_TOPIC_RETRY)
        atomic_fetch_add_explicit(&w->ladder_bytes, bytes, memory_order_relaxed);
    int64_t own = bytes + atomic_fetch_add_explicit(&p->held_bytes, bytes, memory_order_relaxed);
    bytes += atomic_fetch_add_explicit(&w->pending_bytes, bytes, memory_order_relaxed);
    bool parked_lanes = p->role == KJ_TOPIC_RETRY && p->nlanes > 1;
    if (!p->paused && ((p->nlanes > 1 ? held : pending) >= (size_t)w->cfg->batch_max_pending ||
                       (bytes >= w->cfg->batch_max_pending_bytes && own >= fair_share(w))))
        pause_part(w, p, false);
    else if (!p->paused && !parked_lanes && not_before > 0 &&
             !ladder_reads_ahead(w, p, not_before, now)) {
        pause_part(w, p, true);
        p->delay_until = not_before;
    }
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
            size_t n = kj_engine_lane_discard_pending(lane, discard_message, p);
            if (n == 0) continue;
            atomic_store(&p->needs_rewind, true);
            atomic_fetch_add(&w->jobs_skipped, (long long)n);
            kj_flow_forget_lane(w->flow, lane, false);
        }
    }
}

static void rewind_and_resume_all(kj_worker *w) {
    for (kj_part *p = w->parts; p; p = p->next) {
        part_rewind(w, p);
        /* an arming (or held) partition stays paused: the tick resumes it once armed; one an
         * operator paused stays paused until resumed (control_tick) */
        if (!part_held(p) && !atomic_load(&p->op_hold)) resume_part(w, p);
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

/* ---- the operator's controls (processor/group_control.h) ----------------------------------- */

/* Every assigned partition held exactly while the control state pauses it (its own key or its
 * topic's). @locality poll thread */
static void control_sync(kj_worker *w) {
    kj_ctl_state *state = kj_ctl_follower_state(w->control);
    for (kj_part *p = w->parts; p; p = p->next) {
        if (!p->lanes) continue;
        const kj_ctl_pause *why = kj_ctl_state_paused(state, p->topic, p->partition);
        if (why && !atomic_load(&p->op_hold))
            part_hold(w, p, why);
        else if (!why && atomic_load(&p->op_hold))
            part_release(w, p);
    }
}

/* A control record read live. A breaker resume acts like SIGUSR1 — on a breaker that is open
 * and opened before the record was written (its "at", with KJ_CTL_CLOCK_SKEW_MS for hosts whose
 * clocks differ): a resume meant for an earlier trip, read late, does not close a new one. */
static void on_control(kj_ctl_change change, const kj_ctl_key *k, const kj_ctl_value *v,
                       void *opaque) {
    kj_worker *w = opaque;
    if (change != KJ_CTL_BREAKER) { /* applied by control_sync (one line per partition) */
        kj_log(KJ_LOG_DEBUG, change == KJ_CTL_PAUSED ? "control: pause" : "control: resume",
               "{s:s,s:i}", "topic", k->topic, "partition", (int)k->partition);
        return;
    }
    if (!atomic_load(&w->breaker_open)) {
        kj_log(KJ_LOG_INFO, "control: breaker resume ignored (the circuit breaker is not open)",
               "{s:s,s:I}", "by", v->by, "at", (json_int_t)v->at);
        return;
    }
    int64_t opened = w->breaker_handled ? w->breaker_opened_at : kj_now_ms();
    if (v->at + KJ_CTL_CLOCK_SKEW_MS < opened) {
        kj_log(KJ_LOG_INFO,
               "control: breaker resume ignored (written before the circuit breaker opened)",
               "{s:s,s:I,s:I}", "by", v->by, "at", (json_int_t)v->at, "opened_at",
               (json_int_t)opened);
        return;
    }
    kj_log(KJ_LOG_WARN, "control: circuit breaker resume requested by operator", "{s:s,s:I}", "by",
           v->by, "at", (json_int_t)v->at);
    kj_worker_request_breaker_reset(w);
}

/* Follow the control topic (without waiting) and apply what changed. @locality poll thread */
static void control_tick(kj_worker *w, int64_t now) {
    (void)now;
    if (!w->control) return;
    if (kj_ctl_follower_poll(w->control, 1000, on_control, w) > 0) control_sync(w);
}

/* Newly assigned partitions get the control state at once, before a record of theirs is
 * handed out (the assignment resumed them: hold them again). @locality poll thread, in the
 * rebalance callback */
void control_assigned(kj_worker *w, const rd_kafka_topic_partition_list_t *parts) {
    if (!w->control) return;
    kj_ctl_state *state = kj_ctl_follower_state(w->control);
    for (int i = 0; i < parts->cnt; i++) {
        kj_part *p = part_lookup(w, NULL, parts->elems[i].topic, parts->elems[i].partition);
        if (!p || !p->lanes) continue;
        const kj_ctl_pause *why = kj_ctl_state_paused(state, p->topic, p->partition);
        if (atomic_load(&p->op_hold) && why)
            pause_part(w, p, false);
        else if (why)
            part_hold(w, p, why);
        else if (atomic_load(&p->op_hold))
            part_release(w, p);
    }
}

/* The worker's state as its status record names it (docs/console.md). */
static const char *status_state(kj_worker *w) {
    if (atomic_load(&w->draining)) return "draining";
    if (atomic_load(&w->breaker_open)) return "breaker_open";
    if (w->stall_detected_at) return "stalled";
    if (!atomic_load(&w->joined)) return "joining";
    return "running";
}

/* Queue a status record (processor/status_report.h); never blocks.
 * @locality poll thread (walks w->parts) */
static void publish_status(kj_worker *w, int64_t now) {
    size_t n = 0;
    for (kj_part *p = w->parts; p; p = p->next)
        n++;
    kj_status_part *parts = calloc(n ? n : 1, sizeof(*parts));
    if (!parts) return;
    n = 0;
    for (kj_part *p = w->parts; p; p = p->next)
        parts[n++] = (kj_status_part){
            .topic = p->topic, .partition = p->partition, .paused = atomic_load(&p->op_hold)};
    kj_status_input in = {.state = status_state(w), .parts = parts, .part_count = n};
    kj_metrics_summary_get(&in.summary);
    in.summary.in_flight = (double)kj_engine_in_flight_items(w->engine);
    json_t *errors = kj_status_errors_json();
    in.errors = errors;
    kj_status_reporter_publish(w->status, &in, now);
    json_decref(errors);
    free(parts);
}

static void tick(kj_worker *w, int64_t now, int64_t *last_commit, int64_t *last_lag,
                 int64_t *last_progress) {
    size_t low = (size_t)w->cfg->batch_max_pending / 2;
    bool bytes_high = atomic_load_explicit(&w->pending_bytes, memory_order_relaxed) >
                      w->cfg->batch_max_pending_bytes / 2;
    int64_t share = fair_share(w);
    drop_wake_answers(w);
    kj_key_order_tick(w->key_order, key_order_ready, w);
    control_tick(w, now);
    bool held = breaker_tick(w, now);
    if (w->stall_detected_at) {
        held = true;
        *last_commit = now; /* nothing is committed while the group may have moved on */
    }
    char why[96];
    kj_metrics_ready_set(kj_worker_ready(w, why, sizeof(why))); /* kjobs_ready mirrors /readyz */
    kj_metrics_held_bytes_set(atomic_load_explicit(&w->pending_bytes, memory_order_relaxed));
    kj_metrics_copy_bytes_set(kj_router_held_bytes(w->router));
    for (kj_part *p = w->parts; p; p = p->next) /* an arming mark unanswered for 3 s: again */
        if (p->arming && p->meta_sent[0] && now - p->arm_sent_at > 3000) p->meta_sent[0] = '\0';
    for (kj_part *p = w->parts; p; p = p->next)
        if (p->to_keys && p->lanes) part_to_key_lanes(p);
    retired_tick(w);
    for (kj_part *p = w->parts; p && !held; p = p->next) {
        if (!p->op_rewind || atomic_load(&p->op_hold) || !p->lanes) continue;
        /* resumed by the operator: restart at its first uncompleted offset once none of its
         * batches runs any more (what was skipped or dropped while paused runs then) */
        bool idle = true;
        for (int i = 0; i < p->nlanes; i++)
            idle &= kj_engine_lane_idle(p->lanes[i].lane);
        if (!idle) continue;
        p->op_rewind = false;
        part_rewind(w, p);
        if (!part_held(p) && !p->to_keys) resume_part(w, p);
    }
    for (kj_part *p = w->parts; p && !held; p = p->next) {
        if (!p->paused || !p->lanes || part_held(p) || p->to_keys || atomic_load(&p->op_hold) ||
            p->op_rewind)
            continue;
        size_t pending = part_load(p);
        if (pending > low || (bytes_high && atomic_load(&p->held_bytes) >= share)) continue;
        if (p->paused_for_delay &&
            (p->delay_until ? p->delay_until : part_head_not_before(p)) > now)
            continue;
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
            stuck_check(w, p, now, pos, hi, held || atomic_load(&p->op_hold));
        }
        *last_lag = now;
    }
    if (w->status && kj_status_reporter_due(w->status, now)) publish_status(w, now);
    if (now - *last_progress >= KJ_PROGRESS_INTERVAL_MS) {
        kj_log(KJ_LOG_INFO, "progress", "{s:I,s:I,s:I,s:i,s:I}", "ok",
               (json_int_t)atomic_load(&w->jobs_ok), "retried",
               (json_int_t)atomic_load(&w->jobs_retried), "dead_lettered",
               (json_int_t)atomic_load(&w->jobs_dead), "partitions", atomic_load(&w->assigned),
               "in_flight", (json_int_t)kj_engine_in_flight_items(w->engine));
        *last_progress = now;
    }
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
    w->subscribed = true;
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
    w->subscribed = false;
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
    char allocator[128];
    kj_allocator_describe(allocator, sizeof(allocator));
    kj_log(KJ_LOG_INFO, "worker started", "{s:s,s:s,s:i,s:i,s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:i}",
           "group", w->cfg->group, "topic", w->cfg->main_topic, "workers", w->cfg->workers,
           "batch_max_jobs", w->cfg->batch_max_jobs, "retry_steps", (int)w->cfg->retry_delay_count,
           "librdkafka", rd_kafka_version_str(), "allocator", allocator, "group_protocol",
           w->protocol.kip848 ? "consumer" : "classic", "group_protocol_why", w->protocol.why,
           "batch_ordering", w->cfg->batch_ordering, "retry_ordering", w->cfg->retry_ordering,
           "lanes_per_main_partition", kj_config_key_lanes(w->cfg));

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
    if (w->status) publish_status(w, kj_now_ms()); /* "draining" */
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
    if (exit_code == 0 && !w->fatal) { /* within what is left of the grace (>= 0.5 s, <= 5 s):
                                        * a broker that is gone does not add 5 s to the exit */
        int64_t left = deadline - kj_now_ms();
        kj_status_reporter_tombstone(w->status, (int)(left < 500    ? 500
                                                      : left > 5000 ? 5000
                                                                    : left));
    }
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

/* How long a broker may hold an empty Fetch (fetch.wait.max.ms) unless kafka.properties sets it;
 * librdkafka's default is 500. librdkafka keeps one Fetch in flight per broker, built from the
 * partitions fetchable at that moment: a partition whose prefetch queue is full (or that kjobs
 * paused) is left out. With a backlog the queue is full most of the time, and when a Fetch
 * happens to go out while every partition with records is left out, it carries only idle ones
 * (an empty ladder step, a drained partition); the broker holds it for the whole wait, and the
 * partitions with records cannot be fetched before it returns: nothing runs for that long.
 * Seen on Kafka 4.1.1 (librdkafka fetch debug): "Fetch 1/1/32" of one empty retry partition
 * sent while the queue was at 1220/1024 KiB, the queue drained within milliseconds, and no job
 * ran for the next 490-500 ms; in a 400 k-job drain that one stall halved the rate. A shorter
 * wait bounds the stall at the cost of more empty Fetches when idle (10 a second per broker
 * instead of 2). bench/RESULTS.md, "The empty-Fetch stall". */
#define KJ_FETCH_WAIT_MAX_MS "100"

rd_kafka_conf_t *kj_worker_consumer_conf(const kj_config *cfg, bool kip848, char *errstr,
                                         size_t errstr_size) {
    rd_kafka_conf_t *conf = kj_kafka_group_consumer_conf_new(cfg, kip848, errstr, errstr_size);
    if (!conf) return NULL;
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
                           errstr_size)) ||
        (!kj_kafka_prop_value(cfg, "fetch.wait.max.ms") &&
         kj_kafka_conf_set(conf, "fetch.wait.max.ms", KJ_FETCH_WAIT_MAX_MS, errstr, errstr_size)) ||
        kj_kafka_worker_sizes(cfg, conf, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
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
                return NULL;
            }
        }
    }
    return conf;
}

/* The group consumer, for the protocol in w->protocol (kj_worker_consumer_conf), with the
 * worker's callbacks. Returns 0, or -1 with errstr.
 * @locality poll thread (construction, and the one fallback to classic in kj_worker_run) */
static int consumer_new(kj_worker *w, char *errstr, size_t errstr_size) {
    const kj_config *cfg = w->cfg;
    bool kip848 = w->protocol.kip848;
    rd_kafka_conf_t *conf = kj_worker_consumer_conf(cfg, kip848, errstr, errstr_size);
    if (!conf) return -1;
    /* KIP-848 keeps the session timeout broker-side: Kafka's default, or embedded_broker.c's */
    w->session_timeout_ms = !kip848 ? kj_kafka_conf_get_ll(conf, "session.timeout.ms", 45000)
                            : cfg->embedded_broker ? 6000
                                                   : 45000;
    /* librdkafka's default max.poll.interval.ms (300000), halved */
    w->revoke_wait_ms = kj_kafka_conf_get_ll(conf, "max.poll.interval.ms", 300000) / 2;
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

/* The operator's controls, read to the end before the worker joins its group, so a restarted
 * worker never runs a job of a partition paused meanwhile. Without the control topic the worker
 * runs without controls (as without its status topic), and says so; a topic that exists but
 * cannot be read in time stops the start. Returns 0, or -1 with errstr. */
#define KJ_CONTROL_LOAD_MS 30000
static int control_load(kj_worker *w, char *errstr, size_t errstr_size) {
    if (!(w->control = kj_ctl_follower_new(w->cfg, errstr, errstr_size))) return -1;
    char *topic = kj_topic_control(w->cfg);
    int rc =
        kj_ctl_follower_load(w->control, kj_now_ms() + KJ_CONTROL_LOAD_MS, errstr, errstr_size);
    if (rc == 1) {
        kj_log(KJ_LOG_WARN,
               "control topic missing: operator pauses and breaker resumes are not obeyed by "
               "this worker (create it with `kjobs topics --create`)",
               "{s:s}", "topic", topic);
        kj_ctl_follower_free(w->control);
        w->control = NULL;
    } else if (rc == 0) {
        size_t n;
        kj_ctl_state_list(kj_ctl_follower_state(w->control), &n);
        kj_log(KJ_LOG_INFO, "operator controls read", "{s:s,s:i}", "topic", topic, "pauses",
               (int)n);
    }
    free(topic);
    return rc < 0 ? -1 : 0;
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
    if (control_load(w, errstr, errstr_size) != 0) goto fail;
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

    bool status_failed;
    w->status = kj_status_reporter_new(cfg, errstr, errstr_size, &status_failed);
    if (status_failed) goto fail;

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
    kj_worker_free(w); /* destroys the never-subscribed consumer */
    return NULL;
}

bool kj_worker_handlers_running(const kj_worker *w) {
    return w && w->shutdown_timed_out;
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
    /* no thread polls the router while the handler threads are joined: a copy routed now
     * waits for neither room nor queue space (it goes to the re-send list kj_router_free
     * flushes) */
    if (w->router) kj_router_stop_waiting(w->router);
    if (w->engine) kj_engine_destroy(w->engine);
    kj_key_order_free(w->key_order);      /* after the handler threads are joined */
    kj_deadline_watch_stop(w->deadlines); /* after the handler threads are joined */
    if (w->router) kj_router_free(w->router);
    kj_status_reporter_free(w->status);
    kj_ctl_follower_free(w->control);
    while (w->retired) { /* no batch runs and no copy completes any more */
        kj_part *r = w->retired;
        w->retired = r->retired_next;
        part_free(r);
    }
    kj_flow_free(w->flow);
    /* A consumer that never subscribed (kj_worker_new or the start failed, subscribe() was
     * refused) has nothing to leave: destroyed at once, without the close that would wait for
     * the coordinator. Left running, its threads outlived exit(1) and crashed in OpenSSL after
     * its exit handlers had freed its locks (a SIGSEGV on "worker failed to start", 2-6 in 25
     * runs against real Kafka: test_retry_ordering's refused ladder). A consumer that could not
     * leave the group still has a close in flight that waits for the coordinator; destroying it
     * would wait too: it is left to the process's end. */
    if (w->consumer && !w->subscribed)
        rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    else if (w->consumer && w->consumer_closed)
        rd_kafka_destroy(w->consumer);
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
