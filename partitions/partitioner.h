/*
 * partitions/partitioner.h — where a keyed job lands.
 *
 * kjobs' own producers (enqueue, retry ladder, DLQ replay) must put a key on the
 * same partition as the Java client, Kafka Streams, librdkafka's
 * "murmur2_random" partitioner and every other client that follows Kafka's
 * DefaultPartitioner, or "same key -> same partition -> in order" silently
 * breaks for mixed producers. So this is Kafka's Utils.murmur2 bit for bit
 * (seed 0x9747b28c, little-endian 4-byte blocks) and Kafka's
 * BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % partitions,
 * where toPositive clears the sign bit (it is NOT abs()).
 *
 * Pure functions, no state, no locks: callable from any thread.
 */
#ifndef KJ_PARTITIONS_PARTITIONER_H
#define KJ_PARTITIONS_PARTITIONER_H

#include <stddef.h>
#include <stdint.h>

/**
 * Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) of @p len bytes.
 * Returns the 32-bit pattern Java returns as a signed int; cast to int32_t to
 * compare with Java values. @p key may be NULL only when @p len is 0.
 *
 * @locality any thread
 */
uint32_t kj_murmur2(const void *key, size_t len);

/**
 * The partition Kafka's default partitioner picks for a non-null key:
 * (kj_murmur2(key) & 0x7fffffff) % partition_count.
 * Returns -1 when @p partition_count <= 0.
 *
 * @locality any thread
 */
int32_t kj_partition_for_key(const void *key, size_t len, int32_t partition_count);

#endif
