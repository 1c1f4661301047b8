/*
 * periodic.h — the periodic (cron) job scheduler: enqueues each schedule.periodic entry's job
 * once per tick, across all replicas of a worker group.
 *
 * DESIGN
 *
 * One owner. The member that owns partition 0 of the main topic (the designated partition) runs
 * the schedule; Kafka's group protocol gives that partition to exactly one member at a time, and
 * takes it from the old owner (revoke) before giving it to the next. The worker calls
 * kj_periodic_start when it is assigned main partition 0 and kj_periodic_stop when it is revoked
 * or lost; everything else lives here, on one thread of its own.
 *
 * State. A single-partition compacted topic, "<topics.main>.schedule" (the state topic), keyed by
 * entry name, holds each entry's last enqueued tick: {"tick": epoch ms, "id": ..., ...}. On
 * start the owner reads it to its end; then, per entry, with L its last tick and `now` the clock:
 *   - no state (first start, new entry): no backfill; the first tick is the first after now;
 *   - ticks in (L, now] due at most catch_up ago (late: a failover, a restart) are enqueued,
 *     every one, oldest first;
 *   - ticks due more than catch_up ago (missed: downtime) follow the entry's `missed`: skip
 *     enqueues none of them, run_once enqueues one job, for the latest of them;
 *   - then it sleeps until the next tick (pthread_cond_timedwait on CLOCK_MONOTONIC, woken by
 *     kj_periodic_stop), never polling; a sleep lasts at most a minute before the wall clock is
 *     read again, so a stepped clock (NTP) moves a tick by at most that.
 *
 * Enqueue. A tick T of entry N becomes a kjobs.Job with id "N@T" (T in epoch ms, so a handler can
 * recognise a repeat), type/key/payload/meta from the entry, created_at = T, produced to the main
 * topic by an idempotent acks=all producer; once that is acknowledged, the state record for T is
 * written (acks=all) — only then is the tick done. Jitter: the job carries kjobs-run-at =
 * T + offset, offset = hash(N, T) mod (jitter + 1) ms: deterministic, so any owner computes the
 * same, and held on the retry ladder like any delayed job (docs/scheduling.md).
 *
 * Crash window. A tick whose job was acknowledged but whose state record was not (the owner died
 * or lost partition 0 in between) is enqueued again by the next owner, with the same id: at most
 * one duplicate per entry per handover, recognisable by id. A tick is never skipped by a handover
 * shorter than catch_up. A member that loses partition 0 without knowing it (frozen past its
 * session timeout) may enqueue alongside the new owner until it notices (again, same ids).
 *
 * Metrics: kjobs_periodic_enqueued_total{name}, kjobs_periodic_next_tick_seconds{name} (on the
 * owner only). Log: one "periodic job enqueued" line per tick (name, tick, id, run_at, late).
 *
 * @locality kj_periodic_new/free: main thread; start/stop: the consumer's poll thread (rebalance
 *           callback); the scheduler thread owns everything else.
 */
#ifndef KJOBS_PERIODIC_H
#define KJOBS_PERIODIC_H

#include <stdint.h>

#include "processor/config.h"
#include "processor/cron.h"
#include "processor/periodic_config.h"

typedef struct kj_periodic kj_periodic;

/**
 * A scheduler for cfg->periodic (cfg must outlive it; cfg->periodic_count > 0). Creates its
 * producer and checks that the state topic exists (error names it and `kjobs topics --create`).
 * `worker_id` is copied (it goes into state records). Returns NULL with errstr.
 */
kj_periodic *kj_periodic_new(const kj_config *cfg, const char *worker_id, char *errstr,
                             size_t errstr_size);

/** Become the owner: start the scheduler thread (no-op when it runs). Does not block. */
void kj_periodic_start(kj_periodic *p);

/**
 * Stop owning: wake the scheduler thread and join it. Blocks until a produce in flight is
 * acknowledged or fails (bounded by the producer's message timeout, 10 s). No-op when stopped.
 */
void kj_periodic_stop(kj_periodic *p);

/** Stop and free (NULL is fine). */
void kj_periodic_free(kj_periodic *p);

/**
 * The deterministic jitter offset of tick `tick_ms` of entry `name`, in [0, jitter_ms]: FNV-1a of
 * "name@tick" through the splitmix64 finaliser, modulo jitter_ms + 1. Pure.
 */
int64_t kj_periodic_jitter(const char *name, int64_t tick_ms, int64_t jitter_ms);

/** The due ticks of one entry when its owner starts (see DESIGN). Plain data. */
typedef struct kj_periodic_plan {
    int64_t run_once_tick; /* the latest missed tick to enqueue (run_once), or -1 */
    int64_t missed;        /* how many ticks were missed (older than catch_up), counted up to
                              KJ_PERIODIC_COUNT_CAP */
    int64_t first_late;    /* the first late tick to enqueue (then every tick up to now), or -1 */
    int64_t next;          /* the first tick after now, or -1 (none within the search bound) */
} kj_periodic_plan;

/* Missed ticks are counted (for the log) up to this many; past it the latest one is found by
 * searching back from the catch-up bound, so planning stays a few milliseconds per entry. */
#define KJ_PERIODIC_COUNT_CAP 1000

/**
 * Plan entry e (zone z, opened for e->time_zone) at `now_ms` with last enqueued tick `last_ms`
 * (-1: none). Pure apart from z's calendar. Returns 0, or -1 when the cron search fails.
 */
int kj_periodic_plan_entry(const kj_periodic_entry *e, kj_cron_zone *z, int64_t last_ms,
                           int64_t now_ms, kj_periodic_plan *out);

#endif
