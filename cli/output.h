/*
 * cli/output.h — how the `kjobs` commands print: aligned tables for people and JSON lines for
 * programs (kcat's format.c plays this part for kcat). One shape for every command: a header
 * row, columns padded to their widest cell and separated by a fixed gap, the last column not
 * padded; every cell made terminal-safe, since cells hold text producers and handlers wrote
 * (ids, types, error messages): C0 and C1 control characters and DEL become '?', so a row stays
 * one line and no escape sequence reaches the terminal.
 */
#ifndef KJOBS_CLI_OUTPUT_H
#define KJOBS_CLI_OUTPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

typedef struct kj_table kj_table;

/**
 * A table of @p columns columns (>= 1) headed by @p heads (borrowed: must outlive the table),
 * printed with @p gap (borrowed, e.g. " " or "  ") between columns. Aborts when out of memory,
 * as the commands do.
 */
kj_table *kj_table_new(size_t columns, const char *const *heads, const char *gap);

/** Adds a row: @p cells (columns of them, NULL prints as "") are copied, then made
 * terminal-safe. */
void kj_table_add(kj_table *t, const char *const *cells);

/** Number of rows added (the header not counted). */
size_t kj_table_rows(const kj_table *t);

/** Prints the header and every row, aligned, to @p out. */
void kj_table_print(const kj_table *t, FILE *out);

void kj_table_free(kj_table *t);

/**
 * In place: C0 controls and DEL -> '?', a C1 control (the two bytes C2 80..C2 9F of valid UTF-8)
 * -> "??", so the byte length is kept. @p s must be NUL-terminated.
 */
void kj_terminal_safe(char *s);

/** @p o as one compact JSON line (keys in insertion order) on @p out; nothing if it cannot be
 * serialised. */
void kj_print_json_line(const json_t *o, FILE *out);

#endif /* KJOBS_CLI_OUTPUT_H */
