/*
 * fault_broker.c — the fault-injection broker for tests/integration/test_fault.py.
 *
 * Owns: hosting librdkafka's mock cluster in this process (through kj_embedded_broker_start,
 * so the topic layout is exactly what `kjobs broker` creates from the same config and
 * environment) and applying rdkafka_mock.h faults on command. Why a separate program: the
 * mock's error-injection API is in-process only, while the workers under test must be real
 * `kjobs run` processes that can be killed with SIGKILL.
 *
 * Usage: kjobs_fault_broker [--brokers N] [--partitions N] [-c FILE]
 * Prints the bootstrap list as the first stdout line, then reads one command per stdin line
 * and answers "ok" (or "error <why>") on stdout after the fault is applied, so the driver
 * synchronises on the answer instead of sleeping:
 *   down <broker_id|-1>                   rd_kafka_mock_broker_set_down
 *   up <broker_id|-1>                     rd_kafka_mock_broker_set_up
 *   rtt <broker_id|-1> <ms>               rd_kafka_mock_broker_set_rtt
 *   errors <Api> <count> <ERR_NAME>       rd_kafka_mock_push_request_errors (cluster-wide)
 *   broker-errors <id> <Api> <count> <ERR_NAME> <rtt_ms>
 *                                         rd_kafka_mock_broker_push_request_error_rtts
 *   pending <id> <Api>                    prints "ok <n>": errors left on that broker's stack
 *   clear [Api]                           clear cluster-wide request errors (all known Apis)
 *   quit                                  stop (EOF and SIGTERM/SIGINT stop too)
 * <Api> is a Kafka request name (Produce, Fetch, OffsetCommit, ...) or its numeric ApiKey;
 * <ERR_NAME> is a librdkafka error name with or without RD_KAFKA_RESP_ERR_ (e.g.
 * NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, _TRANSPORT) or a number.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "processor/config.h"
#include "processor/embedded_broker.h"
#include "processor/log.h"

static const struct {
    const char *name;
    int16_t key;
} api_keys[] = {
    {"Produce", 0},      {"Fetch", 1},        {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8}, {"OffsetFetch", 9},  {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},   {"LeaveGroup", 13},  {"SyncGroup", 14},       {"DescribeGroups", 15},
    {"ListGroups", 16},  {"ApiVersions", 18}, {"InitProducerId", 22},  {"OffsetForLeaderEpoch", 23},
};
#define API_COUNT (sizeof(api_keys) / sizeof(api_keys[0]))

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_api(const char *s, int16_t *out) {
    long v;
    if (!s) return -1;
    for (size_t i = 0; i < API_COUNT; i++) {
        if (strcasecmp(s, api_keys[i].name) == 0) {
            *out = api_keys[i].key;
            return 0;
        }
    }
    if (parse_long(s, 0, 100, &v) == 0) {
        *out = (int16_t)v;
        return 0;
    }
    return -1;
}

static int parse_err(const char *s, rd_kafka_resp_err_t *out) {
    long v;
    if (!s) return -1;
    if (parse_long(s, -200, 1000, &v) == 0) {
        *out = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0) s += 18;
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name && strcmp(descs[i].name, s) == 0) {
            *out = descs[i].code;
            return 0;
        }
    }
    return -1;
}

/* Apply one command; write the answer into reply. Returns 1 to quit. */
static int apply(rd_kafka_mock_cluster_t *mock, char *line, char *reply, size_t reply_size) {
    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r\n", &save);
    char *a1 = strtok_r(NULL, " \t\r\n", &save);
    char *a2 = strtok_r(NULL, " \t\r\n", &save);
    char *a3 = strtok_r(NULL, " \t\r\n", &save);
    char *a4 = strtok_r(NULL, " \t\r\n", &save);
    char *a5 = strtok_r(NULL, " \t\r\n", &save);
    long id, n, ms;
    int16_t api;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR, inject;
    snprintf(reply, reply_size, "ok");
    if (!cmd) {
        snprintf(reply, reply_size, "error empty command");
    } else if (strcmp(cmd, "quit") == 0) {
        return 1;
    } else if (strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) {
        if (parse_long(a1, -1, 1000, &id)) goto usage;
        err = strcmp(cmd, "down") == 0 ? rd_kafka_mock_broker_set_down(mock, (int32_t)id)
                                       : rd_kafka_mock_broker_set_up(mock, (int32_t)id);
    } else if (strcmp(cmd, "rtt") == 0) {
        if (parse_long(a1, -1, 1000, &id) || parse_long(a2, 0, 600000, &ms)) goto usage;
        err = rd_kafka_mock_broker_set_rtt(mock, (int32_t)id, (int)ms);
    } else if (strcmp(cmd, "errors") == 0) {
        if (parse_api(a1, &api) || parse_long(a2, 1, 100000, &n) || parse_err(a3, &inject))
            goto usage;
        rd_kafka_resp_err_t *errs = malloc((size_t)n * sizeof(*errs));
        for (long i = 0; i < n; i++)
            errs[i] = inject;
        rd_kafka_mock_push_request_errors_array(mock, api, (size_t)n, errs);
        free(errs);
    } else if (strcmp(cmd, "broker-errors") == 0) {
        if (parse_long(a1, 0, 1000, &id) || parse_api(a2, &api) || parse_long(a3, 1, 100000, &n) ||
            parse_err(a4, &inject) || parse_long(a5, 0, 600000, &ms))
            goto usage;
        for (long i = 0; i < n && !err; i++)
            err = rd_kafka_mock_broker_push_request_error_rtts(mock, (int32_t)id, api, 1, inject,
                                                               (int)ms);
    } else if (strcmp(cmd, "pending") == 0) {
        size_t cnt = 0;
        if (parse_long(a1, 0, 1000, &id) || parse_api(a2, &api)) goto usage;
        err = rd_kafka_mock_broker_error_stack_cnt(mock, (int32_t)id, api, &cnt);
        if (!err) snprintf(reply, reply_size, "ok %zu", cnt);
    } else if (strcmp(cmd, "clear") == 0) {
        if (a1) {
            if (parse_api(a1, &api)) goto usage;
            rd_kafka_mock_clear_request_errors(mock, api);
        } else {
            for (size_t i = 0; i < API_COUNT; i++)
                rd_kafka_mock_clear_request_errors(mock, api_keys[i].key);
        }
    } else {
        snprintf(reply, reply_size, "error unknown command '%s'", cmd);
    }
    if (err) snprintf(reply, reply_size, "error %s", rd_kafka_err2name(err));
    return 0;
usage:
    snprintf(reply, reply_size, "error bad arguments for '%s'", cmd);
    return 0;
}

int main(int argc, char **argv) {
    long brokers = 3, partitions = 0;
    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            if (parse_long(argv[++i], 1, 16, &brokers)) goto usage;
        } else if (strcmp(argv[i], "--partitions") == 0 && i + 1 < argc) {
            if (parse_long(argv[++i], 1, 10000, &partitions)) goto usage;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else {
            goto usage;
        }
    }

    kj_config cfg;
    char errstr[512];
    if (kj_config_load(&cfg, config_path, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "kjobs_fault_broker: %s\n", errstr);
        kj_config_free(&cfg);
        return 2;
    }
    kj_log_level level;
    if (kj_log_level_parse(cfg.log_level, &level) == 0) kj_log_set_level(level);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked fgets returns and we stop */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    kj_embedded_broker *broker =
        kj_embedded_broker_start(&cfg, (int)brokers, (int)partitions, errstr, sizeof(errstr));
    if (!broker) {
        fprintf(stderr, "kjobs_fault_broker: %s\n", errstr);
        kj_config_free(&cfg);
        return 1;
    }
    rd_kafka_mock_cluster_t *mock = kj_embedded_broker_mock(broker);
    printf("%s\n", kj_embedded_broker_bootstrap(broker));
    fflush(stdout);

    char line[512], reply[256];
    while (!stop_requested && fgets(line, sizeof(line), stdin)) {
        if (apply(mock, line, reply, sizeof(reply))) break;
        printf("%s\n", reply);
        fflush(stdout);
    }
    kj_embedded_broker_stop(broker);
    kj_config_free(&cfg);
    return 0;
usage:
    fprintf(stderr, "usage: kjobs_fault_broker [--brokers N] [--partitions N] [-c FILE]\n");
    return 2;
}
