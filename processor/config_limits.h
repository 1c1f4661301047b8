/*
 * config_limits.h — the `limits` list of the configuration: flow control per job type (a rate
 * limit and/or a concurrency cap; partitions/flow_control.h enforces them, docs/flow-control.md
 * documents them).
 *
 * A list of groups does not fit config.c's one-row-per-setting table, so it has this parser of
 * its own, called by config.c for the file's `limits` and for KJOBS_LIMITS (a JSON array of the
 * same objects; like every environment variable it replaces the file's value). Both go through
 * one validation, so an entry means the same from either place, and errors name the place:
 * "kjobs.cfg:14: limits[0].rate: ..." or "environment KJOBS_LIMITS: limits[0].rate: ...".
 *
 * @locality main thread, while the configuration loads (like config.c)
 */
#ifndef KJOBS_CONFIG_LIMITS_H
#define KJOBS_CONFIG_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "processor/config.h"

struct config_setting_t;

/**
 * Replace cfg->limits with the entries of the libconfig list @p s (from @p file, for errors).
 * Returns 0, or -1 with errstr (cfg->limits unchanged).
 */
int kj_config_limits_from_setting(kj_config *cfg, const struct config_setting_t *s,
                                  const char *file, char *errstr, size_t errstr_size);

/** Replace cfg->limits with the JSON array @p text (KJOBS_LIMITS). 0, or -1 with errstr. */
int kj_config_limits_from_json(kj_config *cfg, const char *text, char *errstr, size_t errstr_size);

/** Free cfg->limits (and zero the count). */
void kj_config_limits_free(kj_config *cfg);

/** The effective `limits` as libconfig text with where it came from (--check-config). */
void kj_config_limits_write_effective(const kj_config *cfg, FILE *out);

/** The commented `limits` example appended to kjobs.cfg.example. */
void kj_config_limits_write_example(FILE *out);

/**
 * Parse a rate: "N/DURATION" (N jobs per duration: "100/1m", "5/s", "1/500ms") into jobs per
 * second. Returns 0, or -1 with why (the expected form). Exposed for the unit tests.
 */
int kj_config_rate_parse(const char *text, double *per_second, char *why, size_t why_size);

#endif
