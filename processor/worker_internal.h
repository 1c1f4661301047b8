/*
 * worker_internal.h — what the files of the worker runtime share, and nothing outside them may
 * include: the partition (kj_part), its lanes (kj_vlane), the worker (struct kj_worker), the
 * timing constants, and the functions one file of the worker calls in another. The worker is
 * one object served by one poll thread and the engine's worker threads (worker.h states the
 * design); it is split by concept:
 *   worker.c            the poll loop, intake (handle_message), tick, breaker and stall guard,
 *                       shutdown, construction;
 *   worker_partitions.c the partition table, lanes, pause state, retired parts;
 *   worker_commits.c    the commit rule and the crash guard's marks;
 *   worker_rebalance.c  assign / revoke;
 *   job_pipeline.c      the batch path: decode -> handler -> outcome.
 */
#ifndef KJ_PROCESSOR_WORKER_INTERNAL_H
#define KJ_PROCESSOR_WORKER_INTERNAL_H

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
#include "partitions/in_place.h"
#include "partitions/offset_tracker.h"
#include "processor/breaker.h"
#include "processor/kafka.h"
#include "common/clock.h"
#include "processor/crash_guard.h"
#include "processor/group_control.h"
#include "processor/handler_deadline.h"
#include "common/hash.h"
#include "processor/header_contract.h"
#include "processor/key_order.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/periodic.h"
#include "processor/retry_policy.h"
#include "processor/router.h"
#include "processor/schema_registry.h"
#include "processor/status_report.h"
#include "processor/topic_layout.h"

/* the committed-offset lookup on assignment (and the crash guard's watermark fallback) */
#define KJ_COMMITTED_LOOKUP_MS 2000
#define KJ_TICK_MS             20
#define KJ_STALL_CONFIRM_MS    3000 /* after a stall: wait this long for the group to answer */
#define KJ_LAG_INTERVAL_MS     1000
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
    int64_t committed;       /* (poll) last committed offset, -1 none */
    atomic_llong held_bytes; /* its records' share of w->pending_bytes (release_message) */
    bool paused;             /* (poll) we paused it */
    bool paused_for_delay;   /* (poll) ... because a ladder record is not due within the
                              * read-ahead (or the partition arms) */
    int64_t delay_until; /* (poll) ... until then (ms; the record that paused it), 0: its head */
    /* An operator's pause (group_control.h, control_tick in worker.c): held apart from the
     * pauses above, so no resume path of theirs (back-pressure, a due ladder head, a breaker
     * or stall rewind, an assignment) lets it fetch. Batches of it are skipped (run_batch),
     * never started; the skipped tail is fetched again when it is resumed (op_rewind). */
    atomic_bool op_hold;          /* written by the poll thread, read by run_batch */
    bool op_rewind;               /* (poll) resumed: rewind once none of its batches runs */
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
    /* retry.in_place_attempts (run_batch): the jobs of this part now being tried again in
     * place, how often so far and when next (under lock; partitions/in_place.h) */
    kj_in_place in_place;
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
    uint64_t generation;  /* (poll) which assignment of the partition this is (routed copies
                           * name it: on_route_done) */
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
    kj_status_reporter *status;   /* status records for the console; NULL when off or no topic */
    kj_ctl_follower *control;     /* the operator's controls; NULL without the control topic */
    int op_paused;                /* (poll) assigned partitions held by an operator's pause */
    bool crash_guard;             /* dlq.crash_loop_limit > 0 and not exactly-once */
    pthread_mutex_t commit_lock;  /* commit contents + enqueue order (commit_offsets) */
    int total_partitions;    /* of the main and ladder topics (check_topics), for group scope */
    int32_t main_partitions; /* of the main topic (check_topics) */
    kj_topic_slot *topics;
    size_t topic_count;
    kj_part *parts;
    uint64_t generations; /* (poll) the last kj_part.generation given out */
    kj_part *retired;     /* (poll) removed parts still referenced (abandoned batch, routed copy) */
    char worker_id[256];
    atomic_bool joined, draining;
    atomic_int assigned;
    bool shutdown_timed_out;      /* grace ran out: lanes may still be busy, do not free them */
    bool fatal;                   /* (poll) exactly-once commit failed: stop, commit nothing more */
    bool subscribed;              /* (poll) the current consumer subscribed: it has a group */
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
    /* Bytes of fetched records held, queued or running (record_bytes each): charged when a
     * record is queued (handle_message), refunded when it is destroyed (release_message); the
     * process-wide back-pressure bound batch.max_pending_bytes is checked against it. */
    atomic_llong pending_bytes;
    atomic_llong ladder_bytes; /* the part of pending_bytes held by ladder partitions */
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

/* ---- worker_partitions.c ---- */
kj_part *part_lookup(kj_worker *w, const rd_kafka_topic_t *rkt, const char *topic,
                     int32_t partition);
kj_part *part_add(kj_worker *w, const char *topic, int32_t partition);
/* What a held record counts against batch.max_pending_bytes: value + key + KJ_RECORD_OVERHEAD */
int64_t record_bytes(const rd_kafka_message_t *msg);
/* Destroy a record queued on @p p, refunding its bytes (p's and the worker's). @locality any
 * thread */
void release_message(kj_part *p, rd_kafka_message_t *msg);
/* kj_discard_fn for queued records; @p opaque is their kj_part */
void discard_message(void *item, void *opaque);
void part_remove_lanes(kj_worker *w, kj_part *p);
kj_vlane *lane_for(kj_part *p, const rd_kafka_message_t *msg);
bool part_held(kj_part *p);
void part_free(kj_part *p);
void part_remove(kj_worker *w, kj_part *p, bool free_memory);
void retired_tick(kj_worker *w);
void pause_part(kj_worker *w, kj_part *p, bool for_delay);
void resume_part(kj_worker *w, kj_part *p);
size_t part_load(kj_part *p);
int64_t part_head_not_before(kj_part *p);
void part_to_key_lanes(kj_part *p);
void key_order_ready(int32_t partition, void *opaque);
void stuck_check(kj_worker *w, kj_part *p, int64_t now, int64_t pos, int64_t hi, bool held);
void pause_all(kj_worker *w);
void part_hold(kj_worker *w, kj_part *p, const kj_ctl_pause *why);
void part_release(kj_worker *w, kj_part *p);
void part_rewind(kj_worker *w, kj_part *p);

/* ---- worker_commits.c ---- */
void on_route_done(const kj_route_source *src, int64_t offset, void *opaque);
void commit_offsets(kj_worker *w, bool sync);
void on_offset_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque);
void arm_crash_guard(kj_worker *w, rd_kafka_t *rk, kj_part *p,
                     const rd_kafka_topic_partition_t *found);
void crash_probe_commit(kj_worker *w, kj_part *part, const kj_crash_meta *mark);
void crash_probe_done(kj_part *part, int64_t offset);

/* ---- worker_rebalance.c ---- */
void release_wake_queue(kj_worker *w);
void drop_wake_answers(kj_worker *w);
void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                  void *opaque);

/* ---- job_pipeline.c ---- */
void key_copy_diverted(int32_t partition, const void *key, size_t key_len,
                       const rd_kafka_headers_t *headers, int step, void *opaque);
void run_batch(kj_lane *lane, void *lane_opaque, void **items, size_t count, void *opaque);

/* ---- worker.c ---- */
void control_assigned(kj_worker *w, const rd_kafka_topic_partition_list_t *parts);

#endif /* KJ_PROCESSOR_WORKER_INTERNAL_H */
