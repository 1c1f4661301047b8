/*
 * cmd_peek.c — `kjobs peek`: print jobs from a topic as JSON lines, decoded, with headers.
 * What kcat is for raw bytes, this is for jobs. It reads with assign() (no consumer group, no
 * commits), so peeking never disturbs the workers' offsets.
 *
 * Stop rules: --count N stops after N records; --from-beginning without --count stops once
 * every partition is at its end (like kcat -e); otherwise it follows until SIGINT/SIGTERM.
 * --timeout S bounds the whole run; reaching it before --count records is an error (exit 1).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/output.h"
#include "cli/commands.h"
#include "processor/job_json.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "schemas/codec.h"

static const char peek_usage[] =
    "usage: kjobs peek [-c FILE] [-b BROKERS] [-X prop=val] [--topic T] [--count N]\n"
    "                  [--from-beginning] [--timeout SECONDS]\n"
    "\n"
    "Prints jobs from a topic as JSON lines: topic, partition, offset, timestamp, key, headers\n"
    "(an ordered list of [name, value] pairs, repeated names kept; a value that is not UTF-8\n"
    "as {\"base64\": ...}), and the decoded job (id, type, created_at, meta, payload as text\n"
    "when it is UTF-8, and payload_b64 always). A record that does not decode prints its error\n"
    "and value_b64. Text that is not valid UTF-8 shows U+FFFD for the bad bytes.\n"
    "Uses no consumer group and commits nothing.\n"
    "\n"
    "  --topic T          topic to read (default topics.main)\n"
    "  --count N          stop after N records\n"
    "  --from-beginning   start at the oldest record (default: only new records); without\n"
    "                     --count, stop at the end of every partition\n"
    "  --timeout SECONDS  give up after this long (exit 1 if --count was not reached)\n";

enum { OPT_COUNT = KJ_OPT_COMMON_LAST + 1, OPT_FROM_BEGINNING, OPT_TIMEOUT };

int kj_cmd_peek(int argc, char **argv) {
    /* a line per record as it arrives, also into a pipe (`kjobs peek | jq`, `tail -f`) */
    setvbuf(stdout, NULL, _IOLBF, 0);
    kj_cli cli;
    kj_cli_init(&cli, "kjobs peek", peek_usage);
    static const struct option longopts[] = {
        KJ_CLI_COMMON_LONGOPTS,
        {"count", required_argument, NULL, OPT_COUNT},
        {"from-beginning", no_argument, NULL, OPT_FROM_BEGINNING},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {NULL, 0, NULL, 0}};
    long long count = -1, timeout_s = -1;
    int from_beginning = 0, opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_COUNT) {
            if (kj_cli_parse_int(optarg, 1, (long long)1 << 40, &count))
                return kj_cli_usage_error(&cli, "--count: expected a positive number");
        } else if (opt == OPT_TIMEOUT) {
            if (kj_cli_parse_int(optarg, 1, 86400, &timeout_s))
                return kj_cli_usage_error(&cli, "--timeout: expected 1..86400 seconds");
        } else if (opt == OPT_FROM_BEGINNING) {
            from_beginning = 1;
        }
    }
    if (cli.help) {
        fputs(peek_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;

    char err[512];
    if (kj_codec_init(err, sizeof(err)) != 0) {
        kj_log(KJ_LOG_ERROR, "codec init failed", "{s:s}", "error", err);
        kj_cli_free(&cli);
        return KJ_EXIT_RUNTIME;
    }
    /* librdkafka's consumer wants a group id even with assign(); a private one, never used
     * for commits, keeps peek invisible to the workers' group */
    char peek_group[64];
    snprintf(peek_group, sizeof(peek_group), "kjobs-peek-%ld", (long)getpid());
    rd_kafka_conf_t *conf = kj_kafka_consumer_conf_new(&cli.cfg, err, sizeof(err));
    if (!conf || kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "group.id", peek_group, err, sizeof(err))) {
        fprintf(stderr, "kjobs peek: %s\n", err);
        if (conf) rd_kafka_conf_destroy(conf);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "kjobs peek: %s\n", err);
        rd_kafka_conf_destroy(conf);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_poll_set_consumer(rk);
    kj_cli_install_signals();
    int exit_code = KJ_EXIT_OK;
    long long deadline = timeout_s > 0 ? kj_now_ms() + timeout_s * 1000 : -1;

    int partitions = kj_kafka_partition_count(rk, cli.topic, 10000, err, sizeof(err));
    if (partitions < 0) {
        kj_log(KJ_LOG_ERROR, "cannot read topic", "{s:s,s:s}", "topic", cli.topic, "error", err);
        exit_code = KJ_EXIT_RUNTIME;
        goto out;
    }
    rd_kafka_topic_partition_list_t *assignment = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(assignment, cli.topic, p)->offset =
            from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    rd_kafka_assign(rk, assignment);
    rd_kafka_topic_partition_list_destroy(assignment);

    char *at_eof = calloc((size_t)partitions, 1);
    int eof_count = 0;
    long long printed = 0;
    while (!kj_cli_stop_requested && (count < 0 || printed < count)) {
        if (deadline > 0 && kj_now_ms() >= deadline) {
            if (count > 0) {
                kj_log(KJ_LOG_ERROR, "timed out before --count records", "{s:I,s:I}", "wanted",
                       (json_int_t)count, "printed", (json_int_t)printed);
                exit_code = KJ_EXIT_RUNTIME;
            }
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg) continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (msg->partition >= 0 && msg->partition < partitions && !at_eof[msg->partition]) {
                at_eof[msg->partition] = 1;
                eof_count++;
            }
            rd_kafka_message_destroy(msg);
            if (from_beginning && count < 0 && eof_count == partitions) break;
            continue;
        }
        if (msg->err) {
            kj_log(KJ_LOG_ERROR, "consume error", "{s:s}", "error", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            exit_code = KJ_EXIT_RUNTIME;
            break;
        }
        if (msg->partition >= 0 && msg->partition < partitions && at_eof[msg->partition]) {
            at_eof[msg->partition] = 0;
            eof_count--;
        }
        json_t *line = kj_job_json_from_message(msg);
        kj_print_json_line(line, stdout);
        json_decref(line);
        rd_kafka_message_destroy(msg);
        printed++;
    }
    fflush(stdout);
    free(at_eof);
out:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    kj_cli_free(&cli);
    return exit_code;
}
