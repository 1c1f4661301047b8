/*
 * fuzz_decode.c — libFuzzer target for the job decoder (kj_job_decode), the one function that
 * reads bytes from the outside world. Any crash, sanitizer report, leak or hang is a bug:
 * kj_job_decode must return 0 or -1 (with a reason) for every input.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kj_job_record r;
    char err[256];
    err[0] = '\0';
    if (kj_job_decode(data, size, &r, NULL, err, sizeof(err)) == 0) {
        /* Touch everything the decoder handed out, so ASan checks it is in bounds. */
        size_t acc = strlen(r.id) + strlen(r.type) + r.payload_len;
        for (size_t i = 0; i < r.payload_len; i++)
            acc += r.payload[i];
        for (size_t i = 0; i < r.meta_count; i++)
            acc += strlen(r.meta[i].key) + strlen(r.meta[i].value);
        if (acc == (size_t)-1)
            abort();
        kj_job_record_free(&r);
    } else if (err[0] == '\0') {
        abort(); /* a rejection must say why */
    }
    return 0;
}
