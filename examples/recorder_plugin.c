/*
 * recorder_plugin.c — an example kjobs handler plugin, and the integration tests' witness of
 * what the runtime really ran. It owns two job types:
 *
 *   example.record        per-job handler
 *   example.record-batch  per-batch handler
 *
 * Both append one line per handled job to the file named by $KJOBS_RECORD_FILE:
 *
 *   id \t key \t partition \t offset \t attempt \t thread-id \t pid \t topic \t time-ms \n
 *
 * (time-ms: wall clock, epoch milliseconds, when the handler finished with the job.)
 *
 * Each line goes out in a single write(2) on an O_APPEND descriptor, so lines from concurrent
 * worker threads (and from several kjobs processes sharing the file) never interleave. Tests
 * count lines per job id to prove exactly-once / at-least-once outcomes and check per-key order.
 *
 * Payload "fail" asks for a retry (kjobs_result_retry), "fail-permanent" is a permanent failure
 * (kjobs_result_fail), "sleep:N" takes N milliseconds before succeeding (a slow job, so tests
 * can catch work in flight; it ignores time limits), "crash" takes the whole process down with a
 * segmentation fault after recording the job (a poison job, for the crash-loop guard's tests);
 * anything else succeeds. Failed jobs are recorded too (the line shows the attempt), because the
 * handler did run.
 *
 * Built against include/kjobs.h only: the kjobs_* symbols are resolved at load time from the
 * `kjobs` executable (built with ENABLE_EXPORTS). Load it with handlers.plugin = "path" or
 * KJOBS_HANDLERS_PLUGIN=path.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kjobs.h"

/* Longest id/key/topic text kept in a line; longer values are truncated. */
#define FIELD_MAX 256

typedef struct recorder {
    int fd;
} recorder;

static recorder the_recorder = {.fd = -1};

/* Copy `len` bytes of `src` into `dst` (capacity FIELD_MAX + 1), replacing bytes that would
 * break the line format (tab, newline, other control bytes) with '?'. */
static void sanitize(char *dst, const void *src, size_t len) {
    const unsigned char *s = src;
    if (len > FIELD_MAX) len = FIELD_MAX;
    for (size_t i = 0; i < len; i++)
        dst[i] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    dst[len] = '\0';
}

static void record(const recorder *r, const kjobs_job_t *job) {
    char id[FIELD_MAX + 1], key[FIELD_MAX + 1], topic[FIELD_MAX + 1];
    const char *id_src = kjobs_job_id(job), *topic_src = kjobs_job_topic(job);
    size_t key_len = 0;
    const void *key_src = kjobs_job_key(job, &key_len);
    sanitize(id, id_src, strlen(id_src));
    sanitize(key, key_src ? key_src : "", key_src ? key_len : 0);
    sanitize(topic, topic_src, strlen(topic_src));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    char line[4 * FIELD_MAX + 128];
    int n =
        snprintf(line, sizeof(line), "%s\t%s\t%d\t%lld\t%d\t%ld\t%ld\t%s\t%lld\n", id, key,
                 (int)kjobs_job_partition(job), (long long)kjobs_job_offset(job),
                 kjobs_job_attempt(job), (long)syscall(SYS_gettid), (long)getpid(), topic, now_ms);
    if (n < 0 || (size_t)n >= sizeof(line)) return; /* cannot happen with FIELD_MAX bounds */
    /* one write(2) per line: O_APPEND makes it atomic with respect to other writers */
    ssize_t w;
    do {
        w = write(r->fd, line, (size_t)n);
    } while (w < 0 && errno == EINTR);
}

/* "sleep:N": wait N milliseconds (N <= 3600000), as a slow job would; it does not look at
 * kjobs_job_cancelled(), so a time limit shorter than N is overrun (the watchdog's test). */
static void maybe_sleep(const kjobs_job_t *job) {
    size_t len = 0;
    const char *payload = kjobs_job_payload(job, &len);
    char digits[16];
    if (len <= 6 || len - 6 >= sizeof(digits) || memcmp(payload, "sleep:", 6) != 0) return;
    memcpy(digits, payload + 6, len - 6);
    digits[len - 6] = '\0';
    long ms = strtol(digits, NULL, 10);
    if (ms <= 0 || ms > 3600000) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The outcome a payload asks for. */
static void decide(const kjobs_job_t *job, kjobs_result_t *result) {
    size_t len = 0;
    const char *payload = kjobs_job_payload(job, &len);
    if (len == 5 && memcmp(payload, "crash", 5) == 0) {
        volatile int *nowhere = NULL;
        *nowhere = 1; /* SIGSEGV, like a buggy plugin */
    }
    if (len == 4 && memcmp(payload, "fail", 4) == 0)
        kjobs_result_retry(result, -1, "example.record: payload asked for a retry");
    else if (len == 14 && memcmp(payload, "fail-permanent", 14) == 0)
        kjobs_result_fail(result, "example.record: payload asked for a permanent failure");
}

static void handle_job(const kjobs_job_t *job, kjobs_result_t *result, void *opaque) {
    maybe_sleep(job);
    record(opaque, job);
    decide(job, result);
}

static void handle_batch(const kjobs_job_t *const *jobs, kjobs_result_t *const *results,
                         size_t count, void *opaque) {
    for (size_t i = 0; i < count; i++) {
        maybe_sleep(jobs[i]);
        record(opaque, jobs[i]);
        decide(jobs[i], results[i]);
    }
}

/* Exported entry point; the prototype keeps -Wmissing-prototypes quiet. */
int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size);

int kjobs_plugin_init(kjobs_registry_t *registry, int abi_version, char *errstr,
                      size_t errstr_size) {
    if (abi_version != KJOBS_ABI_VERSION) {
        snprintf(errstr, errstr_size, "built for kjobs ABI %d, this kjobs has ABI %d",
                 KJOBS_ABI_VERSION, abi_version);
        return -1;
    }
    const char *path = getenv("KJOBS_RECORD_FILE");
    if (!path || !*path) {
        snprintf(errstr, errstr_size, "KJOBS_RECORD_FILE is not set (the file to record jobs in)");
        return -1;
    }
    if (the_recorder.fd < 0) {
        the_recorder.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (the_recorder.fd < 0) {
            snprintf(errstr, errstr_size, "cannot open KJOBS_RECORD_FILE %s: %s", path,
                     strerror(errno));
            return -1;
        }
    }
    /* the fd stays open for the life of the process: handlers may run until exit */
    if (kjobs_register_job_handler(registry, "example.record", handle_job, &the_recorder, errstr,
                                   errstr_size) != 0 ||
        kjobs_register_batch_handler(registry, "example.record-batch", handle_batch, &the_recorder,
                                     errstr, errstr_size) != 0)
        return -1;
    return 0;
}
