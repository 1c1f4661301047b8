/*
 * periodic_config.h — the `schedule.periodic` list of the configuration file: one entry per
 * periodic (cron) job, parsed and checked at load time.
 *
 * The settings table of config.c holds scalars and lists of scalars, one row per setting; a list
 * of groups does not fit a row, so this module parses it, and config.c calls it for the one key
 * `schedule.periodic` (and frees it with the rest of kj_config). Errors have config.c's shape:
 * `FILE:LINE: schedule.periodic[I].FIELD: why`. There is no environment override for the list
 * (docs/configuration.md, "Periodic jobs"): it is file-only.
 *
 * An entry (docs/scheduling.md, "Periodic jobs"):
 *   name       required; [A-Za-z0-9._-], 1..100 bytes, unique in the list (the job ids and the
 *              state topic key are made of it)
 *   cron       required; a cron expression (processor/cron.h), checked here
 *   time_zone  IANA zone the expression is read in (default "UTC"), checked here with ICU
 *   type       required; the job type
 *   key        record key of the job ("" or absent: unkeyed)
 *   payload    job payload, as text (default "")
 *   meta       group of string values: the job's meta map (default empty)
 *   missed     "skip" (default) or "run_once": what to do with ticks older than catch_up
 *   catch_up   duration (default "5m"): due ticks at most this old are all enqueued, late
 *   jitter     duration (default "0s"): each tick's job is due a deterministic offset in
 *              [0, jitter] after the tick (kjobs-run-at); at most schedule.max_delay and
 *              only with a retry ladder (checked by kj_periodic_config_check)
 */
#ifndef KJOBS_PERIODIC_CONFIG_H
#define KJOBS_PERIODIC_CONFIG_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/cron.h"

struct kj_config;

/** What happens to ticks that fell due more than catch_up ago (the owner was down). */
typedef enum kj_missed_policy {
    KJ_MISSED_SKIP = 0, /* none of them is enqueued */
    KJ_MISSED_RUN_ONCE, /* one job, for the latest of them */
} kj_missed_policy;

/** One schedule.periodic entry. Owned by kj_config (kj_periodic_entries_free). */
typedef struct kj_periodic_entry {
    char *name, *cron_text, *time_zone, *type;
    char *key;     /* NULL: unkeyed */
    char *payload; /* never NULL */
    char **meta_keys, **meta_values;
    size_t meta_count;
    kj_cron cron;
    kj_missed_policy missed;
    int64_t catch_up_ms, jitter_ms;
    int line; /* the entry's line in the file, for later errors */
} kj_periodic_entry;

/** Longest entry name. */
#define KJ_PERIODIC_MAX_NAME 100
/** Most entries in schedule.periodic. */
#define KJ_PERIODIC_MAX_ENTRIES 1000

/**
 * Parse the list `list` (the libconfig setting schedule.periodic; `file` names it in errors) into
 * a new array in *out (count in *count; the caller frees it with kj_periodic_entries_free, also
 * after an error: what was parsed is returned). Checks each entry's fields, the cron expression,
 * the zone and the uniqueness of names. Returns 0, or -1 with errstr (FILE:LINE: setting: why).
 * @locality main thread (config loading)
 */
int kj_periodic_config_parse(const config_setting_t *list, const char *file,
                             kj_periodic_entry **out, size_t *count, char *errstr,
                             size_t errstr_size);

/**
 * Cross-setting checks of the entries against the rest of cfg (jitter at most
 * schedule.max_delay, jitter only with a retry ladder). `file` names the config file in errors
 * (NULL: none). Returns 0, or -1 with errstr.
 */
int kj_periodic_config_check(const struct kj_config *cfg, char *errstr, size_t errstr_size);

/** Free an array from kj_periodic_config_parse (NULL is fine). */
void kj_periodic_entries_free(kj_periodic_entry *entries, size_t count);

/** "<topics.main>.schedule": the compacted topic holding each entry's last enqueued tick.
 *  malloc'd; the caller frees it. */
char *kj_periodic_state_topic(const struct kj_config *cfg);

#endif
