/*
 * log.c — JSON-lines logger (see log.h). Builds each line with jansson, then emits it with a
 * single write(2) so concurrent threads cannot interleave partial lines. The level check is a
 * relaxed atomic load, so disabled levels cost almost nothing on hot paths.
 */
#include "processor/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_min_level = KJ_LOG_INFO;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kj_log_set_level(kj_log_level level) {
    atomic_store(&log_min_level, (int)level);
}

kj_log_level kj_log_get_level(void) {
    return (kj_log_level)atomic_load(&log_min_level);
}

void kj_log_set_fd(int fd) {
    atomic_store(&log_fd, fd);
}

int kj_log_level_parse(const char *name, kj_log_level *out) {
    for (int i = 0; i < 4; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *out = (kj_log_level)i;
            return 0;
        }
    }
    if (name && strcasecmp(name, "warning") == 0) {
        *out = KJ_LOG_WARN;
        return 0;
    }
    return -1;
}

kj_log_level kj_log_level_from_syslog(int syslog_level) {
    if (syslog_level <= 3) return KJ_LOG_ERROR; /* emerg, alert, crit, err */
    if (syslog_level == 4) return KJ_LOG_WARN;
    if (syslog_level <= 6) return KJ_LOG_INFO; /* notice, info */
    return KJ_LOG_DEBUG;
}

static void format_timestamp(char *buf, size_t size) {
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", now.tv_nsec / 1000000L);
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0) return; /* nowhere left to report a logging failure */
        buf += n;
        len -= (size_t)n;
    }
}

void kj_log(kj_log_level level, const char *msg, const char *fields_fmt, ...) {
    if ((int)level < atomic_load_explicit(&log_min_level, memory_order_relaxed)) return;

    json_t *line = NULL;
    if (fields_fmt) {
        json_error_t error;
        va_list ap;
        va_start(ap, fields_fmt);
        line = json_vpack_ex(&error, 0, fields_fmt, ap);
        va_end(ap);
        if (!line || !json_is_object(line)) {
            json_decref(line);
            line = json_object();
            json_object_set_new(line, "log_error", json_string(error.text));
        }
    } else {
        line = json_object();
    }

    char ts[40];
    format_timestamp(ts, sizeof(ts));
    /* ts/level/msg first for readability: jansson keeps insertion order with JSON_PRESERVE_ORDER */
    json_t *ordered = json_object();
    json_object_set_new(ordered, "ts", json_string(ts));
    json_object_set_new(ordered, "level", json_string(level_names[level]));
    json_object_set_new(ordered, "msg", json_string(msg ? msg : ""));
    json_object_update_missing(ordered, line);
    json_decref(line);

    char *text = json_dumps(ordered, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(ordered);
    if (!text) return;
    size_t len = strlen(text);
    text[len] = '\0';
    /* json_dumps leaves no newline; build "text\n" in one buffer so one write() emits it */
    char stack_buf[1024];
    char *out = len + 2 <= sizeof(stack_buf) ? stack_buf : malloc(len + 2);
    if (out) {
        memcpy(out, text, len);
        out[len] = '\n';
        write_all(atomic_load(&log_fd), out, len + 1);
        if (out != stack_buf) free(out);
    }
    free(text);
}
