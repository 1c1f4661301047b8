/*
 * version.c — the build's identity for `kjobs version` (see version.h). The git revision comes
 * from a header generated at build time (processor/git_revision.cmake).
 */
#include "processor/version.h"

#include "processor/allocator.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>

#include "kjobs_git_revision.h"

const char *kj_version(void) {
    return KJOBS_VERSION_STRING;
}

const char *kj_git_revision(void) {
    return KJOBS_GIT_REVISION;
}

void kj_version_line(char *buf, size_t size) {
    char allocator[128];
    kj_allocator_describe(allocator, sizeof(allocator));
    snprintf(buf, size, "kjobs %s (git %s) librdkafka %s allocator %s", kj_version(),
             kj_git_revision(), rd_kafka_version_str(), allocator);
}
