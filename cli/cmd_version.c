/*
 * cmd_version.c — `kjobs version` (also `kjobs --version` and `-V`): print one line naming the
 * kjobs version, the git revision it was built from and the librdkafka it runs with. Exit 0.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/version.h"

static const char version_usage[] =
    "usage: kjobs version   (also: kjobs --version, kjobs -V)\n"
    "\n"
    "Prints one line: the kjobs version, the git revision it was built from (\"unknown\" when\n"
    "built outside a git checkout, \"-dirty\" with uncommitted changes) and the librdkafka\n"
    "version it is running with — the first line of a bug report.\n";

int kj_cmd_version(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(version_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "kjobs version: unexpected argument '%s'\n\n%s", argv[1], version_usage);
        return KJ_EXIT_USAGE;
    }
    char line[256];
    kj_version_line(line, sizeof(line));
    puts(line);
    return KJ_EXIT_OK;
}
