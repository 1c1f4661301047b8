/*
 * assets.h — the operator console's static files (console/index.html, console.js,
 * console.css), embedded in the binary at build time by console/embed_assets.cmake so that
 * `kjobs ui` needs no files, no CDN and no internet at run time. Served by processor/console.c.
 */
#ifndef KJOBS_CONSOLE_ASSETS_H
#define KJOBS_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct kj_console_asset {
    const char *path;         /* "/index.html" */
    const char *content_type; /* by extension */
    const char *data;         /* NUL-terminated (the NUL is not counted) */
    size_t len;
} kj_console_asset;

extern const kj_console_asset kj_console_assets[];
extern const size_t kj_console_asset_count;

#endif /* KJOBS_CONSOLE_ASSETS_H */
