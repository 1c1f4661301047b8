/*
 * cmd_pending.c — subcommands whose implementation has not landed yet. They say so and exit 1
 * rather than pretending to work. Each moves to its own cmd_*.c as it is built.
 */
#include <stdio.h>

#include "processor/commands.h"

static int not_yet(const char *name) {
    fprintf(stderr, "kjobs %s: not implemented in this build yet\n", name);
    return 1;
}

int kj_cmd_dlq(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return not_yet("dlq");
}
int kj_cmd_lag(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return not_yet("lag");
}
