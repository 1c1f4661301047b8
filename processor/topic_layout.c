/*
 * topic_layout.c — derive the topic list from the config (see topic_layout.h).
 */
#include "processor/topic_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t kj_topic_layout(const kj_config *cfg, kj_topic_spec **out) {
    size_t n = cfg->retry_delay_count + 2;
    kj_topic_spec *specs = calloc(n, sizeof(*specs));
    specs[0].name = strdup(cfg->main_topic);
    specs[0].role = KJ_TOPIC_MAIN;
    for (size_t i = 0; i < cfg->retry_delay_count; i++) {
        specs[i + 1].name = kj_config_retry_topic(cfg, (int)i + 1);
        specs[i + 1].role = KJ_TOPIC_RETRY;
        specs[i + 1].step = (int)i + 1;
        specs[i + 1].delay_ms = cfg->retry_delays_ms[i];
    }
    specs[n - 1].name = strdup(cfg->dlq_topic);
    specs[n - 1].role = KJ_TOPIC_DLQ;
    *out = specs;
    return n;
}

void kj_topic_layout_free(kj_topic_spec *specs, size_t count) {
    for (size_t i = 0; i < count; i++)
        free(specs[i].name);
    free(specs);
}

const char *kj_topic_role_name(kj_topic_role role) {
    switch (role) {
    case KJ_TOPIC_MAIN:
        return "main";
    case KJ_TOPIC_RETRY:
        return "retry";
    default:
        return "dlq";
    }
}

char *kj_topic_status(const kj_config *cfg) {
    size_t n = strlen(cfg->main_topic) + sizeof ".status";
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, "%s.status", cfg->main_topic);
    return s;
}

char *kj_topic_control(const kj_config *cfg) {
    size_t n = strlen(cfg->main_topic) + sizeof ".control";
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, "%s.control", cfg->main_topic);
    return s;
}

bool kj_topic_is_consumed(const kj_config *cfg, const char *topic) {
    kj_topic_spec *specs;
    size_t n = kj_topic_layout(cfg, &specs);
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        found = specs[i].role != KJ_TOPIC_DLQ && strcmp(specs[i].name, topic) == 0;
    kj_topic_layout_free(specs, n);
    return found;
}
