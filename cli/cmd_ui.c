/*
 * cmd_ui.c — `kjobs ui`: the operator console, a standalone HTTP server that needs only Kafka
 * (docs/console.md). Parses the flags, refuses an unsafe listener (no token on a non-loopback
 * address), starts the console's Kafka reads (processor/console_data.h) and its routes
 * (processor/console.h) on an HTTP listener of its own (processor/http.h) with the
 * cluster-wide gauges refreshed beside it (processor/console_metrics.h), and runs
 * until SIGINT/SIGTERM. Read-only unless ui.allow_actions is true.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/console.h"
#include "processor/console_data.h"
#include "processor/console_metrics.h"
#include "processor/http.h"
#include "processor/log.h"

static const char ui_usage[] =
    "usage: kjobs ui [-c FILE] [-b BROKERS] [-G GROUP] [-X prop=val] [--topic T]\n"
    "                [--listen HOST:PORT]\n"
    "\n"
    "Serves the operator console: workers (from their status records on <topics.main>.status),\n"
    "the consumer group's members and lag, the retry ladder (jobs waiting, next due) and the\n"
    "dead letters (filter, detail with headers and payload), the operator's pauses and open\n"
    "circuit breakers (<topics.main>.control). Read-only unless ui.allow_actions = true (replay,\n"
    "discard, pause, resume, breaker resume). Open http://HOST:PORT/ in a browser.\n"
    "\n"
    "  --listen HOST:PORT  address to serve on (default ui.listen, 127.0.0.1:8090); anything\n"
    "                      but a loopback address needs ui.token (KJOBS_UI_TOKEN)\n"
    "  -G GROUP            the consumer group shown (default kafka.group)\n";

enum { OPT_LISTEN = KJ_OPT_COMMON_LAST + 1 };

int kj_cmd_ui(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs ui", ui_usage);
    static const struct option longopts[] = {KJ_CLI_COMMON_LONGOPTS,
                                             {"listen", required_argument, NULL, OPT_LISTEN},
                                             {NULL, 0, NULL, 0}};
    const char *listen = NULL;
    int opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_LISTEN) listen = optarg;
    }
    if (cli.help) {
        fputs(ui_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;
    char err[512];
    if (listen && kj_config_set(&cli.cfg, "ui.listen", listen, err, sizeof(err)) != 0) {
        rc = kj_cli_usage_error(&cli, "--listen: %s", err);
        kj_cli_free(&cli);
        return rc;
    }
    if (strcmp(cli.topic, cli.cfg.main_topic) != 0 &&
        kj_config_set(&cli.cfg, "topics.main", cli.topic, err, sizeof(err)) != 0) {
        rc = kj_cli_usage_error(&cli, "--topic: %s", err);
        kj_cli_free(&cli);
        return rc;
    }
    bool loopback = kj_console_listen_is_loopback(cli.cfg.ui_listen);
    if (!loopback && !cli.cfg.ui_token[0]) {
        fprintf(stderr,
                "kjobs ui: ui.listen \"%s\" is not a loopback address: set ui.token "
                "(KJOBS_UI_TOKEN) or listen on 127.0.0.1\n",
                cli.cfg.ui_listen);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }

    kj_cli_install_stop_wait(); /* before any thread starts */
    int exit_code = KJ_EXIT_OK;
    kj_console_data *data = kj_console_data_new(&cli.cfg, err, sizeof(err));
    if (!data) {
        fprintf(stderr, "kjobs ui: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    kj_console *console = kj_console_new(&cli.cfg, data, loopback);
    /* the cluster-wide gauges, refreshed as often as workers report (ui.report_interval) */
    kj_console_metrics *gauges =
        kj_console_metrics_start(&cli.cfg, data, cli.cfg.ui_report_interval_ms);
    /* the listener's own /metrics (kjobs_console_actions_total), /livez and /readyz (always
     * ready: the console has no group to join) come with it, for probes and scraping */
    kj_http_hooks hooks = {.route = kj_console_route, .route_opaque = console};
    kj_http *http = kj_http_start(cli.cfg.ui_listen, &hooks, err, sizeof(err));
    if (!http) {
        fprintf(stderr, "kjobs ui: %s\n", err);
        exit_code = KJ_EXIT_RUNTIME;
    } else {
        kj_log(KJ_LOG_INFO, "console serving", "{s:i,s:s,s:s,s:b,s:b}", "port", kj_http_port(http),
               "group", cli.cfg.group, "main_topic", cli.cfg.main_topic, "allow_actions",
               cli.cfg.ui_allow_actions, "token_required", cli.cfg.ui_token[0] != '\0');
        printf("http://%s:%d/\n", loopback ? "127.0.0.1" : "HOST", kj_http_port(http));
        fflush(stdout);
        kj_cli_wait_for_stop_signal();
        kj_log(KJ_LOG_INFO, "console stopping", NULL);
    }
    kj_http_stop(http); /* no request runs past here: the console and its data can go */
    kj_console_metrics_stop(gauges);
    kj_console_free(console);
    kj_console_data_free(data);
    kj_cli_free(&cli);
    return exit_code;
}
