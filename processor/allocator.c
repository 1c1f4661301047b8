/*
 * allocator.c — names the process's malloc (see allocator.h). jemalloc is asked through its
 * mallctl() interface ("version", "opt.narenas"), looked up with dlsym so the same code serves
 * a binary linked with jemalloc, one with it preloaded, and one on glibc.
 */
#include "processor/allocator.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef int (*mallctl_fn)(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

void kj_allocator_describe(char *buf, size_t size) {
    if (!buf || size == 0) return;
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    const char *version = NULL;
    unsigned narenas = 0;
    size_t len = sizeof(version);
    if (mallctl && mallctl("version", &version, &len, NULL, 0) == 0 && version) {
        int release = (int)strcspn(version, "-"); /* "5.3.0-0-g54eaed1d...": the release */
        len = sizeof(narenas);
        if (mallctl("opt.narenas", &narenas, &len, NULL, 0) == 0)
            snprintf(buf, size, "jemalloc %.*s (narenas %u)", release, version, narenas);
        else
            snprintf(buf, size, "jemalloc %.*s", release, version);
        return;
    }
    snprintf(buf, size, "glibc");
}
