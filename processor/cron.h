/*
 * cron.h — cron expressions: parse once, then ask "when is the next tick after t, in zone Z?".
 *
 * It owns the expression language and the next-fire computation, nothing else: no clock, no
 * Kafka, no config. The periodic scheduler (periodic.c), the config check and `kjobs cron next`
 * are its users. A parsed expression is plain data (bit sets), so it is copied freely and shared
 * between threads; a zone (kj_cron_zone) wraps an ICU calendar and is used by one thread at a time.
 *
 * Language (Vixie cron's, crontab(5), plus a leading seconds field):
 *   5 fields   minute hour day-of-month month day-of-week   (seconds = 0)
 *   6 fields   second minute hour day-of-month month day-of-week
 *   each field: a comma list of `*`, `?` (dom/dow only, = `*`), `N`, `N-M`, any of them with
 *   `/STEP`; `N/STEP` means N-max/STEP. Months JAN..DEC and weekdays SUN..SAT by name (three
 *   letters or the full English name, any case). Day of week 0 and 7 are Sunday.
 *   macros: @yearly @annually @monthly @weekly @daily @midnight @hourly (@reboot is refused).
 *   Not supported (refused with an error): L, W, #, H, years.
 *
 * Day rule (Vixie, crontab(5)): when both day-of-month and day-of-week are restricted (their
 * text does not start with `*` or `?`), a day matches when EITHER matches; otherwise both must.
 * So `0 0 1 * MON` runs on the 1st and on every Monday, while `0 0 *\/2 * MON` runs on odd-day
 * Mondays only (the `*\/2` field starts with `*`).
 *
 * Time zones and DST (ICU's calendar, the tz database Debian's libicu ships):
 *   - The expression matches local wall-clock time in the zone.
 *   - A wall time that does not exist (spring-forward gap, 02:30 when clocks go 02:00 → 03:00) is
 *     SHIFTED: read with the offset in force before the change, so it fires at 03:30 — once. If
 *     that instant is also a tick of its own, it fires once.
 *   - A wall time that occurs twice (fall-back overlap) fires ONCE, at its first occurrence.
 *   Ticks are whole seconds; kj_cron_next returns a tick strictly after the given instant.
 *
 * Bound: the search stops after KJ_CRON_SEARCH_YEARS years of wall time, so an expression that
 * never matches (`0 0 30 FEB *`) yields KJ_CRON_NONE instead of looping.
 */
#ifndef KJOBS_CRON_H
#define KJOBS_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** How many years of wall time kj_cron_next searches before giving up (covers Feb 29 across
 *  the non-leap century years, 8 years apart at most). */
#define KJ_CRON_SEARCH_YEARS 10

/** A parsed expression: one bit per allowed value. Plain data; copy freely. */
typedef struct kj_cron {
    uint64_t sec;   /* bits 0..59 */
    uint64_t min;   /* bits 0..59 */
    uint32_t hour;  /* bits 0..23 */
    uint32_t dom;   /* bits 1..31 */
    uint16_t month; /* bits 1..12 */
    uint8_t dow;    /* bits 0..6, 0 = Sunday */
    bool dom_star;  /* day-of-month text starts with '*' or '?' (the Vixie day rule) */
    bool dow_star;  /* day-of-week text starts with '*' or '?' */
} kj_cron;

/** An opened time zone: an ICU calendar set up for kj_cron_next. Opaque. */
typedef struct kj_cron_zone kj_cron_zone;

/** Result of kj_cron_next. */
typedef enum kj_cron_result {
    KJ_CRON_OK = 0, /* *next_ms is set */
    KJ_CRON_NONE,   /* no tick within KJ_CRON_SEARCH_YEARS years (e.g. Feb 30) */
    KJ_CRON_ERROR,  /* ICU failed, or after_ms is outside years 1970..9000 */
} kj_cron_result;

/**
 * Parse `expr` into *out. Returns 0, or -1 with a message in err (at most errlen bytes, NUL
 * terminated) that names the field and quotes the bad text, e.g.
 * `minute field: "61" is out of range 0-59`. Leading/trailing blanks are ignored; fields are
 * separated by spaces or tabs. Does not allocate.
 */
int kj_cron_parse(const char *expr, kj_cron *out, char *err, size_t errlen);

/**
 * Open the zone named `id` (an IANA name: "UTC", "Europe/Berlin"). NULL or "" means UTC.
 * Returns a new zone (the caller owns it: kj_cron_zone_close), or NULL with a message in err when
 * ICU does not know the name or cannot open a calendar.
 */
kj_cron_zone *kj_cron_zone_open(const char *id, char *err, size_t errlen);

/** Close a zone from kj_cron_zone_open (NULL is fine). */
void kj_cron_zone_close(kj_cron_zone *z);

/** The zone's canonical name as opened ("UTC" for NULL/""). Owned by z. */
const char *kj_cron_zone_name(const kj_cron_zone *z);

/** The zone's UTC offset at instant ms (epoch ms), in seconds east of UTC, into *offset_s.
 *  Returns 0, or -1 when ICU fails. One thread at a time per zone. */
int kj_cron_zone_offset(kj_cron_zone *z, int64_t ms, int *offset_s);

/**
 * The first tick of `c` in zone `z` strictly after `after_ms` (epoch milliseconds, >= 0), as
 * epoch milliseconds (a whole second) in *next_ms. DST rules: see the top of this file.
 * Uses z's calendar: one thread at a time per zone.
 */
kj_cron_result kj_cron_next(const kj_cron *c, kj_cron_zone *z, int64_t after_ms, int64_t *next_ms);

#endif
