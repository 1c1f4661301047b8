/*
 * clock_count.c — an LD_PRELOAD interposer that counts clock_gettime calls by clock, for
 * counting the clock reads per job of a drain (bench/README.md, "Where the time goes"). Reading
 * the clock costs ~35 ns on this VM's kvm-clock, so a read per job is ~2 % of a noop job's CPU.
 *
 * Shape: every call is counted (relaxed atomics: exact totals, no ordering needed) and passed on
 * to the next definition (libc's, which uses the vDSO); the totals go to stderr as one line at
 * process exit: `clock_count: realtime N monotonic N other N`. Calls made inside libc itself
 * are not seen (they do not go through the PLT); librdkafka's and kjobs' are.
 *
 * Use: BENCH_WORKER_PREFIX="env LD_PRELOAD=$BUILD/bench/libkjobs_clock_count.so" bench/bench.py
 * --only drain --keep ...; the line is in the worker's .err file in the work directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int(clock_gettime_fn)(clockid_t, struct timespec *);

static atomic_long n_realtime, n_monotonic, n_other;

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static clock_gettime_fn *next;
    if (!next) {
        void *sym = dlsym(RTLD_NEXT, "clock_gettime");
        memcpy(&next, &sym, sizeof(next)); /* object to function pointer without a cast */
    }
    if (clock == CLOCK_REALTIME)
        atomic_fetch_add_explicit(&n_realtime, 1, memory_order_relaxed);
    else if (clock == CLOCK_MONOTONIC)
        atomic_fetch_add_explicit(&n_monotonic, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&n_other, 1, memory_order_relaxed);
    return next(clock, ts);
}

__attribute__((destructor)) static void clock_count_report(void) {
    char line[160];
    int n = snprintf(line, sizeof(line), "clock_count: realtime %ld monotonic %ld other %ld\n",
                     atomic_load(&n_realtime), atomic_load(&n_monotonic), atomic_load(&n_other));
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nothing to do: the process is ending */
    }
}
