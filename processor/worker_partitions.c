/*
 * worker_partitions.c — the worker's partition table: one kj_part per assigned topic-partition
 * (found by topic and number), its lanes (key lanes, parked lanes, careful mode's lane 0), its
 * pause state as the poll thread set it, and the retired parts a given-up batch or an
 * unacknowledged copy still refer to. What may hold a partition (part_held) and the log line of
 * one that stopped (stuck_check) are here too. Types: worker_internal.h; design: worker.h.
 */
#include "processor/worker_internal.h"

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

kj_part *part_lookup(kj_worker *w, const rd_kafka_topic_t *rkt, const char *topic,
                     int32_t partition) {
    kj_topic_slot *slot = topic_slot_of(w, rkt, topic);
    if (!slot || partition < 0 || partition >= slot->nparts) return NULL;
    return slot->parts[partition];
}

/* Lanes for the parked copies of a key-ordered ladder partition (lane_for). */
#define PARKED_LANES(w) ((w)->cfg->workers < 8 ? (w)->cfg->workers : 8)

kj_part *part_add(kj_worker *w, const char *topic, int32_t partition) {
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
    p->generation = ++w->generations;
    p->topic = slot->spec.name;
    p->partition = partition;
    p->role = slot->spec.role;
    p->step = slot->spec.step;
    p->step_delay_ms = slot->spec.delay_ms;
    p->committed = -1;
    pthread_mutex_init(&p->lock, NULL);
    p->tracker = kj_offset_tracker_new(64); /* grows with the backlog, shrinks when empty */
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

/* librdkafka's message and op (about 200 bytes on 64-bit) and our queue entry: counted per
 * record so that many tiny records cannot hide from the byte bound. */
#define KJ_RECORD_OVERHEAD 256

int64_t record_bytes(const rd_kafka_message_t *msg) {
    return (int64_t)msg->len + (int64_t)msg->key_len + KJ_RECORD_OVERHEAD;
}

void release_message(kj_part *p, rd_kafka_message_t *msg) {
    int64_t bytes = record_bytes(msg);
    atomic_fetch_sub_explicit(&p->held_bytes, bytes, memory_order_relaxed);
    atomic_fetch_sub_explicit(&p->w->pending_bytes, bytes, memory_order_relaxed);
    if (p->role == KJ_TOPIC_RETRY)
        atomic_fetch_sub_explicit(&p->w->ladder_bytes, bytes, memory_order_relaxed);
    rd_kafka_message_destroy(msg);
}

void discard_message(void *item, void *opaque) {
    release_message(opaque, item);
}

/* Stops and removes every lane of @p p (all stop dispatching first, then each in-flight batch
 * is waited for), giving their undispatched records back; p->lanes is NULL afterwards.
 * @locality poll thread */
void part_remove_lanes(kj_worker *w, kj_part *p) {
    if (!p->lanes) return;
    kj_lane *lanes[p->nlanes];
    for (int i = 0; i < p->nlanes; i++) {
        lanes[i] = p->lanes[i].lane;
        kj_flow_forget_lane(w->flow, lanes[i], true);
    }
    kj_engine_lanes_remove(lanes, (size_t)p->nlanes, discard_message, p);
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
kj_vlane *lane_for(kj_part *p, const rd_kafka_message_t *msg) {
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
bool part_held(kj_part *p) {
    return atomic_load(&p->arming) || atomic_load(&p->held) ||
           (kj_key_order_covers(p->w->key_order, p->partition) &&
            kj_key_order_gen(p->w->key_order, p->partition) == 0);
}

void part_free(kj_part *p) {
    free(p->carried);
    kj_in_place_clear(&p->in_place);
    free(p->lanes);
    free(p->old_lanes);
    kj_offset_tracker_free(p->tracker);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Remove a partition after its lane is drained of in-flight work. @locality poll thread */
void part_remove(kj_worker *w, kj_part *p, bool free_memory) {
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
    if (atomic_exchange(&p->op_hold, false)) /* it goes, and its operator's pause with it */
        kj_metrics_operator_paused_set(--w->op_paused);
    if (free_memory) {
        part_free(p);
        return;
    }
    /* an abandoned batch still runs on it (or the shutdown's grace ran out with its lanes
     * busy): retired, freed by the tick once that batch returned (retired_tick). Routed copies
     * never hold it: their acknowledgements name (topic, partition, generation), not this. */
    p->retired_next = w->retired;
    w->retired = p;
}

/* Releases what retired parts still hold: a partition assigned again while its given-up batch
 * ran here waits for that batch (held), and a retired part nothing references any more is
 * freed. @locality poll thread */
void retired_tick(kj_worker *w) {
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
    if (!w->retired) return;
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

void pause_part(kj_worker *w, kj_part *p, bool for_delay) {
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

void resume_part(kj_worker *w, kj_part *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_resume_partitions(w->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    p->paused = p->paused_for_delay = false;
    p->delay_until = 0;
    kj_log(KJ_LOG_DEBUG, "partition resumed", "{s:s,s:i}", "topic", p->topic, "partition",
           p->partition);
}

/* Back-pressure load of @p p: its lane's undispatched jobs; with key lanes, its tracker's held
 * count (every lane, and what finished out of order above the committed offset; key lanes,
 * above). @locality poll thread */
size_t part_load(kj_part *p) {
    if (p->nlanes == 1) return kj_engine_lane_pending(p->lanes[0].lane);
    pthread_mutex_lock(&p->lock);
    size_t held = kj_offset_tracker_held(p->tracker);
    pthread_mutex_unlock(&p->lock);
    return held;
}

/* When @p p's latest not-yet-due lane head is due (0: every head is due). @locality poll
 * thread */
int64_t part_head_not_before(kj_part *p) {
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
void part_to_key_lanes(kj_part *p) {
    if (!kj_engine_lane_idle(p->lanes[0].lane)) return;
    p->crash.careful_until = 0; /* no batch of it runs (above): no race with run_batch */
    p->one_lane = p->to_keys = false;
    kj_log(KJ_LOG_INFO, "crash guard: careful mode over, key lanes again", "{s:s,s:i,s:i}", "topic",
           p->topic, "partition", p->partition, "lanes", p->nlanes);
}

/* Key-ordered retries: the set of main partition `partition` (main + ladder partitions of
 * that number) is here and its key chain read: wake its parked batches (the tick resumes the
 * paused partitions). @locality poll thread */
void key_order_ready(int32_t partition, void *opaque) {
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
void stuck_check(kj_worker *w, kj_part *p, int64_t now, int64_t pos, int64_t hi, bool held) {
    bool running = false, due_later = false;
    size_t queued = 0;
    for (int i = 0; p->lanes && i < p->nlanes; i++) {
        running |= kj_engine_lane_in_flight(p->lanes[i].lane) > 0;
        queued += kj_engine_lane_pending(p->lanes[i].lane);
        /* parked until woken (KJ_ENGINE_PARKED) is not "due later": it is what this looks for */
        int64_t nb = kj_engine_lane_head_not_before(p->lanes[i].lane);
        due_later |= nb > now && nb != KJ_ENGINE_PARKED;
    }
    /* watch_since 0: the first look at a new assignment (its position may happen to equal the
     * zeroed watch_pos: "stalled" since the epoch, logged 20 ms after the assignment) */
    if (p->watch_since == 0 || pos != p->watch_pos || hi <= pos || held || running || due_later ||
        !p->lanes) {
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
           "{s:s,s:i,s:I,s:I,s:I,s:b,s:b,s:I,s:b,s:b,s:b,s:b,s:b,s:I,s:I,s:b,s:b,s:I,s:s}", "topic",
           p->topic, "partition", p->partition, "position", (json_int_t)pos, "high_watermark",
           (json_int_t)hi, "stalled_ms", (json_int_t)(now - p->watch_since), "paused", p->paused,
           "paused_for_delay", p->paused_for_delay, "delay_until", (json_int_t)p->delay_until,
           "arming", (int)atomic_load(&p->arming), "held", (int)atomic_load(&p->held),
           "needs_rewind", (int)atomic_load(&p->needs_rewind), "one_lane", p->one_lane, "to_keys",
           p->to_keys, "queued", (json_int_t)queued, "tracked", (json_int_t)tracked,
           "position_known", p->position_known, "key_order_wait",
           kj_key_order_covers(w->key_order, p->partition) &&
               kj_key_order_gen(w->key_order, p->partition) == 0,
           "committed", (json_int_t)p->committed, "mark_sent", p->meta_sent);
}

/* An operator paused @p p (group_control.h): stop fetching it, and drop what its lanes hold that
 * no batch took yet (fetched again once it is resumed: part_rewind), so that only the batches
 * already running finish — they complete and commit as usual. Its batches are skipped from now
 * on (run_batch). @locality poll thread */
void part_hold(kj_worker *w, kj_part *p, const kj_ctl_pause *why) {
    if (atomic_load(&p->op_hold)) return;
    atomic_store(&p->op_hold, true);
    p->op_rewind = true;
    pause_part(w, p, false);
    size_t dropped = 0;
    for (int i = 0; p->lanes && i < p->nlanes; i++) {
        kj_lane *lane = p->lanes[i].lane;
        size_t n = kj_engine_lane_discard_pending(lane, discard_message, p);
        if (n == 0) continue;
        dropped += n;
        atomic_store(&p->needs_rewind, true);
        kj_flow_forget_lane(w->flow, lane, false);
    }
    kj_metrics_operator_paused_set(++w->op_paused);
    kj_log(KJ_LOG_INFO, "partition paused by operator", "{s:s,s:i,s:s,s:s,s:s,s:I,s:I}", "topic",
           p->topic, "partition", p->partition, "scope", why->partition < 0 ? "topic" : "partition",
           "by", why->by, "reason", why->reason, "at", (json_int_t)why->at, "dropped_unstarted",
           (json_int_t)dropped);
}

/* The operator's pause of @p p ended: the tick rewinds it to its first uncompleted offset once
 * none of its batches runs (op_rewind), then resumes it. @locality poll thread */
void part_release(kj_worker *w, kj_part *p) {
    if (!atomic_exchange(&p->op_hold, false)) return;
    kj_metrics_operator_paused_set(--w->op_paused);
    kj_log(KJ_LOG_INFO, "partition resumed by operator", "{s:s,s:i}", "topic", p->topic,
           "partition", p->partition);
}

/* Restart @p p at its first uncompleted offset when batches of it were skipped or dropped
 * (needs_rewind): forget the skipped tail, seek there. Not resumed here.
 * @locality poll thread, with no batch of @p p in flight and nothing pending in its lanes */
void part_rewind(kj_worker *w, kj_part *p) {
    if (!atomic_exchange(&p->needs_rewind, false)) return;
    pthread_mutex_lock(&p->lock);
    int64_t from = kj_offset_tracker_committable(p->tracker);
    if (from >= 0) kj_offset_tracker_reset(p->tracker, from);
    pthread_mutex_unlock(&p->lock);
    p->position_known = false; /* until a record arrives from the new position */
    if (from < 0) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = from;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(w->consumer, l, 10000);
    if (error) {
        kj_log(KJ_LOG_ERROR, "rewind: seek failed", "{s:s,s:i,s:s}", "topic", p->topic, "partition",
               p->partition, "error", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

void pause_all(kj_worker *w) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (w->consumer && rd_kafka_assignment(w->consumer, &l) == RD_KAFKA_RESP_ERR_NO_ERROR && l) {
        rd_kafka_pause_partitions(w->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    for (kj_part *p = w->parts; p; p = p->next)
        p->paused = true;
}
