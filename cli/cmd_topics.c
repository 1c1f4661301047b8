/*
 * cmd_topics.c — `kjobs topics [--create]`: print the topic layout the configuration implies
 * (main, retry ladder with delays, dead letters), or create it through the Admin API.
 * Creating is idempotent: topics that already exist are reported and left alone. The embedded
 * broker has no CreateTopics API; `kjobs broker` creates the layout itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/periodic_config.h"
#include "processor/topic_layout.h"

static const char topics_usage[] =
    "usage: kjobs topics [-c FILE] [-b BROKERS] [-X prop=val] [--create]\n"
    "\n"
    "Prints the topics of the configuration: the main topic, one retry topic per delay in\n"
    "retry.delays, and the dead-letter topic. With --create, creates them through the Admin\n"
    "API with topics.partitions, topics.replication_factor, topics.min_insync_replicas and\n"
    "retention.ms from topics.retention (main, ladder) and topics.dlq_retention (dead\n"
    "letters); existing topics are kept as they are. Also the compacted one-partition status\n"
    "topic <topics.main>.status (worker reports, read by `kjobs ui`), the compacted\n"
    "one-partition control topic <topics.main>.control (`kjobs pause`/`resume`) and, with\n"
    "schedule.periodic entries, the compacted one-partition state topic <topics.main>.schedule.\n";

enum { OPT_CREATE = KJ_OPT_COMMON_LAST + 1 };

/* Topic-level configs of a created topic, by role: retention (dead letters outlive the
 * ladder, the ladder outlives its longest delay: both checked by kj_config_validate) and
 * min.insync.replicas when set (0 keeps the broker's default). */
static int set_topic_configs(rd_kafka_NewTopic_t *nt, const kj_config *cfg, kj_topic_role role) {
    char value[32];
    int64_t retention = role == KJ_TOPIC_DLQ ? cfg->dlq_retention_ms : cfg->topic_retention_ms;
    snprintf(value, sizeof(value), "%lld", (long long)retention);
    if (rd_kafka_NewTopic_set_config(nt, "retention.ms", value)) return -1;
    if (cfg->min_insync_replicas > 0) {
        snprintf(value, sizeof(value), "%d", cfg->min_insync_replicas);
        if (rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", value)) return -1;
    }
    return 0;
}

static int create_topics(const kj_cli *cli, kj_topic_spec *topics, size_t count) {
    char err[512];
    rd_kafka_conf_t *conf = kj_kafka_conf_new(&cli->cfg, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "kjobs topics: %s\n", err);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "kjobs topics: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return KJ_EXIT_USAGE;
    }
    /* one-partition compacted topics: the workers' status topic (docs/console.md), the
     * operator's control topic (processor/group_control.h) and schedule.periodic's state topic
     * (processor/periodic.h) */
    char *compacted[3] = {kj_topic_status(&cli->cfg), kj_topic_control(&cli->cfg), NULL};
    size_t ncompacted = 2;
    if (cli->cfg.periodic_count > 0) compacted[ncompacted++] = kj_periodic_state_topic(&cli->cfg);
    size_t total = count + ncompacted;
    rd_kafka_NewTopic_t **new_topics = calloc(total, sizeof(*new_topics));
    int exit_code = KJ_EXIT_OK;
    for (size_t k = 0; k < ncompacted; k++) {
        rd_kafka_NewTopic_t *nt = new_topics[count + k] =
            rd_kafka_NewTopic_new(compacted[k], 1, cli->cfg.replication_factor, err, sizeof(err));
        char mir[16];
        snprintf(mir, sizeof(mir), "%d", cli->cfg.min_insync_replicas);
        if (!nt || rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact") ||
            (cli->cfg.min_insync_replicas > 0 &&
             rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", mir))) {
            fprintf(stderr, "kjobs topics: %s: %s\n", compacted[k],
                    nt ? "cannot set topic configs" : err);
            exit_code = KJ_EXIT_USAGE;
            goto out;
        }
    }
    for (size_t i = 0; i < count; i++) {
        new_topics[i] = rd_kafka_NewTopic_new(topics[i].name, cli->cfg.partitions,
                                              cli->cfg.replication_factor, err, sizeof(err));
        if (!new_topics[i]) {
            fprintf(stderr, "kjobs topics: %s: %s\n", topics[i].name, err);
            exit_code = KJ_EXIT_USAGE;
            goto out;
        }
        if (set_topic_configs(new_topics[i], &cli->cfg, topics[i].role) != 0) {
            fprintf(stderr, "kjobs topics: %s: cannot set topic configs\n", topics[i].name);
            exit_code = KJ_EXIT_USAGE;
            goto out;
        }
    }
    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *options =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(options, 30000, err, sizeof(err));
    rd_kafka_CreateTopics(rk, new_topics, total, options, queue);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, 60000);
    if (!ev) {
        kj_log(KJ_LOG_ERROR, "CreateTopics timed out", NULL);
        exit_code = KJ_EXIT_RUNTIME;
    } else if (rd_kafka_event_error(ev)) {
        kj_log(KJ_LOG_ERROR, "CreateTopics failed", "{s:s,s:s}", "error",
               rd_kafka_event_error_string(ev), "hint",
               "the embedded broker has no CreateTopics API: `kjobs broker` creates the topics");
        exit_code = KJ_EXIT_RUNTIME;
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n;
        const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(res, &n);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
            const char *name = rd_kafka_topic_result_name(results[i]);
            if (!e) {
                printf("created %s\n", name);
            } else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                printf("exists  %s\n", name);
            } else {
                kj_log(KJ_LOG_ERROR, "topic not created", "{s:s,s:s}", "topic", name, "error",
                       rd_kafka_topic_result_error_string(results[i]));
                exit_code = KJ_EXIT_RUNTIME;
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(queue);
    /* key-ordered retries need every ladder topic with the main topic's partition count; an
     * existing topic is kept as it is, so say when the layout cannot serve it */
    if (exit_code == KJ_EXIT_OK && kj_config_retry_key_ordered(&cli->cfg)) {
        int main_count = kj_kafka_partition_count(rk, topics[0].name, 10000, err, sizeof(err));
        for (size_t i = 1; main_count > 0 && i < count; i++) {
            if (topics[i].role != KJ_TOPIC_RETRY) continue;
            int n = kj_kafka_partition_count(rk, topics[i].name, 10000, err, sizeof(err));
            if (n < 0 || n == main_count) continue;
            kj_log(KJ_LOG_ERROR,
                   "retry.ordering = \"key\" needs every ladder topic with the main topic's "
                   "partition count; add partitions so they are equal (kafka-topics.sh --alter)",
                   "{s:s,s:i,s:s,s:i}", "topic", topics[i].name, "partitions", n, "main_topic",
                   topics[0].name, "main_partitions", main_count);
            exit_code = KJ_EXIT_RUNTIME;
        }
    }
out:
    for (size_t i = 0; i < total; i++)
        if (new_topics[i]) rd_kafka_NewTopic_destroy(new_topics[i]);
    free(new_topics);
    for (size_t k = 0; k < ncompacted; k++)
        free(compacted[k]);
    rd_kafka_destroy(rk);
    return exit_code;
}

int kj_cmd_topics(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs topics", topics_usage);
    static const struct option longopts[] = {
        KJ_CLI_COMMON_LONGOPTS, {"create", no_argument, NULL, OPT_CREATE}, {NULL, 0, NULL, 0}};
    int create = 0, opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_CREATE) create = 1;
    }
    if (cli.help) {
        fputs(topics_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;

    kj_topic_spec *topics;
    size_t count = kj_topic_layout(&cli.cfg, &topics);
    int exit_code = KJ_EXIT_OK;
    if (create) {
        exit_code = create_topics(&cli, topics, count);
    } else {
        printf("%-40s %-6s %-5s %-10s %s\n", "TOPIC", "ROLE", "STEP", "DELAY", "PARTITIONS");
        for (size_t i = 0; i < count; i++) {
            char delay[32] = "-", step[16] = "-";
            if (topics[i].role == KJ_TOPIC_RETRY) {
                kj_duration_format(topics[i].delay_ms, delay, sizeof(delay));
                snprintf(step, sizeof(step), "%d", topics[i].step);
            }
            printf("%-40s %-6s %-5s %-10s %d\n", topics[i].name, kj_topic_role_name(topics[i].role),
                   step, delay, cli.cfg.partitions);
        }
        char *status = kj_topic_status(&cli.cfg);
        printf("%-40s %-6s %-5s %-10s %d\n", status, "status", "-", "-", 1);
        free(status);
        char *control = kj_topic_control(&cli.cfg);
        printf("%-40s %-6s %-5s %-10s %d\n", control, "ctl", "-", "-", 1);
        free(control);
        if (cli.cfg.periodic_count > 0) {
            char *state = kj_periodic_state_topic(&cli.cfg);
            printf("%-40s %-6s %-5s %-10s %d\n", state, "sched", "-", "-", 1);
            free(state);
        }
    }
    kj_topic_layout_free(topics, count);
    kj_cli_free(&cli);
    return exit_code;
}
