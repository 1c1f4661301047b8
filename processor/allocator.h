/*
 * allocator.h — which malloc this process runs on, for `kjobs version` and the worker's start
 * log: "jemalloc 5.3.0 (narenas 2)" when jemalloc is the process's allocator
 * (linked, the default build, or preloaded), else "glibc". Found at run time (dlsym of
 * jemalloc's mallctl), not from how kjobs was built, so it is what actually runs.
 *
 * @locality any thread
 */
#ifndef KJOBS_ALLOCATOR_H
#define KJOBS_ALLOCATOR_H

#include <stddef.h>

/** Writes the allocator's name (and for jemalloc its version and arena count) to buf, always
 *  NUL-terminated (truncated to size). */
void kj_allocator_describe(char *buf, size_t size);

#endif /* KJOBS_ALLOCATOR_H */
