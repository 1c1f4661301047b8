/*
 * cmd_run.c — `kjobs run`: the worker. Loads config, registers handlers (built-ins, then the
 * plugin), optionally starts an in-process embedded broker (--embedded, or
 * kafka.bootstrap = "embedded"), starts the HTTP listener, and runs the worker until
 * SIGINT/SIGTERM. --check-config runs the very same preparation as `run` (configuration,
 * built-in handlers, the plugin, the handlers.exec program) and exits 0 or 2 without
 * connecting, so a config it accepts is one `run` starts with. Its effective-config dump hides
 * librdkafka property values and handlers.exec arguments (both may be secrets).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/console.h"
#include "processor/console_data.h"
#include "processor/embedded_broker.h"
#include "processor/exec_handler.h"
#include "processor/handlers.h"
#include "processor/http.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/metrics.h"
#include "processor/worker.h"

static const char run_usage[] =
    "usage: kjobs run [-c FILE] [-b BROKERS] [-G GROUP] [-X prop=val] [--embedded]\n"
    "                 [--partitions N] [--check-config]\n"
    "\n"
    "Runs the worker: consumes the main topic and its retry ladder in a consumer group, runs\n"
    "handlers per partition batch, routes failures to the ladder or the dead-letter topic, and\n"
    "commits offsets only past finished or handed-on jobs. Stops cleanly on SIGINT/SIGTERM.\n"
    "\n"
    "  --embedded       start an in-process embedded broker (also when kafka.bootstrap is\n"
    "                   \"embedded\"); its address is printed as the first stdout line\n"
    "  --partitions N   partitions per topic of the embedded broker (default topics.partitions)\n"
    "  --check-config   validate the configuration (file + environment), print it, exit 0 or 2\n"
    "  -c FILE          configuration file (default ./kjobs.cfg if present)\n"
    "  -b, -G, -X       override kafka.bootstrap, kafka.group, add librdkafka properties\n";

enum { OPT_EMBEDDED = KJ_OPT_COMMON_LAST + 1, OPT_CHECK_CONFIG, OPT_PARTITIONS };

static kj_heartbeat run_heartbeat;
static kj_worker *volatile signal_worker; /* for SIGUSR1: close the DLQ circuit breaker */

/*
 * Everything `run` checks before it connects: the handler registry with built-ins and the
 * plugin, and the exec handler (its program must exist). The one validation path shared by
 * `run` and `run --check-config`. Errors name the file and setting at fault (plugin and exec
 * errors get the setting's FILE:LINE like configuration errors). 0, or -1 with err.
 */
static int run_prepare(const kj_config *cfg, kj_handler_registry **handlers_out,
                       kj_exec_handler **exec_out, char *err, size_t errsz) {
    char why[512];
    kj_handler_registry *handlers = kj_handlers_new();
    kj_exec_handler *exec_handler = NULL;
    *handlers_out = NULL;
    *exec_out = NULL;
    if (kj_builtins_register(handlers, err, errsz) != 0) goto fail;
    kj_group_protocol protocol;
    if (kj_kafka_group_protocol(cfg, &protocol, why, sizeof(why)) != 0) {
        char place[400];
        kj_config_place(cfg, "kafka.group_protocol", place, sizeof(place));
        if (snprintf(err, errsz, "%s: %s", place, why) < 0) err[0] = '\0';
        goto fail;
    }
    /* key-ordered retries keep a main partition's ladder copies in the ladder partitions of
     * its number and need the member that owns it to own those too: the range assignor */
    const char *assignor = kj_kafka_prop_value(
        cfg, protocol.kip848 ? "group.remote.assignor" : "partition.assignment.strategy");
    if (kj_config_retry_key_ordered(cfg) && assignor && strcmp(assignor, "range") != 0) {
        char place[400];
        kj_config_place(cfg, "retry.ordering", place, sizeof(place));
        if (snprintf(err, errsz,
                     "config error: %s: \"key\" needs the range assignor (each member owns a "
                     "main partition and the ladder partitions of the same number), but the "
                     "librdkafka property %s is set to another (kafka.properties, -X or "
                     "KJOBS_RDKAFKA_*): drop that setting, kjobs sets range itself",
                     place,
                     protocol.kip848 ? "group.remote.assignor" : "partition.assignment.strategy") <
            0)
            err[0] = '\0';
        goto fail;
    }
    if (cfg->handlers_plugin[0] &&
        kj_handlers_load_plugin(handlers, cfg->handlers_plugin, why, sizeof(why)) != 0) {
        char place[400];
        kj_config_place(cfg, "handlers.plugin", place, sizeof(place));
        const char *rest = strncmp(why, "handlers.plugin: ", 17) == 0 ? why + 17 : why;
        if (snprintf(err, errsz, "%s: %s", place, rest) < 0) err[0] = '\0';
        goto fail;
    }
    /* time limits name registered handlers: checked here, so --check-config catches a typo */
    if (kj_handlers_set_timeouts(handlers, cfg->handlers_timeout_ms, cfg->handlers_timeouts,
                                 cfg->handlers_timeout_count, why, sizeof(why)) != 0) {
        char place[400];
        kj_config_place(cfg, "handlers.timeouts", place, sizeof(place));
        if (snprintf(err, errsz, "%s: %s", place, why) < 0) err[0] = '\0';
        goto fail;
    }
    if (cfg->handlers_exec_count > 0) { /* handlers.exec: fallback for unclaimed types */
        if (!(exec_handler = kj_exec_handler_new(cfg, err, errsz))) goto fail;
        kj_exec_handler_register(exec_handler, handlers);
    }
    /* librdkafka checks some settings only when a client is created (SASL mechanism, TLS
     * files): create one (it connects to nothing before it is used) and let it go. */
    kj_config offline = *cfg; /* shallow: the client gets no broker address at all */
    offline.bootstrap = (char *)"127.0.0.1:9";
    rd_kafka_conf_t *conf = kj_kafka_conf_new(&offline, why, sizeof(why));
    if (conf &&
        (rd_kafka_conf_set(conf, "bootstrap.servers", "", why, sizeof(why)) ||
         rd_kafka_conf_set(conf, "log_level", "3", why, sizeof(why)))) /* no "no brokers" note */
        rd_kafka_conf_destroy(conf), conf = NULL;
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why)) : NULL;
    if (!rk) {
        if (conf) rd_kafka_conf_destroy(conf);
        if (snprintf(err, errsz, "Kafka client settings: %s", why) < 0) err[0] = '\0';
        kj_exec_handler_free(exec_handler);
        goto fail;
    }
    rd_kafka_destroy(rk);
    /* and the consumers' own checks (fetch.max.bytes against message.max.bytes, their queue
     * and fetch sizes, max.poll.interval.ms against session.timeout.ms), on the very
     * configurations the worker builds: its group consumer, and the classic ones that name the
     * group without joining it (the control and status readers, the key-order scan) */
    for (int i = 0; i < 2; i++) {
        conf = i == 0 ? kj_worker_consumer_conf(&offline, protocol.kip848, why, sizeof(why))
                      : kj_kafka_consumer_conf_new(&offline, why, sizeof(why));
        if (conf && (rd_kafka_conf_set(conf, "bootstrap.servers", "", why, sizeof(why)) ||
                     rd_kafka_conf_set(conf, "log_level", "3", why, sizeof(why)) ||
                     rd_kafka_conf_set(conf, "group.id", cfg->group, why, sizeof(why))))
            rd_kafka_conf_destroy(conf), conf = NULL;
        rk = conf ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why)) : NULL;
        if (!rk) {
            if (conf) rd_kafka_conf_destroy(conf);
            if (snprintf(err, errsz, "Kafka consumer settings: %s", why) < 0) err[0] = '\0';
            kj_exec_handler_free(exec_handler);
            goto fail;
        }
        rd_kafka_destroy(rk);
    }
    *handlers_out = handlers;
    *exec_out = exec_handler;
    return 0;
fail:
    kj_handlers_free(handlers);
    return -1;
}

static void on_breaker_reset_signal(int sig) {
    (void)sig;
    if (signal_worker) kj_worker_request_breaker_reset(signal_worker);
}

int kj_cmd_run(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs run", run_usage);
    static const struct option longopts[] = {
        KJ_CLI_COMMON_LONGOPTS,
        {"embedded", no_argument, NULL, OPT_EMBEDDED},
        {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {NULL, 0, NULL, 0}};
    int embedded = 0, check_config = 0, opt, rc;
    long long partitions = 0;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_EMBEDDED)
            embedded = 1;
        else if (opt == OPT_CHECK_CONFIG)
            check_config = 1;
        else if (opt == OPT_PARTITIONS && kj_cli_parse_int(optarg, 1, 10000, &partitions))
            return kj_cli_usage_error(&cli, "--partitions: expected 1..10000");
    }
    if (cli.help) {
        fputs(run_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;
    kj_config *cfg = &cli.cfg;
    char err[1024];

    kj_handler_registry *handlers = NULL;
    kj_exec_handler *exec_handler = NULL;
    if (run_prepare(cfg, &handlers, &exec_handler, err, sizeof(err)) != 0) {
        fprintf(stderr, "kjobs run: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    if (cfg->ui_on_worker &&
        (!cfg->http_listen[0] ||
         (!cfg->ui_token[0] && !kj_console_listen_is_loopback(cfg->http_listen)))) {
        char place[400]; /* which file line (or variable) turned it on */
        kj_config_place(cfg, "ui.on_worker", place, sizeof(place));
        if (!cfg->http_listen[0])
            fprintf(stderr, "kjobs run: %s: ui.on_worker needs http.listen (it is \"\")\n", place);
        else
            fprintf(stderr,
                    "kjobs run: %s: ui.on_worker serves the console on http.listen \"%s\", which "
                    "is not a loopback address: set ui.token (KJOBS_UI_TOKEN) or listen on "
                    "127.0.0.1\n",
                    place, cfg->http_listen);
        kj_exec_handler_free(exec_handler);
        kj_handlers_free(handlers);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    if (check_config) {
        printf("configuration ok: %s\n", cfg->source_path ? cfg->source_path : "(defaults)");
        kj_config_write_effective(cfg, stdout); /* secrets and exec arguments shown hidden */
        kj_exec_handler_free(exec_handler);     /* no child was started */
        kj_handlers_free(handlers);
        kj_cli_free(&cli);
        return KJ_EXIT_OK;
    }

    kj_cli_install_signals();
    int exit_code = KJ_EXIT_RUNTIME;
    kj_embedded_broker *broker = NULL;
    kj_http *http = NULL;
    kj_worker *worker = NULL;
    kj_console_data *console_data = NULL; /* ui.on_worker: the console on http.listen */
    kj_console *console = NULL;
    if (embedded || strcmp(cfg->bootstrap, "embedded") == 0) {
        broker = kj_embedded_broker_start(cfg, 1, (int)partitions, err, sizeof(err));
        if (!broker) {
            kj_log(KJ_LOG_ERROR, "embedded broker failed to start", "{s:s}", "error", err);
            goto out;
        }
        const char *bootstrap = kj_embedded_broker_bootstrap(broker);
        kj_config_set(cfg, "kafka.bootstrap", bootstrap, err, sizeof(err));
        /* The mock holds an empty Fetch for the full fetch.wait.max.ms: added first, so a
         * user's own value still wins. Its group timing (a classic member that left is
         * forgotten only after its session timeout: a restarted worker would wait 45 s) is the
         * worker's to set, for the protocol it joins with (worker.c). */
        cfg->embedded_broker = true;
        static const char *const embedded_props[] = {"fetch.wait.max.ms=5"};
        size_t extra = sizeof(embedded_props) / sizeof(embedded_props[0]);
        char **props = calloc(cfg->rdkafka_prop_count + extra, sizeof(char *));
        for (size_t i = 0; i < extra; i++)
            props[i] = strdup(embedded_props[i]);
        if (cfg->rdkafka_prop_count) /* rdkafka_props may be NULL when empty */
            memcpy(props + extra, cfg->rdkafka_props, cfg->rdkafka_prop_count * sizeof(char *));
        free(cfg->rdkafka_props);
        cfg->rdkafka_props = props;
        cfg->rdkafka_prop_count += extra;
        printf("%s\n", bootstrap);
        fflush(stdout);
    }

    worker = kj_worker_new(cfg, handlers, err, sizeof(err));
    if (!worker) {
        kj_log(KJ_LOG_ERROR, "worker failed to start", "{s:s}", "error", err);
        goto out;
    }
    kj_metrics_set_version(KJOBS_VERSION_STRING);
    signal_worker = worker;
    signal(SIGUSR1, on_breaker_reset_signal);
    if (cfg->http_listen[0]) {
        kj_http_hooks hooks = {
            .ready = kj_worker_ready, .opaque = worker, .heartbeat = &run_heartbeat};
        if (cfg->ui_on_worker) {
            console_data = kj_console_data_new(cfg, err, sizeof(err));
            if (!console_data) {
                kj_log(KJ_LOG_ERROR, "console failed to start", "{s:s}", "error", err);
                goto out;
            }
            console =
                kj_console_new(cfg, console_data, kj_console_listen_is_loopback(cfg->http_listen));
            hooks.route = kj_console_route;
            hooks.route_opaque = console;
        }
        kj_heartbeat_beat(&run_heartbeat);
        http = kj_http_start(cfg->http_listen, &hooks, err, sizeof(err));
        if (!http) {
            char place[400]; /* which file line (or variable) set the address */
            kj_config_place(cfg, "http.listen", place, sizeof(place));
            kj_log(KJ_LOG_ERROR, "HTTP listener failed to start", "{s:s,s:s}", "setting", place,
                   "error", err);
            goto out;
        }
    }
    exit_code = kj_worker_run(worker, &kj_cli_stop_requested, &run_heartbeat);
out:
    signal(SIGUSR1, SIG_IGN);
    signal_worker = NULL;
    kj_http_stop(http); /* no request runs past here: the console can go */
    kj_console_free(console);
    kj_console_data_free(console_data);
    /* Handlers past the shutdown grace still run: the handler table and the configuration they
     * read are left to the process's end. The exec handler's children are stopped all the same
     * (stdin closed, then killed after its shutdown wait): a child stuck in a job must not outlive
     * kjobs and run on while the partition's next owner runs the job again. */
    bool handlers_running = kj_worker_handlers_running(worker);
    kj_worker_free(worker);
    kj_exec_handler_free(exec_handler);
    kj_embedded_broker_stop(broker);
    if (!handlers_running) {
        kj_handlers_free(handlers);
        kj_cli_free(&cli);
    }
    return exit_code;
}
