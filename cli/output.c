/*
 * cli/output.c — aligned, terminal-safe tables and JSON lines for the commands (output.h).
 * A table keeps its rows until printed: column widths are known only once every row is in.
 */
#include "cli/output.h"

#include <stdlib.h>
#include <string.h>

struct kj_table {
    size_t columns;
    const char *const *heads;
    const char *gap;
    char **cells; /* rows * columns, owned */
    size_t rows, cap;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

kj_table *kj_table_new(size_t columns, const char *const *heads, const char *gap) {
    kj_table *t = xrealloc(NULL, sizeof(*t));
    *t = (kj_table){.columns = columns ? columns : 1, .heads = heads, .gap = gap ? gap : " "};
    return t;
}

void kj_terminal_safe(char *s) {
    for (unsigned char *p = (unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            p[0] = p[1] = '?';
    }
}

void kj_table_add(kj_table *t, const char *const *cells) {
    if (t->rows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = xrealloc(t->cells, t->cap * t->columns * sizeof(*t->cells));
    }
    char **row = &t->cells[t->rows++ * t->columns];
    for (size_t c = 0; c < t->columns; c++) {
        row[c] = strdup(cells[c] ? cells[c] : "");
        if (!row[c]) abort();
        kj_terminal_safe(row[c]);
    }
}

size_t kj_table_rows(const kj_table *t) {
    return t->rows;
}

void kj_table_print(const kj_table *t, FILE *out) {
    size_t *w = xrealloc(NULL, t->columns * sizeof(*w));
    for (size_t c = 0; c < t->columns; c++)
        w[c] = strlen(t->heads[c]);
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c + 1 < t->columns; c++) {
            size_t len = strlen(t->cells[r * t->columns + c]);
            if (len > w[c]) w[c] = len;
        }
    for (size_t r = 0; r <= t->rows; r++) {
        for (size_t c = 0; c < t->columns; c++) {
            const char *cell = r == 0 ? t->heads[c] : t->cells[(r - 1) * t->columns + c];
            if (c + 1 < t->columns)
                fprintf(out, "%-*s%s", (int)w[c], cell, t->gap);
            else
                fprintf(out, "%s\n", cell);
        }
    }
    free(w);
}

void kj_table_free(kj_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->rows * t->columns; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

void kj_print_json_line(const json_t *o, FILE *out) {
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) return;
    fputs(text, out);
    fputc('\n', out);
    free(text);
}
