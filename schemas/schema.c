/*
 * schema.c — our model of an Avro schema (kj_schema_tree), built from schema JSON with
 * jansson, plus the two things we derive from it generically:
 *  - the Parsing Canonical Form (Avro specification, "Parsing Canonical Form for Schemas"):
 *    [PRIMITIVES] primitives as bare names, [FULLNAMES] named types by full name,
 *    [STRIP] only type/name/fields/symbols/items/values/size kept, [ORDER] in that order,
 *    [STRINGS]/[INTEGERS]/[WHITESPACE] plain literals, no blanks. A named type printed once is
 *    referred to by name afterwards, which also handles recursive types;
 *  - Avro binary for a JSON default value (used for reader defaults and encoder filler).
 *
 * Why not avro-c: it has neither canonical forms nor fingerprints, keeps no defaults we can
 * apply (its refcounts are atomic: that is not the reason). The model is small, immutable once
 * parsed, and only ever built from schema text (never from message bytes). Names, field names
 * and enum symbols are checked against the specification's name rule, so the canonical form
 * never needs JSON escaping.
 *
 * @locality any thread (a tree is built by one thread, then read-only)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/codec_internal.h"

#define KJ_SCHEMA_MAX_DEPTH 128

static const char *const kj_type_names[] = {
    [KJ_AVRO_NULL] = "null",   [KJ_AVRO_BOOLEAN] = "boolean", [KJ_AVRO_INT] = "int",
    [KJ_AVRO_LONG] = "long",   [KJ_AVRO_FLOAT] = "float",     [KJ_AVRO_DOUBLE] = "double",
    [KJ_AVRO_BYTES] = "bytes", [KJ_AVRO_STRING] = "string",   [KJ_AVRO_RECORD] = "record",
    [KJ_AVRO_ENUM] = "enum",   [KJ_AVRO_ARRAY] = "array",     [KJ_AVRO_MAP] = "map",
    [KJ_AVRO_UNION] = "union", [KJ_AVRO_FIXED] = "fixed",
};

const char *kj_avro_type_name(kj_avro_type t) {
    return (unsigned)t < sizeof(kj_type_names) / sizeof(kj_type_names[0]) ? kj_type_names[t] : "?";
}

static int kj_primitive_type(const char *name, kj_avro_type *out) {
    for (kj_avro_type t = KJ_AVRO_NULL; t <= KJ_AVRO_STRING; t++) {
        if (strcmp(name, kj_type_names[t]) == 0) {
            *out = t;
            return 1;
        }
    }
    return 0;
}

/* [A-Za-z_][A-Za-z0-9_]* */
static int kj_valid_name(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && (i == 0 || c < '0' || c > '9')) return 0;
    }
    return 1;
}

/* Dot-separated names; the empty string (the null namespace) is allowed when allow_empty. */
static int kj_valid_fullname(const char *s, int allow_empty) {
    if (!*s) return allow_empty;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (!kj_valid_name(s, n)) return 0;
        if (!dot) return 1;
        s = dot + 1;
    }
}

/* --- parsing ---------------------------------------------------------------------------- */

typedef struct kj_parse {
    kj_schema_tree *tree;
    char *err;
    size_t errsize;
} kj_parse;

static kj_schema *kj_node_new(kj_parse *p, kj_avro_type t) {
    kj_schema *s = calloc(1, sizeof(*s));
    if (!s) {
        kj_seterr(p->err, p->errsize, "out of memory");
        return NULL;
    }
    s->type = t;
    s->zero_size = t == KJ_AVRO_NULL;
    s->next_node = p->tree->nodes;
    p->tree->nodes = s;
    return s;
}

static kj_schema *kj_lookup_named(kj_parse *p, const char *fullname) {
    for (kj_schema *s = p->tree->nodes; s; s = s->next_node)
        if (s->fullname && strcmp(s->fullname, fullname) == 0) return s;
    return NULL;
}

/* "name" in namespace "ns" → malloc'd full name ("ns.name", or "name" for the null namespace). */
static char *kj_qualify(const char *name, const char *ns) {
    size_t nl = strlen(name), sl = ns ? strlen(ns) : 0;
    char *out = malloc(nl + sl + 2);
    if (!out) return NULL;
    if (strchr(name, '.') || sl == 0) {
        memcpy(out, name, nl + 1);
    } else {
        memcpy(out, ns, sl);
        out[sl] = '.';
        memcpy(out + sl + 1, name, nl + 1);
    }
    return out;
}

static kj_schema *kj_parse_node(kj_parse *p, json_t *j, const char *ns, int depth);

static kj_schema *kj_resolve_ref(kj_parse *p, const char *name, const char *ns) {
    char *full = kj_qualify(name, ns);
    if (!full) {
        kj_seterr(p->err, p->errsize, "out of memory");
        return NULL;
    }
    kj_schema *s = kj_lookup_named(p, full);
    if (!s) s = kj_lookup_named(p, name); /* a name from the null namespace */
    if (!s) kj_seterr(p->err, p->errsize, "unknown type \"%s\"", full);
    free(full);
    return s;
}

/* Defines a named type: computes and registers its full name. */
static kj_schema *kj_named_new(kj_parse *p, json_t *j, kj_avro_type t, const char *ns) {
    const char *name = json_string_value(json_object_get(j, "name"));
    json_t *nsj = json_object_get(j, "namespace");
    if (!name) {
        kj_seterr(p->err, p->errsize, "a %s needs a \"name\"", kj_avro_type_name(t));
        return NULL;
    }
    if (nsj && !json_is_null(nsj)) {
        if (!json_is_string(nsj) || !kj_valid_fullname(json_string_value(nsj), 1)) {
            kj_seterr(p->err, p->errsize, "%s \"%s\": invalid namespace", kj_avro_type_name(t),
                      name);
            return NULL;
        }
        ns = json_string_value(nsj);
    }
    if (!kj_valid_fullname(name, 0)) {
        kj_seterr(p->err, p->errsize, "invalid %s name \"%s\"", kj_avro_type_name(t), name);
        return NULL;
    }
    kj_schema *s = kj_node_new(p, t);
    if (!s) return NULL;
    s->fullname = kj_qualify(name, ns);
    if (!s->fullname) {
        kj_seterr(p->err, p->errsize, "out of memory");
        return NULL;
    }
    for (kj_schema *o = s->next_node; o; o = o->next_node) {
        if (o->fullname && strcmp(o->fullname, s->fullname) == 0) {
            kj_seterr(p->err, p->errsize, "type \"%s\" is defined twice", s->fullname);
            return NULL;
        }
    }
    return s;
}

/* The namespace of what a named type encloses: its full name without the last component. */
static int kj_ns_of(const char *fullname, char **out) {
    const char *dot = strrchr(fullname, '.');
    size_t n = dot ? (size_t)(dot - fullname) : 0;
    *out = malloc(n + 1);
    if (!*out) return -1;
    memcpy(*out, fullname, n);
    (*out)[n] = '\0';
    return 0;
}

static kj_schema *kj_parse_record(kj_parse *p, json_t *j, const char *ns, int depth) {
    kj_schema *s = kj_named_new(p, j, KJ_AVRO_RECORD, ns);
    if (!s) return NULL;
    json_t *fields = json_object_get(j, "fields");
    if (!json_is_array(fields)) {
        kj_seterr(p->err, p->errsize, "record \"%s\" needs a \"fields\" array", s->fullname);
        return NULL;
    }
    char *child_ns;
    if (kj_ns_of(s->fullname, &child_ns) != 0) {
        kj_seterr(p->err, p->errsize, "out of memory");
        return NULL;
    }
    size_t n = json_array_size(fields);
    s->fields = calloc(n ? n : 1, sizeof(*s->fields));
    if (!s->fields) {
        free(child_ns);
        kj_seterr(p->err, p->errsize, "out of memory");
        return NULL;
    }
    int zero = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(fields, i);
        const char *fname = json_string_value(json_object_get(f, "name"));
        if (!fname || !kj_valid_name(fname, strlen(fname))) {
            kj_seterr(p->err, p->errsize, "record \"%s\": field %zu has no valid \"name\"",
                      s->fullname, i);
            goto fail;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(s->fields[k].name, fname) == 0) {
                kj_seterr(p->err, p->errsize, "record \"%s\": field \"%s\" appears twice",
                          s->fullname, fname);
                goto fail;
            }
        }
        json_t *ft = json_object_get(f, "type");
        if (!ft) {
            kj_seterr(p->err, p->errsize, "record \"%s\": field \"%s\" has no \"type\"",
                      s->fullname, fname);
            goto fail;
        }
        s->fields[i].name = fname;
        s->fields[i].type = kj_parse_node(p, ft, child_ns, depth + 1);
        if (!s->fields[i].type) goto fail;
        s->fields[i].default_value = json_object_get(f, "default");
        s->n = i + 1;
        zero = zero && s->fields[i].type->zero_size;
    }
    s->zero_size = zero;
    free(child_ns);
    return s;
fail:
    free(child_ns);
    return NULL;
}

static kj_schema *kj_parse_complex(kj_parse *p, json_t *j, const char *ns, int depth) {
    json_t *tj = json_object_get(j, "type");
    if (!tj) {
        kj_seterr(p->err, p->errsize, "schema object without \"type\"");
        return NULL;
    }
    if (!json_is_string(tj)) /* {"type": {...}} or {"type": [...]}: the inner schema */
        return kj_parse_node(p, tj, ns, depth + 1);
    const char *t = json_string_value(tj);
    kj_avro_type prim;
    if (kj_primitive_type(t, &prim)) /* e.g. {"type":"long","logicalType":"timestamp-millis"} */
        return kj_node_new(p, prim);
    if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0)
        return kj_parse_record(p, j, ns, depth);
    if (strcmp(t, "enum") == 0) {
        kj_schema *s = kj_named_new(p, j, KJ_AVRO_ENUM, ns);
        if (!s) return NULL;
        json_t *syms = json_object_get(j, "symbols");
        if (!json_is_array(syms) || json_array_size(syms) == 0) {
            kj_seterr(p->err, p->errsize, "enum \"%s\" needs a non-empty \"symbols\" array",
                      s->fullname);
            return NULL;
        }
        s->n = json_array_size(syms);
        s->symbols = calloc(s->n, sizeof(*s->symbols));
        if (!s->symbols) {
            kj_seterr(p->err, p->errsize, "out of memory");
            return NULL;
        }
        for (size_t i = 0; i < s->n; i++) {
            const char *sym = json_string_value(json_array_get(syms, i));
            if (!sym || !kj_valid_name(sym, strlen(sym))) {
                kj_seterr(p->err, p->errsize, "enum \"%s\": invalid symbol %zu", s->fullname, i);
                return NULL;
            }
            s->symbols[i] = sym;
        }
        return s;
    }
    if (strcmp(t, "fixed") == 0) {
        kj_schema *s = kj_named_new(p, j, KJ_AVRO_FIXED, ns);
        if (!s) return NULL;
        json_t *size = json_object_get(j, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0 ||
            json_integer_value(size) > INT32_MAX) {
            kj_seterr(p->err, p->errsize, "fixed \"%s\" needs a non-negative integer \"size\"",
                      s->fullname);
            return NULL;
        }
        s->n = (size_t)json_integer_value(size);
        s->zero_size = s->n == 0;
        return s;
    }
    if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
        int is_array = t[0] == 'a';
        json_t *inner = json_object_get(j, is_array ? "items" : "values");
        if (!inner) {
            kj_seterr(p->err, p->errsize, "%s needs \"%s\"", t, is_array ? "items" : "values");
            return NULL;
        }
        kj_schema *s = kj_node_new(p, is_array ? KJ_AVRO_ARRAY : KJ_AVRO_MAP);
        if (!s) return NULL;
        s->items = kj_parse_node(p, inner, ns, depth + 1);
        return s->items ? s : NULL;
    }
    return kj_resolve_ref(p, t, ns); /* {"type": "some.Named"} */
}

static kj_schema *kj_parse_node(kj_parse *p, json_t *j, const char *ns, int depth) {
    if (depth > KJ_SCHEMA_MAX_DEPTH) {
        kj_seterr(p->err, p->errsize, "schema nested deeper than %d levels", KJ_SCHEMA_MAX_DEPTH);
        return NULL;
    }
    if (json_is_string(j)) {
        kj_avro_type prim;
        if (kj_primitive_type(json_string_value(j), &prim)) return kj_node_new(p, prim);
        return kj_resolve_ref(p, json_string_value(j), ns);
    }
    if (json_is_array(j)) {
        kj_schema *s = kj_node_new(p, KJ_AVRO_UNION);
        if (!s) return NULL;
        size_t n = json_array_size(j);
        s->branches = calloc(n ? n : 1, sizeof(*s->branches));
        if (!s->branches) {
            kj_seterr(p->err, p->errsize, "out of memory");
            return NULL;
        }
        for (size_t i = 0; i < n; i++) {
            kj_schema *b = kj_parse_node(p, json_array_get(j, i), ns, depth + 1);
            if (!b) return NULL;
            if (b->type == KJ_AVRO_UNION) {
                kj_seterr(p->err, p->errsize, "a union may not directly contain a union");
                return NULL;
            }
            s->branches[i] = b;
            s->n = i + 1;
        }
        return s;
    }
    if (json_is_object(j)) return kj_parse_complex(p, j, ns, depth);
    kj_seterr(p->err, p->errsize, "a schema must be a string, an array or an object");
    return NULL;
}

void kj_schema_tree_free(kj_schema_tree *tree) {
    if (!tree) return;
    kj_schema *s = tree->nodes;
    while (s) {
        kj_schema *next = s->next_node;
        free(s->fullname);
        free(s->fields);
        free(s->symbols);
        free(s->branches);
        free(s);
        s = next;
    }
    json_decref(tree->json);
    free(tree);
}

kj_schema_tree *kj_schema_tree_parse(const char *schema_json, char *errstr, size_t errstr_size) {
    if (!schema_json) {
        kj_seterr(errstr, errstr_size, "no schema text");
        return NULL;
    }
    json_error_t jerr;
    json_t *json = json_loads(schema_json, JSON_DECODE_ANY, &jerr);
    if (!json) {
        kj_seterr(errstr, errstr_size, "schema is not valid JSON (line %d, column %d): %s",
                  jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    kj_schema_tree *tree = calloc(1, sizeof(*tree));
    if (!tree) {
        json_decref(json);
        kj_seterr(errstr, errstr_size, "out of memory");
        return NULL;
    }
    tree->json = json;
    kj_parse p = {.tree = tree, .err = errstr, .errsize = errstr_size};
    tree->root = kj_parse_node(&p, json, "", 0);
    if (!tree->root) {
        kj_schema_tree_free(tree);
        return NULL;
    }
    return tree;
}

/* --- Parsing Canonical Form ------------------------------------------------------------- */

typedef struct kj_pcf {
    kj_buf out;
    const kj_schema **done; /* named types already printed */
    size_t ndone, capdone;
    int oom;
} kj_pcf;

static void kj_pcf_quoted(kj_pcf *c, const char *s) {
    kj_buf_put(&c->out, "\"", 1);
    kj_buf_puts(&c->out, s);
    kj_buf_put(&c->out, "\"", 1);
}

static void kj_pcf_node(kj_pcf *c, const kj_schema *s) {
    if (s->fullname) {
        for (size_t i = 0; i < c->ndone; i++) {
            if (c->done[i] == s) {
                kj_pcf_quoted(c, s->fullname);
                return;
            }
        }
        if (c->ndone == c->capdone) {
            size_t cap = c->capdone ? c->capdone * 2 : 8;
            const kj_schema **d = realloc(c->done, cap * sizeof(*d));
            if (!d) {
                c->oom = 1;
                return;
            }
            c->done = d;
            c->capdone = cap;
        }
        c->done[c->ndone++] = s;
    }
    char num[32];
    switch (s->type) {
    case KJ_AVRO_RECORD:
        kj_buf_puts(&c->out, "{\"name\":");
        kj_pcf_quoted(c, s->fullname);
        kj_buf_puts(&c->out, ",\"type\":\"record\",\"fields\":[");
        for (size_t i = 0; i < s->n; i++) {
            kj_buf_puts(&c->out, i ? ",{\"name\":" : "{\"name\":");
            kj_pcf_quoted(c, s->fields[i].name);
            kj_buf_puts(&c->out, ",\"type\":");
            kj_pcf_node(c, s->fields[i].type);
            kj_buf_puts(&c->out, "}");
        }
        kj_buf_puts(&c->out, "]}");
        break;
    case KJ_AVRO_ENUM:
        kj_buf_puts(&c->out, "{\"name\":");
        kj_pcf_quoted(c, s->fullname);
        kj_buf_puts(&c->out, ",\"type\":\"enum\",\"symbols\":[");
        for (size_t i = 0; i < s->n; i++) {
            if (i) kj_buf_puts(&c->out, ",");
            kj_pcf_quoted(c, s->symbols[i]);
        }
        kj_buf_puts(&c->out, "]}");
        break;
    case KJ_AVRO_FIXED:
        kj_buf_puts(&c->out, "{\"name\":");
        kj_pcf_quoted(c, s->fullname);
        snprintf(num, sizeof(num), "%zu", s->n);
        kj_buf_puts(&c->out, ",\"type\":\"fixed\",\"size\":");
        kj_buf_puts(&c->out, num);
        kj_buf_puts(&c->out, "}");
        break;
    case KJ_AVRO_ARRAY:
        kj_buf_puts(&c->out, "{\"type\":\"array\",\"items\":");
        kj_pcf_node(c, s->items);
        kj_buf_puts(&c->out, "}");
        break;
    case KJ_AVRO_MAP:
        kj_buf_puts(&c->out, "{\"type\":\"map\",\"values\":");
        kj_pcf_node(c, s->items);
        kj_buf_puts(&c->out, "}");
        break;
    case KJ_AVRO_UNION:
        kj_buf_puts(&c->out, "[");
        for (size_t i = 0; i < s->n; i++) {
            if (i) kj_buf_puts(&c->out, ",");
            kj_pcf_node(c, s->branches[i]);
        }
        kj_buf_puts(&c->out, "]");
        break;
    default:
        kj_pcf_quoted(c, kj_avro_type_name(s->type));
        break;
    }
}

int kj_schema_tree_canonical(const kj_schema_tree *tree, char **out, char *errstr,
                             size_t errstr_size) {
    kj_pcf c = {0};
    kj_pcf_node(&c, tree->root);
    kj_buf_put(&c.out, "", 1);
    free(c.done);
    if (c.oom || c.out.oom) {
        kj_buf_free(&c.out);
        kj_seterr(errstr, errstr_size, "out of memory");
        return -1;
    }
    *out = (char *)c.out.data;
    return 0;
}

int kj_schema_canonical_form(const char *schema_json, char **out, char *errstr,
                             size_t errstr_size) {
    *out = NULL;
    kj_schema_tree *tree = kj_schema_tree_parse(schema_json, errstr, errstr_size);
    if (!tree) return -1;
    int rc = kj_schema_tree_canonical(tree, out, errstr, errstr_size);
    kj_schema_tree_free(tree);
    return rc;
}

/* --- JSON defaults to Avro binary ------------------------------------------------------- */

/* A bytes/fixed default: a JSON string whose code points 0-255 are the bytes (specification,
 * "Complex Types" / default values). jansson hands us UTF-8. */
static int kj_latin1_bytes(kj_buf *out, json_t *v, size_t *count) {
    const uint8_t *s = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v);
    *count = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b;
        if (s[i] < 0x80) {
            b = s[i];
            i += 1;
        } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < n) {
            b = (uint8_t)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
            i += 2;
        } else {
            return -1;
        }
        kj_buf_put(out, &b, 1);
        (*count)++;
    }
    return 0;
}

static int kj_encode_json(kj_buf *out, const kj_schema *s, json_t *v, char *err, size_t errsize,
                          int depth) {
    if (depth > KJ_SCHEMA_MAX_DEPTH) {
        kj_seterr(err, errsize, "default value nested too deeply");
        return -1;
    }
    uint8_t tmp[8];
    switch (s->type) {
    case KJ_AVRO_NULL:
        if (!json_is_null(v)) goto mismatch;
        return 0;
    case KJ_AVRO_BOOLEAN:
        if (!json_is_boolean(v)) goto mismatch;
        tmp[0] = json_is_true(v) ? 1 : 0;
        kj_buf_put(out, tmp, 1);
        return 0;
    case KJ_AVRO_INT:
    case KJ_AVRO_LONG:
        if (!json_is_integer(v)) goto mismatch;
        if (s->type == KJ_AVRO_INT &&
            (json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX))
            goto mismatch;
        kj_buf_put_long(out, json_integer_value(v));
        return 0;
    case KJ_AVRO_FLOAT:
    case KJ_AVRO_DOUBLE: {
        if (!json_is_number(v)) goto mismatch;
        double d = json_number_value(v);
        uint64_t bits;
        size_t n;
        if (s->type == KJ_AVRO_FLOAT) {
            float f = (float)d;
            uint32_t b32;
            memcpy(&b32, &f, 4);
            bits = b32, n = 4;
        } else {
            memcpy(&bits, &d, 8);
            n = 8;
        }
        for (size_t i = 0; i < n; i++)
            tmp[i] = (uint8_t)(bits >> (8 * i));
        kj_buf_put(out, tmp, n);
        return 0;
    }
    case KJ_AVRO_STRING:
        if (!json_is_string(v)) goto mismatch;
        kj_buf_put_long(out, (int64_t)json_string_length(v));
        kj_buf_put(out, json_string_value(v), json_string_length(v));
        return 0;
    case KJ_AVRO_BYTES: {
        if (!json_is_string(v)) goto mismatch;
        kj_buf tmpb = {0};
        size_t count;
        if (kj_latin1_bytes(&tmpb, v, &count) != 0) {
            kj_buf_free(&tmpb);
            goto mismatch;
        }
        kj_buf_put_long(out, (int64_t)count);
        kj_buf_put(out, tmpb.data, tmpb.len);
        kj_buf_free(&tmpb);
        return 0;
    }
    case KJ_AVRO_FIXED: {
        size_t count;
        if (!json_is_string(v) || kj_latin1_bytes(out, v, &count) != 0 || count != s->n)
            goto mismatch;
        return 0;
    }
    case KJ_AVRO_ENUM:
        if (json_is_string(v)) {
            for (size_t i = 0; i < s->n; i++) {
                if (strcmp(s->symbols[i], json_string_value(v)) == 0) {
                    kj_buf_put_long(out, (int64_t)i);
                    return 0;
                }
            }
        }
        goto mismatch;
    case KJ_AVRO_ARRAY:
        if (!json_is_array(v)) goto mismatch;
        if (json_array_size(v)) {
            kj_buf_put_long(out, (int64_t)json_array_size(v));
            for (size_t i = 0; i < json_array_size(v); i++)
                if (kj_encode_json(out, s->items, json_array_get(v, i), err, errsize, depth + 1))
                    return -1;
        }
        kj_buf_put_long(out, 0);
        return 0;
    case KJ_AVRO_MAP: {
        if (!json_is_object(v)) goto mismatch;
        const char *key;
        json_t *val;
        if (json_object_size(v)) {
            kj_buf_put_long(out, (int64_t)json_object_size(v));
            json_object_foreach(v, key, val) {
                kj_buf_put_long(out, (int64_t)strlen(key));
                kj_buf_puts(out, key);
                if (kj_encode_json(out, s->items, val, err, errsize, depth + 1)) return -1;
            }
        }
        kj_buf_put_long(out, 0);
        return 0;
    }
    case KJ_AVRO_RECORD:
        if (!json_is_object(v)) goto mismatch;
        for (size_t i = 0; i < s->n; i++) {
            json_t *fv = json_object_get(v, s->fields[i].name);
            if (!fv) fv = s->fields[i].default_value;
            if (!fv) {
                kj_seterr(err, errsize, "default for record \"%s\" lacks field \"%s\"", s->fullname,
                          s->fields[i].name);
                return -1;
            }
            if (kj_encode_json(out, s->fields[i].type, fv, err, errsize, depth + 1)) return -1;
        }
        return 0;
    case KJ_AVRO_UNION: /* a union's default belongs to its first branch */
        if (s->n == 0) goto mismatch;
        kj_buf_put_long(out, 0);
        return kj_encode_json(out, s->branches[0], v, err, errsize, depth + 1);
    }
mismatch:
    kj_seterr(err, errsize, "default value does not match type %s%s%s", kj_avro_type_name(s->type),
              s->fullname ? " " : "", s->fullname ? s->fullname : "");
    return -1;
}

int kj_schema_encode_json(kj_buf *out, const kj_schema *s, json_t *value, char *errstr,
                          size_t errstr_size) {
    if (kj_encode_json(out, s, value, errstr, errstr_size, 0) != 0) return -1;
    if (out->oom) {
        kj_seterr(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}
