/*
 * fuzz_decode.c — libFuzzer target for the job decoder (kj_job_decode), the one function that
 * reads bytes from the outside world. Any crash, sanitizer report, leak or hang is a bug:
 * kj_job_decode must return 0 or -1 (with a reason) for every input.
 * Also the Schema Registry paths: kj_job_decode_ex (0, -1 or KJ_DECODE_CONFLUENT, always with a
 * reason on failure), kj_job_decode_confluent with a fixed registry writer schema (an extra
 * field), and kj_writer_resolve on the input as schema JSON (what a registry answers).
 *
 * Build (clang):  see tests/fuzz/CMakeLists.txt (-DKJOBS_FUZZ=ON), or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *     tests/fuzz/fuzz_decode.c schemas/(all .c) build/schemas/kj_embedded_schemas.c -ljansson
 * Run:  ./fuzz_decode tests/fuzz/corpus/decode -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const registry_writer =
    "{\"type\":\"record\",\"name\":\"Job\",\"namespace\":\"kjobs\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},"
    "{\"name\":\"prio\",\"type\":[\"null\",\"int\"],\"default\":null},"
    "{\"name\":\"payload\",\"type\":\"bytes\"},{\"name\":\"created_at\",\"type\":\"long\"}]}";

static void touch(const kj_job_record *r) {
    size_t acc = strlen(r->id) + strlen(r->type) + r->payload_len;
    for (size_t i = 0; i < r->payload_len; i++)
        acc += r->payload[i];
    for (size_t i = 0; i < r->meta_count; i++)
        acc += strlen(r->meta[i].key) + strlen(r->meta[i].value);
    if (acc == (size_t)-1) abort();
}

static void fuzz_registry_paths(const uint8_t *data, size_t size) {
    static kj_writer *w;
    kj_job_record r;
    char err[256] = "";
    uint32_t id;
    int rc = kj_job_decode_ex(data, size, &r, NULL, &id, err, sizeof(err));
    if (rc == 0) {
        touch(&r);
        kj_job_record_free(&r);
    } else if ((rc != -1 && rc != KJ_DECODE_CONFLUENT) || err[0] == '\0') {
        abort();
    }
    if (!w && !(w = kj_writer_resolve(registry_writer, err, sizeof(err)))) abort();
    if (kj_job_decode_confluent(w, data, size, &r, err, sizeof(err)) == 0) {
        touch(&r);
        kj_job_record_free(&r);
    }
    char *json = malloc(size + 1);
    if (!json) return;
    memcpy(json, data, size);
    json[size] = '\0';
    kj_writer *any = kj_writer_resolve(json, err, sizeof(err));
    free(json);
    if (any) {
        static const uint8_t job[] = {0, 0, 0, 0, 1, 2, 'a', 2, 't', 0, 2};
        if (kj_job_decode_confluent(any, job, sizeof(job), &r, err, sizeof(err)) == 0)
            kj_job_record_free(&r);
        kj_writer_free(any);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kj_job_record r;
    char err[256];
    err[0] = '\0';
    fuzz_registry_paths(data, size);
    if (kj_job_decode(data, size, &r, NULL, err, sizeof(err)) == 0) {
        /* Touch everything the decoder handed out, so ASan checks it is in bounds. */
        size_t acc = strlen(r.id) + strlen(r.type) + r.payload_len;
        for (size_t i = 0; i < r.payload_len; i++)
            acc += r.payload[i];
        for (size_t i = 0; i < r.meta_count; i++)
            acc += strlen(r.meta[i].key) + strlen(r.meta[i].value);
        if (acc == (size_t)-1) abort();
        kj_job_record_free(&r);
    } else if (err[0] == '\0') {
        abort(); /* a rejection must say why */
    }
    return 0;
}
