/*
 * partitions/partitioner.c — Kafka-compatible murmur2 and key -> partition.
 *
 * Written from the algorithm's definition (MurmurHash2, 32-bit, as specialised
 * by Kafka's Utils.murmur2): h = seed ^ len; each little-endian 4-byte block k
 * is mixed (k *= m; k ^= k >> r; k *= m) into h (h *= m; h ^= k); the 1-3 tail
 * bytes are xored in at bit offsets 0/8/16 followed by h *= m; then the final
 * avalanche h ^= h >> 13; h *= m; h ^= h >> 15. Java does this in signed int
 * arithmetic with >>> shifts, which is exactly unsigned 32-bit arithmetic here.
 * Blocks are assembled byte by byte so alignment and host endianness don't matter.
 */
#include "partitions/partitioner.h"

#define KJ_MURMUR2_SEED UINT32_C(0x9747b28c)
#define KJ_MURMUR2_M    UINT32_C(0x5bd1e995)
#define KJ_MURMUR2_R    24

uint32_t kj_murmur2(const void *key, size_t len) {
    const unsigned char *p = key;
    /* Java's length is an int; keys never approach 2 GiB, truncation matches Java for all
     * lengths Java can represent. */
    uint32_t h = KJ_MURMUR2_SEED ^ (uint32_t)len;
    size_t blocks = len / 4;

    for (size_t i = 0; i < blocks; i++, p += 4) {
        uint32_t k =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        k *= KJ_MURMUR2_M;
        k ^= k >> KJ_MURMUR2_R;
        k *= KJ_MURMUR2_M;
        h *= KJ_MURMUR2_M;
        h ^= k;
    }

    switch (len & 3) {
    case 3:
        h ^= (uint32_t)p[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)p[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)p[0];
        h *= KJ_MURMUR2_M;
        break;
    default:
        break;
    }

    h ^= h >> 13;
    h *= KJ_MURMUR2_M;
    h ^= h >> 15;
    return h;
}

int32_t kj_partition_for_key(const void *key, size_t len, int32_t partition_count) {
    if (partition_count <= 0) return -1;
    return (int32_t)((kj_murmur2(key, len) & UINT32_C(0x7fffffff)) % (uint32_t)partition_count);
}
