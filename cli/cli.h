/*
 * cli.h — what every `kjobs` subcommand shares: the kcat-style connection flags (-c, -b, -G,
 * -X, --topic), loading the configuration in precedence order (defaults < file < environment <
 * flags), exit codes, and the signal flag long-running commands watch.
 *
 * Each subcommand lives in its own cmd_*.c with one entry point `kj_cmd_<name>(argc, argv)`;
 * main.c is a flat dispatch table over them (kcat's shape).
 */
#ifndef KJOBS_CLI_H
#define KJOBS_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>

#include "common/clock.h" /* kj_now_ms for the commands */
#include "processor/config.h"

enum { KJ_EXIT_OK = 0, KJ_EXIT_RUNTIME = 1, KJ_EXIT_USAGE = 2 };

/** Long options shared by every command; append to a command's own option table. */
#define KJ_CLI_COMMON_SHORTOPTS "c:b:G:X:h"
enum { KJ_OPT_TOPIC = 1000, KJ_OPT_COMMON_LAST = 1001 };
#define KJ_CLI_COMMON_LONGOPTS                                                                     \
    {"config", required_argument, NULL, 'c'}, {"brokers", required_argument, NULL, 'b'},           \
        {"group", required_argument, NULL, 'G'}, {"topic", required_argument, NULL, KJ_OPT_TOPIC}, \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

#define KJ_CLI_MAX_OVERRIDES 64

typedef struct kj_cli {
    const char *command;     /* for messages: "kjobs enqueue" */
    const char *usage;       /* printed by --help and after usage errors */
    const char *config_path; /* -c */
    const char *topic;       /* --topic, resolved to cfg.main_topic when absent */
    struct {
        char kind; /* 'b', 'G', 'X' */
        const char *value;
    } overrides[KJ_CLI_MAX_OVERRIDES];
    int override_count;
    bool help;
    kj_config cfg;
    bool cfg_loaded;
} kj_cli;

void kj_cli_init(kj_cli *cli, const char *command, const char *usage);
/**
 * Handle a common option returned by getopt_long. Returns 1 if it was one of ours, 0 if the
 * command should handle it, -1 on a usage error (already reported).
 */
int kj_cli_common_option(kj_cli *cli, int opt, const char *arg);
/** Load config (file + env) and apply flags. Reports errors on stderr; returns an exit code. */
int kj_cli_load_config(kj_cli *cli);
/** Report a usage error ("kjobs X: msg" + usage) and return KJ_EXIT_USAGE. */
int kj_cli_usage_error(const kj_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kj_cli_free(kj_cli *cli);

/** Parse a decimal integer in [min,max]; 0 ok, -1 bad. */
int kj_cli_parse_int(const char *text, long long min, long long max, long long *out);

/** Set by SIGINT/SIGTERM once kj_cli_install_signals() ran. */
extern volatile sig_atomic_t kj_cli_stop_requested;
void kj_cli_install_signals(void);
/** For a command whose main thread waits in kj_cli_wait_for_stop_signal(): installs the handlers
 * and blocks SIGINT/SIGTERM in the calling thread. Call it before any thread is started: threads
 * inherit the mask, so a stop signal stays pending until the waiting thread takes it. Otherwise
 * the kernel may run the handler on any thread that leaves them unblocked (libmicrohttpd's,
 * kjobs' own) and the waiter sleeps on: `kjobs ui` then ignored SIGTERM. */
void kj_cli_install_stop_wait(void);
/** Block until SIGINT/SIGTERM arrives (race-free: sigsuspend with the signals blocked in
 * between); the signals stay blocked afterwards. */
void kj_cli_wait_for_stop_signal(void);

#endif /* KJOBS_CLI_H */
