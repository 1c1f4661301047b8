/*
 * crash_guard.h — crash-loop poison detection: a job that takes the worker process down with it
 * (a segfault in a plugin, an abort, an OOM kill, kill -9) is dead-lettered with class
 * `crash-loop` after `dlq.crash_loop_limit` crashes instead of being re-run by every restart
 * forever.
 *
 * The state survives the crash in the consumer group's committed offsets: every offset commit
 * of a partition carries a short metadata string (Kafka's OffsetCommit metadata, up to
 * offset.metadata.max.bytes = 4096 on the broker):
 *
 *   "kjobs1:clean"         the owner gave the partition up cleanly (revoke, shutdown): nothing
 *                          of it was running
 *   "kjobs1:live"          an owner holds it; written (and acknowledged) before its first job
 *                          runs, so an owner that dies leaves "live" behind
 *   "kjobs1:range:A:B"     an owner is running the jobs at offsets A..B-1 as one batch, in
 *                          careful mode
 *   "kjobs1:probe:X:N"     an owner is running the job at offset X alone, the N-th owner in a
 *                          row to do so after a crash
 *
 * The rule. A new owner that finds anything but "clean" knows the previous one died holding
 * the partition, and runs the jobs it could have had in flight (from the committed offset, at
 * most batch.max_pending + batch.max_jobs of them: what a partition may hold fetched and
 * running) *carefully*, each batch after a synchronous commit naming it, so the next owner
 * knows what was running at a crash:
 *   - after "live" (the crash came in normal running): batches of 1, 2, 4, ... jobs (at most
 *     batch.max_jobs), each named by a "range" mark (a batch of one by "probe:X:1") — a few
 *     synchronous commits cover the whole window (bisection's idea, from the front);
 *   - after "range:A:B": jobs one at a time up to B, each named by "probe:X:1", then batches
 *     doubling again;
 *   - after "probe:X:N": one at a time up to X; X itself is dead-lettered without running (class
 *     crash-loop) when N >= the limit, else probed again as N+1; then batches doubling again.
 * Only crashes of a job running alone count. With limit L a poison job runs at most L+2 times:
 * once in a normal batch, once in a careful batch, L times alone. Careful mode ends at the end
 * of the window, or at once when the partition had been given up cleanly; it costs a few
 * synchronous commits, plus one per job of the batch a crash named, only after a crash.
 *
 * Pure: parsing, formatting and the decisions here; the worker (worker_commits.c, job_pipeline.c)
 * commits and runs (tests/unit/test_crash_guard.c).
 */
#ifndef KJOBS_CRASH_GUARD_H
#define KJOBS_CRASH_GUARD_H

#include <stddef.h>
#include <stdint.h>

/** What a partition's committed metadata says about its previous owner. */
typedef enum {
    KJ_CRASH_META_NONE = 0, /* no kjobs metadata (first start, another tool, unknown text) */
    KJ_CRASH_META_CLEAN,    /* given up cleanly */
    KJ_CRASH_META_LIVE,     /* an owner held it and did not give it up: it died */
    KJ_CRASH_META_PROBE,    /* an owner died (or not yet) while running `offset` alone */
    KJ_CRASH_META_RANGE,    /* ... while running offsets `offset`..`end`-1 as one batch */
} kj_crash_meta_kind;

typedef struct kj_crash_meta {
    kj_crash_meta_kind kind;
    int64_t offset; /* PROBE: the job's offset; RANGE: the batch's first offset */
    int64_t end;    /* RANGE: one past the batch's last offset */
    int count;      /* PROBE: owners in a row that ran it alone, >= 1 */
} kj_crash_meta;

/** Longest metadata string kj_crash_meta_format() writes, with its NUL. */
#define KJ_CRASH_META_MAX 48

/**
 * Parse committed metadata (not NUL-terminated, untrusted: any other tool may have written
 * it). Anything that is not exactly one of the three forms is KJ_CRASH_META_NONE.
 */
kj_crash_meta kj_crash_meta_parse(const void *metadata, size_t size);

/** Format @p m into buf (>= KJ_CRASH_META_MAX bytes); returns buf. NONE formats as "". */
const char *kj_crash_meta_format(const kj_crash_meta *m, char *buf, size_t size);

/** A new owner's plan for a partition, from what it found committed. */
typedef struct kj_crash_plan {
    int64_t careful_until; /* careful mode below this offset; 0: none */
    int64_t single_until;  /* below this, one job at a time (probe marks) */
    int64_t suspect;       /* the offset a previous owner died running alone; -1 none */
    int suspect_count;     /* how many owners in a row did */
    int chunk;             /* size of the next careful batch above single_until (doubles) */
} kj_crash_plan;

/**
 * Plan for a partition assigned at committed offset @p committed (>= 0) whose committed
 * metadata is @p found. @p window: how many jobs past the committed offset the dead owner could
 * have had in flight (batch.max_pending + batch.max_jobs).
 */
kj_crash_plan kj_crash_plan_for(const kj_crash_meta *found, int64_t committed, int64_t window);

/** What to do with the batch at @p offset in careful mode. */
typedef enum { KJ_CRASH_PROBE = 0, KJ_CRASH_DEAD_LETTER, KJ_CRASH_CHUNK } kj_crash_verdict;

/**
 * In careful mode (offset < careful_until), for the batch whose first job is at @p offset:
 *   KJ_CRASH_DEAD_LETTER  that job alone, not run (it was run alone by @p limit owners in a row
 *                         that all died);
 *   KJ_CRASH_PROBE        that job alone, after committing "probe:X:*probe_count";
 *   KJ_CRASH_CHUNK        at most *chunk jobs, after committing "range:first:last+1" (a chunk
 *                         of one is committed as "probe:X:1"); the plan's next chunk doubles,
 *                         up to @p max_chunk.
 */
kj_crash_verdict kj_crash_decide(kj_crash_plan *plan, int64_t offset, int limit, int max_chunk,
                                 int *probe_count, int *chunk);

#endif
