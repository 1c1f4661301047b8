/*
 * log.h — structured logging: one JSON object per line on stderr.
 *
 * Every line has "ts" (RFC 3339 UTC, milliseconds), "level" and "msg", plus the fields the
 * caller passes as a jansson json_pack() format, e.g.
 *
 *     kj_log(KJ_LOG_INFO, "partition assigned", "{s:s, s:i}", "topic", t, "partition", p);
 *
 * Lines are written with one write(2) each, so lines from different threads never interleave.
 * Never pass secrets (passwords, tokens) as fields: nothing here can tell them apart.
 *
 * @locality any thread
 */
#ifndef KJOBS_LOG_H
#define KJOBS_LOG_H

#include <jansson.h> /* json_int_t for "I" fields */

typedef enum { KJ_LOG_DEBUG = 0, KJ_LOG_INFO, KJ_LOG_WARN, KJ_LOG_ERROR } kj_log_level;

/** Set the minimum level that is written (default info). */
void kj_log_set_level(kj_log_level level);
kj_log_level kj_log_get_level(void);
/** Parse "debug"|"info"|"warn"|"error"; returns 0, or -1 for anything else. */
int kj_log_level_parse(const char *name, kj_log_level *out);
/** Map a syslog level (as librdkafka's log_cb gives) to ours. */
kj_log_level kj_log_level_from_syslog(int syslog_level);
/** Redirect output to another fd (tests); default 2. */
void kj_log_set_fd(int fd);

/**
 * Write one log line. `fields_fmt` is a json_pack() format for an object (or NULL for none);
 * a field named ts/level/msg would be overwritten by ours. A bad format never loses the line:
 * the message is written with a "log_error" field instead.
 */
void kj_log(kj_log_level level, const char *msg, const char *fields_fmt, ...);

/**
 * An observer of written lines at warn or error level, called on the logging thread with the
 * line as a JSON object (borrowed for the call: copy what you keep) after it was written. It
 * must be quick and thread-safe and must not log. One observer per process; install it once at
 * start (NULL removes it, but a call already under way may still finish afterwards, so the
 * observer's state must outlive the process's threads). The worker's status report keeps the
 * last few errors this way (processor/status_report.h).
 */
typedef void(kj_log_observer)(kj_log_level level, const json_t *line);
void kj_log_set_observer(kj_log_observer *fn);

#endif /* KJOBS_LOG_H */
