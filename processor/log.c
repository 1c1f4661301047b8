/*
 * log.c — JSON-lines logger (see log.h). Builds each line with jansson, then emits it with a
 * single write(2) so concurrent threads cannot interleave partial lines. The level check is a
 * relaxed atomic load, so disabled levels cost almost nothing on hot paths.
 */
#include "processor/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"

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

/*
 * The fields again when json_vpack_ex refused them, for the flat object formats kj_log callers
 * use ("{s:s, s:s?, s:s#, s:s%, s:i, s:I, s:b, s:f, s:n}"): strings that are not valid UTF-8 are
 * repaired rather than losing the line. NULL for anything else (a genuinely bad format).
 */
static json_t *pack_lenient(const char *fmt, va_list ap) {
    const char *p = fmt;
    while (*p == ' ')
        p++;
    if (*p++ != '{') return NULL;
    json_t *obj = json_object();
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '}') return obj;
        if (*p++ != 's') break;
        const char *key = va_arg(ap, const char *);
        while (*p == ' ' || *p == ':')
            p++;
        json_t *v = NULL;
        char t = *p++;
        if (t == 's') {
            const char *str = va_arg(ap, const char *);
            size_t len;
            bool nullable = *p == '?';
            if (*p == '#') {
                len = (size_t)va_arg(ap, int);
                p++;
            } else if (*p == '%') {
                len = va_arg(ap, size_t);
                p++;
            } else {
                if (nullable) p++;
                len = str ? strlen(str) : 0;
            }
            if (!str && !nullable) break;
            v = str ? kj_utf8_json_string(str, len) : json_null();
        } else if (t == 'i' || t == 'b') {
            int i = va_arg(ap, int);
            v = t == 'b' ? json_boolean(i) : json_integer(i);
        } else if (t == 'I') {
            v = json_integer(va_arg(ap, json_int_t));
        } else if (t == 'f') {
            v = json_real(va_arg(ap, double));
        } else if (t == 'n') {
            v = json_null();
        } else {
            break;
        }
        if (!key) {
            json_decref(v);
            break;
        }
        char *clean_key = kj_utf8_clean_dup(key, strlen(key));
        json_object_set_new(obj, clean_key ? clean_key : "?", v);
        free(clean_key);
    }
    json_decref(obj);
    return NULL;
}

static _Atomic(kj_log_observer *) log_observer;

void kj_log_set_observer(kj_log_observer *fn) {
    atomic_store(&log_observer, fn);
}

void kj_log(kj_log_level level, const char *msg, const char *fields_fmt, ...) {
    if ((int)level < atomic_load_explicit(&log_min_level, memory_order_relaxed)) return;

    json_t *line = NULL;
    if (fields_fmt) {
        json_error_t error;
        va_list ap, again;
        va_start(ap, fields_fmt);
        va_copy(again, ap);
        line = json_vpack_ex(&error, 0, fields_fmt, ap);
        va_end(ap);
        if (!line || !json_is_object(line)) {
            json_decref(line);
            line = pack_lenient(fields_fmt, again); /* e.g. a field that is not valid UTF-8 */
            if (!line) {
                line = json_object();
                json_object_set_new(line, "log_error", json_string(error.text));
            }
        }
        va_end(again);
    } else {
        line = json_object();
    }

    char ts[40];
    format_timestamp(ts, sizeof(ts));
    /* ts/level/msg first for readability: jansson keeps insertion order with JSON_PRESERVE_ORDER */
    json_t *ordered = json_object();
    json_object_set_new(ordered, "ts", json_string(ts));
    json_object_set_new(ordered, "level", json_string(level_names[level]));
    json_object_set_new(ordered, "msg", kj_utf8_json_string(msg ? msg : "", msg ? strlen(msg) : 0));
    json_object_update_missing(ordered, line);
    json_decref(line);

    char *text = json_dumps(ordered, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    kj_log_observer *observer = level >= KJ_LOG_WARN ? atomic_load(&log_observer) : NULL;
    if (observer) observer(level, ordered);
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
