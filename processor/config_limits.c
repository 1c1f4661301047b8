/*
 * config_limits.c — parsing, validating and printing the `limits` list (config_limits.h).
 *
 * Each entry is read into a neutral form (limit_in: texts and numbers as found, with where they
 * were) by one reader per source (libconfig, JSON), then checked and converted once, by
 * limit_build(). Defaults: burst = a tenth of a second's worth of jobs at the rate (at least 1),
 * scope = "process".
 */
#include "processor/config_limits.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define KJ_LIMITS_MAX       256
#define KJ_LIMIT_MAX_RATE   1e6                    /* jobs per second */
#define KJ_LIMIT_MIN_RATE   (1.0 / (30 * 86400.0)) /* one job per 30 days */
#define KJ_LIMIT_MAX_BURST  1e6
#define KJ_LIMIT_MAX_CONCUR 10000

static const char *const kj_limit_keys[] = {"type", "rate", "burst", "concurrency", "scope"};

/* One entry as read, before checks. Strings are borrowed from the source document. */
typedef struct limit_in {
    const char *type, *scope;
    const char *rate_text; /* rate given as text */
    double rate_num;       /* rate given as a number */
    bool has_rate, rate_is_num;
    double burst;
    bool has_burst;
    long long concurrency;
    bool has_concurrency;
} limit_in;

static void limit_free_one(kj_config_limit *l) {
    free(l->type);
    free(l->rate_text);
}

static void limits_free(kj_config_limit *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        limit_free_one(&v[i]);
    free(v);
}

void kj_config_limits_free(kj_config *cfg) {
    limits_free(cfg->limits, cfg->limit_count);
    cfg->limits = NULL;
    cfg->limit_count = 0;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* Length of a plain decimal ("12", "0.5") at the start of s: digits, then optionally a point and
 * digits; 0 when there is none. No sign, exponent, hex or leading point: rates are written by
 * people, and strtod would read "0x10" as 16. */
static size_t decimal_len(const char *s) {
    size_t n = strspn(s, "0123456789");
    if (n == 0) return 0;
    if (s[n] == '.') {
        size_t f = strspn(s + n + 1, "0123456789");
        if (f == 0) return 0;
        n += 1 + f;
    }
    return n;
}

int kj_config_rate_parse(const char *text, double *per_second, char *why, size_t why_size) {
    const char *slash = strchr(text, '/');
    size_t len = decimal_len(text);
    const char *end = text + len;
    double n = len ? strtod(text, NULL) : 0;
    bool num_ok = len > 0 && isfinite(n) && n > 0;
    if (num_ok && !slash && *end == '\0') { /* a bare number: jobs per second */
        *per_second = n;
        return 0;
    }
    if (!num_ok || !slash || end != slash) goto bad;
    const char *d = slash + 1;
    char unit[32];
    if (!isdigit((unsigned char)*d)) { /* "5/s" = "5/1s" */
        if (strlen(d) + 2 > sizeof unit) goto bad;
        snprintf(unit, sizeof unit, "1%s", d);
        d = unit;
    }
    int64_t ms;
    if (kj_duration_parse(d, &ms) != 0 || ms <= 0 || strspn(d, "0123456789") == strlen(d))
        goto bad; /* a bare number after the slash would be milliseconds: say the unit */
    *per_second = n * 1000.0 / (double)ms;
    return 0;
bad:
    snprintf(why, why_size,
             "expected a rate like \"100/1m\", \"5/s\" or \"1/500ms\" (jobs per duration), or a "
             "number of jobs per second");
    return -1;
}

/* Check one entry and build it into *out. "why" names the entry's field. */
static int limit_build(const limit_in *in, size_t idx, kj_config_limit *out, const char **field,
                       char *why, size_t why_size) {
    *field = NULL;
    memset(out, 0, sizeof *out);
    if (!in->type || !in->type[0]) {
        *field = "type";
        snprintf(why, why_size, "limits[%zu].type: expected the job type the limit is for", idx);
        return -1;
    }
    size_t tl = strlen(in->type);
    if (isspace((unsigned char)in->type[0]) || isspace((unsigned char)in->type[tl - 1])) {
        *field = "type";
        snprintf(why, why_size,
                 "limits[%zu].type: \"%.64s\" starts or ends with a space: no job type would "
                 "match it",
                 idx, in->type);
        return -1;
    }
    if (!in->has_rate && !in->has_concurrency) {
        snprintf(why, why_size,
                 "limits[%zu]: set rate, concurrency or both (a limit on \"%.64s\" limits nothing "
                 "without them)",
                 idx, in->type);
        return -1;
    }
    char sub[256];
    double rate = 0;
    if (in->has_rate) {
        if (in->rate_is_num) {
            rate = in->rate_num;
            if (!(rate > 0) || !isfinite(rate)) {
                *field = "rate";
                snprintf(why, why_size, "limits[%zu].rate: expected jobs per second > 0, got %g",
                         idx, in->rate_num);
                return -1;
            }
        } else if (kj_config_rate_parse(in->rate_text, &rate, sub, sizeof sub) != 0) {
            *field = "rate";
            snprintf(why, why_size, "limits[%zu].rate: %s, got \"%.64s\"", idx, sub, in->rate_text);
            return -1;
        }
        if (rate > KJ_LIMIT_MAX_RATE || rate < KJ_LIMIT_MIN_RATE * (1 - 1e-9)) {
            *field = "rate";
            snprintf(why, why_size,
                     "limits[%zu].rate: %g jobs/s is out of range (one job per 30 days .. "
                     "1000000 per second)",
                     idx, rate);
            return -1;
        }
    }
    double burst = rate / 10 < 1 ? 1 : floor(rate / 10);
    if (in->has_burst) {
        if (!in->has_rate) {
            *field = "burst";
            snprintf(why, why_size, "limits[%zu].burst: only meaningful with a rate", idx);
            return -1;
        }
        if (!(in->burst >= 1) || in->burst > KJ_LIMIT_MAX_BURST || floor(in->burst) != in->burst) {
            *field = "burst";
            snprintf(why, why_size,
                     "limits[%zu].burst: expected a whole number of jobs from 1 to 1000000, got "
                     "%.0f",
                     idx, in->burst);
            return -1;
        }
        burst = in->burst;
    }
    if (in->has_concurrency && (in->concurrency < 1 || in->concurrency > KJ_LIMIT_MAX_CONCUR)) {
        *field = "concurrency";
        snprintf(why, why_size, "limits[%zu].concurrency: expected 1..%d jobs, got %lld", idx,
                 KJ_LIMIT_MAX_CONCUR, in->concurrency);
        return -1;
    }
    bool group = false;
    if (in->scope) {
        if (strcmp(in->scope, "group") == 0)
            group = true;
        else if (strcmp(in->scope, "process") != 0) {
            *field = "scope";
            snprintf(why, why_size,
                     "limits[%zu].scope: expected \"process\" or \"group\", got \"%.64s\"", idx,
                     in->scope);
            return -1;
        }
        if (group && !in->has_rate) {
            *field = "scope";
            snprintf(why, why_size,
                     "limits[%zu].scope: \"group\" scales the rate, and this limit has none (a "
                     "concurrency cap is always per process)",
                     idx);
            return -1;
        }
    }
    out->type = xstrdup(in->type);
    if (in->has_rate) {
        char num[64];
        if (in->rate_is_num) snprintf(num, sizeof num, "%g", in->rate_num);
        out->rate_text = xstrdup(in->rate_is_num ? num : in->rate_text);
    }
    out->rate = rate;
    out->burst = in->has_rate ? burst : 0;
    out->concurrency = in->has_concurrency ? (int)in->concurrency : 0;
    out->group_scope = group;
    return 0;
}

/* Checks across entries: one limit per type. */
static int limits_unique(const kj_config_limit *v, size_t n, size_t *dup, char *why,
                         size_t why_size) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(v[i].type, v[j].type) == 0) {
                *dup = i;
                snprintf(why, why_size,
                         "limits[%zu].type: \"%.64s\" has a limit already (limits[%zu]); one "
                         "entry per type",
                         i, v[i].type, j);
                return -1;
            }
    return 0;
}

static bool key_known(const char *k) {
    for (size_t i = 0; i < sizeof kj_limit_keys / sizeof *kj_limit_keys; i++)
        if (strcmp(k, kj_limit_keys[i]) == 0) return true;
    return false;
}

static void unknown_key(const char *k, size_t idx, char *why, size_t why_size) {
    snprintf(why, why_size,
             "limits[%zu].%.64s: unknown setting (an entry has type, rate, burst, "
             "concurrency, scope)",
             idx, k);
}

/* ---- libconfig ---------------------------------------------------------------------------- */

static int read_setting_entry(const config_setting_t *e, size_t idx, limit_in *in,
                              const config_setting_t **bad_at, char *why, size_t why_size) {
    memset(in, 0, sizeof *in);
    *bad_at = e;
    if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
        snprintf(why, why_size,
                 "limits[%zu]: expected a group like { type = \"email.send\"; rate = \"10/s\"; }",
                 idx);
        return -1;
    }
    int n = config_setting_length(e);
    for (int i = 0; i < n; i++) {
        const config_setting_t *c = config_setting_get_elem(e, (unsigned)i);
        const char *k = config_setting_name(c);
        int t = config_setting_type(c);
        *bad_at = c;
        if (!key_known(k)) {
            unknown_key(k, idx, why, why_size);
            return -1;
        }
        bool is_num = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 || t == CONFIG_TYPE_FLOAT;
        if (strcmp(k, "type") == 0 || strcmp(k, "scope") == 0) {
            if (t != CONFIG_TYPE_STRING) {
                snprintf(why, why_size, "limits[%zu].%s: expected a string", idx, k);
                return -1;
            }
            *(k[0] == 't' ? &in->type : &in->scope) = config_setting_get_string(c);
        } else if (strcmp(k, "rate") == 0) {
            in->has_rate = true;
            if (t == CONFIG_TYPE_STRING) {
                in->rate_text = config_setting_get_string(c);
            } else if (is_num) {
                in->rate_is_num = true;
                in->rate_num = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(c)
                                                      : (double)config_setting_get_int64(c);
            } else {
                snprintf(why, why_size, "limits[%zu].rate: expected \"N/duration\" or a number",
                         idx);
                return -1;
            }
        } else if (strcmp(k, "burst") == 0 || strcmp(k, "concurrency") == 0) {
            if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
                snprintf(why, why_size, "limits[%zu].%s: expected a whole number", idx, k);
                return -1;
            }
            long long v = config_setting_get_int64(c);
            if (k[0] == 'b') {
                in->has_burst = true;
                in->burst = (double)v;
            } else {
                in->has_concurrency = true;
                in->concurrency = v;
            }
        }
    }
    *bad_at = e;
    return 0;
}

int kj_config_limits_from_setting(kj_config *cfg, const config_setting_t *s, const char *file,
                                  char *errstr, size_t errstr_size) {
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(errstr, errstr_size,
                 "%s:%u: limits: expected a list like limits = ( { type = \"email.send\"; rate = "
                 "\"10/s\"; } );",
                 file, config_setting_source_line(s));
        return -1;
    }
    size_t n = (size_t)config_setting_length(s);
    if (n > KJ_LIMITS_MAX) {
        snprintf(errstr, errstr_size, "%s:%u: limits: at most %d entries", file,
                 config_setting_source_line(s), KJ_LIMITS_MAX);
        return -1;
    }
    kj_config_limit *v = calloc(n ? n : 1, sizeof *v);
    if (!v) abort();
    char why[512];
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i), *at = e;
        const char *field = NULL;
        limit_in in;
        if (read_setting_entry(e, i, &in, &at, why, sizeof why) != 0 ||
            limit_build(&in, i, &v[i], &field, why, sizeof why) != 0) {
            if (field && config_setting_get_member(e, field))
                at = config_setting_get_member(e, field);
            unsigned line = config_setting_source_line(at) ? config_setting_source_line(at)
                                                           : config_setting_source_line(s);
            snprintf(errstr, errstr_size, "%s:%u: %s", file, line, why);
            limits_free(v, i);
            return -1;
        }
    }
    size_t dup;
    if (limits_unique(v, n, &dup, why, sizeof why) != 0) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)dup);
        snprintf(errstr, errstr_size, "%s:%u: %s", file, config_setting_source_line(e), why);
        limits_free(v, n);
        return -1;
    }
    kj_config_limits_free(cfg);
    cfg->limits = v;
    cfg->limit_count = n;
    cfg->limits_from = KJ_CONFIG_FROM_FILE;
    cfg->limits_line = (int)config_setting_source_line(s);
    return 0;
}

/* ---- JSON (KJOBS_LIMITS) ------------------------------------------------------------------ */

static int read_json_entry(json_t *e, size_t idx, limit_in *in, char *why, size_t why_size) {
    memset(in, 0, sizeof *in);
    if (!json_is_object(e)) {
        snprintf(why, why_size,
                 "limits[%zu]: expected an object like {\"type\": \"email.send\", \"rate\": "
                 "\"10/s\"}",
                 idx);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) {
        if (!key_known(k)) {
            unknown_key(k, idx, why, why_size);
            return -1;
        }
        if (strcmp(k, "type") == 0 || strcmp(k, "scope") == 0) {
            if (!json_is_string(v)) {
                snprintf(why, why_size, "limits[%zu].%s: expected a string", idx, k);
                return -1;
            }
            *(k[0] == 't' ? &in->type : &in->scope) = json_string_value(v);
        } else if (strcmp(k, "rate") == 0) {
            in->has_rate = true;
            if (json_is_string(v)) {
                in->rate_text = json_string_value(v);
            } else if (json_is_number(v)) {
                in->rate_is_num = true;
                in->rate_num = json_number_value(v);
            } else {
                snprintf(why, why_size, "limits[%zu].rate: expected \"N/duration\" or a number",
                         idx);
                return -1;
            }
        } else {
            if (!json_is_integer(v)) {
                snprintf(why, why_size, "limits[%zu].%s: expected a whole number", idx, k);
                return -1;
            }
            if (k[0] == 'b') {
                in->has_burst = true;
                in->burst = (double)json_integer_value(v);
            } else {
                in->has_concurrency = true;
                in->concurrency = json_integer_value(v);
            }
        }
    }
    return 0;
}

int kj_config_limits_from_json(kj_config *cfg, const char *text, char *errstr, size_t errstr_size) {
    if (text[strspn(text, " \t\r\n")] == '\0') text = "[]"; /* empty, like the other lists */
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_array(root)) {
        snprintf(errstr, errstr_size,
                 "environment KJOBS_LIMITS: expected a JSON array like [{\"type\": "
                 "\"email.send\", \"rate\": \"10/s\"}]%s%s",
                 root ? "" : ": ", root ? "" : jerr.text);
        json_decref(root);
        return -1;
    }
    size_t n = json_array_size(root);
    if (n > KJ_LIMITS_MAX) {
        snprintf(errstr, errstr_size, "environment KJOBS_LIMITS: at most %d entries",
                 KJ_LIMITS_MAX);
        json_decref(root);
        return -1;
    }
    kj_config_limit *v = calloc(n ? n : 1, sizeof *v);
    if (!v) abort();
    char why[512];
    size_t dup;
    for (size_t i = 0; i < n; i++) {
        limit_in in;
        const char *field;
        if (read_json_entry(json_array_get(root, i), i, &in, why, sizeof why) != 0 ||
            limit_build(&in, i, &v[i], &field, why, sizeof why) != 0) {
            snprintf(errstr, errstr_size, "environment KJOBS_LIMITS: %s", why);
            limits_free(v, i);
            json_decref(root);
            return -1;
        }
    }
    json_decref(root);
    if (limits_unique(v, n, &dup, why, sizeof why) != 0) {
        snprintf(errstr, errstr_size, "environment KJOBS_LIMITS: %s", why);
        limits_free(v, n);
        return -1;
    }
    kj_config_limits_free(cfg);
    cfg->limits = v;
    cfg->limit_count = n;
    cfg->limits_from = KJ_CONFIG_FROM_ENV;
    cfg->limits_line = 0;
    return 0;
}

/* ---- output ------------------------------------------------------------------------------- */

/* A libconfig string literal of @p s (types are checked non-empty, not escaped on input). */
static void put_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

void kj_config_limits_write_effective(const kj_config *cfg, FILE *out) {
    char from[320];
    if (cfg->limits_from == KJ_CONFIG_FROM_FILE)
        snprintf(from, sizeof from, "%s:%d", cfg->source_path ? cfg->source_path : "?",
                 cfg->limits_line);
    else if (cfg->limits_from == KJ_CONFIG_FROM_ENV)
        snprintf(from, sizeof from, "environment KJOBS_LIMITS");
    else
        snprintf(from, sizeof from, "default");
    fprintf(out, "limits = (");
    for (size_t i = 0; i < cfg->limit_count; i++) {
        const kj_config_limit *l = &cfg->limits[i];
        fputs("\n  { type = ", out);
        put_string(out, l->type);
        fputs(";", out);
        if (l->rate_text) {
            fputs(" rate = ", out);
            if (l->rate_text[0] && decimal_len(l->rate_text) == strlen(l->rate_text))
                fputs(l->rate_text, out); /* a number of jobs per second stays a number */
            else
                put_string(out, l->rate_text);
            fprintf(out, "; burst = %.0f;", l->burst);
        }
        if (l->concurrency) fprintf(out, " concurrency = %d;", l->concurrency);
        if (l->rate_text) fprintf(out, " scope = \"%s\";", l->group_scope ? "group" : "process");
        fprintf(out, " }%s", i + 1 < cfg->limit_count ? "," : "");
        if (l->rate_text) fprintf(out, "  # %g jobs/s", l->rate);
    }
    fprintf(out, "%s);  # %s\n", cfg->limit_count ? "\n" : " ", from);
}

void kj_config_limits_write_example(FILE *out) {
    fputs("\n"
          "# Flow control per job type (docs/flow-control.md). Each entry: type (exact), and rate\n"
          "# (jobs per duration, \"100/1m\", \"5/s\", or a number of jobs per second) and/or\n"
          "# concurrency (jobs of the type running at once in one process). burst: jobs that may\n"
          "# start at once after a quiet spell (default: a tenth of a second's worth, at least\n"
          "# 1). scope: \"process\" (default: each replica keeps to the rate) or \"group\" (the\n"
          "# rate is for the whole consumer group, shared by partitions owned). A job over its\n"
          "# limit waits in its partition without holding a worker thread; jobs behind it in\n"
          "# that partition wait too (key order), other partitions run on.\n"
          "# env KJOBS_LIMITS (a JSON array of the same objects)\n"
          "limits = ( );\n"
          "# limits = (\n"
          "#   { type = \"partner.call\"; rate = \"100/1m\"; burst = 10; scope = \"group\"; },\n"
          "#   { type = \"image.resize\"; concurrency = 2; }\n"
          "# );\n",
          out);
}
