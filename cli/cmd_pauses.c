/*
 * cmd_pauses.c — `kjobs pauses`: the operator's pauses in force, read from the control topic
 * to its end (processor/group_control.h) with a group-less consumer — the state every worker
 * obeys. A table (TOPIC PARTITION SINCE BY REASON; "-" for a whole topic), or one JSON object
 * per pause with --json.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "processor/group_control.h"

static const char pauses_usage[] =
    "usage: kjobs pauses [-c FILE] [-b BROKERS] [-X prop=val] [--json] [--timeout SECONDS]\n"
    "\n"
    "The pauses in force (`kjobs pause`), from the control topic <topics.main>.control: topic,\n"
    "partition (\"-\": the whole topic), since when, by whom and why.\n"
    "\n"
    "  --json             one JSON object per pause instead of the table\n"
    "  --timeout SECONDS  reading the control topic (default 30)\n";

enum { OPT_JSON = KJ_OPT_COMMON_LAST + 1, OPT_TIMEOUT };

static void iso_time(int64_t ms, char *buf, size_t size) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int kj_cmd_pauses(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs pauses", pauses_usage);
    static const struct option longopts[] = {KJ_CLI_COMMON_LONGOPTS,
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                             {NULL, 0, NULL, 0}};
    long long timeout_s = 30;
    int json = 0, opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_JSON) {
            json = 1;
        } else if (opt == OPT_TIMEOUT) {
            if (kj_cli_parse_int(optarg, 1, 3600, &timeout_s))
                return kj_cli_usage_error(&cli, "--timeout: expected 1..3600 seconds");
        }
    }
    if (cli.help) {
        fputs(pauses_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;
    char err[512];
    if (cli.topic && strcmp(cli.topic, cli.cfg.main_topic) != 0 &&
        kj_config_set(&cli.cfg, "topics.main", cli.topic, err, sizeof(err)) != 0) {
        fprintf(stderr, "kjobs pauses: --topic: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    kj_ctl_follower *f = kj_ctl_follower_new(&cli.cfg, err, sizeof(err));
    if (!f) {
        fprintf(stderr, "kjobs pauses: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    int exit_code = KJ_EXIT_OK;
    int loaded = kj_ctl_follower_load(f, kj_now_ms() + timeout_s * 1000, err, sizeof(err));
    if (loaded != 0) {
        if (loaded == 1)
            fprintf(stderr, "kjobs pauses: the control topic does not exist (create it with `kjobs "
                            "topics --create`)\n");
        else
            fprintf(stderr, "kjobs pauses: %s\n", err);
        exit_code = KJ_EXIT_RUNTIME;
        goto out;
    }
    size_t n;
    const kj_ctl_pause *list = kj_ctl_state_list(kj_ctl_follower_state(f), &n);
    if (json) {
        for (size_t i = 0; i < n; i++) {
            json_t *o = kj_ctl_pause_json(&list[i]);
            kj_print_json_line(o, stdout);
            json_decref(o);
        }
    } else {
        static const char *const heads[5] = {"TOPIC", "PARTITION", "SINCE", "BY", "REASON"};
        kj_table *t = kj_table_new(5, heads, "  ");
        for (size_t i = 0; i < n; i++) {
            char part[16], since[32];
            if (list[i].partition >= 0)
                snprintf(part, sizeof(part), "%d", (int)list[i].partition);
            else
                snprintf(part, sizeof(part), "-");
            iso_time(list[i].at, since, sizeof(since));
            const char *const row[5] = {list[i].topic, part, since, list[i].by, list[i].reason};
            kj_table_add(t, row);
        }
        kj_table_print(t, stdout);
        kj_table_free(t);
    }
    fflush(stdout);
out:
    kj_ctl_follower_free(f);
    kj_cli_free(&cli);
    return exit_code;
}
