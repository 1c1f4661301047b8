/*
 * version.h — which kjobs this is: the release version (CMake's project version), the git
 * revision the binary was built from (recorded at build time, "unknown" outside a git
 * checkout, "-dirty" with uncommitted changes) and the librdkafka it runs with (the shared
 * library's rd_kafka_version_str(), which may differ from the headers it was built against)
 * and the allocator it runs on (allocator.h).
 *
 * @locality any thread
 */
#ifndef KJOBS_VERSION_H
#define KJOBS_VERSION_H

#include <stddef.h>

/** The release version, e.g. "0.1.0". */
const char *kj_version(void);
/** The git revision at build time, e.g. "4db82b4c1a2b" or "4db82b4c1a2b-dirty", or "unknown". */
const char *kj_git_revision(void);
/** "kjobs 0.1.0 (git 4db82b4c1a2b) librdkafka 2.15.1 allocator jemalloc 5.3.0 (narenas 2)":
 *  one line for a bug report. */
void kj_version_line(char *buf, size_t size);

#endif /* KJOBS_VERSION_H */
