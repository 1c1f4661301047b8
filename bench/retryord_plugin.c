/*
 * retryord_plugin.c — the handler of bench/retry_ordering.py: a handler plugin
 * (KJOBS_HANDLERS_PLUGIN=.../libkjobs_retryord_plugin.so) that fails chosen jobs a chosen number
 * of times and records, in the order handlers started, which job ran, on which attempt, and
 * whether it succeeded. Public API only (include/kjobs.h), like any user plugin.
 *
 * Job type bench.flaky-order, payload "INDEX FAILS": the job numbered INDEX (the driver's
 * production order) asks for a retry on attempts 1..FAILS and succeeds after (as the built-in
 * kjobs.flaky does with payload "FAILS"). A malformed payload is a permanent failure.
 *
 * Every handler call takes the next number of one global atomic counter when it starts (its
 * sequence number: if run B started after run A returned, B's number is larger) and stores
 * the job, attempt, outcome, start time (CLOCK_REALTIME µs) and the job's created_at (epoch ms)
 * at that slot of a preallocated array (BENCH_MAX_RECORDS, default 4M). The array is written to
 * $BENCH_OUT ("seq job attempt ok t_us created_ms" lines) when the process exits.
 * Cost per job: one atomic increment, one clock_gettime, one 24-byte store, a short parse.
 * A slot whose run had not stored its record when the process exited is left out of the file.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kjobs.h"

typedef struct run_record {
    int64_t t_us;       /* CLOCK_REALTIME at handler start, microseconds */
    int64_t created_ms; /* the job's created_at (epoch ms, set by its producer) */
    int32_t job;        /* INDEX; -1: malformed payload */
    int16_t attempt;
    int8_t ok;
    int8_t stored; /* 0: slot reserved but not (yet) stored */
} run_record;

static run_record *records;
static size_t capacity;
static atomic_size_t count;
static const char *out_path;

int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size);

/* "INDEX FAILS" -> 0, or -1 when malformed. */
static int parse(const kjobs_job_t *job, long *index, long *fails) {
    size_t len = 0;
    const char *p = kjobs_job_payload(job, &len);
    char buf[48];
    if (!p || len == 0 || len >= sizeof(buf)) return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *end;
    *index = strtol(buf, &end, 10);
    if (end == buf || *end != ' ' || *index < 0 || *index > INT32_MAX) return -1;
    char *f = end + 1;
    *fails = strtol(f, &end, 10);
    if (end == f || *end != '\0' || *fails < 0) return -1;
    return 0;
}

static void handle(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    (void)opaque;
    size_t seq = atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long index = -1, fails = 0;
    if (parse(job, &index, &fails) != 0) {
        kjobs_result_fail(result, "bench.flaky-order: payload must be \"INDEX FAILS\"");
        index = -1;
    }
    int attempt = kjobs_job_attempt(job);
    int ok = index >= 0 && attempt > fails;
    if (index >= 0 && !ok)
        kjobs_result_retry(result, -1, "bench.flaky-order: attempt %d of %ld planned failures",
                           attempt, fails);
    if (seq < capacity)
        records[seq] = (run_record){.t_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000,
                                    .created_ms = kjobs_job_created_at(job),
                                    .job = (int32_t)index,
                                    .attempt = (int16_t)attempt,
                                    .ok = (int8_t)ok,
                                    .stored = 1};
}

__attribute__((destructor)) static void write_records(void) {
    if (!records || !out_path) return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    size_t n = atomic_load(&count);
    if (n > capacity) {
        fprintf(stderr, "retryord_plugin: %zu runs, only %zu recorded\n", n, capacity);
        n = capacity;
    }
    for (size_t i = 0; i < n; i++)
        if (records[i].stored)
            fprintf(f, "%zu %d %d %d %lld %lld\n", i, records[i].job, records[i].attempt,
                    records[i].ok, (long long)records[i].t_us, (long long)records[i].created_ms);
    if (fclose(f) == 0) rename(tmp, out_path);
}

int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size) {
    if (abi_version != KJOBS_ABI_VERSION) {
        snprintf(errstr, errstr_size, "built for ABI %d, kjobs has %d", KJOBS_ABI_VERSION,
                 abi_version);
        return -1;
    }
    const char *cap = getenv("BENCH_MAX_RECORDS");
    capacity = cap && atoll(cap) > 0 ? (size_t)atoll(cap) : (size_t)4 << 20;
    records = calloc(capacity, sizeof(*records)); /* untouched pages cost no memory */
    if (!records) {
        snprintf(errstr, errstr_size, "cannot allocate %zu records", capacity);
        return -1;
    }
    out_path = getenv("BENCH_OUT");
    return kjobs_register_job_handler(registry, "bench.flaky-order", handle, NULL, errstr,
                                      errstr_size);
}
