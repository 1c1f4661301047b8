/*
 * cron.c — cron expression parser and next-tick search (see cron.h for the language and the DST
 * rules).
 *
 * DESIGN
 *
 * Parsing turns each field into a bit set; nothing else is kept, so matching is a bit test.
 *
 * The search runs on local WALL time, in plain proleptic Gregorian arithmetic (no zone): from a
 * starting wall time it walks month → day → hour → minute → second, jumping to the next set bit
 * in each field, to the first wall time that matches. Only then is the wall time turned into an
 * instant with ICU (ucal_setDateTime + ucal_getMillis) under two ICU attributes that ARE the DST
 * rules of cron.h:
 *   UCAL_REPEATED_WALL_TIME = UCAL_WALLTIME_FIRST  an overlap wall time is its first occurrence
 *   UCAL_SKIPPED_WALL_TIME  = UCAL_WALLTIME_LAST   a gap wall time is read with the offset before
 *                                                  the change (02:30 → 03:30 for a 1 h gap)
 * Wall order and instant order agree except around a spring-forward gap: a shifted gap wall time
 * can land after a real wall time that follows it. So a candidate that was in a gap (its instant
 * read back is another wall time) is only remembered, and the search goes on to the next real
 * candidate; the earlier of the two wins. After a gap the search also starts that many seconds
 * of wall time earlier (when the offset changed in the last KJ_CRON_BACKOFF_S), so the gap wall
 * times, which precede wall(start), are seen at all. Candidates whose instant is not after the
 * given one (the overlap's first occurrence seen from its second) are passed over.
 *
 * Every step advances the wall time, and the walk stops KJ_CRON_SEARCH_YEARS years of wall time
 * after it began, so the search is bounded.
 *
 * The day-number conversion (days_from_civil / civil_from_days) is Howard Hinnant's published
 * algorithm, "chrono-Compatible Low-Level Date Algorithms"
 * (howardhinnant.github.io/date_algorithms.html), written here from its description.
 */
#include "processor/cron.h"
#include "common/clock.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

/* ------------------------------------------------------------------------------------------ */
/* Parsing                                                                                    */

static const char *const kj_month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                             "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const kj_month_full[] = {"january",   "february", "march",    "april",
                                            "may",       "june",     "july",     "august",
                                            "september", "october",  "november", "december"};
static const char *const kj_dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
static const char *const kj_dow_full[] = {"sunday",   "monday", "tuesday", "wednesday",
                                          "thursday", "friday", "saturday"};

typedef struct kj_cron_field {
    const char *name;
    int lo, hi;               /* accepted values (day of week: 0..7) */
    const char *const *names; /* value lo + i is names[i] (NULL: numbers only) */
    const char *const *full;
    int nnames;
    bool star_ok_question; /* `?` accepted (day of month, day of week) */
} kj_cron_field;

enum { F_SEC, F_MIN, F_HOUR, F_DOM, F_MONTH, F_DOW, F_COUNT };

static const kj_cron_field kj_fields[F_COUNT] = {
    [F_SEC] = {"second", 0, 59, NULL, NULL, 0, false},
    [F_MIN] = {"minute", 0, 59, NULL, NULL, 0, false},
    [F_HOUR] = {"hour", 0, 23, NULL, NULL, 0, false},
    [F_DOM] = {"day-of-month", 1, 31, NULL, NULL, 0, true},
    [F_MONTH] = {"month", 1, 12, kj_month_names, kj_month_full, 12, false},
    [F_DOW] = {"day-of-week", 0, 7, kj_dow_names, kj_dow_full, 7, true},
};

static int cron_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cron_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Parse one value (number or name) of text [s, s+n). Returns 0 and *v, or -1. */
static int parse_value(const kj_cron_field *f, const char *s, size_t n, int *v) {
    if (n == 0) return -1;
    if (isdigit((unsigned char)s[0])) {
        int x = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)s[i]) || x > 1000) return -1;
            x = x * 10 + (s[i] - '0');
        }
        *v = x;
        return 0;
    }
    for (int i = 0; f->names && i < f->nnames; i++) {
        if ((strlen(f->names[i]) == n && strncasecmp(s, f->names[i], n) == 0) ||
            (strlen(f->full[i]) == n && strncasecmp(s, f->full[i], n) == 0)) {
            *v = f->lo + i;
            return 0;
        }
    }
    return -1;
}

/* Parse field text [s, s+n) into *bits. */
static int parse_field(int fi, const char *s, size_t n, uint64_t *bits, char *err, size_t errlen) {
    const kj_cron_field *f = &kj_fields[fi];
    *bits = 0;
    size_t pos = 0;
    for (;;) {
        size_t end = pos;
        while (end < n && s[end] != ',')
            end++;
        const char *it = s + pos;
        size_t itn = end - pos;
        int shown = itn > 40 ? 40 : (int)itn;
        if (itn == 0)
            return cron_err(err, errlen, "%s field: \"%.*s\" has an empty list item", f->name,
                            (int)(n > 40 ? 40 : n), s);
        const char *slash = memchr(it, '/', itn);
        size_t basen = slash ? (size_t)(slash - it) : itn;
        int lo, hi, step = 1;
        if (slash) {
            const char *st = slash + 1;
            size_t stn = itn - basen - 1;
            int sv = 0;
            bool ok = stn > 0 && stn <= 3;
            for (size_t i = 0; ok && i < stn; i++) {
                if (!isdigit((unsigned char)st[i]))
                    ok = false;
                else
                    sv = sv * 10 + (st[i] - '0');
            }
            if (!ok || sv < 1 || sv > f->hi - f->lo + 1)
                return cron_err(err, errlen, "%s field: \"%.*s\": step must be 1-%d", f->name,
                                shown, it, f->hi - f->lo + 1);
            step = sv;
        }
        if (basen == 1 && (it[0] == '*' || (it[0] == '?' && f->star_ok_question))) {
            lo = f->lo;
            hi = f->hi == 7 ? 6 : f->hi; /* `*` in day-of-week: 0..6, 7 is an alias */
        } else {
            const char *dash = memchr(it, '-', basen);
            if (dash) {
                if (parse_value(f, it, (size_t)(dash - it), &lo) ||
                    parse_value(f, dash + 1, basen - (size_t)(dash - it) - 1, &hi))
                    return cron_err(err, errlen, "%s field: \"%.*s\" is not a value or range",
                                    f->name, shown, it);
            } else {
                if (parse_value(f, it, basen, &lo))
                    return cron_err(err, errlen, "%s field: \"%.*s\" is not a value or range",
                                    f->name, shown, it);
                hi = slash ? f->hi : lo;
            }
            if (lo < f->lo || lo > f->hi || hi < f->lo || hi > f->hi)
                return cron_err(err, errlen, "%s field: \"%.*s\" is out of range %d-%d", f->name,
                                shown, it, f->lo, f->hi);
            if (lo > hi)
                return cron_err(err, errlen, "%s field: \"%.*s\": range start is after its end",
                                f->name, shown, it);
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= (uint64_t)1 << (fi == F_DOW ? v % 7 : v);
        if (end == n) break;
        pos = end + 1;
    }
    return 0;
}

static const struct {
    const char *name;
    const char *expr;
} kj_macros[] = {
    {"@yearly", "0 0 0 1 1 *"}, {"@annually", "0 0 0 1 1 *"}, {"@monthly", "0 0 0 1 * *"},
    {"@weekly", "0 0 0 * * 0"}, {"@daily", "0 0 0 * * *"},    {"@midnight", "0 0 0 * * *"},
    {"@hourly", "0 0 * * * *"},
};

int kj_cron_parse(const char *expr, kj_cron *out, char *err, size_t errlen) {
    if (!expr) return cron_err(err, errlen, "empty cron expression");
    while (*expr == ' ' || *expr == '\t')
        expr++;
    if (*expr == '@') {
        size_t n = strcspn(expr, " \t");
        const char *rest = expr + n;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        for (size_t i = 0; i < sizeof kj_macros / sizeof kj_macros[0]; i++)
            if (*rest == '\0' && strlen(kj_macros[i].name) == n &&
                strncasecmp(expr, kj_macros[i].name, n) == 0)
                return kj_cron_parse(kj_macros[i].expr, out, err, errlen);
        return cron_err(err, errlen,
                        "\"%.*s\" is not a supported macro (@yearly @annually @monthly @weekly "
                        "@daily @midnight @hourly)",
                        (int)(n > 40 ? 40 : n), expr);
    }
    const char *start[F_COUNT + 1];
    size_t len[F_COUNT + 1];
    int nf = 0;
    const char *p = expr;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) break;
        const char *b = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (nf == F_COUNT) {
            nf++;
            break;
        }
        start[nf] = b;
        len[nf] = (size_t)(p - b);
        nf++;
    }
    if (nf != 5 && nf != 6)
        return cron_err(err, errlen,
                        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                        "(second first), got %s%d",
                        nf > F_COUNT ? "more than " : "", nf > F_COUNT ? F_COUNT : nf);
    kj_cron c;
    memset(&c, 0, sizeof c);
    uint64_t bits[F_COUNT];
    int first = nf == 6 ? F_SEC : F_MIN;
    bits[F_SEC] = 1; /* 5 fields: second 0 */
    for (int i = 0; i < nf; i++) {
        int fi = first + i;
        for (size_t k = 0; k < len[i]; k++) {
            char ch = start[i][k];
            if (ch == 'L' || ch == 'W' || ch == '#' || ch == 'H') {
                bool in_name = false; /* a letter inside a month/day name is fine */
                if (kj_fields[fi].names) {
                    size_t a = k, z = k;
                    while (a > 0 && isalpha((unsigned char)start[i][a - 1]))
                        a--;
                    while (z < len[i] && isalpha((unsigned char)start[i][z]))
                        z++;
                    int v;
                    in_name =
                        ch != '#' && parse_value(&kj_fields[fi], start[i] + a, z - a, &v) == 0;
                }
                if (!in_name)
                    return cron_err(err, errlen, "%s field: \"%.*s\": '%c' is not supported",
                                    kj_fields[fi].name, (int)(len[i] > 40 ? 40 : len[i]), start[i],
                                    ch);
            }
        }
        if (parse_field(fi, start[i], len[i], &bits[fi], err, errlen)) return -1;
    }
    c.sec = bits[F_SEC];
    c.min = bits[F_MIN];
    c.hour = (uint32_t)bits[F_HOUR];
    c.dom = (uint32_t)bits[F_DOM];
    c.month = (uint16_t)bits[F_MONTH];
    c.dow = (uint8_t)bits[F_DOW];
    c.dom_star = start[F_DOM - first][0] == '*' || start[F_DOM - first][0] == '?';
    c.dow_star = start[F_DOW - first][0] == '*' || start[F_DOW - first][0] == '?';
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Wall-time arithmetic (no zone)                                                              */

typedef struct kj_wall {
    int y, mo, d, h, mi, s; /* mo 1..12, d 1..31 */
} kj_wall;

/* Inverse of days_from_civil (Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int64_t wall_seconds(const kj_wall *w) {
    return kj_days_from_civil(w->y, w->mo, w->d) * 86400 + w->h * 3600 + w->mi * 60 + w->s;
}

static kj_wall wall_from_seconds(int64_t t) {
    kj_wall w;
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t sod = t - days * 86400;
    civil_from_days(days, &w.y, &w.mo, &w.d);
    w.h = (int)(sod / 3600);
    w.mi = (int)(sod / 60 % 60);
    w.s = (int)(sod % 60);
    return w;
}

static int days_in_month(int y, int m) {
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dim[m - 1];
}

static bool day_matches(const kj_cron *c, int y, int m, int d) {
    int64_t days = kj_days_from_civil(y, m, d);
    int dow = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    bool dom_ok = (c->dom >> d) & 1, dow_ok = (c->dow >> dow) & 1;
    if (c->dom_star || c->dow_star) return dom_ok && dow_ok;
    return dom_ok || dow_ok;
}

/* The lowest set bit of `bits` at or above `from`, at most `max`; -1 if none. */
static int next_bit(uint64_t bits, int from, int max) {
    for (int v = from; v <= max; v++)
        if ((bits >> v) & 1) return v;
    return -1;
}

static void next_day(kj_wall *w) {
    w->h = w->mi = w->s = 0;
    if (++w->d > days_in_month(w->y, w->mo)) {
        w->d = 1;
        if (++w->mo > 12) {
            w->mo = 1;
            w->y++;
        }
    }
}

/* Move *w forward to the first wall time >= *w that matches c; false past limit_year. */
static bool find_wall(const kj_cron *c, kj_wall *w, int limit_year) {
    while (w->y <= limit_year) {
        if (!((c->month >> w->mo) & 1)) {
            w->d = 1;
            w->h = w->mi = w->s = 0;
            if (++w->mo > 12) {
                w->mo = 1;
                w->y++;
            }
            continue;
        }
        if (!day_matches(c, w->y, w->mo, w->d)) {
            next_day(w);
            continue;
        }
        int h = next_bit(c->hour, w->h, 23);
        if (h < 0) {
            next_day(w);
            continue;
        }
        if (h != w->h) {
            w->h = h;
            w->mi = w->s = 0;
        }
        int mi = next_bit(c->min, w->mi, 59);
        if (mi < 0) {
            *w = wall_from_seconds(wall_seconds(w) - w->mi * 60 - w->s + 3600);
            continue;
        }
        if (mi != w->mi) {
            w->mi = mi;
            w->s = 0;
        }
        int s = next_bit(c->sec, w->s, 59);
        if (s < 0) {
            *w = wall_from_seconds(wall_seconds(w) - w->s + 60);
            continue;
        }
        w->s = s;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Zones (ICU)                                                                                 */

struct kj_cron_zone {
    UCalendar *cal;
    char name[128];
};

kj_cron_zone *kj_cron_zone_open(const char *id, char *err, size_t errlen) {
    if (!id || !*id) id = "UTC";
    size_t n = strlen(id);
    if (n >= 100) {
        cron_err(err, errlen, "time zone \"%.40s...\" is too long", id);
        return NULL;
    }
    UChar uid[128], canon[128];
    u_uastrncpy(uid, id, 127);
    uid[n] = 0;
    UErrorCode st = U_ZERO_ERROR;
    UBool is_system = 0;
    int32_t cn = ucal_getCanonicalTimeZoneID(uid, (int32_t)n, canon, 127, &is_system, &st);
    if (U_FAILURE(st) || !is_system || cn <= 0) {
        cron_err(err, errlen, "unknown time zone \"%s\" (an IANA name: UTC, Europe/Berlin)", id);
        return NULL;
    }
    st = U_ZERO_ERROR;
    UCalendar *cal = ucal_open(uid, (int32_t)n, "en_US_POSIX", UCAL_GREGORIAN, &st);
    if (U_FAILURE(st) || !cal) {
        cron_err(err, errlen, "time zone \"%s\": ICU cannot open a calendar (%s)", id,
                 u_errorName(st));
        if (cal) ucal_close(cal);
        return NULL;
    }
    ucal_setAttribute(cal, UCAL_LENIENT, 1);
    ucal_setAttribute(cal, UCAL_REPEATED_WALL_TIME, UCAL_WALLTIME_FIRST);
    ucal_setAttribute(cal, UCAL_SKIPPED_WALL_TIME, UCAL_WALLTIME_LAST);
    kj_cron_zone *z = calloc(1, sizeof *z);
    if (!z) abort();
    z->cal = cal;
    snprintf(z->name, sizeof z->name, "%s", id);
    return z;
}

void kj_cron_zone_close(kj_cron_zone *z) {
    if (!z) return;
    ucal_close(z->cal);
    free(z);
}

const char *kj_cron_zone_name(const kj_cron_zone *z) {
    return z->name;
}

/* The wall time of instant ms (whole seconds) in z, and its UTC offset in seconds. */
static int zone_wall(kj_cron_zone *z, int64_t ms, kj_wall *w, int64_t *offset_s) {
    UErrorCode st = U_ZERO_ERROR;
    ucal_setMillis(z->cal, (UDate)ms, &st);
    int32_t zo = ucal_get(z->cal, UCAL_ZONE_OFFSET, &st);
    int32_t dst = ucal_get(z->cal, UCAL_DST_OFFSET, &st);
    if (U_FAILURE(st)) return -1;
    int64_t off = ((int64_t)zo + dst) / 1000;
    /* Civil arithmetic from the offset: the same as ucal_get of each field, fewer calls. */
    int64_t secs = (ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000)) + off;
    *w = wall_from_seconds(secs);
    if (offset_s) *offset_s = off;
    return 0;
}

int kj_cron_zone_offset(kj_cron_zone *z, int64_t ms, int *offset_s) {
    kj_wall w;
    int64_t off;
    if (zone_wall(z, ms, &w, &off)) return -1;
    *offset_s = (int)off;
    return 0;
}

/* The instant of wall time w in z under the DST attributes (cron.c DESIGN). */
static int zone_instant(kj_cron_zone *z, const kj_wall *w, int64_t *ms) {
    UErrorCode st = U_ZERO_ERROR;
    ucal_clear(z->cal);
    ucal_setDateTime(z->cal, w->y, w->mo - 1, w->d, w->h, w->mi, w->s, &st);
    ucal_set(z->cal, UCAL_MILLISECOND, 0);
    UDate t = ucal_getMillis(z->cal, &st);
    if (U_FAILURE(st)) return -1;
    *ms = (int64_t)t;
    return 0;
}

/* Seconds of wall time the search starts earlier after a recent offset change: the largest
 * spring-forward gap in the tz database is 2 h (Antarctica/Troll); 3 h leaves room. */
#define KJ_CRON_BACKOFF_S (3 * 3600)

kj_cron_result kj_cron_next(const kj_cron *c, kj_cron_zone *z, int64_t after_ms, int64_t *next_ms) {
    if (after_ms < 0 || after_ms > (int64_t)220000000000000LL) return KJ_CRON_ERROR;
    int64_t start = after_ms / 1000 * 1000 + 1000;
    kj_wall w, wb;
    int64_t off, off_back;
    if (zone_wall(z, start, &w, &off) ||
        zone_wall(z, start - KJ_CRON_BACKOFF_S * 1000, &wb, &off_back))
        return KJ_CRON_ERROR;
    if (off > off_back) /* clocks went forward lately: the gap's wall times precede w */
        w = wall_from_seconds(wall_seconds(&w) - (off - off_back));
    int limit_year = w.y + KJ_CRON_SEARCH_YEARS;
    int64_t best = -1;
    while (find_wall(c, &w, limit_year)) {
        int64_t ms;
        kj_wall back;
        if (zone_instant(z, &w, &ms) || zone_wall(z, ms, &back, NULL)) return KJ_CRON_ERROR;
        bool in_gap = wall_seconds(&back) != wall_seconds(&w);
        if (ms > after_ms && (best < 0 || ms < best)) best = ms;
        if (best >= 0 && (!in_gap || ms > best)) break;
        w = wall_from_seconds(wall_seconds(&w) + 1);
    }
    if (best < 0) return KJ_CRON_NONE;
    *next_ms = best;
    return KJ_CRON_OK;
}
