/*
 * embedded.h — the .avsc files of schemas/ as compiled into kjobs_core.
 *
 * The table is generated at build time by schemas/embed_schemas.cmake (see
 * schemas/CMakeLists.txt); the .avsc files stay the only source of truth. Entries are sorted
 * by file name; `json` is NUL-terminated and `len` excludes the NUL. Read-only, so any thread.
 */
#ifndef KJOBS_SCHEMAS_EMBEDDED_H
#define KJOBS_SCHEMAS_EMBEDDED_H

#include <stddef.h>

typedef struct kj_embedded_schema {
    const char *file; /* e.g. "job.avsc", "job.v1.avsc" */
    const char *json; /* file contents, NUL-terminated */
    size_t len;       /* bytes, without the NUL */
} kj_embedded_schema;

extern const kj_embedded_schema kj_embedded_schemas[];
extern const size_t kj_embedded_schema_count;

#endif /* KJOBS_SCHEMAS_EMBEDDED_H */
