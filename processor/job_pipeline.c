/*
 * job_pipeline.c — the batch path, on the engine's worker threads: one batch of one lane from
 * decode to outcome (run_batch). In order: the holds (breaker, stall, crash-guard arming, key
 * order), the control headers (ladder due times, kjobs-run-at), decoding (with a Schema
 * Registry outage held, not failed), flow control, careful mode, the handler call under its time
 * limit, and each job's outcome: completed, routed to the ladder or dead-lettered by the retry
 * policy (processor/retry_policy.h) through the router. Types: worker_internal.h; design:
 * worker.h.
 */
#include "processor/worker_internal.h"

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
    bool in_place;          /* failed, to be tried again in place: back in its lane, not routed */
    int64_t origin;         /* keyed only: its main-topic offset */
    kj_chain_copy behind;   /* parked only: the copy it waits behind */
    int64_t due_ms;         /* scheduled only: its kjobs-run-at */
    kj_control ctl;         /* ladder only, validated */
    kj_job_outcome outcome; /* where it went: ok, retry or dead-lettered */
    /* the record's header list (read_control), NULL none: read once, for the router too */
    rd_kafka_headers_t *headers;
    int flow;         /* flow-control limit of its type, -1 none */
    bool flow_slot;   /* this job took its type's concurrency slot for the batch */
    int flow_release; /* limit index + 1 whose slot is given back after this job; 0 none */
    /* failed jobs only: the retry policy's decision, as routed */
    kj_retry_decision decision;
} batch_slot;

/* Per worker thread, grown to the largest batch seen, freed when the thread exits (a
 * pthread key destructor: _Thread_local storage would leak the buffers). */
typedef struct batch_scratch {
    batch_slot *slots;
    const kjobs_job_t **jobs;
    kjobs_result_t **results;
    void **again; /* the records tried again in place (in_place_pick) */
    size_t capacity;
} batch_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    batch_scratch *sc = p;
    free(sc->slots);
    free(sc->jobs);
    free(sc->results);
    free(sc->again);
    free(sc);
}

static void scratch_key_create(void) {
    pthread_key_create(&scratch_key, scratch_free);
}

/* Router callback: a ladder copy the key chain counted became a dead letter after it was
 * queued (the broker refused it as too large): forget it, or its key would wait for it until
 * the next rebalance. Any thread (router.h). */
void key_copy_diverted(int32_t partition, const void *key, size_t key_len,
                       const rd_kafka_headers_t *headers, int step, void *opaque) {
    kj_worker *w = opaque;
    kj_control ctl;
    if (partition < 0 || kj_control_parse_ladder(headers, kj_now_ms(), &ctl) != 0 ||
        ctl.original_partition != partition)
        return;
    kj_key_order_forget(w->key_order, partition, key, key_len, ctl.original_offset, step);
}

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
    s->headers = hdrs;
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
        free(sc->again);
        sc->slots = calloc(count, sizeof(*sc->slots));
        sc->jobs = calloc(count, sizeof(*sc->jobs));
        sc->results = calloc(count, sizeof(*sc->results));
        sc->again = calloc(count, sizeof(*sc->again));
        sc->capacity = count;
    }
    return sc;
}

/* Feed a finished batch's outcomes to the breaker, in order. @locality worker thread */
static void record_breaker(kj_worker *w, const batch_slot *slots, size_t count) {
    pthread_mutex_lock(&w->breaker_lock);
    for (size_t i = 0; i < count; i++) {
        if (slots[i].hop || slots[i].carried || slots[i].in_place ||
            slots[i].outcome == KJ_JOB_SCHEDULED || slots[i].outcome == KJ_JOB_PARKED)
            continue; /* not run, or not finished */
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
        release_message(vl->part, items[i]);
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

/* A batch whose head is a job tried again in place runs only the in-place jobs at its head:
 * the rest goes back to the lane's head, due now but behind them (in_place_requeue puts a job
 * failing again ahead of it), so the jobs behind an in-place retry wait until it succeeds or
 * leaves for the ladder or the DLQ — with retry.ordering = "key" the later jobs of its key
 * too. An in-place job anywhere in the batch whose try is not due yet (a lane wake makes
 * requeued items due at once: kj_engine_lane_wake; a rewind after an operator's pause or a
 * breaker skip fetches records before it again) sends itself and everything behind it back
 * until then. Returns the batch's new count, 0 when nothing runs now.
 * @locality worker thread, lane's own callback */
static size_t in_place_cut(kj_worker *w, kj_lane *lane, kj_vlane *vl, kj_part *part, void **items,
                           size_t count) {
    size_t keep = count;
    int64_t due = 0, now = kj_engine_now_ms(w->engine);
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count && kj_in_place_count(&part->in_place) > 0; i++) {
        const kj_in_place_entry *e =
            kj_in_place_find(&part->in_place, ((rd_kafka_message_t *)items[i])->offset);
        bool head_run = keep != count; /* items[0..i) are in-place jobs due now */
        if (e && e->due_ms > now) {    /* not due: back with what follows it */
            keep = i;
            due = e->due_ms;
            break;
        }
        if (e && (i == 0 || head_run)) {
            keep = i + 1; /* an in-place run at the head: it alone, so far */
            continue;
        }
        if (head_run) break; /* the first job after the head's in-place run: cut here */
    }
    pthread_mutex_unlock(&part->lock);
    if (keep == count) return count;
    if (kj_engine_lane_requeue(lane, items + keep, count - keep, due) != 0)
        skip_batch(w, vl, items + keep, count - keep); /* no memory: rewind instead */
    return keep;
}

/* A job back from an in-place retry is its next attempt: adds the tries so far to the attempt
 * of each job about to run. @locality worker thread */
static void in_place_attempts(kj_part *part, batch_slot *slots, size_t count) {
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count && kj_in_place_count(&part->in_place) > 0; i++) {
        const kj_in_place_entry *e =
            slots[i].handler ? kj_in_place_find(&part->in_place, slots[i].job.msg->offset) : NULL;
        if (e) slots[i].job.attempt += e->tries;
    }
    pthread_mutex_unlock(&part->lock);
}

/* Which failed jobs of a finished batch are tried again in place (retry.in_place_attempts):
 * those whose handler asked for a retry (a timeout or a permanent failure never is) with no
 * delay of its own or one no longer than retry.in_place_delay, tried fewer times than the limit
 * so far and short of retry.max_attempts, while the worker is not draining and the partition
 * not being revoked (then they go to the ladder as ever). Marks them (in_place) and records the
 * try and its due time in part->in_place; every other job of the batch has finished here and
 * leaves it. Returns how many were marked. @locality worker thread */
static size_t in_place_pick(kj_worker *w, kj_part *part, batch_slot *slots, size_t count,
                            bool careful) {
    const kj_config *cfg = w->cfg;
    bool open = cfg->retry_in_place_attempts > 0 && !careful && !atomic_load(&w->draining) &&
                !atomic_load(&part->revoking);
    int64_t due = kj_engine_now_ms(w->engine) + cfg->retry_in_place_delay_ms;
    size_t marked = 0;
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count; i++) {
        batch_slot *s = &slots[i];
        s->in_place = false;
        if (!open && kj_in_place_count(&part->in_place) == 0) continue;
        const kj_in_place_entry *known = kj_in_place_find(&part->in_place, s->job.msg->offset);
        int tries = known ? known->tries : 0;
        bool again = open && s->handler && s->result.outcome == KJ_OUTCOME_RETRY && !s->hop &&
                     !s->scheduled && !s->parked && !s->carried &&
                     s->result.delay_ms <= cfg->retry_in_place_delay_ms &&
                     tries < cfg->retry_in_place_attempts &&
                     s->job.attempt < cfg->retry_max_attempts;
        kj_in_place_entry next = {.offset = s->job.msg->offset, .tries = tries + 1, .due_ms = due};
        if (again && kj_in_place_put(&part->in_place, &next) == 0) {
            s->in_place = true;
            marked++;
        } else if (known) { /* finished, or off to the ladder (or no memory): forgotten */
            kj_in_place_remove(&part->in_place, s->job.msg->offset);
        }
    }
    pthread_mutex_unlock(&part->lock);
    return marked;
}

/* The jobs in_place_pick marked go back to the head of their lane, due after
 * retry.in_place_delay; the lane (its partition, or its key lane) waits for them in order,
 * holding no thread. Returns how many went back: all of them, or 0 when the lane's queue could
 * not grow (then they are unmarked and go to the ladder). Logged before the requeue: from then
 * on the records are the engine's (an operator's pause may discard them at once).
 * @locality worker thread */
static size_t in_place_requeue(kj_worker *w, kj_lane *lane, kj_part *part, batch_scratch *scratch,
                               batch_slot *slots, size_t count) {
    size_t n = 0;
    bool debug = kj_log_get_level() <= KJ_LOG_DEBUG;
    for (size_t i = 0; i < count; i++) {
        if (!slots[i].in_place) continue;
        scratch->again[n++] = (void *)slots[i].job.msg;
        if (debug)
            kj_log(KJ_LOG_DEBUG, "job failed, retried in place", "{s:s,s:s,s:s,s:i,s:I,s:i,s:s}",
                   "id", slots[i].job.record.id, "type", slots[i].job.record.type, "topic",
                   part->topic, "partition", part->partition, "offset",
                   (json_int_t)slots[i].job.msg->offset, "attempt", slots[i].job.attempt, "error",
                   slots[i].result.error);
    }
    /* due from now, after the lines above: a try never follows its "retried in place" line by
     * less than the delay (in_place_pick's earlier due, which a rewind's in_place_cut reads, is
     * moved up to it; both clocks count whole milliseconds) */
    int64_t due = kj_engine_now_ms(w->engine) + w->cfg->retry_in_place_delay_ms;
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count; i++) {
        kj_in_place_entry *e =
            slots[i].in_place ? kj_in_place_find(&part->in_place, slots[i].job.msg->offset) : NULL;
        if (e) e->due_ms = due;
    }
    pthread_mutex_unlock(&part->lock);
    if (kj_engine_lane_requeue(lane, scratch->again, n, due) == 0) {
        kj_metrics_in_flight_add(-(int64_t)n);
        kj_metrics_retried_in_place(n);
        return n;
    }
    kj_log(KJ_LOG_WARN, "no memory to retry in place: failed jobs go to the ladder",
           "{s:s,s:i,s:I}", "topic", part->topic, "partition", part->partition, "jobs",
           (json_int_t)n);
    pthread_mutex_lock(&part->lock);
    for (size_t i = 0; i < count; i++) {
        if (!slots[i].in_place) continue;
        slots[i].in_place = false;
        kj_in_place_remove(&part->in_place, slots[i].job.msg->offset);
    }
    pthread_mutex_unlock(&part->lock);
    return 0;
}

void run_batch(kj_lane *lane, void *lane_opaque, void **items, size_t count, void *opaque) {
    kj_vlane *vl = lane_opaque;
    kj_part *part = vl->part;
    kj_worker *w = opaque;
    /* what the router hands back with each copy's acknowledgement (generation: set before the
     * partition's first record was pushed, never changed) */
    const kj_route_source source = {part->topic, part->partition, part->generation};
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
    if (atomic_load(&part->op_hold)) {
        /* an operator paused the partition (group_control.h): not run; fetched again, from
         * the first uncompleted offset, when it is resumed */
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
    if (w->cfg->retry_in_place_attempts > 0) {
        count = in_place_cut(w, lane, vl, part, items, count);
        if (count == 0) return; /* an in-place try not due yet: all of it went back */
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
    if (w->cfg->retry_in_place_attempts > 0) in_place_attempts(part, slots, count);
    kj_metrics_batch_size(count);
    /* a concurrency slot is given back after the batch's last job of its type */
    for (size_t k = 0; k < count; k++) {
        if (!slots[k].flow_slot) continue;
        size_t last = k;
        for (size_t m = k + 1; m < count; m++)
            if (slots[m].handler && slots[m].flow == slots[k].flow) last = m;
        slots[last].flow_release = slots[k].flow + 1;
    }

    /* run handlers: per-job ones one by one, per-batch ones over runs of one handler. One clock
     * read per call, the end of a call being the start of the next (CLOCK_MONOTONIC costs ~35 ns
     * here, against ~2 us per job), and the duration series looked up again only when the type
     * changes. */
    const char *duration_type = NULL;
    kj_metric_handle *duration = NULL;
    double start = kj_mono_seconds();
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
        bool limited = h->timeout_ms > 0 && w->deadlines;
        if (!h->job_fn || limited)
            for (size_t k = i; k < j; k++) {
                scratch->jobs[k - i] = &slots[k].job;
                scratch->results[k - i] = &slots[k].result;
            }
        kj_deadline_call limit = {.limit_ms = 0};
        if (limited) { /* the call's limit: per job, times its jobs */
            limit_enter(w, &limit, h->timeout_ms, (const kjobs_job_t *const *)scratch->jobs, j - i);
            start = kj_mono_seconds();
        }
        if (h->job_fn)
            h->job_fn(&slots[i].job, &slots[i].result, h->opaque);
        else
            h->batch_fn((const kjobs_job_t *const *)scratch->jobs, scratch->results, j - i,
                        h->opaque);
        if (limited) limit_leave(w, &limit, h, scratch->results, start);
        double end = kj_mono_seconds();
        const char *type = slots[i].job.record.type;
        if (!duration_type || strcmp(type, duration_type) != 0) {
            duration = kj_metrics_duration_handle(type);
            duration_type = type;
        }
        double per_job = (end - start) / (double)(j - i);
        for (size_t k = i; k < j; k++) {
            kj_histogram_observe(duration, per_job);
            if (slots[k].flow_release) kj_flow_release(w->flow, slots[k].flow_release - 1);
        }
        start = end;
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
            release_message(part, (rd_kafka_message_t *)slots[i].job.msg);
        }
        kj_metrics_in_flight_add(-(int64_t)count);
        return;
    }
    /* failures tried again in place (retry.in_place_attempts) go back to their lane, not on */
    size_t again = in_place_pick(w, part, slots, count, careful);
    if (again) again = in_place_requeue(w, lane, part, scratch, slots, count);
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
        if (s->in_place) continue; /* back in its lane */
        if (s->hop) {
            int step =
                kj_router_hop(w->router, &source, s->job.msg, s->headers, s->ctl.not_before_ms);
            if (s->counted)
                key_move(w, part, key_gen, s, step, s->ctl.not_before_ms, s->ctl.parked);
            kj_log(KJ_LOG_DEBUG, "ladder record not due yet, hopped", "{s:s,s:i,s:I,s:I,s:i}",
                   "topic", part->topic, "partition", part->partition, "offset",
                   (json_int_t)s->job.msg->offset, "not_before", (json_int_t)s->ctl.not_before_ms,
                   "to_step", step);
            continue;
        }
        if (s->parked) {
            int step = kj_router_park(w->router, &source, s->job.msg, s->headers,
                                      s->ladder ? &s->ctl : NULL, s->behind.step,
                                      s->behind.not_before_ms, s->behind.origin);
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
            int step = kj_router_schedule(w->router, &source, s->job.msg, s->headers, s->due_ms,
                                          kj_now_ms());
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
        kj_router_route(w->router, &source, s->job.msg, s->headers, &s->result, &s->decision,
                        origin);
        s->outcome = s->decision.to_dlq ? KJ_JOB_DEAD_LETTERED : KJ_JOB_RETRY;
        key_move(w, part, key_gen, s, s->decision.to_dlq ? 0 : s->decision.step,
                 s->decision.not_before_ms, false);
        /* retries are routine (debug); dead letters need attention (warn) */
        kj_log(s->decision.to_dlq ? KJ_LOG_WARN : KJ_LOG_DEBUG,
               s->decision.to_dlq ? "job failed, dead-lettered" : "job failed, retry routed",
               "{s:s?,s:s,s:s,s:i,s:I,s:i,s:s,s:s,s:I,s:I}", "id",
               s->decoded ? s->job.record.id : NULL, "type", t, "topic", part->topic, "partition",
               part->partition, "offset", (json_int_t)s->job.msg->offset, "attempt", s->job.attempt,
               "class", s->decision.error_class, "error", s->result.error, "failed_at",
               (json_int_t)s->decision.now_ms, "not_before",
               (json_int_t)(s->decision.to_dlq ? s->decision.now_ms : s->decision.not_before_ms));
    }
    /* count runs of one (type, outcome) with one metric lookup */
    for (size_t i = 0; i < count;) {
        if (slots[i].hop || slots[i].carried || slots[i].in_place) {
            i++; /* not run here (carried: counted when it ran), or not finished */
            continue;
        }
        kj_job_outcome outcome = slots[i].outcome;
        const char *type =
            slots[i].decoded ? slots[i].job.record.type : KJ_METRICS_TYPE_UNDECODABLE;
        size_t j = i + 1;
        for (; j < count; j++) {
            const batch_slot *s = &slots[j];
            const char *t = s->decoded ? s->job.record.type : KJ_METRICS_TYPE_UNDECODABLE;
            if (s->hop || s->carried || s->in_place || s->outcome != outcome ||
                strcmp(t, type) != 0)
                break;
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
        if (!slots[i].in_place) release_message(part, (rd_kafka_message_t *)slots[i].job.msg);
    }
    if (careful) crash_probe_done(part, head_offset);
    atomic_fetch_add(&w->jobs_ok, ok);
    atomic_fetch_add(&w->jobs_retried, retried);
    atomic_fetch_add(&w->jobs_dead, dead);
    record_breaker(w, slots, count);
    kj_metrics_in_flight_add(-(int64_t)(count - again));
}
