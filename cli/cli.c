/*
 * cli.c — shared plumbing for the kjobs subcommands (see cli.h).
 */
#include "cli/cli.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/log.h"

volatile sig_atomic_t kj_cli_stop_requested = 0;

static void on_stop_signal(int sig) {
    (void)sig;
    kj_cli_stop_requested = 1;
}

void kj_cli_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The signals that ask a command to stop (SIGINT, SIGTERM) into @p set. */
static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

void kj_cli_install_stop_wait(void) {
    kj_cli_install_signals();
    sigset_t stop;
    stop_signals(&stop);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
}

void kj_cli_wait_for_stop_signal(void) {
    sigset_t stop, waiting;
    stop_signals(&stop);
    pthread_sigmask(SIG_BLOCK, &stop, &waiting);
    sigdelset(&waiting, SIGINT);
    sigdelset(&waiting, SIGTERM);
    while (!kj_cli_stop_requested)
        sigsuspend(&waiting); /* returns once the handler ran on this thread */
}

void kj_cli_init(kj_cli *cli, const char *command, const char *usage) {
    memset(cli, 0, sizeof(*cli));
    cli->command = command;
    cli->usage = usage;
}

int kj_cli_usage_error(const kj_cli *cli, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", cli->command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", cli->usage);
    return KJ_EXIT_USAGE;
}

int kj_cli_common_option(kj_cli *cli, int opt, const char *arg) {
    switch (opt) {
    case 'c':
        cli->config_path = arg;
        return 1;
    case 'h':
        cli->help = true;
        return 1;
    case KJ_OPT_TOPIC:
        cli->topic = arg;
        return 1;
    case 'b':
    case 'G':
    case 'X':
        if (cli->override_count == KJ_CLI_MAX_OVERRIDES) {
            kj_cli_usage_error(cli, "too many -b/-G/-X options");
            return -1;
        }
        cli->overrides[cli->override_count].kind = (char)opt;
        cli->overrides[cli->override_count].value = arg;
        cli->override_count++;
        return 1;
    case '?':
        kj_cli_usage_error(cli, "unknown option or missing argument (see --help)");
        return -1;
    default:
        return 0;
    }
}

int kj_cli_load_config(kj_cli *cli) {
    char err[1024];
    if (kj_config_load(&cli->cfg, cli->config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: config error: %s\n", cli->command, err);
        kj_config_free(&cli->cfg); /* a failed load still owns what it parsed */
        return KJ_EXIT_USAGE;
    }
    cli->cfg_loaded = true;
    for (int i = 0; i < cli->override_count; i++) {
        int rc;
        const char *value = cli->overrides[i].value;
        switch (cli->overrides[i].kind) {
        case 'b':
            rc = kj_config_set(&cli->cfg, "kafka.bootstrap", value, err, sizeof(err));
            break;
        case 'G':
            rc = kj_config_set(&cli->cfg, "kafka.group", value, err, sizeof(err));
            break;
        default:
            rc = kj_config_add_rdkafka_prop(&cli->cfg, value, err, sizeof(err));
            break;
        }
        if (rc != 0) {
            fprintf(stderr, "%s: option -%c: %s\n", cli->command, cli->overrides[i].kind, err);
            kj_cli_free(cli);
            return KJ_EXIT_USAGE;
        }
    }
    if (!cli->topic) cli->topic = cli->cfg.main_topic;
    kj_log_level level;
    if (kj_log_level_parse(cli->cfg.log_level, &level) == 0) kj_log_set_level(level);
    return KJ_EXIT_OK;
}

void kj_cli_free(kj_cli *cli) {
    if (cli->cfg_loaded) kj_config_free(&cli->cfg);
    cli->cfg_loaded = false;
}

int kj_cli_parse_int(const char *text, long long min, long long max, long long *out) {
    if (!text || !*text) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}
