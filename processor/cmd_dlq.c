/*
 * cmd_dlq.c — `kjobs dlq list|show|replay`: inspect dead letters with their kjobs-* error
 * headers, and re-enqueue selected ones to their original topic with the attempt count reset.
 *
 * Reading: assign() over every partition of the DLQ topic, from a start offset up to the log
 * end offsets captured when the command started (never "until idle"), so a dead letter produced
 * while the command runs — e.g. a replayed job failing again — is never picked up by the same
 * run. The consumer never subscribes, so it never joins a group.
 *
 * Replay-loop guard (docs/dlq.md has the user-facing description):
 *   1. Snapshot: only records below the end offsets captured at start are considered.
 *   2. Lineage header: a replayed copy carries `kjobs-replayed-from`; the router keeps original
 *      headers, so if it fails again its new dead letter carries it too. Such "refailed" dead
 *      letters are skipped unless --again.
 *   3. Replay marker: the consumer group `<kafka.group>.dlq-replay` records, per DLQ partition,
 *      a committed offset W ("every dead letter below W is replayed or never replayable
 *      without --again") and, in the commit's metadata, the offsets >= W replayed so far as
 *      ranges ("kjobs-replayed:v1:12-40,45"). Replay reads from W, skips recorded offsets
 *      unless --again, and commits the new marker after the broker acknowledged the copies
 *      (at-least-once: a crash between produce and commit can replay those again).
 * The same marker gives `list` its STATE column.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/cli.h"
#include "processor/commands.h"
#include "processor/dlq_marker.h"
#include "processor/header_contract.h"
#include "processor/job_json.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/utf8.h"
#include "schemas/codec.h"

#define ERROR_COLUMN_MAX 60

static const char dlq_usage[] =
    "usage: kjobs dlq list   [options] [--json] [--type T] [--id ID] [--class C]\n"
    "       kjobs dlq show   [options] ID|PARTITION:OFFSET\n"
    "       kjobs dlq replay [options] [--type T] [--id ID] [--class C] [--again] [--dry-run]\n"
    "options: [-c FILE] [-b BROKERS] [-G GROUP] [-X prop=val] [--topic DLQ] [--timeout S]\n"
    "\n"
    "list    every dead letter: ID (the job id; PARTITION:OFFSET in the DLQ for a value that\n"
    "        does not decode), TYPE, CLASS, ATTEMPTS, ORIGINAL topic:partition:offset,\n"
    "        FAILED-AT, STATE (new, replayed, refailed, no-origin) and ERROR (truncated).\n"
    "        --json prints one JSON object per dead letter with every field.\n"
    "show    one dead letter as pretty JSON (exit 1 when there is none).\n"
    "replay  produce the selected dead letters to their original topic (kjobs-original-topic),\n"
    "        same key and value, original headers kept, kjobs-* headers replaced by\n"
    "        kjobs-replayed-from and kjobs-replayed-at: the attempt count starts again at 1.\n"
    "        Prints the ids it replayed. Dead letters already replayed (recorded by the group\n"
    "        <kafka.group>.dlq-replay) and those of replayed jobs that failed again are skipped\n"
    "        unless --again. Dead letters written after replay started are never read.\n"
    "\n"
    "  --topic T          DLQ topic (default topics.dlq)\n"
    "  -G GROUP           kafka.group; the replay marker is the group GROUP.dlq-replay\n"
    "  --type T, --id ID, --class C\n"
    "                     select by job type, by job id (or PARTITION:OFFSET), by error class\n"
    "                     (retryable, permanent, decode, unknown-type, timeout,\n"
    "                     invalid-header, crash-loop); all must match\n"
    "  --json             (list) JSON lines\n"
    "  --dry-run          (replay) print what would be replayed; produce and record nothing\n"
    "  --again            (replay) include dead letters already replayed or refailed\n"
    "  --timeout SECONDS  give up reading the DLQ after this long (default 60; exit 1)\n";

enum {
    OPT_JSON = KJ_OPT_COMMON_LAST + 1,
    OPT_TYPE,
    OPT_ID,
    OPT_CLASS,
    OPT_DRY_RUN,
    OPT_AGAIN,
    OPT_TIMEOUT
};

typedef enum { CMD_LIST, CMD_SHOW, CMD_REPLAY } dlq_cmd;

typedef enum { ST_NEW, ST_REPLAYED, ST_REFAILED, ST_NO_ORIGIN } dl_state;
static const char *const state_names[] = {"new", "replayed", "refailed", "no-origin"};

typedef struct part_state {
    int64_t low, end; /* watermarks captured at start: read [start, end) */
    int64_t start;
    int64_t committed;   /* replay marker W; -1 when none */
    kj_dlq_ranges marks; /* replayed offsets >= committed, from the commit metadata */
    char *marks_text;    /* the metadata as read (to detect a change) */
    bool done;
    int64_t first_blocking; /* replay: first offset read that stays "new"; -1 none */
    int64_t next_expected;  /* last offset seen + 1 */
} part_state;

typedef struct replay_item {
    rd_kafka_message_t *msg;
    char *handle;
    char *orig_topic;
    int status; /* 0 queued, 1 acknowledged, 2 failed */
} replay_item;

typedef struct dlq_run {
    kj_cli cli;
    dlq_cmd cmd;
    const char *topic;
    const char *f_type, *f_id, *f_class;
    bool json, dry_run, again;
    long long deadline;
    char replay_group[512];
    rd_kafka_t *rk;
    int partitions;
    part_state *parts;
    int exit_code;
    /* show */
    bool show_by_coords;
    int32_t show_partition;
    int64_t show_offset;
    json_t *show_match;
    long show_matches;
    /* list (table rows are collected to size the columns) */
    char **rows; /* 8 cells per row */
    size_t row_count, row_cap;
    /* replay */
    replay_item *items;
    size_t item_count, item_cap;
    long skipped_replayed, skipped_refailed, skipped_no_origin, skipped_no_value;
} dlq_run;

/* ---- dead letters: headers, state, JSON -------------------------------------------------- */

static rd_kafka_headers_t *headers_of(const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    return h;
}

static dl_state state_of(const part_state *ps, const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *h = headers_of(msg);
    char buf[256];
    if (kj_dlq_ranges_has(&ps->marks, msg->offset)) return ST_REPLAYED;
    if (!kj_kafka_header_str(h, KJ_HDR_ORIGINAL_TOPIC, buf, sizeof(buf)) || !buf[0])
        return ST_NO_ORIGIN;
    if (kj_kafka_header_str(h, KJ_HDR_REPLAYED_FROM, buf, sizeof(buf))) return ST_REFAILED;
    if (ps->committed >= 0 && msg->offset < ps->committed) return ST_REPLAYED;
    return ST_NEW;
}

static void iso_time(long long ms, char *out, size_t size) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", base, (int)(ms % 1000));
}

static json_t *header_int(rd_kafka_headers_t *h, const char *name) {
    char buf[64], *end;
    if (!kj_kafka_header_str(h, name, buf, sizeof(buf))) return json_null();
    long long v = strtoll(buf, &end, 10);
    if (end == buf || *end) return json_string(buf);
    return json_integer(v);
}

/* The header as text; bytes that are not UTF-8 become U+FFFD (never a dropped field). */
static json_t *header_text(rd_kafka_headers_t *h, const char *name) {
    const void *val = NULL;
    size_t size = 0;
    if (!h || rd_kafka_header_get_last(h, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return json_null();
    return val ? kj_utf8_json_string(val, size) : json_string("");
}

/* The record as peek prints it, plus "handle", "state" and a "dead_letter" summary. */
static json_t *dead_letter_json(const rd_kafka_message_t *msg, dl_state state) {
    json_t *o = kj_job_json_from_message(msg);
    rd_kafka_headers_t *h = headers_of(msg);
    char handle[64];
    json_t *id = json_object_get(o, "id");
    if (json_is_string(id)) {
        json_object_set_new(o, "handle", json_string(json_string_value(id)));
    } else {
        snprintf(handle, sizeof(handle), "%" PRId32 ":%" PRId64, msg->partition, msg->offset);
        json_object_set_new(o, "handle", json_string(handle));
    }
    json_object_set_new(o, "state", json_string(state_names[state]));
    json_t *d = json_object();
    json_object_set_new(d, "attempt", header_int(h, KJ_HDR_ATTEMPT));
    json_object_set_new(d, "error_class", header_text(h, KJ_HDR_ERROR_CLASS));
    json_object_set_new(d, "error", header_text(h, KJ_HDR_ERROR));
    json_object_set_new(d, "original_topic", header_text(h, KJ_HDR_ORIGINAL_TOPIC));
    json_object_set_new(d, "original_partition", header_int(h, KJ_HDR_ORIGINAL_PARTITION));
    json_object_set_new(d, "original_offset", header_int(h, KJ_HDR_ORIGINAL_OFFSET));
    json_t *failed_at = header_int(h, KJ_HDR_FAILED_AT);
    if (json_is_integer(failed_at)) {
        char iso[48];
        iso_time(json_integer_value(failed_at), iso, sizeof(iso));
        json_object_set_new(d, "failed_at", failed_at);
        json_object_set_new(d, "failed_at_iso", json_string(iso));
    } else {
        json_object_set_new(d, "failed_at", failed_at);
        json_object_set_new(d, "failed_at_iso", json_null());
    }
    json_object_set_new(d, "worker", header_text(h, KJ_HDR_WORKER));
    json_object_set_new(d, "replayed_from", header_text(h, KJ_HDR_REPLAYED_FROM));
    json_object_set_new(o, "dead_letter", d);
    return o;
}

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool parse_coords(const char *text, int32_t *p, int64_t *o) {
    long long pp, oo;
    char tail;
    if (sscanf(text, "%lld:%lld%c", &pp, &oo, &tail) != 2) return false;
    if (pp < 0 || pp > INT32_MAX || oo < 0) return false;
    *p = (int32_t)pp;
    *o = oo;
    return true;
}

static bool matches(const dlq_run *r, json_t *o, const rd_kafka_message_t *msg) {
    if (r->f_type && (!jstr(o, "type") || strcmp(jstr(o, "type"), r->f_type) != 0)) return false;
    if (r->f_class) {
        const char *c = jstr(json_object_get(o, "dead_letter"), "error_class");
        if (!c || strcmp(c, r->f_class) != 0) return false;
    }
    if (r->f_id) {
        int32_t p;
        int64_t off;
        if (parse_coords(r->f_id, &p, &off)) {
            if (msg->partition != p || msg->offset != off) return false;
        } else if (!jstr(o, "id") || strcmp(jstr(o, "id"), r->f_id) != 0) {
            return false;
        }
    }
    return true;
}

/* ---- list --------------------------------------------------------------------------------- */

static void add_row(dlq_run *r, json_t *o) {
    if (r->row_count == r->row_cap) {
        r->row_cap = r->row_cap ? r->row_cap * 2 : 64;
        r->rows = realloc(r->rows, r->row_cap * 8 * sizeof(char *));
    }
    char **c = &r->rows[r->row_count++ * 8];
    json_t *d = json_object_get(o, "dead_letter");
    char buf[1300];
    c[0] = strdup(jstr(o, "handle"));
    c[1] = strdup(jstr(o, "type") ? jstr(o, "type") : "-");
    c[2] = strdup(jstr(d, "error_class") ? jstr(d, "error_class") : "-");
    json_t *att = json_object_get(d, "attempt");
    if (json_is_integer(att))
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(att));
    else
        snprintf(buf, sizeof(buf), "-");
    c[3] = strdup(buf);
    if (jstr(d, "original_topic")) {
        json_t *pp = json_object_get(d, "original_partition");
        json_t *oo = json_object_get(d, "original_offset");
        char ps[32] = "?", os[32] = "?";
        if (json_is_integer(pp))
            snprintf(ps, sizeof(ps), "%" JSON_INTEGER_FORMAT, json_integer_value(pp));
        if (json_is_integer(oo))
            snprintf(os, sizeof(os), "%" JSON_INTEGER_FORMAT, json_integer_value(oo));
        snprintf(buf, sizeof(buf), "%s:%s:%s", jstr(d, "original_topic"), ps, os);
    } else {
        snprintf(buf, sizeof(buf), "-");
    }
    c[4] = strdup(buf);
    c[5] = strdup(jstr(d, "failed_at_iso") ? jstr(d, "failed_at_iso") : "-");
    c[6] = strdup(jstr(o, "state"));
    const char *err = jstr(d, "error") ? jstr(d, "error") : "-";
    /* one line per dead letter, at most ERROR_COLUMN_MAX characters (the text is valid UTF-8:
     * header_text repaired it), cut on a character boundary with "..." */
    size_t n = 0, chars = 0, cut = 0;
    for (size_t i = 0, len = strlen(err); i < len && n + 4 < sizeof(buf);) {
        size_t k = kj_utf8_seq_len(err + i, len - i);
        if (k == 0) k = 1; /* cannot happen after header_text; stay bounded anyway */
        if (n + k + 4 > sizeof(buf)) break;
        if (++chars == ERROR_COLUMN_MAX - 2) cut = n; /* room for "..." if it must be cut */
        if (k == 1 && (err[i] == '\n' || err[i] == '\r' || err[i] == '\t')) {
            buf[n++] = ' ';
        } else {
            memcpy(buf + n, err + i, k);
            n += k;
        }
        i += k;
    }
    buf[n] = '\0';
    if (chars > ERROR_COLUMN_MAX) memcpy(buf + cut, "...", 4);
    c[7] = strdup(buf);
}

/* A table cell holds untrusted text (ids, types, errors from producers and handlers): C0 and
 * C1 control characters and DEL become '?' in place, so a row stays one line and no escape
 * sequence reaches the terminal. The text is valid UTF-8 (header_text repaired it); a C1
 * control is the two bytes C2 80..C2 9F, replaced by "??" to keep the length. */
static void terminal_safe(char *s) {
    for (unsigned char *p = (unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            p[0] = p[1] = '?';
    }
}

static void print_rows(dlq_run *r) {
    static const char *heads[8] = {"ID",       "TYPE",      "CLASS", "ATTEMPTS",
                                   "ORIGINAL", "FAILED-AT", "STATE", "ERROR"};
    size_t w[8];
    for (size_t i = 0; i < r->row_count * 8; i++)
        terminal_safe(r->rows[i]);
    for (int c = 0; c < 8; c++)
        w[c] = strlen(heads[c]);
    for (size_t i = 0; i < r->row_count; i++)
        for (int c = 0; c < 7; c++) {
            size_t len = strlen(r->rows[i * 8 + c]);
            if (len > w[c]) w[c] = len;
        }
    for (size_t i = 0; i <= r->row_count; i++) {
        const char *const *cells = i == 0 ? heads : (const char *const *)&r->rows[(i - 1) * 8];
        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", (int)w[0], cells[0], (int)w[1],
               cells[1], (int)w[2], cells[2], (int)w[3], cells[3], (int)w[4], cells[4], (int)w[5],
               cells[5], (int)w[6], cells[6], cells[7]);
    }
}

static void free_rows(dlq_run *r) {
    for (size_t i = 0; i < r->row_count * 8; i++)
        free(r->rows[i]);
    free(r->rows);
    r->rows = NULL;
    r->row_count = 0;
}

static void print_json_line(json_t *o) {
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text) puts(text);
    free(text);
}

/* ---- per-record handling ----------------------------------------------------------------- */

/* Takes ownership of msg. */
static void on_record(dlq_run *r, rd_kafka_message_t *msg) {
    part_state *ps = &r->parts[msg->partition];
    dl_state state = state_of(ps, msg);
    json_t *o = dead_letter_json(msg, state);
    bool keep = false;
    switch (r->cmd) {
    case CMD_LIST:
        if (matches(r, o, msg)) {
            if (r->json)
                print_json_line(o);
            else
                add_row(r, o);
        }
        break;
    case CMD_SHOW: {
        bool hit = r->show_by_coords
                       ? msg->partition == r->show_partition && msg->offset == r->show_offset
                       : jstr(o, "id") && strcmp(jstr(o, "id"), r->f_id) == 0;
        if (hit) {
            /* the same job can be dead-lettered more than once: show the latest failure */
            json_int_t at =
                json_integer_value(json_object_get(json_object_get(o, "dead_letter"), "failed_at"));
            json_int_t best = r->show_match
                                  ? json_integer_value(json_object_get(
                                        json_object_get(r->show_match, "dead_letter"), "failed_at"))
                                  : 0;
            if (!r->show_match || at >= best) {
                json_decref(r->show_match);
                r->show_match = json_incref(o);
            }
            r->show_matches++;
        }
        break;
    }
    case CMD_REPLAY: {
        bool selected = false;
        char dropped[64];
        bool no_value = !msg->payload && kj_kafka_header_str(headers_of(msg), KJ_HDR_TRUNCATED,
                                                             dropped, sizeof(dropped));
        if (no_value && matches(r, o, msg)) {
            /* too large to copy whole: the job is only at its kjobs-original-* coordinates */
            r->skipped_no_value++;
            kj_log(KJ_LOG_WARN,
                   "dead letter was reduced to fit (kjobs-truncated), no value to replay",
                   "{s:s,s:i,s:I,s:s}", "topic", r->topic, "partition", (int)msg->partition,
                   "offset", (json_int_t)msg->offset, "dropped", dropped);
        } else if (matches(r, o, msg)) {
            if (state == ST_NEW || (r->again && state != ST_NO_ORIGIN)) {
                selected = true;
            } else if (state == ST_REPLAYED) {
                r->skipped_replayed++;
            } else if (state == ST_REFAILED) {
                r->skipped_refailed++;
            } else {
                r->skipped_no_origin++;
                kj_log(KJ_LOG_WARN, "dead letter has no kjobs-original-topic, cannot replay",
                       "{s:s,s:i,s:I}", "topic", r->topic, "partition", (int)msg->partition,
                       "offset", (json_int_t)msg->offset);
            }
        }
        if (selected) {
            if (r->item_count == r->item_cap) {
                r->item_cap = r->item_cap ? r->item_cap * 2 : 64;
                r->items = realloc(r->items, r->item_cap * sizeof(*r->items));
            }
            replay_item *it = &r->items[r->item_count++];
            memset(it, 0, sizeof(*it));
            it->msg = msg;
            it->handle = strdup(jstr(o, "handle"));
            it->orig_topic = strdup(jstr(json_object_get(o, "dead_letter"), "original_topic"));
            keep = true;
        } else if (state == ST_NEW && !no_value && ps->first_blocking < 0) {
            /* stays replayable by a plain replay: the marker may not pass it */
            ps->first_blocking = msg->offset;
        }
        break;
    }
    }
    json_decref(o);
    if (!keep) rd_kafka_message_destroy(msg);
}

/* ---- reading the DLQ up to the captured end offsets -------------------------------------- */

static int open_consumer(dlq_run *r) {
    char err[512];
    rd_kafka_conf_t *conf = kj_kafka_conf_new(&r->cli.cfg, err, sizeof(err));
    /* group.id is the replay marker's group: rd_kafka_committed reads it and replay commits
     * it; the handle only ever uses assign(), so it never joins that (or any) group */
    if (!conf || kj_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err)) ||
        kj_kafka_conf_set(conf, "group.id", r->replay_group, err, sizeof(err))) {
        fprintf(stderr, "kjobs dlq: %s\n", err);
        if (conf) rd_kafka_conf_destroy(conf);
        return KJ_EXIT_USAGE;
    }
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!r->rk) {
        fprintf(stderr, "kjobs dlq: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_poll_set_consumer(r->rk);
    return KJ_EXIT_OK;
}

static int remaining_ms(const dlq_run *r) {
    long long left = r->deadline - kj_now_ms();
    return left < 1 ? 1 : left > 30000 ? 30000 : (int)left;
}

/* Partitions, end offsets (the snapshot), and the replay marker. */
static int load_partitions(dlq_run *r) {
    char err[512];
    r->partitions = kj_kafka_partition_count(r->rk, r->topic, remaining_ms(r), err, sizeof(err));
    if (r->partitions < 0) {
        kj_log(KJ_LOG_ERROR, "cannot read topic", "{s:s,s:s}", "topic", r->topic, "error", err);
        return KJ_EXIT_RUNTIME;
    }
    r->parts = calloc((size_t)r->partitions + 1, sizeof(*r->parts));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(r->partitions);
    for (int p = 0; p < r->partitions; p++) {
        part_state *ps = &r->parts[p];
        ps->first_blocking = -1;
        ps->committed = -1;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(r->rk, r->topic, p, &ps->low,
                                                                 &ps->end, remaining_ms(r));
        if (e) {
            kj_log(KJ_LOG_ERROR, "cannot read end offset", "{s:s,s:i,s:s}", "topic", r->topic,
                   "partition", p, "error", rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(list);
            return KJ_EXIT_RUNTIME;
        }
        rd_kafka_topic_partition_list_add(list, r->topic, p);
    }
    rd_kafka_resp_err_t e = rd_kafka_committed(r->rk, list, remaining_ms(r));
    if (e) {
        kj_log(KJ_LOG_ERROR, "cannot read the replay marker", "{s:s,s:s}", "group", r->replay_group,
               "error", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(list);
        return KJ_EXIT_RUNTIME;
    }
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        part_state *ps = &r->parts[tp->partition];
        if (tp->err) {
            kj_log(KJ_LOG_ERROR, "cannot read the replay marker", "{s:s,s:i,s:s}", "group",
                   r->replay_group, "partition", (int)tp->partition, "error",
                   rd_kafka_err2str(tp->err));
            rd_kafka_topic_partition_list_destroy(list);
            return KJ_EXIT_RUNTIME;
        }
        if (tp->offset < 0) continue;
        ps->committed = tp->offset;
        ps->marks_text = strndup(tp->metadata ? tp->metadata : "", tp->metadata_size);
        if (ps->marks_text[0] && kj_dlq_marker_parse(ps->marks_text, &ps->marks) != 0) {
            kj_log(KJ_LOG_WARN, "replay marker metadata not understood, ignored", "{s:s,s:i}",
                   "group", r->replay_group, "partition", (int)tp->partition);
            ps->marks.n = 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return KJ_EXIT_OK;
}

static int read_dlq(dlq_run *r) {
    rd_kafka_topic_partition_list_t *assignment = rd_kafka_topic_partition_list_new(r->partitions);
    int pending = 0;
    for (int p = 0; p < r->partitions; p++) {
        part_state *ps = &r->parts[p];
        if (ps->start < ps->low) ps->start = ps->low;
        ps->next_expected = ps->start;
        if (ps->start >= ps->end) {
            ps->done = true;
            continue;
        }
        rd_kafka_topic_partition_list_add(assignment, r->topic, p)->offset = ps->start;
        pending++;
    }
    if (pending) rd_kafka_assign(r->rk, assignment);
    rd_kafka_topic_partition_list_destroy(assignment);
    int rc = KJ_EXIT_OK;
    while (pending > 0) {
        if (kj_cli_stop_requested) {
            rc = KJ_EXIT_RUNTIME;
            break;
        }
        if (kj_now_ms() >= r->deadline) {
            kj_log(KJ_LOG_ERROR, "timed out reading the dead-letter topic", "{s:s,s:i}", "topic",
                   r->topic, "partitions_unfinished", pending);
            rc = KJ_EXIT_RUNTIME;
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(r->rk, 100);
        if (!msg) continue;
        if (msg->partition < 0 || msg->partition >= r->partitions) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        part_state *ps = &r->parts[msg->partition];
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* msg->offset is the next offset: the end of this partition right now */
            if (!ps->done && msg->offset >= ps->end) {
                ps->done = true;
                pending--;
            }
            rd_kafka_message_destroy(msg);
            continue;
        }
        if (msg->err) {
            kj_log(KJ_LOG_ERROR, "consume error", "{s:s}", "error", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            rc = KJ_EXIT_RUNTIME;
            break;
        }
        if (ps->done || msg->offset >= ps->end) { /* written after we started: not ours */
            if (!ps->done) {
                ps->done = true;
                pending--;
            }
            rd_kafka_message_destroy(msg);
            continue;
        }
        bool last = msg->offset >= ps->end - 1;
        ps->next_expected = msg->offset + 1;
        on_record(r, msg);
        if (last) {
            ps->done = true;
            pending--;
        }
    }
    rd_kafka_assign(r->rk, NULL);
    return rc;
}

/* ---- replay ------------------------------------------------------------------------------- */

static void on_replay_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    (void)opaque;
    replay_item *it = msg->_private;
    if (msg->err) {
        it->status = 2;
        kj_log(KJ_LOG_ERROR, "replayed copy not acknowledged", "{s:s,s:s,s:s}", "handle",
               it->handle, "topic", it->orig_topic, "error", rd_kafka_err2str(msg->err));
    } else {
        it->status = 1;
    }
}

static rd_kafka_headers_t *replay_headers(const dlq_run *r, const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *src = headers_of(msg), *out = rd_kafka_headers_new(8);
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; src && rd_kafka_header_get_all(src, i, &name, &val, &size) == 0; i++)
        if (!kj_hdr_is_kjobs(name)) rd_kafka_header_add(out, name, -1, val, (ssize_t)size);
    kj_hdr_write_replay(out, r->topic, msg->partition, msg->offset, kj_now_ms());
    return out;
}

/* The marker partition p gets (dlq_marker.h): W and the ranges >= W, from the item statuses. */
static int64_t new_marker(const dlq_run *r, int p, kj_dlq_ranges *out) {
    const part_state *ps = &r->parts[p];
    kj_dlq_ranges acked = {0};
    int64_t first_new = ps->first_blocking;
    for (size_t i = 0; i < r->item_count; i++) {
        const replay_item *it = &r->items[i];
        if (it->msg->partition != p) continue;
        if (it->status == 1)
            kj_dlq_ranges_add(&acked, it->msg->offset);
        else if ((first_new < 0 || it->msg->offset < first_new) && state_of(ps, it->msg) == ST_NEW)
            first_new = it->msg->offset; /* not replayed and still new: must stay ahead of W */
    }
    kj_dlq_marker_step st = {.committed = ps->committed,
                             .marks = &ps->marks,
                             .end = ps->end,
                             .read_to_end = ps->done,
                             .next_expected = ps->next_expected,
                             .first_new = first_new,
                             .acked = &acked};
    int64_t w = kj_dlq_marker_next(&st, out);
    kj_dlq_ranges_free(&acked);
    return w;
}

static int commit_marker(dlq_run *r) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(r->partitions);
    for (int p = 0; p < r->partitions; p++) {
        part_state *ps = &r->parts[p];
        kj_dlq_ranges set = {0};
        int64_t w = new_marker(r, p, &set);
        char *text = kj_dlq_marker_format(&set);
        kj_dlq_ranges_free(&set);
        if (kj_dlq_marker_changed(ps->committed, ps->marks_text, ps->low, w, text)) {
            rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, r->topic, p);
            tp->offset = w;
            tp->metadata = text; /* freed by the list destroy */
            tp->metadata_size = strlen(text);
            if (tp->metadata_size > KJ_DLQ_MARKER_MAX_BYTES)
                kj_log(KJ_LOG_WARN, "replay marker is large; the broker may refuse it", "{s:i,s:i}",
                       "partition", p, "bytes", (int)tp->metadata_size);
        } else {
            free(text);
        }
    }
    int rc = KJ_EXIT_OK;
    if (list->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_commit(r->rk, list, 0);
        for (int i = 0; !e && i < list->cnt; i++)
            e = list->elems[i].err;
        if (e) {
            kj_log(KJ_LOG_ERROR,
                   "replayed, but the replay marker was not recorded: a later replay would "
                   "replay these again",
                   "{s:s,s:s}", "group", r->replay_group, "error", rd_kafka_err2str(e));
            rc = KJ_EXIT_RUNTIME;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

static int do_replay(dlq_run *r) {
    long long replayed = 0, failed = 0;
    if (r->dry_run) {
        for (size_t i = 0; i < r->item_count; i++)
            printf("%s\t%s:%" PRId32 ":%" PRId64 "\t%s\n", r->items[i].handle, r->topic,
                   r->items[i].msg->partition, r->items[i].msg->offset, r->items[i].orig_topic);
        fflush(stdout);
        kj_log(KJ_LOG_INFO, "replay dry run: nothing produced", "{s:I,s:I,s:I,s:I,s:I}",
               "would_replay", (json_int_t)r->item_count, "skipped_already_replayed",
               (json_int_t)r->skipped_replayed, "skipped_refailed", (json_int_t)r->skipped_refailed,
               "skipped_no_origin", (json_int_t)r->skipped_no_origin, "skipped_no_value",
               (json_int_t)r->skipped_no_value);
        return KJ_EXIT_OK;
    }
    int rc = KJ_EXIT_OK;
    if (r->item_count) {
        char err[512];
        rd_kafka_conf_t *conf = kj_kafka_conf_new(&r->cli.cfg, err, sizeof(err));
        if (!conf) {
            fprintf(stderr, "kjobs dlq: %s\n", err);
            return KJ_EXIT_USAGE;
        }
        rd_kafka_conf_set_dr_msg_cb(conf, on_replay_delivery);
        kj_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
        rd_kafka_t *prod = kj_kafka_producer_new(conf, err, sizeof(err));
        if (!prod) {
            fprintf(stderr, "kjobs dlq: %s\n", err);
            return KJ_EXIT_USAGE;
        }
        for (size_t i = 0; i < r->item_count; i++) {
            replay_item *it = &r->items[i];
            const rd_kafka_message_t *m = it->msg;
            for (;;) {
                rd_kafka_headers_t *h = replay_headers(r, m);
                rd_kafka_resp_err_t e = rd_kafka_producev(
                    prod, RD_KAFKA_V_TOPIC(it->orig_topic),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, m->key_len),
                    RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_HEADERS(h),
                    RD_KAFKA_V_OPAQUE(it), RD_KAFKA_V_END);
                if (!e) break;
                rd_kafka_headers_destroy(h);
                if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && !kj_cli_stop_requested) {
                    rd_kafka_poll(prod, 100);
                    continue;
                }
                it->status = 2;
                kj_log(KJ_LOG_ERROR, "cannot queue replayed copy", "{s:s,s:s,s:s}", "handle",
                       it->handle, "topic", it->orig_topic, "error", rd_kafka_err2str(e));
                break;
            }
        }
        /* wait for every delivery report (message.timeout.ms bounds it); a signal purges */
        while (rd_kafka_outq_len(prod) > 0) {
            if (kj_cli_stop_requested)
                rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(prod, 100);
        }
        rd_kafka_destroy(prod);
        for (size_t i = 0; i < r->item_count; i++) {
            if (r->items[i].status == 1) {
                replayed++;
                printf("%s\n", r->items[i].handle);
            } else {
                failed++;
            }
        }
        fflush(stdout);
    }
    /* record what was acknowledged, even when some copies failed */
    if (commit_marker(r) != KJ_EXIT_OK) rc = KJ_EXIT_RUNTIME;
    if (failed) rc = KJ_EXIT_RUNTIME;
    kj_log(failed ? KJ_LOG_ERROR : KJ_LOG_INFO, "replay finished", "{s:I,s:I,s:I,s:I,s:I,s:I}",
           "replayed", (json_int_t)replayed, "failed", (json_int_t)failed,
           "skipped_already_replayed", (json_int_t)r->skipped_replayed, "skipped_refailed",
           (json_int_t)r->skipped_refailed, "skipped_no_origin", (json_int_t)r->skipped_no_origin,
           "skipped_no_value", (json_int_t)r->skipped_no_value);
    return rc;
}

/* ---- entry point -------------------------------------------------------------------------- */

static void run_free(dlq_run *r) {
    for (size_t i = 0; i < r->item_count; i++) {
        rd_kafka_message_destroy(r->items[i].msg);
        free(r->items[i].handle);
        free(r->items[i].orig_topic);
    }
    free(r->items);
    for (int p = 0; r->parts && p < r->partitions; p++) {
        kj_dlq_ranges_free(&r->parts[p].marks);
        free(r->parts[p].marks_text);
    }
    free(r->parts);
    json_decref(r->show_match);
    free_rows(r);
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    kj_cli_free(&r->cli);
}

int kj_cmd_dlq(int argc, char **argv) {
    dlq_run run_, *r = &run_;
    memset(r, 0, sizeof(*r));
    kj_cli_init(&r->cli, "kjobs dlq", dlq_usage);
    if (argc < 2) return kj_cli_usage_error(&r->cli, "missing subcommand (list, show, replay)");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(dlq_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (strcmp(sub, "list") == 0) {
        r->cmd = CMD_LIST;
        r->cli.command = "kjobs dlq list";
    } else if (strcmp(sub, "show") == 0) {
        r->cmd = CMD_SHOW;
        r->cli.command = "kjobs dlq show";
    } else if (strcmp(sub, "replay") == 0) {
        r->cmd = CMD_REPLAY;
        r->cli.command = "kjobs dlq replay";
    } else {
        return kj_cli_usage_error(&r->cli, "unknown subcommand '%s'", sub);
    }
    static const struct option longopts[] = {KJ_CLI_COMMON_LONGOPTS,
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"type", required_argument, NULL, OPT_TYPE},
                                             {"id", required_argument, NULL, OPT_ID},
                                             {"class", required_argument, NULL, OPT_CLASS},
                                             {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                                             {"again", no_argument, NULL, OPT_AGAIN},
                                             {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                             {NULL, 0, NULL, 0}};
    long long timeout_s = 60;
    int opt, rc;
    argc--;
    argv++;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&r->cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        switch (opt) {
        case OPT_JSON:
            r->json = true;
            break;
        case OPT_TYPE:
            r->f_type = optarg;
            break;
        case OPT_ID:
            r->f_id = optarg;
            break;
        case OPT_CLASS:
            r->f_class = optarg;
            break;
        case OPT_DRY_RUN:
            r->dry_run = true;
            break;
        case OPT_AGAIN:
            r->again = true;
            break;
        case OPT_TIMEOUT:
            if (kj_cli_parse_int(optarg, 1, 86400, &timeout_s))
                return kj_cli_usage_error(&r->cli, "--timeout: expected 1..86400 seconds");
            break;
        default:
            break;
        }
    }
    if (r->cli.help) {
        fputs(dlq_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (r->cmd == CMD_SHOW) {
        if (optind >= argc)
            return kj_cli_usage_error(&r->cli, "show needs an ID or PARTITION:OFFSET");
        if (r->f_type || r->f_id || r->f_class || r->dry_run || r->again || r->json)
            return kj_cli_usage_error(&r->cli, "show takes only an ID or PARTITION:OFFSET");
        r->f_id = argv[optind++];
        r->show_by_coords = parse_coords(r->f_id, &r->show_partition, &r->show_offset);
    } else if (r->cmd == CMD_LIST && (r->dry_run || r->again)) {
        return kj_cli_usage_error(&r->cli, "--dry-run and --again apply to replay only");
    } else if (r->cmd == CMD_REPLAY && r->json) {
        return kj_cli_usage_error(&r->cli, "--json applies to list only");
    }
    if (optind < argc) return kj_cli_usage_error(&r->cli, "unexpected argument '%s'", argv[optind]);
    const char *topic_flag = r->cli.topic; /* --topic names the DLQ here, not the main topic */
    if ((rc = kj_cli_load_config(&r->cli)) != KJ_EXIT_OK) return rc;
    r->topic = topic_flag ? topic_flag : r->cli.cfg.dlq_topic;
    snprintf(r->replay_group, sizeof(r->replay_group), "%s.dlq-replay", r->cli.cfg.group);
    r->deadline = kj_now_ms() + timeout_s * 1000;

    char err[512];
    if (kj_codec_init(err, sizeof(err)) != 0) {
        kj_log(KJ_LOG_ERROR, "codec init failed", "{s:s}", "error", err);
        kj_cli_free(&r->cli);
        return KJ_EXIT_RUNTIME;
    }
    if ((rc = open_consumer(r)) != KJ_EXIT_OK) {
        kj_cli_free(&r->cli);
        return rc;
    }
    kj_cli_install_signals();
    if ((rc = load_partitions(r)) != KJ_EXIT_OK) goto out;

    for (int p = 0; p < r->partitions; p++) {
        part_state *ps = &r->parts[p];
        if (r->cmd == CMD_SHOW && r->show_by_coords) {
            /* one record: read just [offset, offset+1) of that partition */
            if (p == r->show_partition && r->show_offset >= ps->low && r->show_offset < ps->end) {
                ps->start = r->show_offset;
                ps->end = r->show_offset + 1;
            } else {
                ps->start = ps->end;
            }
        } else if (r->cmd == CMD_REPLAY && !r->again && ps->committed > ps->low) {
            ps->start = ps->committed; /* everything below the marker is handled */
        } else {
            ps->start = ps->low;
        }
    }
    if ((rc = read_dlq(r)) != KJ_EXIT_OK) goto out;

    switch (r->cmd) {
    case CMD_LIST:
        if (!r->json) print_rows(r);
        fflush(stdout);
        break;
    case CMD_SHOW:
        if (!r->show_match) {
            kj_log(KJ_LOG_ERROR, "no such dead letter", "{s:s,s:s}", "topic", r->topic, "id",
                   r->f_id);
            rc = KJ_EXIT_RUNTIME;
            break;
        }
        if (r->show_matches > 1)
            kj_log(KJ_LOG_WARN,
                   "job dead-lettered more than once; showing the latest (use "
                   "PARTITION:OFFSET for the others; `dlq list --id` lists them)",
                   "{s:s,s:I}", "id", r->f_id, "matches", (json_int_t)r->show_matches);
        {
            char *text = json_dumps(r->show_match, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (text) puts(text);
            free(text);
        }
        fflush(stdout);
        break;
    case CMD_REPLAY:
        rc = do_replay(r);
        break;
    }
out:
    run_free(r);
    return rc;
}
