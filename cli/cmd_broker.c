/*
 * cmd_broker.c — `kjobs broker`: a standalone embedded broker for development and tests.
 * Prints the bootstrap list as the first stdout line (and optionally writes it to a file,
 * atomically, so a waiting script never reads half a line), then runs until SIGINT/SIGTERM.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/embedded_broker.h"
#include "processor/log.h"

static const char broker_usage[] =
    "usage: kjobs broker [-c FILE] [--brokers N] [--partitions N] [--bootstrap-file F]\n"
    "                    [--group-protocols classic|classic,consumer]\n"
    "\n"
    "Runs an embedded Kafka-protocol broker (librdkafka's mock cluster) on loopback and creates\n"
    "the main, retry-ladder and dead-letter topics of the configuration. Prints the bootstrap\n"
    "address as the first line of stdout. Runs until SIGINT/SIGTERM. Development only: data is\n"
    "in memory and about 5 MiB per partition are kept (see README, 'Embedded broker').\n"
    "\n"
    "  --brokers N          number of brokers (default 1)\n"
    "  --partitions N       partitions per topic (default topics.partitions)\n"
    "  --bootstrap-file F   also write the bootstrap address to F\n"
    "  --group-protocols L  consumer group protocols offered: classic,consumer (default with\n"
    "                       librdkafka >= 2.12) or classic, a broker without the KIP-848 API\n"
    "                       like Kafka before 4.0: a KIP-848 member gets no answer (kjobs'\n"
    "                       kafka.group_protocol=auto falls back to classic after 15 s), not\n"
    "                       the UNSUPPORTED_VERSION of a Kafka 4 broker with\n"
    "                       group.coordinator.rebalance.protocols=classic\n"
    "  -c FILE              configuration file (default ./kjobs.cfg if present)\n";

enum { OPT_BROKERS = KJ_OPT_COMMON_LAST + 1, OPT_PARTITIONS, OPT_BOOTSTRAP_FILE, OPT_PROTOCOLS };

/* ApiKey of ConsumerGroupHeartbeat (KIP-848), the request a consumer-protocol member joins
 * with: a broker that does not list it in ApiVersions offers the classic protocol only. */
#define KJ_API_CONSUMER_GROUP_HEARTBEAT 68

static int write_bootstrap_file(const char *path, const char *bootstrap) {
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f) {
        rc = fprintf(f, "%s\n", bootstrap) < 0 ? -1 : 0;
        if (fclose(f) != 0) rc = -1;
        if (rc == 0) rc = rename(tmp, path);
    }
    free(tmp);
    return rc;
}

int kj_cmd_broker(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs broker", broker_usage);
    static const struct option longopts[] = {
        KJ_CLI_COMMON_LONGOPTS,
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {"bootstrap-file", required_argument, NULL, OPT_BOOTSTRAP_FILE},
        {"group-protocols", required_argument, NULL, OPT_PROTOCOLS},
        {NULL, 0, NULL, 0}};
    long long brokers = 1, partitions = 0;
    const char *bootstrap_file = NULL;
    bool kip848 = true;
    int opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_BROKERS) {
            if (kj_cli_parse_int(optarg, 1, 16, &brokers))
                return kj_cli_usage_error(&cli, "--brokers: expected 1..16, got '%s'", optarg);
        } else if (opt == OPT_PARTITIONS) {
            if (kj_cli_parse_int(optarg, 1, 10000, &partitions))
                return kj_cli_usage_error(&cli, "--partitions: expected 1..10000, got '%s'",
                                          optarg);
        } else if (opt == OPT_BOOTSTRAP_FILE) {
            bootstrap_file = optarg;
        } else if (opt == OPT_PROTOCOLS) {
            if (strcmp(optarg, "classic") == 0)
                kip848 = false;
            else if (strcmp(optarg, "classic,consumer") == 0 ||
                     strcmp(optarg, "consumer,classic") == 0)
                kip848 = true;
            else
                return kj_cli_usage_error(
                    &cli, "--group-protocols: expected classic or classic,consumer, got '%s'",
                    optarg);
        }
    }
    if (cli.help) {
        fputs(broker_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;

    kj_cli_install_stop_wait(); /* before any thread starts */
    char err[512];
    kj_embedded_broker *broker =
        kj_embedded_broker_start(&cli.cfg, (int)brokers, (int)partitions, err, sizeof(err));
    if (!broker) {
        kj_log(KJ_LOG_ERROR, "embedded broker failed to start", "{s:s}", "error", err);
        kj_cli_free(&cli);
        return KJ_EXIT_RUNTIME;
    }
    if (!kip848)
        rd_kafka_mock_set_apiversion(kj_embedded_broker_mock(broker),
                                     KJ_API_CONSUMER_GROUP_HEARTBEAT, -1, -1);
    const char *bootstrap = kj_embedded_broker_bootstrap(broker);
    /* The file first, then stdout: whoever sees the stdout line can rely on the file. */
    if (bootstrap_file && write_bootstrap_file(bootstrap_file, bootstrap) != 0) {
        kj_log(KJ_LOG_ERROR, "cannot write bootstrap file", "{s:s}", "path", bootstrap_file);
        kj_embedded_broker_stop(broker);
        kj_cli_free(&cli);
        return KJ_EXIT_RUNTIME;
    }
    printf("%s\n", bootstrap);
    fflush(stdout);
    kj_cli_wait_for_stop_signal();
    kj_log(KJ_LOG_INFO, "embedded broker stopping", NULL);
    kj_embedded_broker_stop(broker);
    if (bootstrap_file) unlink(bootstrap_file);
    kj_cli_free(&cli);
    return KJ_EXIT_OK;
}
