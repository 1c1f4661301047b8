/*
 * main.c — the `kjobs` command: a flat dispatch over subcommands (kcat's shape). All logic
 * lives in the kjobs_core library; each subcommand is one cmd_*.c file.
 * Exit codes everywhere: 0 ok, 1 runtime error, 2 usage or config error.
 */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", kj_cmd_run, "run the worker (--embedded: with an in-process broker)"},
    {"enqueue", kj_cmd_enqueue, "produce jobs (flags or JSON lines on stdin)"},
    {"peek", kj_cmd_peek, "print jobs from a topic as JSON lines"},
    {"dlq", kj_cmd_dlq, "list, show, replay and discard dead-lettered jobs"},
    {"lag", kj_cmd_lag, "consumer-group lag of the main and ladder topics"},
    {"ui", kj_cmd_ui, "serve the operator console (workers, lag, retries, dead letters)"},
    {"pause", kj_cmd_pause, "pause a topic or TOPIC:PARTITION for the whole group"},
    {"resume", kj_cmd_resume, "resume what pause paused; --breaker: open circuit breakers"},
    {"pauses", kj_cmd_pauses, "list the pauses in force"},
    {"topics", kj_cmd_topics, "print or --create the topic layout"},
    {"broker", kj_cmd_broker, "run an embedded broker for development and tests"},
    {"cron", kj_cmd_cron, "cron next EXPR: when a schedule fires (--tz, --from, -n)"},
    {"schema", kj_cmd_schema, "print the job schema or its fingerprint"},
    {"version", kj_cmd_version, "kjobs version, git revision and librdkafka version (also -V)"},
};

static void print_help(FILE *out) {
    fprintf(out, "usage: kjobs <command> [-c FILE] [options]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-8s %s\n", "help", "this text; `kjobs <command> --help` for one command");
    fprintf(out, "\nConnection options (kcat conventions): -b BROKERS, -G GROUP, -X prop=value,\n"
                 "--topic T, -c FILE (default ./kjobs.cfg). Exit: 0 ok, 1 runtime error, 2 usage "
                 "or config error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0)
        return kj_cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(name, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kjobs: unknown command '%s'\n\n", name);
    print_help(stderr);
    return 2;
}
