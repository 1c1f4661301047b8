/*
 * cmd_lag.c — `kjobs lag`: how far a consumer group is behind, per partition of the main topic
 * and of each retry-ladder topic (the DLQ has no consumer group, so it is not listed).
 *
 * The reading is processor/group_lag.h (shared with the console): it must never disturb the
 * group it inspects, so the consumer created here carries the group's group.id only for
 * OffsetFetch; it never subscribes, assigns or commits (enable.auto.commit is off).
 *
 * Columns follow kafka-consumer-groups --describe: GROUP TOPIC PARTITION CURRENT-OFFSET
 * LOG-END-OFFSET LAG. No committed offset prints "-" and counts the whole retained log
 * (log end - log start) as lag: a worker starts at the log start of a partition where its group
 * has no committed offset.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/output.h"
#include "cli/commands.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/group_lag.h"

static const char lag_usage[] =
    "usage: kjobs lag [-c FILE] [-b BROKERS] [-G GROUP] [-X prop=val] [--topic T] [--json]\n"
    "                 [--timeout SECONDS]\n"
    "\n"
    "Per partition of the main topic and of each retry-ladder topic: the group's committed\n"
    "offset (CURRENT-OFFSET, \"-\" when none), the log end offset and the lag, then a total.\n"
    "Reads committed offsets without joining the group: running workers are not disturbed.\n"
    "\n"
    "  -G GROUP           consumer group to inspect (default kafka.group)\n"
    "  --topic T          main topic (default topics.main; the ladder follows it unless\n"
    "                     topics.retry_prefix is set explicitly)\n"
    "  --json             one JSON object per partition instead of the table\n"
    "  --timeout SECONDS  per broker request (default 10)\n";

enum { OPT_JSON = KJ_OPT_COMMON_LAST + 1, OPT_TIMEOUT };

typedef kj_lag_row lag_row;

static void print_table(const char *group, const lag_row *rows, size_t count, int64_t total) {
    static const char *const heads[6] = {"GROUP",          "TOPIC",          "PARTITION",
                                         "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"};
    kj_table *t = kj_table_new(6, heads, " ");
    char cell[4][32];
    for (size_t i = 0; i <= count; i++) {
        const char *topic = "TOTAL";
        if (i < count) { /* a partition */
            topic = rows[i].topic;
            snprintf(cell[0], sizeof(cell[0]), "%" PRId32, rows[i].partition);
            if (rows[i].committed >= 0)
                snprintf(cell[1], sizeof(cell[1]), "%" PRId64, rows[i].committed);
            else
                snprintf(cell[1], sizeof(cell[1]), "-");
            snprintf(cell[2], sizeof(cell[2]), "%" PRId64, rows[i].log_end);
            snprintf(cell[3], sizeof(cell[3]), "%" PRId64, rows[i].lag);
        } else { /* the total line */
            snprintf(cell[0], sizeof(cell[0]), "-");
            snprintf(cell[1], sizeof(cell[1]), "-");
            snprintf(cell[2], sizeof(cell[2]), "-");
            snprintf(cell[3], sizeof(cell[3]), "%" PRId64, total);
        }
        const char *const row[6] = {group, topic, cell[0], cell[1], cell[2], cell[3]};
        kj_table_add(t, row);
    }
    kj_table_print(t, stdout);
    kj_table_free(t);
}

int kj_cmd_lag(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs lag", lag_usage);
    static const struct option longopts[] = {KJ_CLI_COMMON_LONGOPTS,
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                             {NULL, 0, NULL, 0}};
    long long timeout_s = 10;
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
        fputs(lag_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;

    char err[512];
    if (strcmp(cli.topic, cli.cfg.main_topic) != 0 &&
        kj_config_set(&cli.cfg, "topics.main", cli.topic, err, sizeof(err)) != 0) {
        fprintf(stderr, "kjobs lag: --topic: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    /* the inspected group's offsets, never a member of it (processor/group_lag.h) */
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(&cli.cfg, err, sizeof(err));
    if (!conf || kj_group_lag_conf_set(conf, cli.cfg.group, err, sizeof(err))) {
        fprintf(stderr, "kjobs lag: %s\n", err);
        if (conf) rd_kafka_conf_destroy(conf);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "kjobs lag: %s\n", err);
        rd_kafka_conf_destroy(conf);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    int timeout_ms = (int)timeout_s * 1000;
    int exit_code = KJ_EXIT_OK;
    lag_row *rows = NULL;
    size_t row_count = 0;
    int64_t total = 0;
    int read = kj_group_lag_read(rk, &cli.cfg, timeout_ms, &rows, &row_count);
    if (read != 0) exit_code = KJ_EXIT_RUNTIME;
    if (read < 0) goto out;
    for (size_t i = 0; i < row_count; i++)
        total += rows[i].lag;
    if (json) {
        for (size_t i = 0; i < row_count; i++) {
            json_t *o =
                json_pack("{s:s,s:s,s:i,s:o,s:I,s:I,s:I}", "group", cli.cfg.group, "topic",
                          rows[i].topic, "partition", (int)rows[i].partition, "current_offset",
                          rows[i].committed >= 0 ? json_integer(rows[i].committed) : json_null(),
                          "log_start_offset", (json_int_t)rows[i].log_start, "log_end_offset",
                          (json_int_t)rows[i].log_end, "lag", (json_int_t)rows[i].lag);
            kj_print_json_line(o, stdout);
            json_decref(o);
        }
    } else {
        print_table(cli.cfg.group, rows, row_count, total);
    }
    fflush(stdout);
out:
    kj_group_lag_free(rows, row_count);
    /* never subscribed: close leaves no group to leave and commits nothing */
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    kj_cli_free(&cli);
    return exit_code;
}
