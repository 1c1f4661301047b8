/*
 * jemalloc_sampler.c — what jemalloc holds inside a running worker, over its whole run: an
 * LD_PRELOAD library (BENCH_WORKER_PREFIX="env LD_PRELOAD=.../libkjobs_jemalloc_sampler.so")
 * whose constructor starts one thread that, every $JE_SAMPLE_MS (default 100) ms, refreshes
 * jemalloc's statistics (mallctl "epoch") and appends one line to $JE_LOG (default
 * /tmp/je.log):
 *
 *   <epoch s> <allocated> <active> <resident> <mapped> <retained> <metadata> <RssAnon> <VmRSS>
 *
 * all in KiB (a "# pid N: ..." line names the columns; the log is appended to, so each worker of
 * one bench.py invocation leaves its own block). The bench plugin (latency_plugin.c) callocs
 * 64 MiB of records at start that are never touched: subtract 65536 KiB from allocated, active
 * and resident once that block is there, and read them as the worker's own. jemalloc's terms
 * (jemalloc(3), "stats.*"): allocated = bytes the program holds; active = pages of the slabs and
 * extents those live in (active - allocated is fragmentation); resident = pages jemalloc has
 * touched and not yet given back (resident - active - metadata is dirty pages waiting for decay; it
 * counts whole extents, so it overstates what is touched by a few MiB); RssAnon is the process's
 * anonymous memory (thread stacks and other mappings besides jemalloc's); VmRSS - RssAnon is the
 * mapped libraries. bench/RESULTS.md, "How far ahead the ladder reads", used it to tell which of
 * these a VmHWM peak is. mallctl is looked up at run time (the worker links jemalloc; under glibc
 * the sampler logs nothing and exits its thread).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

static size_t stat_kib(mallctl_fn mallctl, const char *name) {
    size_t v = 0, len = sizeof(v);
    if (mallctl(name, &v, &len, NULL, 0) != 0) return 0;
    return v / 1024;
}

/* RssAnon and VmRSS in KiB from /proc/self/status (0 when unreadable) */
static void proc_rss(long *anon, long *rss) {
    *anon = *rss = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "RssAnon:", 8) == 0) *anon = atol(line + 8);
        if (strncmp(line, "VmRSS:", 6) == 0) *rss = atol(line + 6);
    }
    fclose(f);
}

static void *sampler_main(void *arg) {
    mallctl_fn mallctl = (mallctl_fn)arg;
    const char *path = getenv("JE_LOG");
    const char *ms = getenv("JE_SAMPLE_MS");
    long period_ms = ms && atol(ms) > 0 ? atol(ms) : 100;
    FILE *log = fopen(path ? path : "/tmp/je.log", "a");
    if (!log) return NULL;
    fprintf(
        log,
        "# pid %ld: t_s allocated active resident mapped retained metadata RssAnon VmRSS (KiB)\n",
        (long)getpid());
    for (;;) {
        uint64_t epoch = 1;
        size_t len = sizeof(epoch);
        mallctl("epoch", &epoch, &len, &epoch, len);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        long anon, rss;
        proc_rss(&anon, &rss);
        fprintf(log, "%lld.%03ld %zu %zu %zu %zu %zu %zu %ld %ld\n", (long long)now.tv_sec,
                now.tv_nsec / 1000000, stat_kib(mallctl, "stats.allocated"),
                stat_kib(mallctl, "stats.active"), stat_kib(mallctl, "stats.resident"),
                stat_kib(mallctl, "stats.mapped"), stat_kib(mallctl, "stats.retained"),
                stat_kib(mallctl, "stats.metadata"), anon, rss);
        fflush(log);
        struct timespec pause = {period_ms / 1000, (period_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void sampler_start(void) {
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    if (!mallctl) return;
    /* the worker's children (exec handlers) must not load it again and overwrite the log */
    unsetenv("LD_PRELOAD");
    /* signals go to the process's own threads: kjobs broker/ui wait for them in sigsuspend */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&thread, &attr, sampler_main, (void *)mallctl);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
