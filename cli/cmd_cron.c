/*
 * cmd_cron.c — `kjobs cron next EXPR [--tz ZONE] [--from TIME] [-n N] [--ms]`: when will a
 * schedule fire? Prints the next N ticks of a cron expression, one per line, as RFC 3339 times
 * in the zone's local offset (or epoch ms with --ms). It answers the question a `schedule.periodic`
 * entry raises before it is deployed, and it is how tests/unit/cron_diff.js compares kjobs'
 * cron.c with the npm cron-parser package. No config and no broker: pure cron.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/cron.h"
#include "processor/header_contract.h"

static const char cron_usage[] =
    "usage: kjobs cron next EXPR [--tz ZONE] [--from TIME] [-n N] [--ms]\n"
    "\n"
    "Prints the next N (default 5, at most 10000) ticks of the cron expression EXPR after TIME,\n"
    "one per line, as RFC 3339 times in ZONE's offset.\n"
    "  EXPR         5 fields (minute hour day-of-month month day-of-week), or 6 with seconds\n"
    "               first, or a macro (@hourly @daily @weekly @monthly @yearly); quote it\n"
    "  --tz ZONE    IANA time zone the expression is read in (default UTC)\n"
    "  --from TIME  RFC 3339 start, exclusive (default now)\n"
    "  -n N         how many ticks\n"
    "  --ms         print epoch milliseconds instead\n"
    "Exit: 0 ok, 1 no (more) tick within 10 years, 2 bad expression, zone or option.\n"
    "See docs/scheduling.md, \"Periodic jobs\".\n";

static void print_tick(int64_t ms, int off_s, int as_ms) {
    if (as_ms) {
        printf("%lld\n", (long long)ms);
        return;
    }
    time_t t = (time_t)(ms / 1000) + off_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    if (off_s == 0) {
        printf("%sZ\n", buf);
        return;
    }
    int a = off_s < 0 ? -off_s : off_s;
    printf("%s%c%02d:%02d\n", buf, off_s < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

typedef struct cron_opts {
    const char *tz, *from;
    long n;
    int as_ms;
} cron_opts;

/* getopt_long over argv from optind; -1 when done, else the exit code to return. */
static int parse_opts(int argc, char **argv, const char *shortopts, cron_opts *o) {
    static const struct option longopts[] = {{"tz", required_argument, NULL, 'z'},
                                             {"from", required_argument, NULL, 'f'},
                                             {"ms", no_argument, NULL, 'm'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        switch (opt) {
        case 'z':
            o->tz = optarg;
            break;
        case 'f':
            o->from = optarg;
            break;
        case 'm':
            o->as_ms = 1;
            break;
        case 'n': {
            char *end;
            o->n = strtol(optarg, &end, 10);
            if (*end || o->n < 1 || o->n > 10000) {
                fprintf(stderr, "kjobs cron: -n wants 1..10000, not '%s'\n", optarg);
                return KJ_EXIT_USAGE;
            }
            break;
        }
        case 'h':
            fputs(cron_usage, stdout);
            return KJ_EXIT_OK;
        default:
            fputs(cron_usage, stderr);
            return KJ_EXIT_USAGE;
        }
    }
    return -1;
}

int kj_cmd_cron(int argc, char **argv) {
    cron_opts o = {NULL, NULL, 5, 0};
    optind = 1;
    /* Options before "next" ("+": stop at the first operand), then after EXPR. */
    int rc = parse_opts(argc, argv, "+n:h", &o);
    if (rc >= 0) return rc;
    if (optind >= argc || strcmp(argv[optind], "next") != 0) {
        fprintf(stderr, "kjobs cron: expected 'next EXPR'\n\n%s", cron_usage);
        return KJ_EXIT_USAGE;
    }
    optind++;
    if (optind >= argc) {
        fprintf(stderr, "kjobs cron next: missing EXPR\n\n%s", cron_usage);
        return KJ_EXIT_USAGE;
    }
    const char *expr = argv[optind++];
    rc = parse_opts(argc, argv, "n:h", &o);
    if (rc >= 0) return rc;
    if (optind < argc) {
        fprintf(stderr, "kjobs cron next: unexpected argument '%s' (quote EXPR)\n\n%s",
                argv[optind], cron_usage);
        return KJ_EXIT_USAGE;
    }
    const char *tz = o.tz, *from = o.from;
    long n = o.n;
    int as_ms = o.as_ms;
    char err[256];
    kj_cron c;
    if (kj_cron_parse(expr, &c, err, sizeof err)) {
        fprintf(stderr, "kjobs cron next: %s\n", err);
        return KJ_EXIT_USAGE;
    }
    int64_t t;
    if (from) {
        if (kj_parse_rfc3339_ms(from, &t) || t < 0) {
            fprintf(stderr, "kjobs cron next: --from '%s' is not an RFC 3339 time after 1970\n",
                    from);
            return KJ_EXIT_USAGE;
        }
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        t = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    }
    kj_cron_zone *z = kj_cron_zone_open(tz, err, sizeof err);
    if (!z) {
        fprintf(stderr, "kjobs cron next: --tz: %s\n", err);
        return KJ_EXIT_USAGE;
    }
    rc = KJ_EXIT_OK;
    for (long i = 0; i < n; i++) {
        int64_t next;
        kj_cron_result r = kj_cron_next(&c, z, t, &next);
        int off = 0;
        if (r == KJ_CRON_OK && kj_cron_zone_offset(z, next, &off)) r = KJ_CRON_ERROR;
        if (r != KJ_CRON_OK) {
            fprintf(stderr, "kjobs cron next: %s\n",
                    r == KJ_CRON_NONE ? "no tick within 10 years" : "time zone lookup failed");
            rc = KJ_EXIT_RUNTIME;
            break;
        }
        print_tick(next, off, as_ms);
        t = next;
    }
    kj_cron_zone_close(z);
    return rc;
}
