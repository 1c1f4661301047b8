/*
 * fuzz_config.c — libFuzzer target for the configuration loader (processor/config.c).
 *
 * Feeds arbitrary bytes to kj_config_load_string() as a kjobs.cfg, with a small fixed environment
 * so the KJOBS_* override path and the cross-setting checks run too. What it checks beyond "no
 * crash, no leak, no UB" (run it under ASan/UBSan):
 *   - a failed load always leaves a non-empty, NUL-terminated, single-line error;
 *   - a successful load satisfies the invariants the runtime relies on (resolved topic names,
 *     bounds, ladder size), and its effective-config dump never prints a property value.
 *
 * Not wired into CMake (the libFuzzer runtime needs clang). Build and run:
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -I. \
 *       tests/fuzz/fuzz_config.c processor/config.c -lconfig -ljansson -lrdkafka -lm \
 *       -o fuzz_config
 *   ./fuzz_config tests/fuzz/corpus/config
 */
#include "processor/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5's scanner leaks when a syntax error interrupts a token (strbuf_append, and a
 * string calloc'd in libconfig_yylex): libconfig's bugs, fixed in later releases, a few bytes
 * once per failed load. We always config_destroy(), so anything allocated inside libconfig.so
 * that leaks is libconfig's; suppressed so the fuzzer looks for our leaks. */
const char *__lsan_default_suppressions(void) {
    return "leak:libconfig.so\n";
}

static char *const fuzz_env[] = {
    "KJOBS_WORKERS=3",
    "KJOBS_RDKAFKA_CLIENT_RACK=rack-secret-value",
    "UNRELATED=1",
    NULL,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 64 * 1024) return 0; /* config files are small; keep iterations fast */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0'; /* an embedded NUL just ends the text early, as it would for a file */

    kj_config cfg;
    char err[512];
    err[0] = '\0';
    int rc = kj_config_load_string(&cfg, text, "fuzz.cfg", fuzz_env, err, sizeof(err));
    if (rc != 0) {
        if (rc != -1 || err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL) abort();
    } else {
        if (!cfg.main_topic || !cfg.retry_prefix || !cfg.dlq_topic) abort();
        if (!cfg.retry_prefix[0] || !cfg.dlq_topic[0]) abort();
        if (cfg.workers != 3) abort(); /* the environment wins over the file */
        if (cfg.batch_max_jobs < 1 || cfg.batch_max_pending < cfg.batch_max_jobs) abort();
        if (cfg.retry_delay_count > KJ_CONFIG_MAX_RETRY_DELAYS) abort();
        for (size_t i = 1; i <= cfg.retry_delay_count; i++) {
            char *t = kj_config_retry_topic(&cfg, (int)i);
            if (!t || strcmp(t, cfg.main_topic) == 0) abort();
            free(t);
        }
        if (cfg.rdkafka_prop_count == 0) abort(); /* the KJOBS_RDKAFKA_ one is always last */
        if (strcmp(cfg.rdkafka_props[cfg.rdkafka_prop_count - 1],
                   "client.rack=rack-secret-value") != 0)
            abort();
        char *dump = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&dump, &len);
        if (mem) {
            kj_config_write_effective(&cfg, mem);
            fclose(mem);
            /* Only the properties line is checked: the fuzzer may well put the same text in
             * a setting that is not secret. */
            const char *line = strstr(dump, "\nkafka.properties = ");
            if (!line) abort();
            const char *eol = strchr(line + 1, '\n');
            const char *hit = strstr(line, "rack-secret-value");
            if (hit && (!eol || hit < eol)) abort();
            free(dump);
        }
    }
    kj_config_free(&cfg);
    free(text);
    return 0;
}
