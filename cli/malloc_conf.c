/*
 * malloc_conf.c — jemalloc's tuning for the kjobs executable, linked only when the build links
 * jemalloc (KJOBS_JEMALLOC, the default outside sanitizer and fuzz builds; CMakeLists.txt).
 *
 * Why jemalloc: a worker's records are allocated by librdkafka's fetch thread and freed by the
 * engine threads and the router's delivery reports. glibc's per-thread arenas turn that into
 * lock contention on one arena and fragmentation that is never given back: draining 2 million
 * jobs over 128 partitions of real Kafka, the live heap peaked at ~26 MiB (heaptrack) while RSS
 * reached 86-95 MiB. Why these options (bench/RESULTS.md, "The allocator"): two arenas keep
 * the fetch thread's frees from spreading records over eight arenas (jemalloc's default on 2
 * CPUs); tcache_max 4096 keeps the small objects (records, ops, headers) in the thread caches;
 * dirty pages decay over 250 ms and muzzy ones at once: a drain frees fetch responses at tens
 * of MB/s, and what jemalloc keeps dirty stays resident (that drain peaked at a median of
 * 70 MiB over 6 runs with a 1 s decay, 64 MiB over 5 runs with 250 ms, at the same CPU per
 * job); 50 ms and 0 ms cost 1.5-3x the CPU per job (madvise on nearly every free).
 *
 * jemalloc reads this symbol once, before its first allocation; MALLOC_CONF in the environment
 * overrides it option by option (jemalloc's documented order). It must be exported from the
 * executable (the build hides everything else) for libjemalloc.so to see it; the exported-symbol
 * lint allows exactly this name.
 */
__attribute__((visibility("default"))) const char *malloc_conf =
    "narenas:2,tcache_max:4096,dirty_decay_ms:250,muzzy_decay_ms:0";
