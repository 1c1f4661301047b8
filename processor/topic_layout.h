/*
 * topic_layout.h — the topics a configuration implies: the main topic, one retry-ladder topic
 * per configured delay (<prefix>1..N), and the dead-letter topic. One list shared by
 * `kjobs topics`, `kjobs broker` and the worker's start-up check, so they never disagree.
 */
#ifndef KJOBS_TOPIC_LAYOUT_H
#define KJOBS_TOPIC_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"

typedef enum { KJ_TOPIC_MAIN, KJ_TOPIC_RETRY, KJ_TOPIC_DLQ } kj_topic_role;

typedef struct kj_topic_spec {
    char *name;
    kj_topic_role role;
    int step;         /* 1..N for retry topics, else 0 */
    int64_t delay_ms; /* retry topics only */
} kj_topic_spec;

/** Fill *out with a malloc'd array (main, retry steps in order, dlq); returns the count. */
size_t kj_topic_layout(const kj_config *cfg, kj_topic_spec **out);
void kj_topic_layout_free(kj_topic_spec *specs, size_t count);
const char *kj_topic_role_name(kj_topic_role role);

/**
 * "<topics.main>.status": the compacted one-partition topic where every worker publishes its
 * status record, keyed by worker id (processor/status_report.h, docs/console.md). Not in the
 * layout above: a worker runs without it (it then publishes nothing). malloc'd; free() it.
 */
char *kj_topic_status(const kj_config *cfg);

/**
 * "<topics.main>.control": the compacted one-partition topic of the operator's controls (pauses,
 * breaker resume; processor/group_control.h). Not in the layout above: a worker runs without it
 * (it then obeys no control, and says so). malloc'd; free() it.
 */
char *kj_topic_control(const kj_config *cfg);

/** Whether `topic` is one the configuration's workers consume (the main topic or a ladder
 *  step): what an operator's pause may name. */
bool kj_topic_is_consumed(const kj_config *cfg, const char *topic);

#endif /* KJOBS_TOPIC_LAYOUT_H */
