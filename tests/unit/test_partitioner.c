/*
 * tests/unit/test_partitioner.c — the key partitioner kjobs' producers use
 * (librdkafka's rd_kafka_msg_partitioner_murmur2_random, installed by
 * kj_kafka_producer_new in processor/kafka.c) against vectors published by Apache Kafka
 * and librdkafka: a keyed record must land where Java's DefaultPartitioner puts it,
 * toPositive(murmur2(key)) % partitions, or "same key -> same partition -> in order"
 * silently breaks for mixed producers.
 *
 * The hashes are the Java client's own expected values, not numbers printed from the code
 * under test. Kafka's partitioner tests only assert stability
 * (DefaultPartitionerTest.testKeyPartitionIsStable), so expected partitions are derived here
 * from the cited Java ints with Kafka's documented formula toPositive(h) % n, where
 * toPositive clears the sign bit (it is NOT abs()). With n = INT32_MAX the partition is
 * toPositive(h) itself, so every bit the partition depends on is checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>

struct vector {
    const char *key;
    size_t len;
    int32_t java_hash;
};

/* apache/kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
 * testMurmur2 (read at commit f55581dc73953c3509a4702433aeeeddc2970779). */
static const struct vector kafka_utils_test[] = {
    {"21", 2, -973932308},
    {"foobar", 6, -790332482},
    {"a-little-bit-long-string", 24, -985981536},
    {"a-little-bit-longer-string", 26, -1486304829},
    {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48, -58897971},
    {"abc", 3, 479470107}, /* new byte[] {'a', 'b', 'c'} */
};

/* confluentinc/librdkafka src/rdmurmur2.c, unittest_murmur2's java_murmur2_results[]
 * (read at commit 6cbbd2f7aee9cad3be4aea2c169f12b5b3d787b0). The "+1/+2/+3" rows are
 * suffixes of the first string at an unaligned address. */
static const struct vector librdkafka_unittest[] = {
    {"kafka", 5, (int32_t)0xd067cf64},
    {"giberish123456789", 17, (int32_t)0x8f552b0c},
    {"1234", 4, (int32_t)0x9fc97b14},
    {"234", 3, (int32_t)0xe7c009ca},
    {"34", 2, (int32_t)0x873930da},
    {"4", 1, (int32_t)0x5a4b5ca1},
    {"PreAmbleWillBeRemoved,ThePrePartThatIs", 38, (int32_t)0x78424f1c},
    {"reAmbleWillBeRemoved,ThePrePartThatIs", 37, (int32_t)0x4a62b377},
    {"eAmbleWillBeRemoved,ThePrePartThatIs", 36, (int32_t)0xe0e4e09e},
    {"AmbleWillBeRemoved,ThePrePartThatIs", 35, (int32_t)0x62b8b43f},
    {"", 0, (int32_t)0x106e08d9},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Kafka's Utils.toPositive, written independently of the code under test. */
static uint32_t to_positive(int32_t h) {
    return (uint32_t)h & 0x7fffffffu;
}

/* The partitioner kjobs installs, for a non-NULL key (the topic handle and opaques are only
 * used for NULL keys). */
static int32_t partition(const void *key, size_t len, int32_t count) {
    return rd_kafka_msg_partitioner_murmur2_random(NULL, key, len, count, NULL, NULL);
}

static const int32_t counts[] = {1, 2, 3, 5, 6, 7, 10, 12, 16, 50, 64, 100, 997, 1000, INT32_MAX};

static void check_vectors(const struct vector *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(strlen(v[i].key), v[i].len);
        /* a non-NULL key even when empty: "" is hashed, not spread at random */
        for (size_t c = 0; c < NELEM(counts); c++) {
            int32_t want = (int32_t)(to_positive(v[i].java_hash) % (uint32_t)counts[c]);
            int32_t got = partition(v[i].key, v[i].len, counts[c]);
            if (got != want)
                print_error("partition(\"%s\", %d) = %d, Java says %d\n", v[i].key, counts[c], got,
                            want);
            assert_int_equal(got, want);
        }
    }
}

static void test_kafka_utils_vectors(void **state) {
    (void)state;
    check_vectors(kafka_utils_test, NELEM(kafka_utils_test));
}

static void test_librdkafka_vectors(void **state) {
    (void)state;
    check_vectors(librdkafka_unittest, NELEM(librdkafka_unittest));
}

/* Worked anchors, by hand from UtilsTest's ints:
 * "foobar": -790332482 & 0x7fffffff = 1357151166; % 10 = 6.
 * "21":     -973932308 & 0x7fffffff = 1173551340; % 50 = 40.
 * "abc":     479470107 (already positive);        % 6  = 3.
 * An abs()-based partitioner would give 2 for "foobar" % 10 (790332482 % 10). */
static void test_worked_anchors(void **state) {
    (void)state;
    assert_int_equal(partition("foobar", 6, 10), 6);
    assert_int_equal(partition("21", 2, 50), 40);
    assert_int_equal(partition("abc", 3, 6), 3);
}

/* The partition must not depend on the key's address. */
static void test_alignment_independent(void **state) {
    (void)state;
    char buf[64 + 8];
    for (size_t i = 0; i < NELEM(kafka_utils_test); i++) {
        for (size_t shift = 0; shift < 8; shift++) {
            memcpy(buf + shift, kafka_utils_test[i].key, kafka_utils_test[i].len);
            assert_int_equal(partition(buf + shift, kafka_utils_test[i].len, INT32_MAX),
                             (int32_t)to_positive(kafka_utils_test[i].java_hash));
        }
    }
}

/* For keyed records murmur2_random is plain murmur2 (the consistent partitioner), on text and
 * on binary keys with high bytes (sign extension in Java bytes). */
static void test_random_variant_is_consistent_for_keys(void **state) {
    (void)state;
    char key[64];
    for (int i = 0; i < 5000; i++) {
        int len = snprintf(key, sizeof key, i % 3 ? "order-%d" : "user:%08x:job", i);
        if (i % 7 == 0)
            for (int b = 0; b < len; b++)
                key[b] = (char)(key[b] ^ 0xA5);
        for (size_t c = 0; c < NELEM(counts); c++) {
            int32_t p = partition(key, (size_t)len, counts[c]);
            assert_true(p >= 0 && p < counts[c]);
            assert_int_equal(
                p, rd_kafka_msg_partitioner_murmur2(NULL, key, (size_t)len, counts[c], NULL, NULL));
            assert_int_equal(p, partition(key, (size_t)len, counts[c]));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_utils_vectors),
        cmocka_unit_test(test_librdkafka_vectors),
        cmocka_unit_test(test_worked_anchors),
        cmocka_unit_test(test_alignment_independent),
        cmocka_unit_test(test_random_variant_is_consistent_for_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
