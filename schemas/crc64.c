/*
 * crc64.c — CRC-64-AVRO, the 64-bit Rabin fingerprint the Avro specification defines for
 * schema fingerprints ("Schema Fingerprints"): EMPTY = 0xc15d213aa4d7a795 is both the initial
 * value and the (reflected) polynomial, bytes are processed least-significant-bit first.
 * avro-c 1.11.1 has no fingerprint function, hence this file.
 *
 * The 256-entry table is built once (pthread_once) and read-only afterwards.
 *
 * @locality any thread
 */
#include <pthread.h>

#include "schemas/codec.h"

#define KJ_CRC64_AVRO_EMPTY UINT64_C(0xc15d213aa4d7a795)

static uint64_t kj_crc64_table[256];
static pthread_once_t kj_crc64_once = PTHREAD_ONCE_INIT;

static void kj_crc64_table_init(void) {
    for (unsigned i = 0; i < 256; i++) {
        uint64_t fp = i;
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (KJ_CRC64_AVRO_EMPTY & (0 - (fp & 1)));
        kj_crc64_table[i] = fp;
    }
}

uint64_t kj_crc64_avro(const void *data, size_t len) {
    pthread_once(&kj_crc64_once, kj_crc64_table_init);
    const uint8_t *p = data;
    uint64_t fp = KJ_CRC64_AVRO_EMPTY;
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ kj_crc64_table[(fp ^ p[i]) & 0xff];
    return fp;
}
