/*
 * cmd_schema.c — `kjobs schema [--fingerprint]`: print the job schema in Parsing Canonical
 * Form, or its CRC-64-AVRO fingerprint (the 8 bytes a single-object encoded job carries after
 * C3 01, little-endian). Needs no broker and no config.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "schemas/codec.h"

static const char schema_usage[] =
    "usage: kjobs schema [--fingerprint] [--json]\n"
    "\n"
    "Prints the job schema (schemas/job.avsc) in Avro Parsing Canonical Form.\n"
    "  --fingerprint   print its CRC-64-AVRO fingerprint instead, as 16 hex digits of the\n"
    "                  64-bit value, then the 8 bytes as they appear on the wire (little-endian)\n"
    "  --json          print the schema as written in schemas/job.avsc\n";

int kj_cmd_schema(int argc, char **argv) {
    int fingerprint = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fingerprint") == 0)
            fingerprint = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(schema_usage, stdout);
            return KJ_EXIT_OK;
        } else {
            fprintf(stderr, "kjobs schema: unexpected argument '%s'\n\n%s", argv[i], schema_usage);
            return KJ_EXIT_USAGE;
        }
    }
    char err[256];
    if (kj_codec_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "kjobs schema: %s\n", err);
        return KJ_EXIT_RUNTIME;
    }
    if (fingerprint) {
        uint64_t fp = kj_schema_fingerprint();
        printf("%016" PRIx64 " ", fp);
        for (int i = 0; i < 8; i++)
            printf("%02x", (unsigned)((fp >> (8 * i)) & 0xff));
        printf("\n");
    } else if (json) {
        fputs(kj_schema_json(), stdout);
    } else {
        printf("%s\n", kj_schema_canonical());
    }
    return KJ_EXIT_OK;
}
