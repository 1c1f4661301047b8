/*
 * handlers.c — the public handler API of kjobs.h (job accessors, outcomes, registration) and
 * the registry behind it (see handlers.h). Everything a plugin links against lives in this one
 * file, so the linker keeps all of it in the kjobs executable that exports it to plugins.
 */
#include "processor/handlers.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "processor/config.h"
#include "common/hash.h"
#include "processor/log.h"
#include "common/utf8.h"

#define KJ_REGISTRY_SLOTS 256 /* open addressing; at most half full */

struct kjobs_registry {
    kj_handler slots[KJ_REGISTRY_SLOTS];
    size_t count;
    kj_handler fallback;
    char **fallback_types;
    size_t fallback_type_count;
    void *plugin_handle;
};

/* --- job accessors ------------------------------------------------------------------- */

const char *kjobs_job_id(const kjobs_job_t *job) {
    return job->record.id;
}
const char *kjobs_job_type(const kjobs_job_t *job) {
    return job->record.type;
}
const void *kjobs_job_payload(const kjobs_job_t *job, size_t *lenp) {
    if (lenp) *lenp = job->record.payload_len;
    return job->record.payload ? (const void *)job->record.payload : "";
}
const void *kjobs_job_key(const kjobs_job_t *job, size_t *lenp) {
    if (lenp) *lenp = job->msg ? job->msg->key_len : 0;
    return job->msg ? job->msg->key : NULL;
}
int64_t kjobs_job_created_at(const kjobs_job_t *job) {
    return job->record.created_at;
}
const char *kjobs_job_meta(const kjobs_job_t *job, const char *name) {
    for (size_t i = 0; i < job->record.meta_count; i++)
        if (strcmp(job->record.meta[i].key, name) == 0) return job->record.meta[i].value;
    return NULL;
}
const char *kjobs_job_traceparent(const kjobs_job_t *job) {
    return job->trace.traceparent[0] ? job->trace.traceparent : NULL;
}
const char *kjobs_job_tracestate(const kjobs_job_t *job) {
    return job->trace.traceparent[0] && job->trace.tracestate[0] ? job->trace.tracestate : NULL;
}
int kjobs_job_attempt(const kjobs_job_t *job) {
    return job->attempt;
}
const char *kjobs_job_topic(const kjobs_job_t *job) {
    return job->topic;
}
int32_t kjobs_job_partition(const kjobs_job_t *job) {
    return job->msg ? job->msg->partition : -1;
}
int64_t kjobs_job_offset(const kjobs_job_t *job) {
    return job->msg ? job->msg->offset : -1;
}
int64_t kjobs_job_deadline(const kjobs_job_t *job) {
    return job->deadline_ms;
}
int kjobs_job_cancelled(const kjobs_job_t *job) {
    return job->deadline_mono_ms > 0 && kj_mono_ms() >= job->deadline_mono_ms;
}

/* --- outcomes ------------------------------------------------------------------------ */

void kj_result_reset(kjobs_result_t *result) {
    result->outcome = KJ_OUTCOME_OK;
    result->delay_ms = -1;
    result->error[0] = '\0';
}

/*
 * The error text is the handler's (untrusted): formatted whole, then stored as valid UTF-8
 * (invalid bytes become U+FFFD) cut on a character boundary with an ellipsis when it is longer
 * than KJ_ERROR_MAX - 1 bytes, so neither the kjobs-error header nor a log line can carry
 * half a character.
 */
static void result_vset(kjobs_result_t *result, kj_outcome outcome, const char *fmt, va_list ap) {
    result->outcome = outcome;
    result->error[0] = '\0';
    if (!fmt) return;
    char stack[KJ_ERROR_MAX * 2];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(stack, sizeof(stack), fmt, ap);
    char *text = stack;
    if (n >= (int)sizeof(stack) && (text = malloc((size_t)n + 1)) != NULL)
        vsnprintf(text, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    if (n < 0) return;
    if (!text) { /* no memory for the whole text: the stack copy, cut by bytes, is cleaned */
        text = stack;
        n = (int)strlen(stack);
    }
    kj_utf8_clean(result->error, sizeof(result->error), text, (size_t)n, NULL, true);
    if (text != stack) free(text);
}

void kj_result_set(kjobs_result_t *result, kj_outcome outcome, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    result_vset(result, outcome, fmt, ap);
    va_end(ap);
}

void kjobs_result_ok(kjobs_result_t *result) {
    kj_result_reset(result);
}

void kjobs_result_retry(kjobs_result_t *result, int64_t delay_ms, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    result_vset(result, KJ_OUTCOME_RETRY, fmt, ap);
    va_end(ap);
    result->delay_ms = delay_ms;
}

void kjobs_result_fail(kjobs_result_t *result, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    result_vset(result, KJ_OUTCOME_FAIL, fmt, ap);
    va_end(ap);
}

const char *kj_outcome_name(kj_outcome outcome) {
    static const char *const names[] = {"ok",           "retry",   "failed",         "decode",
                                        "unknown_type", "timeout", "invalid_header", "crash_loop"};
    return names[outcome];
}

const char *kj_outcome_error_class(kj_outcome outcome) {
    switch (outcome) {
    case KJ_OUTCOME_RETRY:
        return "retryable";
    case KJ_OUTCOME_FAIL:
        return "permanent";
    case KJ_OUTCOME_DECODE:
        return "decode";
    case KJ_OUTCOME_UNKNOWN_TYPE:
        return "unknown-type";
    case KJ_OUTCOME_TIMEOUT:
        return "timeout";
    case KJ_OUTCOME_INVALID_HEADER:
        return "invalid-header";
    case KJ_OUTCOME_CRASH_LOOP:
        return "crash-loop";
    default:
        return "";
    }
}

/* --- registry ------------------------------------------------------------------------ */

kj_handler_registry *kj_handlers_new(void) {
    return calloc(1, sizeof(kj_handler_registry));
}

void kj_handlers_free(kj_handler_registry *reg) {
    if (!reg) return;
    for (size_t i = 0; i < KJ_REGISTRY_SLOTS; i++)
        free(reg->slots[i].type);
    for (size_t i = 0; i < reg->fallback_type_count; i++)
        free(reg->fallback_types[i]);
    free(reg->fallback_types);
    /* the plugin stays loaded: its code may still be referenced by log or atexit paths */
    free(reg);
}

static int registry_add(kj_handler_registry *reg, const char *type, kjobs_job_handler_fn *job_fn,
                        kjobs_batch_handler_fn *batch_fn, void *opaque, char *errstr,
                        size_t errstr_size) {
    if (!type || !*type || (!job_fn && !batch_fn)) {
        snprintf(errstr, errstr_size, "handler registration needs a type and a function");
        return -1;
    }
    if (reg->count >= KJ_REGISTRY_SLOTS / 2) {
        snprintf(errstr, errstr_size, "too many handler types (at most %d)", KJ_REGISTRY_SLOTS / 2);
        return -1;
    }
    size_t i = kj_hash_str(type) % KJ_REGISTRY_SLOTS;
    for (; reg->slots[i].type; i = (i + 1) % KJ_REGISTRY_SLOTS) {
        if (strcmp(reg->slots[i].type, type) == 0) {
            snprintf(errstr, errstr_size, "job type \"%s\" already has a handler", type);
            return -1;
        }
    }
    reg->slots[i] = (kj_handler){strdup(type), job_fn, batch_fn, opaque, 0, "handlers.timeout"};
    reg->count++;
    return 0;
}

int kjobs_register_job_handler(kjobs_registry_t *reg, const char *type,
                               kjobs_job_handler_fn *handler, void *opaque, char *errstr,
                               size_t errstr_size) {
    return registry_add(reg, type, handler, NULL, opaque, errstr, errstr_size);
}

int kjobs_register_batch_handler(kjobs_registry_t *reg, const char *type,
                                 kjobs_batch_handler_fn *handler, void *opaque, char *errstr,
                                 size_t errstr_size) {
    return registry_add(reg, type, NULL, handler, opaque, errstr, errstr_size);
}

const kj_handler *kj_handlers_lookup(const kj_handler_registry *reg, const char *type) {
    size_t i = kj_hash_str(type) % KJ_REGISTRY_SLOTS;
    for (; reg->slots[i].type; i = (i + 1) % KJ_REGISTRY_SLOTS)
        if (strcmp(reg->slots[i].type, type) == 0) return &reg->slots[i];
    if (!reg->fallback.batch_fn) return NULL;
    if (reg->fallback_type_count == 0) return &reg->fallback;
    for (size_t k = 0; k < reg->fallback_type_count; k++)
        if (strcmp(reg->fallback_types[k], type) == 0) return &reg->fallback;
    return NULL;
}

int kj_handlers_set_timeouts(kj_handler_registry *reg, int64_t default_ms, char *const *entries,
                             size_t entry_count, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < KJ_REGISTRY_SLOTS; i++)
        if (reg->slots[i].type) {
            reg->slots[i].timeout_ms = default_ms;
            reg->slots[i].timeout_setting = "handlers.timeout";
        }
    for (size_t e = 0; e < entry_count; e++) {
        size_t len;
        int64_t ms;
        if (kj_type_timeout_parse(entries[e], &len, &ms) != 0) {
            snprintf(errstr, errstr_size, "malformed entry \"%s\"", entries[e]);
            return -1;
        }
        kj_handler *h = NULL;
        for (size_t i = 0; i < KJ_REGISTRY_SLOTS && !h; i++)
            if (reg->slots[i].type && strlen(reg->slots[i].type) == len &&
                memcmp(reg->slots[i].type, entries[e], len) == 0)
                h = &reg->slots[i];
        if (!h) {
            snprintf(errstr, errstr_size,
                     "no built-in or plugin handler claims job type \"%.*s\" "
                     "(the exec handler's limit is handlers.exec_timeout)",
                     (int)len, entries[e]);
            return -1;
        }
        if (strcmp(h->timeout_setting, "handlers.timeouts") == 0) {
            snprintf(errstr, errstr_size, "job type \"%.*s\" is named twice", (int)len, entries[e]);
            return -1;
        }
        h->timeout_ms = ms;
        h->timeout_setting = "handlers.timeouts";
    }
    return 0;
}

void kj_handlers_set_fallback(kj_handler_registry *reg, kjobs_batch_handler_fn *fn, void *opaque,
                              char *const *types, size_t type_count) {
    reg->fallback = (kj_handler){NULL, NULL, fn, opaque, 0, "handlers.exec_timeout"};
    reg->fallback_types = type_count ? calloc(type_count, sizeof(char *)) : NULL;
    for (size_t i = 0; i < type_count; i++)
        reg->fallback_types[i] = strdup(types[i]);
    reg->fallback_type_count = type_count;
}

int kj_handlers_load_plugin(kj_handler_registry *reg, const char *path, char *errstr,
                            size_t errstr_size) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(errstr, errstr_size, "handlers.plugin: cannot load %s: %s", path, dlerror());
        return -1;
    }
    kjobs_plugin_init_fn *init;
    *(void **)&init = dlsym(handle, KJOBS_PLUGIN_INIT_SYMBOL);
    if (!init) {
        snprintf(errstr, errstr_size, "handlers.plugin: %s does not export %s", path,
                 KJOBS_PLUGIN_INIT_SYMBOL);
        dlclose(handle);
        return -1;
    }
    char plugin_err[512] = "";
    size_t before = reg->count;
    if (init(reg, KJOBS_ABI_VERSION, plugin_err, sizeof(plugin_err)) != 0) {
        snprintf(errstr, errstr_size, "handlers.plugin: %s refused to load: %s", path,
                 plugin_err[0] ? plugin_err : "(no reason given)");
        /* handlers it may have registered point into it: keep it mapped */
        return -1;
    }
    reg->plugin_handle = handle;
    kj_log(KJ_LOG_INFO, "plugin loaded", "{s:s,s:i}", "path", path, "handlers",
           (int)(reg->count - before));
    return 0;
}
