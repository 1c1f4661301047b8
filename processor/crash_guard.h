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
 *   "kjobs1:probe:X:N"     an owner is running the job at offset X alone, the N-th owner in a
 *                          row to do so after a crash
 *
 * The rule. A new owner that finds "live" or "probe" knows the previous one died holding the
 * partition. It runs the jobs the dead owner could have had in flight (from the committed
 * offset, at most batch.max_pending + batch.max_jobs of them: what a partition may hold fetched
 * and running) *carefully*: one at a time, each after a synchronous commit of "probe:X:N". A
 * crash while X runs is therefore always on record. The next owner reads "probe:X:N": when
 * N >= the limit, X is dead-lettered without running (class crash-loop); otherwise X is probed
 * again as N+1. The first crash only triggers careful mode (it cannot tell which of the jobs in
 * flight did it), so with limit L a poison job runs L+1 times: once in a batch, L times alone.
 * Careful mode ends at the end of that window, or at once when the partition had been given up
 * cleanly; it costs one synchronous commit per job, only after a crash.
 *
 * Pure: parsing, formatting and the decisions here; worker.c commits and runs
 * (tests/unit/test_crash_guard.c).
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
} kj_crash_meta_kind;

typedef struct kj_crash_meta {
    kj_crash_meta_kind kind;
    int64_t offset; /* PROBE: the job's offset */
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
    int64_t careful_until; /* offsets below this run alone, each after a probe commit; 0 none */
    int64_t suspect;       /* the offset a previous owner died running alone; -1 none */
    int suspect_count;     /* how many owners in a row did */
} kj_crash_plan;

/**
 * Plan for a partition assigned at committed offset @p committed (>= 0) whose committed
 * metadata is @p found. @p window: how many jobs past the committed offset the dead owner could
 * have had in flight (batch.max_pending + batch.max_jobs).
 */
kj_crash_plan kj_crash_plan_for(const kj_crash_meta *found, int64_t committed, int64_t window);

/** What to do with the job at @p offset in careful mode. */
typedef enum { KJ_CRASH_PROBE = 0, KJ_CRASH_DEAD_LETTER } kj_crash_verdict;

/**
 * In careful mode, for the job at @p offset: dead-letter it (it was run alone by @p limit owners
 * in a row that all died), or probe it: *probe_count is then the N to commit in "probe:X:N".
 */
kj_crash_verdict kj_crash_decide(const kj_crash_plan *plan, int64_t offset, int limit,
                                 int *probe_count);

#endif
