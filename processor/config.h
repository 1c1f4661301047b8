/*
 * config.h — kjobs configuration: one struct (kj_config) filled from, in increasing precedence,
 * built-in defaults < a libconfig file < KJOBS_* environment variables < command-line flags.
 *
 * Everything about a setting (name, type, default, bounds, environment name, documentation) lives
 * in one table in config.c, in the manner of Redis's config.c. That table drives parsing,
 * validation, environment overrides, the shipped kjobs.cfg.example and the reference in
 * docs/configuration.md, so the five can never disagree (tests/unit/test_config.c checks it).
 *
 * Ownership: every pointer in kj_config is owned by the struct and released by kj_config_free().
 * Error strings never contain secret values: librdkafka property values and handlers.exec words
 * are never quoted back, only the setting or property name is.
 *
 * @locality main thread, before any worker starts; afterwards the struct is read-only and may be
 *           read from any thread without locks.
 */
#ifndef KJOBS_CONFIG_H
#define KJOBS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** The file read when no path is given (a missing default file is not an error). */
#define KJ_CONFIG_DEFAULT_PATH "kjobs.cfg"
/** Upper bound on table rows; config.c static-asserts that the table fits. */
#define KJ_CONFIG_MAX_SETTINGS 64
/** Most retry ladder steps (retry.delays entries). */
#define KJ_CONFIG_MAX_RETRY_DELAYS 32

/** Where a setting's current value came from (for error messages and `--check-config`). */
typedef enum {
    KJ_CONFIG_FROM_DEFAULT = 0,
    KJ_CONFIG_FROM_FILE,
    KJ_CONFIG_FROM_ENV,
    KJ_CONFIG_FROM_CLI,
} kj_config_origin_kind;

/** One entry of the `limits` list: flow control for one job type (processor/config_limits.h). */
typedef struct kj_config_limit {
    char *type;       /* job type, exact */
    char *rate_text;  /* the rate as configured ("100/1m"), NULL when none */
    double rate;      /* jobs per second; 0 = no rate limit */
    double burst;     /* bucket size in jobs, >= 1 when rate > 0 */
    int concurrency;  /* jobs of the type running at once per process; 0 = no cap */
    bool group_scope; /* scope = "group": rate and burst are for the whole consumer group */
} kj_config_limit;

typedef struct kj_config {
    char *source_path; /* file actually read, or NULL when none */
    char *bootstrap, *group, *client_id, *group_instance_id, *group_protocol;
    char **rdkafka_props;
    size_t rdkafka_prop_count;                   /* "name=value", file order then env */
    char *main_topic, *retry_prefix, *dlq_topic; /* retry_prefix/dlq_topic resolved, never "" */
    int partitions, replication_factor, min_insync_replicas;
    int64_t topic_retention_ms, dlq_retention_ms; /* retention.ms of created topics */
    int batch_max_jobs, batch_max_wait_ms, batch_max_pending;
    int batch_max_pending_bytes; /* per process, bytes of fetched records held */
    char *batch_ordering;        /* "partition" or "key"; see kj_config_key_lanes() */
    int batch_key_lanes;         /* as configured: 0 means "workers" */
    int workers;
    int64_t *retry_delays_ms;
    size_t retry_delay_count;
    int retry_max_attempts;
    int retry_in_place_attempts;     /* a retry tried again in place, before the ladder */
    int64_t retry_in_place_delay_ms; /* ... after this wait (ms) */
    bool retry_exactly_once;
    char *retry_ordering;          /* "none" or "key"; see kj_config_retry_key_ordered() */
    int64_t schedule_max_delay_ms; /* read it through kj_config_schedule_max_delay() */
    /* schedule.periodic: a list of groups, outside the table (processor/periodic_config.h) */
    struct kj_periodic_entry *periodic;
    size_t periodic_count;
    int breaker_consecutive, breaker_window, breaker_min_window;
    double breaker_ratio;
    int64_t breaker_cooldown_ms;
    int crash_loop_limit; /* dlq.crash_loop_limit; 0 = off */
    char *handlers_plugin;
    char **handlers_exec;
    size_t handlers_exec_count;
    char **handlers_exec_types;
    size_t handlers_exec_type_count;
    int64_t handlers_exec_timeout_ms;
    char *handlers_exec_protocol; /* "json-lines" or "binary" (exec_handler.h, FRAMING) */
    int64_t handlers_timeout_ms;  /* in-process handlers, per job; 0 none */
    char **handlers_timeouts;     /* "type=duration" overrides */
    size_t handlers_timeout_count;
    int64_t handlers_timeout_grace_ms; /* past the limit: exit(70); 0 never */
    char *http_listen;
    int64_t shutdown_grace_ms;
    char *log_level;
    /* the operator console (`kjobs ui`, cli/cmd_ui.c) and worker status reports */
    int64_t ui_report_interval_ms; /* 0 = no reports */
    char *ui_listen, *ui_token;    /* ui_token: a secret, "" = none */
    bool ui_allow_actions;
    bool ui_on_worker; /* the console on the worker's http.listen too */
    /* Confluent Schema Registry (processor/schema_registry.h); sr_url "" = none */
    char *sr_url, *sr_user, *sr_password, *sr_ca_file, *sr_cert_file, *sr_key_file,
        *sr_key_password;
    int64_t sr_timeout_ms, sr_unknown_ttl_ms;
    int sr_cache_size;
    /* flow control per job type (`limits`; KJOBS_LIMITS) */
    kj_config_limit *limits;
    size_t limit_count;
    unsigned char limits_from; /* kj_config_origin_kind */
    int limits_line;           /* file line of `limits` */

    /* ---- internal bookkeeping; read it through the functions below ---- */
    bool retry_prefix_auto, dlq_topic_auto; /* "" was configured: derived from main_topic */
    bool embedded_broker; /* bootstrap is the broker `kjobs run --embedded` started */
    struct kj_config_origin {
        unsigned char kind;           /* kj_config_origin_kind */
        int line;                     /* file line when kind == KJ_CONFIG_FROM_FILE */
    } origin[KJ_CONFIG_MAX_SETTINGS]; /* indexed by table row */
} kj_config;

/**
 * Initialise *cfg with the built-in defaults. Overwrites (does not free) whatever *cfg held.
 * Always succeeds (aborts on out-of-memory, like every allocation in this module).
 */
void kj_config_defaults(kj_config *cfg);

/**
 * Initialise *cfg from scratch: defaults, then the file, then the process environment, then the
 * cross-setting checks. `path` NULL means $KJOBS_CONFIG if set (a missing file is then an error),
 * else "./kjobs.cfg" if it exists, else defaults only. A missing explicitly given file is an error.
 * Returns 0, or -1 with a one-line message in errstr. Call kj_config_free() in both cases.
 */
int kj_config_load(kj_config *cfg, const char *path, char *errstr, size_t errstr_size);

/**
 * Like kj_config_load, with the file text given in memory (`name_for_errors` prefixes errors,
 * e.g. "kjobs.cfg") and the environment given as a NULL-terminated "NAME=value" array (NULL for
 * none) instead of the process environment. For tests and the fuzzer. `@include` directives are
 * refused here: in-memory text has no directory to resolve them against.
 */
int kj_config_load_string(kj_config *cfg, const char *text, const char *name_for_errors,
                          char *const *envp, char *errstr, size_t errstr_size);

/**
 * kj_config_load with an injected environment (NULL-terminated "NAME=value" array, NULL for
 * none). kj_config_load(cfg, path, ...) is kj_config_load_env(cfg, path, environ, ...).
 */
int kj_config_load_env(kj_config *cfg, const char *path, char *const *envp, char *errstr,
                       size_t errstr_size);

/**
 * Set one setting from text, as a command-line flag would (-b → "kafka.bootstrap",
 * -G → "kafka.group"). The text uses the environment-variable syntax (see
 * docs/configuration.md). Checks the value's own type and range and re-derives
 * topics.retry_prefix/topics.dlq when they follow topics.main; cross-setting rules are checked by
 * kj_config_validate(), which callers setting several related values call after the last one.
 * Returns 0, or -1 (value unchanged) with errstr.
 */
int kj_config_set(kj_config *cfg, const char *dotted_name, const char *value, char *errstr,
                  size_t errstr_size);

/**
 * Append one librdkafka property "name=value" (after the file's and environment's, so it wins),
 * as -X does. Refuses malformed text, unknown properties, values librdkafka rejects, and the
 * properties kjobs owns (bootstrap.servers, group.id, client.id, group.instance.id,
 * enable.auto.commit, enable.auto.offset.store). The value is never quoted in errstr.
 */
int kj_config_add_rdkafka_prop(kj_config *cfg, const char *name_eq_value, char *errstr,
                               size_t errstr_size);

/** Cross-setting checks (also run by kj_config_load). 0, or -1 with errstr. */
int kj_config_validate(const kj_config *cfg, char *errstr, size_t errstr_size);

/** malloc'd "<retry_prefix><step>" for step 1..retry_delay_count; NULL when out of range. */
char *kj_config_retry_topic(const kj_config *cfg, int step);

/** Release everything *cfg owns and zero it; safe to call twice. */
void kj_config_free(kj_config *cfg);

/**
 * Parse a duration: decimal milliseconds ("250"), or one or more <number><unit> pairs with unit
 * ms, s, m, h or d, largest unit first ("250ms", "10s", "1m30s", "2h", "1d"). No sign, no
 * spaces, no fractions, no overflow. Returns 0 with *ms_out set, or -1.
 */
int kj_duration_parse(const char *text, int64_t *ms_out);
/**
 * Parses one handlers.timeouts entry, "type=duration" (the first '=' splits, so a type cannot
 * hold one). On success returns 0, the type's length in `*type_len` (if not NULL) and the limit
 * in ms (0..7 days; 0 = none) in `*ms_out`; -1 when malformed.
 */
int kj_type_timeout_parse(const char *text, size_t *type_len, int64_t *ms_out);

/** Format ms the way kj_duration_parse reads it, e.g. 90000 → "1m30s", 0 → "0s". */
void kj_duration_format(int64_t ms, char *buf, size_t size);

/** Write every setting with its default and documentation as a libconfig file. */
void kj_config_write_example(FILE *out);

/** Write the Markdown reference tables (one per group) used in docs/configuration.md. */
void kj_config_write_reference(FILE *out);

/**
 * Write the effective configuration as libconfig text, each setting annotated with where its
 * value came from. librdkafka property values are replaced by "<hidden>" (they may be secrets).
 */
void kj_config_write_effective(const kj_config *cfg, FILE *out);

/**
 * Where a setting's value came from, for an error about it: "FILE:LINE: key" (from the file),
 * "environment KJOBS_X: key" or just "key" (default / command line): always the setting, and
 * its file line or variable when there is one. Used by checks that can only
 * run after loading (e.g. that handlers.exec names a program), so they point at the same place.
 */
void kj_config_place(const kj_config *cfg, const char *dotted_name, char *buf, size_t size);

/* ---- table introspection (tests, `--check-config`) ---- */

/** Number of settings in the table. */
size_t kj_config_setting_count(void);
/** Dotted name of setting i ("kafka.bootstrap", "workers"), or NULL when out of range. */
const char *kj_config_setting_name(size_t i);
/** Environment variable of setting i ("KJOBS_KAFKA_BOOTSTRAP"), or NULL when out of range. */
const char *kj_config_setting_env(size_t i);
/**
 * Format the current value of a setting as libconfig text ("100", "\"jobs\"", "[ \"10s\" ]";
 * topics.retry_prefix/topics.dlq show the resolved names). 0, or -1 for an unknown name.
 */
int kj_config_format_value(const kj_config *cfg, const char *dotted_name, char *buf, size_t size);
/** Where the current value of a setting came from; -1 for an unknown name. */
int kj_config_origin_of(const kj_config *cfg, const char *dotted_name, int *line_out);

/**
 * How far ahead a delayed or scheduled job (kjobs-run-at) may be due: schedule.max_delay,
 * or topics.retention when that is shorter and schedule.max_delay was left at its default.
 */
int64_t kj_config_schedule_max_delay(const kj_config *cfg);

/**
 * Lanes per main-topic partition: 1 with batch.ordering = "partition" (one lane, partition
 * order); with "key", batch.key_lanes, or workers when that is 0 (docs/ordering.md).
 */
int kj_config_key_lanes(const kj_config *cfg);

/**
 * KiB of each librdkafka queue sized from batch.max_pending_bytes (the worker's prefetch queue,
 * the router's queue of copies): a quarter of the bound, at least 1024 (1 MiB).
 */
int kj_config_queue_kbytes(const kj_config *cfg);

/** Whether retry.ordering is "key": later jobs of a key wait behind its job on the ladder. */
bool kj_config_retry_key_ordered(const kj_config *cfg);

#endif /* KJOBS_CONFIG_H */
