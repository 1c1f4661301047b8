/*
 * latency_plugin.c — the benchmark's eyes inside a running `kjobs run`: a handler plugin
 * (KJOBS_HANDLERS_PLUGIN=.../libkjobs_bench_plugin.so) that timestamps jobs at handler start,
 * using only the public API (include/kjobs.h), like any user plugin.
 *
 * Job types (all succeed at once, like kjobs.noop):
 *   bench.lat    records handler-start time and latency = now - meta bench_t_us (the producer's
 *                CLOCK_REALTIME microseconds; created_at * 1000 when the meta is absent)
 *   bench.start  records its handler-start time (put at the head of every partition)
 *   bench.end    records its handler-start time (put at the tail of every partition); when
 *                BENCH_END_MARKS of them were seen, the records so far are written to
 *                $BENCH_OUT.marks at once, so a script knows a drain finished without polling
 *                the worker
 * Every record ("kind partition t_us latency_us", one line each; kind 0 lat, 1 start, 2 end)
 * is written to $BENCH_OUT when the process exits.
 * With BENCH_LIVE_MS=N (> 0) the plugin also keeps, per partition, the handler-start time of the
 * first and of the latest bench.lat job, and rewrites $BENCH_OUT.live ("partition first_us
 * last_us" lines) at most every N ms, from whichever handler thread runs a bench.lat job past
 * the deadline: a driver can see which partitions a running worker handles (scale-steps waits
 * on it) without stopping it.
 *
 * Cost per job: one clock_gettime, one atomic increment, one 16-byte store into a
 * preallocated array (BENCH_MAX_RECORDS, default 4M; untouched pages cost no memory).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kjobs.h"

#define BENCH_LIVE_PARTITIONS 4096

typedef struct bench_record {
    int64_t t_us;
    int32_t latency_us;
    int16_t partition;
    int16_t kind;
} bench_record;

static bench_record *bench_records;
static size_t bench_capacity;
static atomic_size_t bench_count;
static atomic_long bench_ends;
static long bench_end_marks;
static const char *bench_out;
static int64_t bench_live_us; /* BENCH_LIVE_MS in µs; 0: no live file */
static _Atomic int64_t bench_live_first[BENCH_LIVE_PARTITIONS];
static _Atomic int64_t bench_live_last[BENCH_LIVE_PARTITIONS];
static _Atomic int64_t bench_live_next; /* when the live file is due next */
static atomic_flag bench_live_writing = ATOMIC_FLAG_INIT;

int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size);

static int64_t bench_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void bench_record_job(const kjobs_job_t *job, int kind, int64_t now, int64_t latency) {
    size_t i = atomic_fetch_add_explicit(&bench_count, 1, memory_order_relaxed);
    if (i >= bench_capacity) return;
    if (latency > INT32_MAX) latency = INT32_MAX;
    bench_records[i] = (bench_record){.t_us = now,
                                      .latency_us = (int32_t)latency,
                                      .partition = (int16_t)kjobs_job_partition(job),
                                      .kind = (int16_t)kind};
}

static void bench_write(const char *path, size_t n) {
    if (!path) return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    if (n > bench_capacity) n = bench_capacity;
    for (size_t i = 0; i < n; i++) {
        const bench_record *r = &bench_records[i];
        if (r->t_us == 0) continue; /* reserved but not yet stored by its thread */
        fprintf(f, "%d %d %lld %d\n", r->kind, r->partition, (long long)r->t_us, r->latency_us);
    }
    if (fclose(f) == 0) rename(tmp, path);
}

/* The live file: one writer at a time (the thread that moved the deadline), tmp + rename. */
static void bench_live(int64_t now, int32_t partition) {
    if (partition < 0 || partition >= BENCH_LIVE_PARTITIONS) return;
    int64_t zero = 0;
    atomic_compare_exchange_strong_explicit(&bench_live_first[partition], &zero, now,
                                            memory_order_relaxed, memory_order_relaxed);
    atomic_store_explicit(&bench_live_last[partition], now, memory_order_relaxed);
    int64_t due = atomic_load_explicit(&bench_live_next, memory_order_relaxed);
    if (now < due || !atomic_compare_exchange_strong(&bench_live_next, &due, now + bench_live_us))
        return;
    if (atomic_flag_test_and_set(&bench_live_writing)) return; /* a slow write still running */
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s.live", bench_out);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        atomic_flag_clear(&bench_live_writing);
        return;
    }
    for (int32_t p = 0; p < BENCH_LIVE_PARTITIONS; p++) {
        int64_t first = atomic_load_explicit(&bench_live_first[p], memory_order_relaxed);
        if (first)
            fprintf(f, "%d %lld %lld\n", p, (long long)first,
                    (long long)atomic_load_explicit(&bench_live_last[p], memory_order_relaxed));
    }
    if (fclose(f) == 0) rename(tmp, path);
    atomic_flag_clear(&bench_live_writing);
}

static void handle_lat(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)result;
    (void)opaque;
    int64_t now = bench_now_us();
    const char *stamp = kjobs_job_meta(job, "bench_t_us");
    int64_t sent = stamp ? strtoll(stamp, NULL, 10) : kjobs_job_created_at(job) * 1000;
    bench_record_job(job, 0, now, now - sent);
    if (bench_live_us && bench_out) bench_live(now, kjobs_job_partition(job));
}

static void handle_start(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)result;
    (void)opaque;
    bench_record_job(job, 1, bench_now_us(), 0);
}

static void handle_end(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)result;
    (void)opaque;
    bench_record_job(job, 2, bench_now_us(), 0);
    if (atomic_fetch_add(&bench_ends, 1) + 1 == bench_end_marks && bench_out) {
        char path[4096];
        snprintf(path, sizeof(path), "%s.marks", bench_out);
        bench_write(path, atomic_load(&bench_count));
    }
}

__attribute__((destructor)) static void bench_at_exit(void) {
    if (bench_records) bench_write(bench_out, atomic_load(&bench_count));
}

int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size) {
    if (abi_version != KJOBS_ABI_VERSION) {
        snprintf(errstr, errstr_size, "built for ABI %d, kjobs has %d", KJOBS_ABI_VERSION,
                 abi_version);
        return -1;
    }
    const char *cap = getenv("BENCH_MAX_RECORDS");
    bench_capacity = cap && atoll(cap) > 0 ? (size_t)atoll(cap) : (size_t)4 << 20;
    bench_records = calloc(bench_capacity, sizeof(*bench_records));
    if (!bench_records) {
        snprintf(errstr, errstr_size, "cannot allocate %zu records", bench_capacity);
        return -1;
    }
    const char *marks = getenv("BENCH_END_MARKS");
    bench_end_marks = marks ? atol(marks) : 0;
    bench_out = getenv("BENCH_OUT");
    const char *live = getenv("BENCH_LIVE_MS");
    bench_live_us = live && atoll(live) > 0 ? (int64_t)atoll(live) * 1000 : 0;
    if (kjobs_register_job_handler(registry, "bench.lat", handle_lat, NULL, errstr, errstr_size) ||
        kjobs_register_job_handler(registry, "bench.start", handle_start, NULL, errstr,
                                   errstr_size) ||
        kjobs_register_job_handler(registry, "bench.end", handle_end, NULL, errstr, errstr_size))
        return -1;
    return 0;
}
