/*
 * cmd_dlq.c — `kjobs dlq list|show|replay|discard`: the command line on top of the dead-letter
 * model (processor/dlq_model.h), which owns everything about dead letters — reading the DLQ up to a
 * snapshot, each one's state, the JSON form, the selection, replay and its loop guard, the
 * replay and discard markers. What is left here is what only a terminal needs: the options, the
 * aligned table (columns sized over all rows, so rows are collected first), JSON lines, show's
 * pretty print, replay's output lines, and exit codes (0 ok; 1 a runtime failure, logged by the
 * model or here; 2 a usage or client-settings error, printed here). docs/dlq.md documents the
 * command.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/output.h"
#include "cli/commands.h"
#include "processor/dlq_model.h"
#include "processor/log.h"
#include "common/utf8.h"

#define ERROR_COLUMN_MAX 60

static const char dlq_usage[] =
    "usage: kjobs dlq list   [options] [--json] [--type T] [--id ID] [--class C]\n"
    "       kjobs dlq show   [options] ID|PARTITION:OFFSET\n"
    "       kjobs dlq replay [options] [--type T] [--id ID] [--class C] [--again] [--dry-run]\n"
    "       kjobs dlq discard [options] [--type T] [--id ID] [--class C] [--dry-run] --yes\n"
    "options: [-c FILE] [-b BROKERS] [-G GROUP] [-X prop=val] [--topic DLQ] [--timeout S]\n"
    "\n"
    "list    every dead letter: ID (the job id; PARTITION:OFFSET in the DLQ for a value that\n"
    "        does not decode), TYPE, CLASS, ATTEMPTS, ORIGINAL topic:partition:offset,\n"
    "        FAILED-AT, STATE (new, replayed, refailed, no-origin, discarded) and ERROR\n"
    "        (truncated).\n"
    "        --json prints one JSON object per dead letter with every field.\n"
    "show    one dead letter as pretty JSON (exit 1 when there is none).\n"
    "replay  produce the selected dead letters to their original topic (kjobs-original-topic),\n"
    "        same key and value, original headers kept, kjobs-* headers replaced by\n"
    "        kjobs-replayed-from and kjobs-replayed-at: the attempt count starts again at 1.\n"
    "        Prints the ids it replayed. Dead letters already replayed (recorded by the group\n"
    "        <kafka.group>.dlq-replay) and those of replayed jobs that failed again are skipped\n"
    "        unless --again. Dead letters written after replay started are never read.\n"
    "discard record the selected dead letters as discarded (the group\n"
    "        <kafka.group>.dlq-discard): never replayed again, not even with --again, listed\n"
    "        as discarded until retention removes them (Kafka cannot delete one record).\n"
    "        No undo; needs --yes (or --dry-run). Prints the ids it discarded.\n"
    "\n"
    "  --topic T          DLQ topic (default topics.dlq)\n"
    "  -G GROUP           kafka.group; the replay marker is the group GROUP.dlq-replay\n"
    "  --type T, --id ID, --class C\n"
    "                     select by job type, by job id (or PARTITION:OFFSET), by error class\n"
    "                     (retryable, permanent, decode, unknown-type, timeout,\n"
    "                     invalid-header, crash-loop); all must match\n"
    "  --json             (list) JSON lines\n"
    "  --dry-run          (replay, discard) print what would be done; produce and record nothing\n"
    "  --yes              (discard) confirm: discarding cannot be undone\n"
    "  --again            (replay) include dead letters already replayed or refailed\n"
    "  --timeout SECONDS  give up reading the DLQ after this long (default 60; exit 1)\n";

enum {
    OPT_JSON = KJ_OPT_COMMON_LAST + 1,
    OPT_TYPE,
    OPT_ID,
    OPT_CLASS,
    OPT_DRY_RUN,
    OPT_AGAIN,
    OPT_YES,
    OPT_TIMEOUT
};

typedef enum { CMD_LIST, CMD_SHOW, CMD_REPLAY, CMD_DISCARD } dlq_cmd;

typedef struct dlq_run {
    kj_cli cli;
    dlq_cmd cmd;
    const char *f_type, *f_id, *f_class;
    bool json, dry_run, again, yes;
    kj_dlq *dlq;
    kj_table *table; /* list: rows are collected to size the columns */
} dlq_run;

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- list --------------------------------------------------------------------------------- */

static const char *const list_heads[8] = {"ID",       "TYPE",      "CLASS", "ATTEMPTS",
                                          "ORIGINAL", "FAILED-AT", "STATE", "ERROR"};

static void add_row(dlq_run *r, json_t *o) {
    char *c[8];
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
    if (!r->table) r->table = kj_table_new(8, list_heads, "  ");
    kj_table_add(r->table, (const char *const *)c); /* copied, made terminal-safe */
    for (int i = 0; i < 8; i++)
        free(c[i]);
}

/* ---- what each subcommand prints -------------------------------------------------------- */

static bool on_listed(const kj_dlq_record *rec, void *opaque) {
    dlq_run *r = opaque;
    if (r->json)
        kj_print_json_line(rec->json, stdout);
    else
        add_row(r, rec->json);
    return true;
}

static int show(dlq_run *r, char *err, size_t err_size) {
    json_t *match;
    long matches;
    int rc = kj_dlq_find(r->dlq, r->f_id, &match, &matches, err, err_size);
    if (rc == KJ_DLQ_ERR_NOT_FOUND)
        kj_log(KJ_LOG_ERROR, "no such dead letter", "{s:s,s:s}", "topic", kj_dlq_topic(r->dlq),
               "id", r->f_id);
    if (rc != KJ_DLQ_OK) return rc;
    if (matches > 1)
        kj_log(KJ_LOG_WARN,
               "job dead-lettered more than once; showing the latest (use "
               "PARTITION:OFFSET for the others; `dlq list --id` lists them)",
               "{s:s,s:I}", "id", r->f_id, "matches", (json_int_t)matches);
    char *text = json_dumps(match, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text) puts(text);
    free(text);
    json_decref(match);
    fflush(stdout);
    return KJ_DLQ_OK;
}

/* A dry run prints what it would replay or discard (handle, DLQ place, destination); a replay
 * or a discard the handles it replayed or recorded. Flushed line by line: the model logs to stderr
 * right after. */
static void on_replayed(const kj_dlq_replay_item *item, void *opaque) {
    dlq_run *r = opaque;
    if (r->dry_run)
        printf("%s\t%s:%" PRId32 ":%" PRId64 "\t%s\n", item->handle, kj_dlq_topic(r->dlq),
               item->partition, item->offset, item->original_topic);
    else if (item->acknowledged)
        printf("%s\n", item->handle);
    fflush(stdout);
}

/* ---- entry point -------------------------------------------------------------------------- */

static int exit_code(int rc, const char *err) {
    if (rc == KJ_DLQ_OK) return KJ_EXIT_OK;
    if (rc != KJ_DLQ_ERR_CONFIG) return KJ_EXIT_RUNTIME; /* the model logged it */
    fprintf(stderr, "kjobs dlq: %s\n", err);
    return KJ_EXIT_USAGE;
}

int kj_cmd_dlq(int argc, char **argv) {
    dlq_run run_, *r = &run_;
    memset(r, 0, sizeof(*r));
    kj_cli_init(&r->cli, "kjobs dlq", dlq_usage);
    if (argc < 2)
        return kj_cli_usage_error(&r->cli, "missing subcommand (list, show, replay, discard)");
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
    } else if (strcmp(sub, "discard") == 0) {
        r->cmd = CMD_DISCARD;
        r->cli.command = "kjobs dlq discard";
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
                                             {"yes", no_argument, NULL, OPT_YES},
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
        case OPT_YES:
            r->yes = true;
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
        if (r->f_type || r->f_id || r->f_class || r->dry_run || r->again || r->json || r->yes)
            return kj_cli_usage_error(&r->cli, "show takes only an ID or PARTITION:OFFSET");
        r->f_id = argv[optind++];
    } else if (r->cmd == CMD_LIST && (r->dry_run || r->again || r->yes)) {
        return kj_cli_usage_error(&r->cli, "--dry-run, --again and --yes do not apply to list");
    } else if (r->cmd != CMD_LIST && r->json) {
        return kj_cli_usage_error(&r->cli, "--json applies to list only");
    }
    if (r->cmd != CMD_DISCARD && r->yes)
        return kj_cli_usage_error(&r->cli, "--yes applies to discard only");
    if (r->cmd == CMD_DISCARD && r->again)
        return kj_cli_usage_error(&r->cli, "--again applies to replay only");
    if (r->cmd == CMD_DISCARD && !r->yes && !r->dry_run)
        return kj_cli_usage_error(
            &r->cli, "discard cannot be undone: add --yes (or --dry-run to look first)");
    if (optind < argc) return kj_cli_usage_error(&r->cli, "unexpected argument '%s'", argv[optind]);
    const char *topic_flag = r->cli.topic; /* --topic names the DLQ here, not the main topic */
    if ((rc = kj_cli_load_config(&r->cli)) != KJ_EXIT_OK) return rc;
    kj_cli_install_signals();
    kj_dlq_params params = {.cfg = &r->cli.cfg,
                            .topic = topic_flag,
                            .deadline_ms = kj_now_ms() + timeout_s * 1000,
                            .stop = &kj_cli_stop_requested};
    char err[512] = "";
    if ((rc = kj_dlq_open(&params, &r->dlq, err, sizeof(err))) != KJ_DLQ_OK) {
        kj_cli_free(&r->cli);
        return exit_code(rc, err);
    }
    kj_dlq_filter filter = {.type = r->f_type,
                            .error_class = r->f_class,
                            .handles = r->f_id ? &r->f_id : NULL,
                            .handle_count = r->f_id ? 1 : 0};
    switch (r->cmd) {
    case CMD_LIST:
        rc = kj_dlq_list(r->dlq, &filter, on_listed, r, err, sizeof(err));
        if (rc == KJ_DLQ_OK && !r->json) {
            if (!r->table) r->table = kj_table_new(8, list_heads, "  ");
            kj_table_print(r->table, stdout);
        }
        fflush(stdout);
        break;
    case CMD_SHOW:
        rc = show(r, err, sizeof(err));
        break;
    case CMD_REPLAY:
        rc = kj_dlq_replay(r->dlq, &filter,
                           (r->again ? KJ_DLQ_REPLAY_AGAIN : 0u) |
                               (r->dry_run ? KJ_DLQ_REPLAY_DRY_RUN : 0u),
                           on_replayed, r, NULL, err, sizeof(err));
        break;
    case CMD_DISCARD:
        rc = kj_dlq_discard(r->dlq, &filter, r->dry_run ? KJ_DLQ_REPLAY_DRY_RUN : 0u, on_replayed,
                            r, NULL, err, sizeof(err));
        break;
    }
    kj_dlq_close(r->dlq);
    kj_table_free(r->table);
    kj_cli_free(&r->cli);
    return exit_code(rc, err);
}
