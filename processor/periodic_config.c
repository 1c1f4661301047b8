/*
 * periodic_config.c — parsing and checking of `schedule.periodic` (see periodic_config.h).
 *
 * Each entry is a libconfig group; every field is read by one small function that knows its
 * type, and every error points at the field's own line (or the entry's, for a missing field).
 * Nothing here talks to Kafka: the runtime is periodic.c.
 *
 * @locality main thread (config loading)
 */
#include "processor/periodic_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/config.h"
#include "common/utf8.h"

#define KJ_PERIODIC_MAX_JOB_BYTES (512 * 1024) /* a periodic job template, in bytes */

static char *pc_strdup(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

static int pc_fail(char *errstr, size_t size, const char *file, const config_setting_t *at,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int pc_fail(char *errstr, size_t size, const char *file, const config_setting_t *at,
                   const char *fmt, ...) {
    int n = snprintf(errstr, size, "%s:%u: ", file, at ? config_setting_source_line(at) : 0);
    if (n < 0 || (size_t)n >= size) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr + n, size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *type_name(const config_setting_t *s) {
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "a number";
    case CONFIG_TYPE_FLOAT:
        return "a decimal";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    case CONFIG_TYPE_GROUP:
        return "a group";
    default:
        return "something else";
    }
}

/* A string field: *out (borrowed from libconfig) or NULL when absent. */
static int get_string(const config_setting_t *entry, const char *field, const char *file,
                      const char *where, const char **out, char *errstr, size_t size) {
    const config_setting_t *s = config_setting_get_member(entry, field);
    *out = NULL;
    if (!s) return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return pc_fail(errstr, size, file, s, "%s.%s: expected a string, got %s", where, field,
                       type_name(s));
    *out = config_setting_get_string(s);
    if (!kj_utf8_valid(*out, strlen(*out)))
        return pc_fail(errstr, size, file, s, "%s.%s: not valid UTF-8", where, field);
    return 0;
}

static int get_duration(const config_setting_t *entry, const char *field, const char *def,
                        int64_t max_ms, const char *file, const char *where, int64_t *out,
                        char *errstr, size_t size) {
    const char *text;
    if (get_string(entry, field, file, where, &text, errstr, size)) return -1;
    const config_setting_t *s = config_setting_get_member(entry, field);
    if (!text) text = def;
    if (kj_duration_parse(text, out) || *out > max_ms) {
        char maxbuf[32];
        kj_duration_format(max_ms, maxbuf, sizeof maxbuf);
        return pc_fail(errstr, size, file, s ? s : entry,
                       "%s.%s: \"%.40s\" is not a duration from 0s to %s (e.g. \"30s\", \"5m\")",
                       where, field, text, maxbuf);
    }
    return 0;
}

static const char *const kj_entry_fields[] = {"name",    "cron", "time_zone", "type",     "key",
                                              "payload", "meta", "missed",    "catch_up", "jitter"};

static int parse_entry(const config_setting_t *e, unsigned idx, const char *file,
                       kj_periodic_entry *pe, char *errstr, size_t size) {
    char where[64];
    snprintf(where, sizeof where, "schedule.periodic[%u]", idx);
    pe->line = (int)config_setting_source_line(e);
    if (config_setting_type(e) != CONFIG_TYPE_GROUP)
        return pc_fail(errstr, size, file, e,
                       "%s: expected a group { name = ...; cron = ...; type = ...; }, got %s",
                       where, type_name(e));
    int n = config_setting_length(e);
    for (int i = 0; i < n; i++) {
        const config_setting_t *f = config_setting_get_elem(e, (unsigned)i);
        const char *fname = config_setting_name(f);
        bool known = false;
        for (size_t k = 0; k < sizeof kj_entry_fields / sizeof kj_entry_fields[0]; k++)
            known = known || strcmp(fname, kj_entry_fields[k]) == 0;
        if (!known)
            return pc_fail(errstr, size, file, f,
                           "%s.%s: unknown setting (an entry has name, cron, time_zone, type, "
                           "key, payload, meta, missed, catch_up, jitter)",
                           where, fname);
    }
    const char *name, *cron, *tz, *type, *key, *payload, *missed;
    if (get_string(e, "name", file, where, &name, errstr, size) ||
        get_string(e, "cron", file, where, &cron, errstr, size) ||
        get_string(e, "time_zone", file, where, &tz, errstr, size) ||
        get_string(e, "type", file, where, &type, errstr, size) ||
        get_string(e, "key", file, where, &key, errstr, size) ||
        get_string(e, "payload", file, where, &payload, errstr, size) ||
        get_string(e, "missed", file, where, &missed, errstr, size))
        return -1;
    if (!name) return pc_fail(errstr, size, file, e, "%s: missing name", where);
    snprintf(where, sizeof where, "schedule.periodic[%u]", idx);
    const config_setting_t *ns = config_setting_get_member(e, "name");
    size_t nlen = strlen(name);
    bool name_ok = nlen > 0 && nlen <= KJ_PERIODIC_MAX_NAME;
    for (size_t i = 0; name_ok && i < nlen; i++) {
        char c = name[i];
        name_ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
    }
    if (!name_ok)
        return pc_fail(errstr, size, file, ns,
                       "%s.name: \"%.40s\" must be 1-%d characters of A-Z a-z 0-9 . _ -", where,
                       name, KJ_PERIODIC_MAX_NAME);
    pe->name = pc_strdup(name);
    if (!cron) return pc_fail(errstr, size, file, e, "%s (%s): missing cron", where, name);
    char why[256];
    if (kj_cron_parse(cron, &pe->cron, why, sizeof why))
        return pc_fail(errstr, size, file, config_setting_get_member(e, "cron"), "%s.cron: %s",
                       where, why);
    pe->cron_text = pc_strdup(cron);
    if (tz && !*tz)
        return pc_fail(errstr, size, file, config_setting_get_member(e, "time_zone"),
                       "%s.time_zone: empty; leave it out for UTC, or name an IANA zone such as "
                       "\"Europe/Berlin\"",
                       where);
    kj_cron_zone *z = kj_cron_zone_open(tz, why, sizeof why);
    if (!z)
        return pc_fail(errstr, size, file, config_setting_get_member(e, "time_zone"),
                       "%s.time_zone: %s", where, why);
    /* an expression that matches no date at all (0 0 30 FEB *) is a mistake, not a schedule */
    int64_t first;
    kj_cron_result fires = kj_cron_next(&pe->cron, z, 0, &first);
    kj_cron_zone_close(z);
    if (fires != KJ_CRON_OK)
        return pc_fail(errstr, size, file, config_setting_get_member(e, "cron"),
                       "%s.cron: \"%.64s\" never fires (no date matches it)", where, cron);
    pe->time_zone = pc_strdup(tz && *tz ? tz : "UTC");
    if (!type || !*type)
        return pc_fail(errstr, size, file, type ? config_setting_get_member(e, "type") : e,
                       "%s (%s): %s", where, name, type ? "type is empty" : "missing type");
    pe->type = pc_strdup(type);
    pe->key = key && *key ? pc_strdup(key) : NULL;
    pe->payload = pc_strdup(payload);
    if (!missed || strcmp(missed, "skip") == 0)
        pe->missed = KJ_MISSED_SKIP;
    else if (strcmp(missed, "run_once") == 0)
        pe->missed = KJ_MISSED_RUN_ONCE;
    else
        return pc_fail(errstr, size, file, config_setting_get_member(e, "missed"),
                       "%s.missed: \"%.40s\": expected \"skip\" or \"run_once\"", where, missed);
    if (get_duration(e, "catch_up", "5m", 30LL * 86400000, file, where, &pe->catch_up_ms, errstr,
                     size) ||
        get_duration(e, "jitter", "0s", 30LL * 86400000, file, where, &pe->jitter_ms, errstr, size))
        return -1;
    const config_setting_t *meta = config_setting_get_member(e, "meta");
    if (meta) {
        if (config_setting_type(meta) != CONFIG_TYPE_GROUP)
            return pc_fail(errstr, size, file, meta,
                           "%s.meta: expected a group like meta = { team = \"bi\"; }, got %s",
                           where, type_name(meta));
        int m = config_setting_length(meta);
        pe->meta_keys = calloc((size_t)m + 1, sizeof(char *));
        pe->meta_values = calloc((size_t)m + 1, sizeof(char *));
        if (!pe->meta_keys || !pe->meta_values) abort();
        for (int i = 0; i < m; i++) {
            const config_setting_t *kv = config_setting_get_elem(meta, (unsigned)i);
            const char *v = config_setting_type(kv) == CONFIG_TYPE_STRING
                                ? config_setting_get_string(kv)
                                : NULL;
            if (!v || !kj_utf8_valid(v, strlen(v)))
                return pc_fail(errstr, size, file, kv, "%s.meta.%s: expected a UTF-8 string", where,
                               config_setting_name(kv));
            pe->meta_keys[i] = pc_strdup(config_setting_name(kv));
            pe->meta_values[i] = pc_strdup(v);
            pe->meta_count++;
        }
    }
    /* the job is produced as one record: keep it well inside a broker's default
     * message.max.bytes (1 MiB), so an entry cannot fail on every tick */
    size_t bytes = strlen(pe->payload) + strlen(pe->type) + (pe->key ? strlen(pe->key) : 0);
    for (size_t i = 0; i < pe->meta_count; i++)
        bytes += strlen(pe->meta_keys[i]) + strlen(pe->meta_values[i]);
    if (bytes > KJ_PERIODIC_MAX_JOB_BYTES)
        return pc_fail(errstr, size, file, e,
                       "%s (%s): the job template is %zu bytes (payload, type, key and meta); at "
                       "most %d",
                       where, pe->name, bytes, KJ_PERIODIC_MAX_JOB_BYTES);
    return 0;
}

int kj_periodic_config_parse(const config_setting_t *list, const char *file,
                             kj_periodic_entry **out, size_t *count, char *errstr,
                             size_t errstr_size) {
    *out = NULL;
    *count = 0;
    if (config_setting_type(list) != CONFIG_TYPE_LIST)
        return pc_fail(errstr, errstr_size, file, list,
                       "schedule.periodic: expected a list like periodic = ( { name = ...; cron "
                       "= ...; type = ...; } ), got %s",
                       type_name(list));
    int n = config_setting_length(list);
    if (n > KJ_PERIODIC_MAX_ENTRIES)
        return pc_fail(errstr, errstr_size, file, list, "schedule.periodic: more than %d entries",
                       KJ_PERIODIC_MAX_ENTRIES);
    kj_periodic_entry *es = calloc((size_t)n + 1, sizeof *es);
    if (!es) abort();
    *out = es;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        *count = (size_t)i + 1;
        if (parse_entry(e, (unsigned)i, file, &es[i], errstr, errstr_size)) return -1;
        for (int j = 0; j < i; j++)
            if (strcmp(es[j].name, es[i].name) == 0)
                return pc_fail(errstr, errstr_size, file, config_setting_get_member(e, "name"),
                               "schedule.periodic[%d].name: \"%s\" is already the name of "
                               "schedule.periodic[%d] (line %d); names must be unique",
                               i, es[i].name, j, es[j].line);
    }
    return 0;
}

int kj_periodic_config_check(const kj_config *cfg, char *errstr, size_t errstr_size) {
    const char *file = cfg->source_path ? cfg->source_path : "config";
    for (size_t i = 0; i < cfg->periodic_count; i++) {
        const kj_periodic_entry *e = &cfg->periodic[i];
        if (e->jitter_ms == 0) continue;
        int64_t max = kj_config_schedule_max_delay(cfg);
        if (e->jitter_ms > max) {
            snprintf(errstr, errstr_size,
                     "%s:%d: schedule.periodic[%zu].jitter (%lld ms) must be at most "
                     "schedule.max_delay (%lld ms): the jittered job is held like a delayed job",
                     file, e->line, i, (long long)e->jitter_ms, (long long)max);
            return -1;
        }
        if (cfg->retry_delay_count == 0) {
            snprintf(errstr, errstr_size,
                     "%s:%d: schedule.periodic[%zu].jitter needs a retry ladder (retry.delays is "
                     "empty): a jittered job is held on it until due",
                     file, e->line, i);
            return -1;
        }
    }
    return 0;
}

void kj_periodic_entries_free(kj_periodic_entry *entries, size_t count) {
    if (!entries) return;
    for (size_t i = 0; i < count; i++) {
        kj_periodic_entry *e = &entries[i];
        free(e->name);
        free(e->cron_text);
        free(e->time_zone);
        free(e->type);
        free(e->key);
        free(e->payload);
        for (size_t k = 0; k < e->meta_count; k++) {
            free(e->meta_keys[k]);
            free(e->meta_values[k]);
        }
        free(e->meta_keys);
        free(e->meta_values);
    }
    free(entries);
}

char *kj_periodic_state_topic(const kj_config *cfg) {
    size_t n = strlen(cfg->main_topic) + sizeof ".schedule";
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, "%s.schedule", cfg->main_topic);
    return s;
}
