/*
 * group_control.h — the consumer group's operator controls: pausing a topic or one partition
 * for every worker of the group until it is resumed (across restarts and rebalances), and
 * asking the workers to close an open circuit breaker. One concept: what the operator asked
 * for, its wire form on the control topic, and the state a reader builds from it. Written by
 * `kjobs pause` / `kjobs resume` (cli/cmd_pause.c) and the console's actions
 * (processor/console.c); read by every worker (processor/worker.c, control_tick) and by the
 * console and `kjobs pauses` to list them. docs/operations.md ("Operator controls") is the
 * user's page.
 *
 * DESIGN
 *   The topic. "<topics.main>.control" (kj_topic_control, processor/topic_layout.h): one partition,
 * cleanup.policy=compact, created by `kjobs topics --create` beside the status topic (and by `kjobs
 * broker` / `kjobs run --embedded` on the embedded broker). Compaction keeps the last record per
 * key, so the topic is the current state, small whatever its history: a worker that starts reads it
 * to its end before it consumes a single job (kj_ctl_follower_load) and follows it from there
 * (kj_ctl_follower_poll, non-blocking, from the poll thread's tick). Like the status topic it
 * belongs to the main topic, not to a group: every group consuming the main topic obeys it.
 *
 *   Keys and values (version 1):
 *     pause/<topic>               {"v":1,"paused":true,"at":<epoch ms>,"by":"...","reason":"..."}
 *     pause/<topic>/<partition>   the same, for one partition
 *     breaker/resume              {"v":1,"at":<epoch ms>,"by":"..."}
 *   Resume is a tombstone (null value) under the pause key — or a value with "paused": false,
 *   read the same way. A partition is paused while its own key or its topic's key says so:
 *   resuming the topic does not resume a partition paused by its own key, and the other way
 *   round. breaker/resume is an event rather than a state: a worker acts on the record only
 *   when it reads it live (not from the snapshot it read at start), and only while its breaker
 *   is open and opened before the record was written ("at", with KJ_CTL_CLOCK_SKEW_MS of slack
 *   for hosts whose clocks differ), as SIGUSR1 would.
 *
 *   Untrusted input. Anyone who can produce to the topic writes what workers obey, so a record
 *   is checked before it counts: a key longer than KJ_CTL_MAX_KEY, of another shape, naming
 *   an invalid topic (Kafka's rule: 1..249 of [A-Za-z0-9._-], not "." or "..") or a partition
 *   outside 0..INT32_MAX, and a value over KJ_CTL_MAX_VALUE bytes, not a JSON object, of a
 *   version below 1 or without the fields of its key's kind with their types, is ignored (the
 *   previous state of its key stays) and logged once per reader. "by" and "reason" are cut to
 *   KJ_CTL_MAX_BY / KJ_CTL_MAX_REASON bytes on a UTF-8 boundary; unknown fields are ignored
 *   (a later version may add some). At most KJ_CTL_MAX_PAUSES pauses are kept; a new one past
 *   that is ignored (logged once): the bound holds whatever is written.
 *
 * @locality the pure functions and a state: any one thread at a time; a follower: one thread
 *           (the worker's poll thread; the console serialises its own)
 */
#ifndef KJOBS_GROUP_CONTROL_H
#define KJOBS_GROUP_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"

#define KJ_CTL_VERSION       1
#define KJ_CTL_TOPIC_MAX     249  /* Kafka's longest topic name */
#define KJ_CTL_MAX_KEY       300  /* "pause/" + topic + "/" + partition, with room */
#define KJ_CTL_MAX_VALUE     4096 /* bytes of a JSON value; longer ones are ignored */
#define KJ_CTL_MAX_BY        128
#define KJ_CTL_MAX_REASON    512
#define KJ_CTL_MAX_PAUSES    4096
#define KJ_CTL_CLOCK_SKEW_MS 60000
#define KJ_CTL_BREAKER_KEY   "breaker/resume"

typedef enum kj_ctl_kind { KJ_CTL_PAUSE = 1, KJ_CTL_BREAKER_RESUME } kj_ctl_kind;

/** A parsed key: a pause of `topic` (partition -1: the whole topic) or the breaker's resume. */
typedef struct kj_ctl_key {
    kj_ctl_kind kind;
    char topic[KJ_CTL_TOPIC_MAX + 1];
    int32_t partition;
} kj_ctl_key;

/** A parsed value. For a pause: paused (false = resumed), at, by, reason; for the breaker: at,
 *  by. Strings are valid UTF-8, NUL-terminated, possibly empty. */
typedef struct kj_ctl_value {
    bool paused;
    int64_t at;
    char by[KJ_CTL_MAX_BY + 1];
    char reason[KJ_CTL_MAX_REASON + 1];
} kj_ctl_value;

/** One pause in force. */
typedef struct kj_ctl_pause {
    char topic[KJ_CTL_TOPIC_MAX + 1];
    int32_t partition; /* -1: the whole topic */
    int64_t at;
    char by[KJ_CTL_MAX_BY + 1];
    char reason[KJ_CTL_MAX_REASON + 1];
} kj_ctl_pause;

/* ---- the wire form (pure) ------------------------------------------------------------------ */

/** Whether the n bytes at s are a valid Kafka topic name. */
bool kj_ctl_topic_valid(const char *s, size_t n);

/** Parses a key; 0, or -1 when it is not a control key (see DESIGN). */
int kj_ctl_key_parse(const void *key, size_t len, kj_ctl_key *out);

/** Writes the key of `k` to buf (NUL-terminated); its length, or -1 when it does not fit. */
int kj_ctl_key_format(const kj_ctl_key *k, char *buf, size_t size);

/**
 * Parses the value of a record of key `k`; len 0 or a NULL value is a tombstone (resumed, for
 * a pause; -1 for the breaker's key, whose tombstone means nothing). 0, or -1 when malformed.
 */
int kj_ctl_value_parse(const kj_ctl_key *k, const void *value, size_t len, kj_ctl_value *out);

/** The JSON value for key kind `kind` (malloc'd text; NULL only when out of memory). */
char *kj_ctl_value_format(kj_ctl_kind kind, const kj_ctl_value *v);

/**
 * Parses an operator's argument "TOPIC" or "TOPIC:PARTITION" into a pause key. 0, or -1 with a
 * reason in err.
 */
int kj_ctl_target_parse(const char *arg, kj_ctl_key *out, char *err, size_t errsz);

/* ---- the state a reader builds ------------------------------------------------------------- */

typedef struct kj_ctl_state kj_ctl_state;

/** What applying one record did. */
typedef enum kj_ctl_change {
    KJ_CTL_IGNORED = 0, /* malformed, or past KJ_CTL_MAX_PAUSES (the state is unchanged) */
    KJ_CTL_UNCHANGED,   /* valid, but the state already said so */
    KJ_CTL_PAUSED,      /* a pause began (or its by/reason changed) */
    KJ_CTL_RESUMED,     /* a pause ended */
    KJ_CTL_BREAKER,     /* a breaker resume record (its value in *v) */
} kj_ctl_change;

kj_ctl_state *kj_ctl_state_new(void);
void kj_ctl_state_free(kj_ctl_state *s);

/**
 * Applies one record (value NULL or len 0: a tombstone). Returns what changed; *k and *v (either
 * may be NULL) receive the parsed key and value when it was not ignored.
 */
kj_ctl_change kj_ctl_state_apply(kj_ctl_state *s, const void *key, size_t key_len,
                                 const void *value, size_t value_len, kj_ctl_key *k,
                                 kj_ctl_value *v);

/** The pause holding (topic, partition): its partition's own, else its topic's; NULL if none. */
const kj_ctl_pause *kj_ctl_state_paused(const kj_ctl_state *s, const char *topic,
                                        int32_t partition);

/** The pauses in force (n of them), topics first then by name and partition. */
const kj_ctl_pause *kj_ctl_state_list(kj_ctl_state *s, size_t *n);

/** The last breaker resume record's "at" (epoch ms), or -1. */
int64_t kj_ctl_state_breaker_resume_at(const kj_ctl_state *s);

/** Records ignored as malformed or over the bound so far. */
uint64_t kj_ctl_state_ignored(const kj_ctl_state *s);

/** A pause as JSON: {"topic","partition" (null: whole topic),"at","by","reason"}. */
json_t *kj_ctl_pause_json(const kj_ctl_pause *p);

/* ---- Kafka: reading and writing the control topic ------------------------------------------ */

typedef struct kj_ctl_follower kj_ctl_follower;

/** Called for each change a follower applies (not for KJ_CTL_IGNORED or KJ_CTL_UNCHANGED). */
typedef void(kj_ctl_change_fn)(kj_ctl_change change, const kj_ctl_key *k, const kj_ctl_value *v,
                               void *opaque);

/**
 * A reader of the control topic with a group-less consumer of its own ("<group>.control-reader"
 * as group.id, never joined, nothing committed). NULL with err when the client settings are
 * refused. `cfg` must outlive it.
 */
kj_ctl_follower *kj_ctl_follower_new(const kj_config *cfg, char *err, size_t errsz);
void kj_ctl_follower_free(kj_ctl_follower *f);

/**
 * Reads the topic from its start to the end it has now (topic_reader.h) into the state, then
 * assigns it from there for kj_ctl_follower_poll. Returns 0; 1 when the topic does not exist
 * (nothing read; poll does nothing); -1 with err when it could not be read by deadline_ms
 * (kj_now_ms clock).
 */
int kj_ctl_follower_load(kj_ctl_follower *f, int64_t deadline_ms, char *err, size_t errsz);

/**
 * Applies the records that arrived since the last call, without waiting (at most `max` of
 * them), calling `fn` for each change. Returns how many records were read.
 */
int kj_ctl_follower_poll(kj_ctl_follower *f, int max, kj_ctl_change_fn *fn, void *opaque);

/**
 * Reads on (kj_ctl_follower_poll, waiting up to 100 ms at a time) until the record at `offset`
 * (as kj_ctl_write gave it) has been read, or deadline_ms (kj_now_ms clock) passed. True when it
 * was read: the state then includes that write. For a writer that shows what it just wrote.
 */
bool kj_ctl_follower_catch_up(kj_ctl_follower *f, int64_t offset, int64_t deadline_ms,
                              kj_ctl_change_fn *fn, void *opaque);

/** The follower's state (valid until the next call on it). */
kj_ctl_state *kj_ctl_follower_state(kj_ctl_follower *f);

/** Whether the topic existed at the last load. */
bool kj_ctl_follower_active(const kj_ctl_follower *f);

/**
 * Writes the record of key `k` to the control topic — `v` as its value, or a tombstone when v is
 * NULL (a pause's resume) — and waits up to timeout_ms for the broker's acknowledgement
 * (acks=all). A pause of one partition is refused (2) when its topic has no such partition or
 * does not exist. Returns 0; 1 when the control topic does not exist (err names `kjobs topics
 * --create`); 2 for a target that does not exist; -1 with err otherwise. On 0, *offset (when not
 * NULL) is the record's offset in the control topic.
 */
int kj_ctl_write(const kj_config *cfg, const kj_ctl_key *k, const kj_ctl_value *v, int timeout_ms,
                 int64_t *offset, char *err, size_t errsz);

/** "<user>@<host>" of this process, for "by" (USER, else "unknown"). */
void kj_ctl_whoami(char *buf, size_t size);

#endif /* KJOBS_GROUP_CONTROL_H */
