/*
 * metrics.c — the Prometheus registry (lock-free hot path, mutex-guarded lookup and render) and
 * the table of kjobs metrics. The design essay is at the top of metrics.h; in short:
 *
 *   - writers (job threads) touch only atomics inside a series they resolved earlier;
 *   - a family's mutex guards its series list and hash (resolve, remove, render walk, collect);
 *   - the registry's mutex guards its family list (register, render walk, free);
 *   - series are never freed before the registry, so a handle can never dangle.
 *
 * Lock order: registry mutex, then one family mutex. Nothing else is ever held with them.
 */
#include "processor/metrics.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hash.h"
#include "processor/log.h"
#include "common/utf8.h"

#define KJ_FAMILY_HASH_SLOTS 64

struct kj_metric_handle {
    kj_metric_family *fam;
    kj_metric_handle *next_all;  /* creation order, for rendering; guarded by fam->mu */
    kj_metric_handle *next_hash; /* hash chain; guarded by fam->mu */
    uint64_t hash;
    bool visible;              /* guarded by fam->mu */
    char **values;             /* fam->nlabels sanitised label values */
    _Atomic uint64_t value;    /* counter count, or gauge double bits */
    _Atomic uint64_t sum_bits; /* histogram: double bits of the sum */
    _Atomic uint64_t *buckets; /* histogram: fam->nbuckets + 1 non-cumulative counts */
};

struct kj_metric_family {
    kj_registry *reg;
    kj_metric_family *next; /* registration order; guarded by reg->mu */
    char *name;
    char *help;
    kj_metric_type type;
    size_t nlabels;
    char *labels[KJ_METRICS_MAX_LABELS];
    size_t nbuckets;
    double bounds[KJ_METRICS_MAX_BUCKETS];

    pthread_mutex_t mu;
    kj_metric_handle *hash[KJ_FAMILY_HASH_SLOTS];
    kj_metric_handle *first, *last;
    size_t nseries;
    kj_metric_handle *single;   /* unlabelled families: the one series */
    kj_metric_handle *overflow; /* labelled families: shared once full or out of memory */
    bool overflow_logged;
    kj_collect_fn *collect;
    void *collect_opaque;
};

struct kj_registry {
    pthread_mutex_t mu;
    kj_metric_family *first, *last;
};

/* ---- Small helpers ------------------------------------------------------------------------- */

static uint64_t dbl_bits(double v) {
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double bits_dbl(uint64_t b) {
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

/* Atomically add to a double stored as bits (relaxed: values are independent statistics). */
static void atomic_add_dbl(_Atomic uint64_t *slot, double delta) {
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(slot, &old, dbl_bits(bits_dbl(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Shortest of %.15g/%.17g that reads back exactly; Prometheus spellings for the specials. */
static void format_double(char *out, size_t outsz, double v) {
    if (isnan(v)) {
        snprintf(out, outsz, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outsz, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, outsz, "%.15g", v);
        if (strtod(out, NULL) != v) snprintf(out, outsz, "%.17g", v);
    }
}

static bool valid_name(const char *s, bool allow_colon) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

/*
 * Copy `in` into `out` (KJ_METRICS_MAX_LABEL_LEN + 1 bytes): valid UTF-8 only (an invalid byte
 * becomes '?'), truncated at a character boundary. Returns the length.
 */
static size_t sanitize_value(const char *in, char *out) {
    const char *s = in ? in : "";
    return kj_utf8_clean(out, KJ_METRICS_MAX_LABEL_LEN + 1, s, strlen(s), "?", false);
}

static uint64_t hash_values(char vals[][KJ_METRICS_MAX_LABEL_LEN + 1], size_t n) {
    uint64_t h = KJ_HASH_INIT;
    for (size_t i = 0; i < n; i++) {
        h = kj_hash_bytes(h, vals[i], strlen(vals[i]));
        h = kj_hash_bytes(h, "\xff", 1); /* separator: ("a","bc") != ("ab","c") */
    }
    return h;
}

/* ---- Rendering into a kj_buf (common/buf.h) --------------------------------------------- */

/* Escape for a label value (\\ \" \n) or, with quote false, for HELP text (\\ \n). */
static void buf_escaped(kj_buf *b, const char *s, bool quote) {
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '\n')
            rep = "\\n";
        else if (quote && *p == '"')
            rep = "\\\"";
        if (!rep) continue;
        kj_buf_put(b, run, (size_t)(p - run));
        kj_buf_puts(b, rep);
        run = p + 1;
    }
    kj_buf_puts(b, run);
}

/* `name{l1="v1",...,extra_name="extra_val"} value\n`; extra_name may be NULL. */
static void buf_sample(kj_buf *b, const kj_metric_family *fam, const char *suffix,
                       char *const *values, const char *extra_name, const char *extra_val,
                       const char *value) {
    kj_buf_puts(b, fam->name);
    if (suffix) kj_buf_puts(b, suffix);
    if (fam->nlabels || extra_name) {
        kj_buf_puts(b, "{");
        for (size_t i = 0; i < fam->nlabels; i++) {
            if (i) kj_buf_puts(b, ",");
            kj_buf_puts(b, fam->labels[i]);
            kj_buf_puts(b, "=\"");
            buf_escaped(b, values[i], true);
            kj_buf_puts(b, "\"");
        }
        if (extra_name) {
            if (fam->nlabels) kj_buf_puts(b, ",");
            kj_buf_puts(b, extra_name);
            kj_buf_puts(b, "=\"");
            kj_buf_puts(b, extra_val);
            kj_buf_puts(b, "\"");
        }
        kj_buf_puts(b, "}");
    }
    kj_buf_puts(b, " ");
    kj_buf_puts(b, value);
    kj_buf_puts(b, "\n");
}

/* ---- Registry and families ----------------------------------------------------------------- */

kj_registry *kj_registry_new(void) {
    kj_registry *reg = calloc(1, sizeof(*reg));
    if (!reg) return NULL;
    pthread_mutex_init(&reg->mu, NULL);
    return reg;
}

static void series_free(kj_metric_handle *h, size_t nlabels) {
    if (!h) return;
    if (h->values)
        for (size_t i = 0; i < nlabels; i++)
            free(h->values[i]);
    free(h->values);
    free(h->buckets);
    free(h);
}

static void family_free(kj_metric_family *fam) {
    kj_metric_handle *h = fam->first;
    while (h) {
        kj_metric_handle *next = h->next_all;
        series_free(h, fam->nlabels);
        h = next;
    }
    series_free(fam->overflow, fam->nlabels);
    for (size_t i = 0; i < fam->nlabels; i++)
        free(fam->labels[i]);
    free(fam->name);
    free(fam->help);
    pthread_mutex_destroy(&fam->mu);
    free(fam);
}

void kj_registry_free(kj_registry *reg) {
    if (!reg) return;
    kj_metric_family *fam = reg->first;
    while (fam) {
        kj_metric_family *next = fam->next;
        family_free(fam);
        fam = next;
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* A new zeroed series with copies of `vals` (already sanitised), or NULL when out of memory. */
static kj_metric_handle *series_new(kj_metric_family *fam,
                                    char vals[][KJ_METRICS_MAX_LABEL_LEN + 1]) {
    kj_metric_handle *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->fam = fam;
    if (fam->nlabels) {
        h->values = calloc(fam->nlabels, sizeof(char *));
        if (!h->values) goto fail;
        for (size_t i = 0; i < fam->nlabels; i++)
            if (!(h->values[i] = strdup(vals[i]))) goto fail;
        h->hash = hash_values(vals, fam->nlabels);
    }
    if (fam->type == KJ_METRIC_HISTOGRAM) {
        h->buckets = calloc(fam->nbuckets + 1, sizeof(*h->buckets));
        if (!h->buckets) goto fail;
    }
    return h;
fail:
    series_free(h, fam->nlabels);
    return NULL;
}

static void series_reset(kj_metric_handle *h) {
    atomic_store_explicit(&h->value, 0, memory_order_relaxed); /* 0 is also +0.0's bits */
    atomic_store_explicit(&h->sum_bits, 0, memory_order_relaxed);
    if (h->buckets)
        for (size_t i = 0; i <= h->fam->nbuckets; i++)
            atomic_store_explicit(&h->buckets[i], 0, memory_order_relaxed);
}

/* @locks_required fam->mu */
static void series_append(kj_metric_family *fam, kj_metric_handle *h) {
    h->visible = true;
    if (fam->last)
        fam->last->next_all = h;
    else
        fam->first = h;
    fam->last = h;
    if (fam->nlabels) {
        size_t slot = h->hash % KJ_FAMILY_HASH_SLOTS;
        h->next_hash = fam->hash[slot];
        fam->hash[slot] = h;
    }
    fam->nseries++;
}

kj_metric_family *kj_registry_add(kj_registry *reg, const char *name, kj_metric_type type,
                                  const char *help, const char *const *label_names, size_t nlabels,
                                  const double *buckets, size_t nbuckets) {
    const char *why = NULL;
    if (!reg || !valid_name(name, true))
        why = "invalid metric name";
    else if (nlabels > KJ_METRICS_MAX_LABELS || (nlabels && !label_names))
        why = "bad labels";
    else if (type == KJ_METRIC_HISTOGRAM &&
             (!buckets || nbuckets == 0 || nbuckets > KJ_METRICS_MAX_BUCKETS))
        why = "histogram needs 1..KJ_METRICS_MAX_BUCKETS buckets";
    for (size_t i = 0; !why && i < nlabels; i++) {
        const char *l = label_names[i];
        if (!valid_name(l, false) || strncmp(l, "__", 2) == 0)
            why = "invalid label name";
        else if (type == KJ_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
            why = "label le reserved";
        for (size_t j = 0; !why && j < i; j++)
            if (strcmp(l, label_names[j]) == 0) why = "duplicate label name";
    }
    for (size_t i = 0; !why && type == KJ_METRIC_HISTOGRAM && i < nbuckets; i++)
        if (!isfinite(buckets[i]) || (i && buckets[i] <= buckets[i - 1]))
            why = "bucket bounds must be finite and increasing";
    if (why) {
        kj_log(KJ_LOG_ERROR, "metric registration failed", "{s:s,s:s}", "metric",
               name ? name : "(null)", "error", why);
        return NULL;
    }

    kj_metric_family *fam = calloc(1, sizeof(*fam));
    if (!fam) return NULL;
    pthread_mutex_init(&fam->mu, NULL);
    fam->reg = reg;
    fam->type = type;
    fam->nlabels = nlabels;
    fam->name = strdup(name);
    fam->help = strdup(help ? help : "");
    bool ok = fam->name && fam->help;
    for (size_t i = 0; ok && i < nlabels; i++)
        ok = (fam->labels[i] = strdup(label_names[i]));
    if (type == KJ_METRIC_HISTOGRAM) {
        fam->nbuckets = nbuckets;
        memcpy(fam->bounds, buckets, nbuckets * sizeof(double));
    }
    char vals[KJ_METRICS_MAX_LABELS][KJ_METRICS_MAX_LABEL_LEN + 1];
    if (ok && nlabels) {
        for (size_t i = 0; i < nlabels; i++)
            strcpy(vals[i], KJ_METRICS_OVERFLOW_VALUE);
        ok = (fam->overflow = series_new(fam, vals));
    } else if (ok) {
        ok = (fam->single = series_new(fam, vals));
        if (ok) series_append(fam, fam->single);
    }
    if (!ok) {
        family_free(fam);
        return NULL;
    }

    pthread_mutex_lock(&reg->mu);
    for (kj_metric_family *f = reg->first; f; f = f->next)
        if (strcmp(f->name, name) == 0) ok = false;
    if (ok) {
        if (reg->last)
            reg->last->next = fam;
        else
            reg->first = fam;
        reg->last = fam;
    }
    pthread_mutex_unlock(&reg->mu);
    if (!ok) {
        kj_log(KJ_LOG_ERROR, "metric registration failed", "{s:s,s:s}", "metric", name, "error",
               "duplicate metric name");
        family_free(fam);
        return NULL;
    }
    return fam;
}

/* @locks_required fam->mu. The series with these sanitised values (visible or not), or NULL. */
static kj_metric_handle *series_find(kj_metric_family *fam,
                                     char vals[][KJ_METRICS_MAX_LABEL_LEN + 1], uint64_t hash) {
    for (kj_metric_handle *h = fam->hash[hash % KJ_FAMILY_HASH_SLOTS]; h; h = h->next_hash) {
        if (h->hash != hash) continue;
        size_t i = 0;
        while (i < fam->nlabels && strcmp(h->values[i], vals[i]) == 0)
            i++;
        if (i == fam->nlabels) return h;
    }
    return NULL;
}

static void sanitize_all(const kj_metric_family *fam, const char *const *label_values,
                         char vals[][KJ_METRICS_MAX_LABEL_LEN + 1]) {
    for (size_t i = 0; i < fam->nlabels; i++)
        sanitize_value(label_values ? label_values[i] : NULL, vals[i]);
}

kj_metric_handle *kj_family_series(kj_metric_family *fam, const char *const *label_values) {
    if (!fam->nlabels) return fam->single;
    char vals[KJ_METRICS_MAX_LABELS][KJ_METRICS_MAX_LABEL_LEN + 1];
    sanitize_all(fam, label_values, vals);
    uint64_t hash = hash_values(vals, fam->nlabels);

    pthread_mutex_lock(&fam->mu);
    kj_metric_handle *h = series_find(fam, vals, hash);
    if (h && !h->visible) {
        series_reset(h); /* drop anything written through a stale handle while hidden */
        h->visible = true;
    }
    if (!h && fam->nseries < KJ_METRICS_MAX_SERIES && (h = series_new(fam, vals)))
        series_append(fam, h);
    bool log_overflow = false;
    if (!h) {
        h = fam->overflow;
        h->visible = true;
        log_overflow = !fam->overflow_logged;
        fam->overflow_logged = true;
    }
    pthread_mutex_unlock(&fam->mu);
    if (log_overflow)
        kj_log(KJ_LOG_WARN,
               "metric series limit reached; further label sets are counted "
               "as " KJ_METRICS_OVERFLOW_VALUE,
               "{s:s,s:i}", "metric", fam->name, "limit", KJ_METRICS_MAX_SERIES);
    return h;
}

kj_metric_handle *kj_family_default(kj_metric_family *fam) {
    return fam->single ? fam->single : kj_family_series(fam, NULL);
}

int kj_family_remove(kj_metric_family *fam, const char *const *label_values) {
    if (!fam->nlabels) return 0;
    char vals[KJ_METRICS_MAX_LABELS][KJ_METRICS_MAX_LABEL_LEN + 1];
    sanitize_all(fam, label_values, vals);
    uint64_t hash = hash_values(vals, fam->nlabels);
    int removed = 0;
    pthread_mutex_lock(&fam->mu);
    kj_metric_handle *h = series_find(fam, vals, hash);
    if (h && h->visible) {
        h->visible = false;
        series_reset(h);
        removed = 1;
    }
    pthread_mutex_unlock(&fam->mu);
    return removed;
}

void kj_family_set_collector(kj_metric_family *fam, kj_collect_fn *fn, void *opaque) {
    pthread_mutex_lock(&fam->mu);
    fam->collect = fn;
    fam->collect_opaque = opaque;
    pthread_mutex_unlock(&fam->mu);
}

/* ---- Hot path ------------------------------------------------------------------------------ */

/* Using a handle of the wrong type is a programming error: caught by assert in debug builds. */
void kj_counter_add(kj_metric_handle *h, uint64_t n) {
    assert(h->fam->type == KJ_METRIC_COUNTER);
    atomic_fetch_add_explicit(&h->value, n, memory_order_relaxed);
}

void kj_gauge_set(kj_metric_handle *h, double v) {
    assert(h->fam->type == KJ_METRIC_GAUGE);
    atomic_store_explicit(&h->value, dbl_bits(v), memory_order_relaxed);
}

void kj_gauge_add(kj_metric_handle *h, double delta) {
    assert(h->fam->type == KJ_METRIC_GAUGE);
    atomic_add_dbl(&h->value, delta);
}

void kj_histogram_observe(kj_metric_handle *h, double v) {
    const kj_metric_family *fam = h->fam;
    assert(fam->type == KJ_METRIC_HISTOGRAM);
    /* Buckets are few (<= 32) and small values dominate: a linear scan beats a binary search.
     * NaN compares false everywhere and lands in +Inf, as in the Go client. */
    size_t i = 0;
    while (i < fam->nbuckets && !(v <= fam->bounds[i]))
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_add_dbl(&h->sum_bits, v);
}

uint64_t kj_counter_value(const kj_metric_handle *h) {
    return atomic_load_explicit(&h->value, memory_order_relaxed);
}

double kj_gauge_value(const kj_metric_handle *h) {
    return bits_dbl(atomic_load_explicit(&h->value, memory_order_relaxed));
}

uint64_t kj_histogram_bucket(const kj_metric_handle *h, size_t i) {
    uint64_t total = 0;
    for (size_t k = 0; k <= i && k <= h->fam->nbuckets; k++)
        total += atomic_load_explicit(&h->buckets[k], memory_order_relaxed);
    return total;
}

uint64_t kj_histogram_count(const kj_metric_handle *h) {
    return kj_histogram_bucket(h, h->fam->nbuckets);
}

double kj_histogram_sum(const kj_metric_handle *h) {
    return bits_dbl(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

/* ---- Rendering ----------------------------------------------------------------------------- */

struct kj_collect {
    kj_buf *buf;
    kj_metric_family *fam;
};

void kj_collect_emit(kj_collect *c, const char *const *label_values, double value) {
    if (c->fam->type == KJ_METRIC_HISTOGRAM) return;
    char vals[KJ_METRICS_MAX_LABELS][KJ_METRICS_MAX_LABEL_LEN + 1];
    char *ptrs[KJ_METRICS_MAX_LABELS];
    sanitize_all(c->fam, label_values, vals);
    for (size_t i = 0; i < c->fam->nlabels; i++)
        ptrs[i] = vals[i];
    char num[40];
    format_double(num, sizeof(num), value);
    buf_sample(c->buf, c->fam, NULL, ptrs, NULL, NULL, num);
}

/* @locks_required fam->mu */
static void render_series(kj_buf *b, const kj_metric_family *fam, const kj_metric_handle *h) {
    char num[40];
    if (fam->type == KJ_METRIC_COUNTER) {
        snprintf(num, sizeof(num), "%" PRIu64, kj_counter_value(h));
        buf_sample(b, fam, NULL, h->values, NULL, NULL, num);
        return;
    }
    if (fam->type == KJ_METRIC_GAUGE) {
        format_double(num, sizeof(num), kj_gauge_value(h));
        buf_sample(b, fam, NULL, h->values, NULL, NULL, num);
        return;
    }
    /* Histogram: read each bucket once, so the cumulative counts, +Inf and _count agree. */
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= fam->nbuckets; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < fam->nbuckets)
            format_double(le, sizeof(le), fam->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        snprintf(num, sizeof(num), "%" PRIu64, cum);
        buf_sample(b, fam, "_bucket", h->values, "le", le, num);
    }
    format_double(num, sizeof(num), kj_histogram_sum(h));
    buf_sample(b, fam, "_sum", h->values, NULL, NULL, num);
    snprintf(num, sizeof(num), "%" PRIu64, cum);
    buf_sample(b, fam, "_count", h->values, NULL, NULL, num);
}

static const char *type_name(kj_metric_type t) {
    switch (t) {
    case KJ_METRIC_COUNTER:
        return "counter";
    case KJ_METRIC_GAUGE:
        return "gauge";
    case KJ_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

char *kj_registry_render(kj_registry *reg, size_t *len) {
    kj_buf b = {0}; /* an empty registry renders "" */
    pthread_mutex_lock(&reg->mu);
    for (kj_metric_family *fam = reg->first; fam; fam = fam->next) {
        kj_buf_puts(&b, "# HELP ");
        kj_buf_puts(&b, fam->name);
        kj_buf_puts(&b, " ");
        buf_escaped(&b, fam->help, false);
        kj_buf_puts(&b, "\n# TYPE ");
        kj_buf_puts(&b, fam->name);
        kj_buf_puts(&b, " ");
        kj_buf_puts(&b, type_name(fam->type));
        kj_buf_puts(&b, "\n");
        pthread_mutex_lock(&fam->mu);
        for (kj_metric_handle *h = fam->first; h; h = h->next_all)
            if (h->visible) render_series(&b, fam, h);
        if (fam->overflow && fam->overflow->visible) render_series(&b, fam, fam->overflow);
        if (fam->collect) {
            kj_collect c = {.buf = &b, .fam = fam};
            fam->collect(&c, fam->collect_opaque);
        }
        pthread_mutex_unlock(&fam->mu);
    }
    pthread_mutex_unlock(&reg->mu);
    return kj_buf_take_str(&b, len);
}

/* ---- The kjobs metric set ------------------------------------------------------------------ */

static struct {
    kj_registry *reg;
    kj_metric_family *jobs, *duration, *batch, *lag, *commits, *rebalances, *in_flight, *held_bytes,
        *copy_bytes, *resets, *retry, *dlq, *route_errors, *decode_errors, *exec_stray, *breaker,
        *ready, *build_info, *truncated, *invalid_headers, *hops, *in_place, *trace_invalid,
        *sr_requests, *sr_waiting, *periodic_enqueued, *periodic_next, *throttle_wait,
        *console_actions, *console_oldest, *console_ladder, *console_dlq, *console_dlq_unresolved,
        *operator_paused;
    kj_metric_handle *commit_ok, *commit_error;
    pthread_mutex_t version_mu;
    char version[KJ_METRICS_MAX_LABEL_LEN + 1];
} g_kj = {.version_mu = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t g_kj_once = PTHREAD_ONCE_INIT;

static const double kj_duration_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double kj_batch_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

#define KJ_NB(a) (sizeof(a) / sizeof((a)[0]))

/* The one place the kjobs metric names, types, labels and help live (documented in metrics.h). */
/* clang-format off */
static const struct kj_metric_def {
    kj_metric_family **slot;
    const char *name;
    kj_metric_type type;
    const char *help;
    size_t nlabels;
    const char *labels[3];
    const double *buckets;
    size_t nbuckets;
} kj_metric_defs[] = {
    {&g_kj.jobs, "kjobs_jobs_total", KJ_METRIC_COUNTER,
     "Jobs finished, by topic consumed from, job type and outcome (ok, retry, dead_lettered, "
     "scheduled, parked).",
     3, {"topic", "type", "outcome"}, NULL, 0},
    {&g_kj.duration, "kjobs_job_duration_seconds", KJ_METRIC_HISTOGRAM,
     "Handler wall-clock time per job in seconds.", 1, {"type"}, kj_duration_buckets,
     KJ_NB(kj_duration_buckets)},
    {&g_kj.throttle_wait, "kjobs_throttle_wait_seconds", KJ_METRIC_HISTOGRAM,
     "How long a partition's head job waited for its type's limit (limits: rate or "
     "concurrency) before it ran; the jobs behind it in that partition waited with it.", 2,
     {"type", "limit"}, kj_duration_buckets, KJ_NB(kj_duration_buckets)},
    {&g_kj.batch, "kjobs_batch_size", KJ_METRIC_HISTOGRAM, "Jobs per handler call.", 0, {0},
     kj_batch_buckets, KJ_NB(kj_batch_buckets)},
    {&g_kj.lag, "kjobs_consumer_lag", KJ_METRIC_GAUGE,
     "Log end offset minus committed offset, per assigned partition.", 2,
     {"topic", "partition"}, NULL, 0},
    {&g_kj.commits, "kjobs_commits_total", KJ_METRIC_COUNTER,
     "Offset commits by result (ok, error).", 1, {"result"}, NULL, 0},
    {&g_kj.rebalances, "kjobs_rebalances_total", KJ_METRIC_COUNTER,
     "Consumer group rebalances (assignments and revocations) seen by this member.", 0, {0},
     NULL, 0},
    {&g_kj.in_flight, "kjobs_in_flight_jobs", KJ_METRIC_GAUGE,
     "Jobs handed to handlers and not yet finished.", 0, {0}, NULL, 0},
    {&g_kj.held_bytes, "kjobs_held_record_bytes", KJ_METRIC_GAUGE,
     "Bytes of fetched records this worker holds, queued or running, as "
     "batch.max_pending_bytes counts them (value + key + 256 per record).",
     0, {0}, NULL, 0},
    {&g_kj.copy_bytes, "kjobs_routed_copy_bytes", KJ_METRIC_GAUGE,
     "Bytes of retry and dead-letter copies this worker holds until the broker acknowledges "
     "them (key, value, headers and per-copy overhead, estimated); bounded by "
     "batch.max_pending_bytes.",
     0, {0}, NULL, 0},
    {&g_kj.resets, "kjobs_offset_resets_total", KJ_METRIC_COUNTER,
     "Consumer offset resets: jobs deleted by retention before they ran.", 0, {0}, NULL, 0},
    {&g_kj.retry, "kjobs_retry_routed_total", KJ_METRIC_COUNTER,
     "Jobs produced to a retry ladder step.", 1, {"step"}, NULL, 0},
    {&g_kj.dlq, "kjobs_dlq_routed_total", KJ_METRIC_COUNTER,
     "Jobs produced to the dead-letter topic, by error class.", 1, {"class"}, NULL, 0},
    {&g_kj.route_errors, "kjobs_route_errors_total", KJ_METRIC_COUNTER,
     "Failed produces to a retry or dead-letter topic.", 0, {0}, NULL, 0},
    {&g_kj.truncated, "kjobs_copies_truncated_total", KJ_METRIC_COUNTER,
     "Copies too large for message.max.bytes, dead-lettered in a reduced form (kjobs-truncated).",
     0, {0}, NULL, 0},
    {&g_kj.invalid_headers, "kjobs_invalid_headers_total", KJ_METRIC_COUNTER,
     "Records dead-lettered for an invalid kjobs control or scheduling header, by header.", 1,
     {"header"}, NULL, 0},
    {&g_kj.trace_invalid, "kjobs_trace_context_invalid_total", KJ_METRIC_COUNTER,
     "Invalid W3C trace context values (traceparent, tracestate) ignored, by field.", 1,
     {"field"}, NULL, 0},
    {&g_kj.hops, "kjobs_retry_hops_total", KJ_METRIC_COUNTER,
     "Ladder records not yet due when their step released them, re-routed (not run).", 0, {0},
     NULL, 0},
    {&g_kj.in_place, "kjobs_retries_in_place_total", KJ_METRIC_COUNTER,
     "Tries made in place (retry.in_place_attempts): a job tried again N times counts N.", 0,
     {0}, NULL, 0},
    {&g_kj.periodic_enqueued, "kjobs_periodic_enqueued_total", KJ_METRIC_COUNTER,
     "Periodic (cron) jobs enqueued by this member, by schedule.periodic entry name.", 1,
     {"name"}, NULL, 0},
    {&g_kj.periodic_next, "kjobs_periodic_next_tick_seconds", KJ_METRIC_GAUGE,
     "Epoch seconds of the next tick of each schedule.periodic entry (on the member that owns "
     "the schedule only).", 1, {"name"}, NULL, 0},
    {&g_kj.decode_errors, "kjobs_decode_errors_total", KJ_METRIC_COUNTER,
     "Messages that could not be decoded as a kjobs.Job.", 0, {0}, NULL, 0},
    {&g_kj.sr_requests, "kjobs_schema_registry_requests_total", KJ_METRIC_COUNTER,
     "Schema Registry GET /schemas/ids/{id} requests by result (found, unknown, incompatible, "
     "error).", 1, {"result"}, NULL, 0},
    {&g_kj.sr_waiting, "kjobs_schema_registry_waiting_batches", KJ_METRIC_GAUGE,
     "Batches held because the Schema Registry could not be asked.", 0, {0}, NULL, 0},
    {&g_kj.exec_stray, "kjobs_exec_stray_replies_total", KJ_METRIC_COUNTER,
     "Reply lines from exec handler children discarded as answering no pending batch.", 0, {0},
     NULL, 0},
    {&g_kj.console_actions, "kjobs_console_actions_total", KJ_METRIC_COUNTER,
     "Actions taken from the operator console (kjobs ui), by action and result.", 2,
     {"action", "result"}, NULL, 0},
    {&g_kj.console_oldest, "kjobs_oldest_waiting_job_age_seconds", KJ_METRIC_GAUGE,
     "Console (kjobs ui): age of the oldest job waiting on a main topic, now - its created_at; "
     "0 when none waits.", 1, {"topic"}, NULL, 0},
    {&g_kj.console_ladder, "kjobs_retry_waiting_jobs", KJ_METRIC_GAUGE,
     "Console (kjobs ui): jobs waiting on a retry ladder step (the group's lag on its topic).", 2,
     {"step", "topic"}, NULL, 0},
    {&g_kj.console_dlq, "kjobs_dlq_dead_letters", KJ_METRIC_GAUGE,
     "Console (kjobs ui): dead letters retained in the dead-letter topic.", 1, {"topic"}, NULL,
     0},
    {&g_kj.console_dlq_unresolved, "kjobs_dlq_unresolved_dead_letters", KJ_METRIC_GAUGE,
     "Console (kjobs ui): retained dead letters neither replayed nor discarded.", 1, {"topic"},
     NULL, 0},
    {&g_kj.operator_paused, "kjobs_partitions_paused_by_operator", KJ_METRIC_GAUGE,
     "Partitions assigned to this member that an operator paused (kjobs pause, the console).",
     0, {0}, NULL, 0},
    {&g_kj.breaker, "kjobs_circuit_breaker_open", KJ_METRIC_GAUGE,
     "1 while the circuit breaker is open, else 0.", 0, {0}, NULL, 0},
    {&g_kj.ready, "kjobs_ready", KJ_METRIC_GAUGE, "1 while the worker is ready (/readyz 200).", 0,
     {0}, NULL, 0},
    {&g_kj.build_info, "kjobs_build_info", KJ_METRIC_GAUGE,
     "Always 1; the version label names the running kjobs build.", 1, {"version"}, NULL, 0},
};
/* clang-format on */

#ifndef KJOBS_VERSION
#define KJOBS_VERSION "unknown"
#endif

static void kj_metrics_init_once(void) {
    g_kj.reg = kj_registry_new();
    if (!g_kj.reg) abort();
    for (size_t i = 0; i < KJ_NB(kj_metric_defs); i++) {
        const struct kj_metric_def *d = &kj_metric_defs[i];
        *d->slot = kj_registry_add(g_kj.reg, d->name, d->type, d->help, d->labels, d->nlabels,
                                   d->buckets, d->nbuckets);
        if (!*d->slot) abort(); /* a bad table row or no memory at startup: logged above */
    }
    g_kj.commit_ok = kj_family_series(g_kj.commits, (const char *[]){"ok"});
    g_kj.commit_error = kj_family_series(g_kj.commits, (const char *[]){"error"});
    kj_gauge_set(kj_family_series(g_kj.build_info, (const char *[]){KJOBS_VERSION}), 1);
    snprintf(g_kj.version, sizeof(g_kj.version), "%s", KJOBS_VERSION);
}

static void kj_metrics_ensure(void) {
    pthread_once(&g_kj_once, kj_metrics_init_once);
}

kj_registry *kj_metrics_registry(void) {
    kj_metrics_ensure();
    return g_kj.reg;
}

void kj_metrics_set_version(const char *version) {
    kj_metrics_ensure();
    pthread_mutex_lock(&g_kj.version_mu);
    kj_family_remove(g_kj.build_info, (const char *[]){g_kj.version});
    snprintf(g_kj.version, sizeof(g_kj.version), "%s", version ? version : "");
    kj_gauge_set(kj_family_series(g_kj.build_info, (const char *[]){g_kj.version}), 1);
    pthread_mutex_unlock(&g_kj.version_mu);
}

const char *kj_job_outcome_name(kj_job_outcome o) {
    switch (o) {
    case KJ_JOB_OK:
        return "ok";
    case KJ_JOB_RETRY:
        return "retry";
    case KJ_JOB_DEAD_LETTERED:
        return "dead_lettered";
    case KJ_JOB_SCHEDULED:
        return "scheduled";
    case KJ_JOB_PARKED:
        return "parked";
    }
    return "unknown";
}

kj_metric_handle *kj_metrics_jobs_handle(const char *topic, const char *type,
                                         kj_job_outcome outcome) {
    kj_metrics_ensure();
    return kj_family_series(g_kj.jobs, (const char *[]){topic, type, kj_job_outcome_name(outcome)});
}

kj_metric_handle *kj_metrics_duration_handle(const char *type) {
    kj_metrics_ensure();
    return kj_family_series(g_kj.duration, (const char *[]){type});
}

kj_metric_handle *kj_metrics_lag_handle(const char *topic, int32_t partition) {
    kj_metrics_ensure();
    char p[16];
    snprintf(p, sizeof(p), "%" PRId32, partition);
    return kj_family_series(g_kj.lag, (const char *[]){topic, p});
}

void kj_metrics_job_done(const char *topic, const char *type, kj_job_outcome outcome,
                         double duration_seconds) {
    kj_counter_inc(kj_metrics_jobs_handle(topic, type, outcome));
    if (duration_seconds >= 0)
        kj_histogram_observe(kj_metrics_duration_handle(type), duration_seconds);
}

void kj_metrics_batch_size(size_t njobs) {
    kj_metrics_ensure();
    kj_histogram_observe(kj_family_default(g_kj.batch), (double)njobs);
}

void kj_metrics_commit(bool ok) {
    kj_metrics_ensure();
    kj_counter_inc(ok ? g_kj.commit_ok : g_kj.commit_error);
}

void kj_metrics_rebalance(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.rebalances));
}

void kj_metrics_in_flight_add(int64_t delta) {
    kj_metrics_ensure();
    kj_gauge_add(kj_family_default(g_kj.in_flight), (double)delta);
}

void kj_metrics_held_bytes_set(int64_t bytes) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_default(g_kj.held_bytes), (double)bytes); /* drift shows, not 0 */
}

void kj_metrics_copy_bytes_set(int64_t bytes) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_default(g_kj.copy_bytes), (double)bytes);
}

void kj_metrics_offset_reset(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.resets));
}

void kj_metrics_retry_routed(int step) {
    kj_metrics_ensure();
    char s[16];
    snprintf(s, sizeof(s), "%d", step);
    kj_counter_inc(kj_family_series(g_kj.retry, (const char *[]){s}));
}

void kj_metrics_dlq_routed(const char *error_class) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.dlq, (const char *[]){error_class}));
}

void kj_metrics_route_error(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.route_errors));
}

void kj_metrics_copy_truncated(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.truncated));
}

void kj_metrics_invalid_header(const char *header) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.invalid_headers, (const char *[]){header}));
}

void kj_metrics_trace_context_invalid(const char *field) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.trace_invalid, (const char *[]){field}));
}

void kj_metrics_periodic_enqueued(const char *name) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.periodic_enqueued, (const char *[]){name}));
}

void kj_metrics_periodic_next_tick(const char *name, int64_t tick_ms) {
    kj_metrics_ensure();
    if (tick_ms < 0) {
        kj_family_remove(g_kj.periodic_next, (const char *[]){name});
        return;
    }
    kj_gauge_set(kj_family_series(g_kj.periodic_next, (const char *[]){name}),
                 (double)tick_ms / 1000.0);
}

void kj_metrics_periodic_clear(const char *name) {
    kj_metrics_periodic_next_tick(name, -1);
}

void kj_metrics_throttle_wait(const char *type, const char *limit, double seconds) {
    kj_metrics_ensure();
    kj_histogram_observe(kj_family_series(g_kj.throttle_wait, (const char *[]){type, limit}),
                         seconds);
}

void kj_metrics_retry_hop(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.hops));
}

void kj_metrics_retried_in_place(size_t n) {
    kj_metrics_ensure();
    kj_counter_add(kj_family_default(g_kj.in_place), (uint64_t)n);
}

void kj_metrics_decode_error(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.decode_errors));
}

void kj_metrics_schema_registry_request(const char *result) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.sr_requests, (const char *[]){result}));
}

void kj_metrics_schema_registry_waiting_add(int delta) {
    kj_metrics_ensure();
    kj_gauge_add(kj_family_default(g_kj.sr_waiting), (double)delta);
}

void kj_metrics_exec_stray_reply(void) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_default(g_kj.exec_stray));
}

void kj_metrics_console_action(const char *action, const char *result) {
    kj_metrics_ensure();
    kj_counter_inc(kj_family_series(g_kj.console_actions, (const char *[]){action, result}));
}

void kj_metrics_console_oldest_waiting(const char *topic, double seconds) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_series(g_kj.console_oldest, (const char *[]){topic}), seconds);
}

void kj_metrics_console_retry_waiting(int step, const char *topic, int64_t jobs) {
    kj_metrics_ensure();
    char s[16];
    snprintf(s, sizeof(s), "%d", step);
    kj_gauge_set(kj_family_series(g_kj.console_ladder, (const char *[]){s, topic}), (double)jobs);
}

void kj_metrics_console_dlq(const char *topic, int64_t retained, int64_t unresolved) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_series(g_kj.console_dlq, (const char *[]){topic}), (double)retained);
    kj_gauge_set(kj_family_series(g_kj.console_dlq_unresolved, (const char *[]){topic}),
                 (double)unresolved);
}

void kj_metrics_circuit_breaker_set(bool open) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_default(g_kj.breaker), open ? 1 : 0);
}

void kj_metrics_operator_paused_set(int partitions) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_default(g_kj.operator_paused), partitions);
}

void kj_metrics_ready_set(bool ready) {
    kj_metrics_ensure();
    kj_gauge_set(kj_family_default(g_kj.ready), ready ? 1 : 0);
}

void kj_metrics_lag_set(const char *topic, int32_t partition, int64_t lag) {
    kj_gauge_set(kj_metrics_lag_handle(topic, partition), (double)lag);
}

void kj_metrics_lag_remove(const char *topic, int32_t partition) {
    kj_metrics_ensure();
    char p[16];
    snprintf(p, sizeof(p), "%" PRId32, partition);
    kj_family_remove(g_kj.lag, (const char *[]){topic, p});
}

void kj_metrics_lag_set_collector(kj_collect_fn *fn, void *opaque) {
    kj_metrics_ensure();
    kj_family_set_collector(g_kj.lag, fn, opaque);
}

void kj_metrics_lag_emit(kj_collect *c, const char *topic, int32_t partition, int64_t lag) {
    char p[16];
    snprintf(p, sizeof(p), "%" PRId32, partition);
    kj_collect_emit(c, (const char *[]){topic, p}, (double)lag);
}

/* ---- Read back for the status report -------------------------------------------------------- */

double kj_metrics_quantile(double q, const double *bounds, const uint64_t *counts, size_t n) {
    uint64_t total = 0;
    for (size_t i = 0; i <= n; i++)
        total += counts[i];
    if (total == 0 || n == 0) return -1;
    double rank = q * (double)total, below = 0;
    for (size_t i = 0; i <= n; i++) {
        double here = (double)counts[i];
        if (below + here >= rank && here > 0) {
            if (i == n) return bounds[n - 1]; /* in +Inf: the largest finite bound */
            double lo = i == 0 ? 0 : bounds[i - 1];
            return lo + (bounds[i] - lo) * ((rank - below) / here);
        }
        below += here;
    }
    return bounds[n - 1];
}

void kj_metrics_summary_get(kj_metrics_summary *out) {
    kj_metrics_ensure();
    memset(out, 0, sizeof(*out));
    kj_metric_family *jobs = g_kj.jobs;
    pthread_mutex_lock(&jobs->mu);
    for (kj_metric_handle *h = jobs->first; h; h = h->next_all) {
        if (!h->visible) continue;
        for (int o = 0; o < KJ_JOB_OUTCOME_COUNT; o++)
            if (strcmp(h->values[2], kj_job_outcome_name((kj_job_outcome)o)) == 0)
                out->jobs[o] += kj_counter_value(h);
    }
    pthread_mutex_unlock(&jobs->mu);

    kj_metric_family *dur = g_kj.duration;
    uint64_t counts[KJ_METRICS_MAX_BUCKETS + 1] = {0};
    pthread_mutex_lock(&dur->mu);
    for (kj_metric_handle *h = dur->first; h; h = h->next_all) {
        if (!h->visible) continue;
        for (size_t i = 0; i <= dur->nbuckets; i++)
            counts[i] += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    }
    pthread_mutex_unlock(&dur->mu);
    for (size_t i = 0; i <= dur->nbuckets; i++)
        out->handled += counts[i];
    out->p50_seconds = kj_metrics_quantile(0.5, dur->bounds, counts, dur->nbuckets);
    out->p99_seconds = kj_metrics_quantile(0.99, dur->bounds, counts, dur->nbuckets);

    out->in_flight = kj_gauge_value(kj_family_default(g_kj.in_flight));
    out->breaker_open = kj_gauge_value(kj_family_default(g_kj.breaker)) >= 1;
    out->route_errors = kj_counter_value(kj_family_default(g_kj.route_errors));
    out->decode_errors = kj_counter_value(kj_family_default(g_kj.decode_errors));
    out->offset_resets = kj_counter_value(kj_family_default(g_kj.resets));
    out->rebalances = kj_counter_value(kj_family_default(g_kj.rebalances));
    out->retries_in_place = kj_counter_value(kj_family_default(g_kj.in_place));
}
