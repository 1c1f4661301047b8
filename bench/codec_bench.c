/*
 * codec_bench.c — jobs/s of the job codec on one core, for a typical job: 36-char id, a
 * short type, a 64-byte payload and one meta entry (a W3C traceparent). Measures encode and
 * decode (including the decoder's single malloc/free per job) in both encodings.
 *
 * Usage: codec_bench [seconds-per-case, default 1]. Prints one line per case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schemas/codec.h"

static double kj_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile size_t kj_bench_sink; /* keeps the optimiser from dropping the work */

static void kj_bench_encode(const kj_job_record *job, kj_encoding enc, double seconds) {
    char err[256];
    size_t n = 0, bytes = 0;
    double start = kj_bench_now(), elapsed;
    do {
        for (int i = 0; i < 10000; i++, n++) {
            uint8_t *buf;
            size_t len;
            if (kj_job_encode(job, enc, &buf, &len, err, sizeof(err)) != 0) {
                fprintf(stderr, "encode: %s\n", err);
                exit(1);
            }
            bytes = len;
            kj_bench_sink += buf[len - 1];
            free(buf);
        }
        elapsed = kj_bench_now() - start;
    } while (elapsed < seconds);
    printf("encode %-13s %6zu bytes  %12.0f jobs/s  %7.1f ns/job\n", kj_encoding_name(enc), bytes,
           (double)n / elapsed, elapsed * 1e9 / (double)n);
}

static void kj_bench_decode(const kj_job_record *job, kj_encoding enc, double seconds) {
    char err[256];
    uint8_t *buf;
    size_t len, n = 0;
    if (kj_job_encode(job, enc, &buf, &len, err, sizeof(err)) != 0) {
        fprintf(stderr, "encode: %s\n", err);
        exit(1);
    }
    double start = kj_bench_now(), elapsed;
    do {
        for (int i = 0; i < 10000; i++, n++) {
            kj_job_record r;
            if (kj_job_decode(buf, len, &r, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "decode: %s\n", err);
                exit(1);
            }
            kj_bench_sink += r.payload_len + r.meta_count;
            kj_job_record_free(&r);
        }
        elapsed = kj_bench_now() - start;
    } while (elapsed < seconds);
    printf("decode %-13s %6zu bytes  %12.0f jobs/s  %7.1f ns/job\n", kj_encoding_name(enc), len,
           (double)n / elapsed, elapsed * 1e9 / (double)n);
    free(buf);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0) seconds = 1.0;
    char err[256];
    if (kj_codec_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint8_t payload[64];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    kj_meta_entry meta[] = {
        {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
    kj_job_record job = {.id = "0b6f1c6e-7d1a-4a4e-9f5e-2c3d4e5f6a7b",
                         .type = "kjobs.noop",
                         .payload = payload,
                         .payload_len = sizeof(payload),
                         .created_at = 1712345678901,
                         .meta = meta,
                         .meta_count = 1};
    printf("codec_bench: one core, typical job (64-byte payload, 1 meta entry), %.1f s per case\n",
           seconds);
    for (int enc = 0; enc < 2; enc++) {
        kj_bench_encode(&job, (kj_encoding)enc, seconds);
        kj_bench_decode(&job, (kj_encoding)enc, seconds);
    }
    return 0;
}
