/*
 * cmd_enqueue.c — `kjobs enqueue`: produce jobs, from flags (--type/--count...) or from JSON
 * lines on stdin. Every job is encoded with the codec, keyed jobs go through kjobs' Java-
 * compatible partitioner, and the producer is idempotent with acks=all.
 *
 * stdout carries exactly the ids of jobs the broker acknowledged, one per line, in
 * acknowledgement order; everything else is a JSON log line on stderr. The exit status is 0
 * only if every job was acknowledged: a bad input line, a produce error or a job still
 * unacknowledged at the flush deadline makes it 1 (bad flags or config: 2).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "common/encoding.h"
#include "processor/header_contract.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "schemas/codec.h"

static const char enqueue_usage[] =
    "usage: kjobs enqueue [-c FILE] [-b BROKERS] [-X prop=val] [--topic T]\n"
    "                     --type T [--key K] [--payload TEXT|@FILE] [--meta k=v]... [--count N]\n"
    "                     [--delay DURATION | --at RFC3339]\n"
    "       kjobs enqueue [options] < jobs.jsonl\n"
    "\n"
    "Produces jobs and prints the id of each job the broker acknowledged.\n"
    "Without --type, reads JSON lines from stdin, one job per line:\n"
    "  {\"type\":\"T\", \"key\":\"K\", \"payload\":\"text\" | \"payload_b64\":\"...\",\n"
    "   \"meta\":{\"k\":\"v\"}, \"id\":\"optional\"}\n"
    "\n"
    "  --type T           job type (selects the handler)\n"
    "  --key K            message key: same key, same partition, handled in order\n"
    "  --payload TEXT     payload text; @FILE reads the payload bytes from FILE\n"
    "  --meta k=v         meta entry (repeatable), e.g. traceparent=...\n"
    "  --count N          enqueue N copies (distinct ids; default 1)\n"
    "  --encoding E       binary (default) or single-object\n"
    "  --delay DURATION   run no earlier than DURATION from now (10s, 10m, 1h30m; at most\n"
    "                     schedule.max_delay): sets the kjobs-run-at header\n"
    "  --at RFC3339       run no earlier than this time, e.g. 2026-12-01T18:00:00Z or\n"
    "                     2026-12-01T19:00:00+01:00 (not with --delay; a past time runs now)\n"
    "  --topic T          target topic (default topics.main)\n"
    "  -b BROKERS         bootstrap servers (overrides kafka.bootstrap)\n"
    "  -X prop=value      librdkafka property (repeatable)\n"
    "  -c FILE            configuration file\n"
    "Exit status: 0 all acknowledged; 1 some job not enqueued; 2 usage or config error.\n";

enum {
    OPT_TYPE = KJ_OPT_COMMON_LAST + 1,
    OPT_KEY,
    OPT_PAYLOAD,
    OPT_META,
    OPT_COUNT,
    OPT_ENCODING,
    OPT_DELAY,
    OPT_AT
};

#define MAX_FLAG_META 32

typedef struct enqueue_state {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    kj_encoding encoding;
    int64_t delay_ms; /* --delay, or -1 */
    int64_t at_ms;    /* --at, or -1 */
    long long produced, acked, failed, rejected;
} enqueue_state;

/* @locality the enqueue thread, inside rd_kafka_poll/flush */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    enqueue_state *st = opaque;
    char *id = msg->_private;
    if (msg->err) {
        st->failed++;
        kj_log(KJ_LOG_ERROR, "job not enqueued", "{s:s,s:s,s:s}", "id", id ? id : "", "topic",
               rd_kafka_topic_name(msg->rkt), "error", rd_kafka_err2str(msg->err));
    } else {
        st->acked++;
        fputs(id, stdout);
        fputc('\n', stdout);
    }
    free(id);
}

static int produce_job(enqueue_state *st, const kj_job_record *job, const void *key,
                       size_t key_len) {
    uint8_t *value;
    size_t value_len;
    char err[256];
    if (kj_job_encode(job, st->encoding, &value, &value_len, err, sizeof(err)) != 0) {
        kj_log(KJ_LOG_ERROR, "job not encoded", "{s:s,s:s}", "id", job->id, "error", err);
        st->rejected++;
        return -1;
    }
    char *id = strdup(job->id);
    for (;;) {
        /* --delay/--at: the due time travels as kjobs-run-at (header_contract.h) */
        rd_kafka_headers_t *hdrs = NULL;
        if (st->delay_ms >= 0 || st->at_ms >= 0) {
            hdrs = rd_kafka_headers_new(1);
            kj_hdr_set_int(hdrs, KJ_HDR_RUN_AT,
                           st->at_ms >= 0 ? st->at_ms : kj_now_ms() + st->delay_ms);
        }
        rd_kafka_resp_err_t e = rd_kafka_producev(
            st->rk, RD_KAFKA_V_RKT(st->rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_VALUE(value, value_len),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_OPAQUE(id), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_END);
        if (!e) break; /* the headers are the message's now */
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && !kj_cli_stop_requested) {
            rd_kafka_poll(st->rk, 100); /* wait for delivery reports to free queue space */
            continue;
        }
        kj_log(KJ_LOG_ERROR, "job not enqueued", "{s:s,s:s}", "id", id, "error",
               rd_kafka_err2str(e));
        free(value);
        free(id);
        st->failed++;
        return -1;
    }
    st->produced++;
    rd_kafka_poll(st->rk, 0);
    return 0;
}

static int read_payload_arg(const char *arg, uint8_t **out, size_t *len) {
    if (arg[0] != '@') {
        *out = (uint8_t *)strdup(arg);
        *len = strlen(arg);
        return 0;
    }
    FILE *f = fopen(arg + 1, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    if (rc) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Parse one stdin JSON line into a job and produce it. Returns 0, or -1 (reported). */
static int enqueue_json_line(enqueue_state *st, const char *line, long lineno) {
    json_error_t jerr;
    json_t *obj = json_loads(line, 0, &jerr);
    const char *problem = NULL;
    uint8_t *payload = NULL;
    size_t payload_len = 0;
    kj_meta_entry meta[64];
    size_t meta_count = 0;
    int rc = -1;
    if (!obj || !json_is_object(obj)) {
        problem = obj ? "expected a JSON object" : jerr.text;
        goto done;
    }
    json_t *type = json_object_get(obj, "type"), *key = json_object_get(obj, "key");
    json_t *id = json_object_get(obj, "id"), *pl = json_object_get(obj, "payload");
    json_t *pl64 = json_object_get(obj, "payload_b64"), *jmeta = json_object_get(obj, "meta");
    if (!json_is_string(type) || json_string_length(type) == 0) {
        problem = "\"type\" must be a non-empty string";
        goto done;
    }
    if (key && !json_is_null(key) && !json_is_string(key)) {
        problem = "\"key\" must be a string";
        goto done;
    }
    if (id && !json_is_string(id)) {
        problem = "\"id\" must be a string";
        goto done;
    }
    if (pl && pl64) {
        problem = "give \"payload\" or \"payload_b64\", not both";
        goto done;
    }
    if (pl && !json_is_null(pl)) {
        if (!json_is_string(pl)) {
            problem = "\"payload\" must be a string (use payload_b64 for bytes)";
            goto done;
        }
        payload_len = json_string_length(pl);
        payload = malloc(payload_len + 1);
        memcpy(payload, json_string_value(pl), payload_len);
    } else if (pl64) {
        if (!json_is_string(pl64) ||
            kj_base64_decode(json_string_value(pl64), json_string_length(pl64), &payload,
                             &payload_len) != 0) {
            problem = "\"payload_b64\" is not valid base64";
            goto done;
        }
    }
    if (jmeta && !json_is_null(jmeta)) {
        if (!json_is_object(jmeta)) {
            problem = "\"meta\" must be an object of strings";
            goto done;
        }
        const char *mk;
        json_t *mv;
        json_object_foreach(jmeta, mk, mv) {
            if (!json_is_string(mv) || meta_count == 64) {
                problem = "\"meta\" must be an object of at most 64 string values";
                goto done;
            }
            meta[meta_count].key = mk;
            meta[meta_count].value = json_string_value(mv);
            meta_count++;
        }
    }
    char generated_id[37];
    if (!id) kj_job_id_new(generated_id);
    kj_job_record job = {
        .id = id ? json_string_value(id) : generated_id,
        .type = json_string_value(type),
        .payload = payload ? payload : (const uint8_t *)"",
        .payload_len = payload_len,
        .created_at = kj_now_ms(),
        .meta = meta,
        .meta_count = meta_count,
    };
    const char *key_str = json_is_string(key) ? json_string_value(key) : NULL;
    rc = produce_job(st, &job, key_str, key_str ? json_string_length(key) : 0);
done:
    if (problem) {
        kj_log(KJ_LOG_ERROR, "input line rejected", "{s:I,s:s}", "line", (json_int_t)lineno,
               "error", problem);
        st->rejected++;
    }
    free(payload);
    json_decref(obj);
    return rc;
}

int kj_cmd_enqueue(int argc, char **argv) {
    kj_cli cli;
    kj_cli_init(&cli, "kjobs enqueue", enqueue_usage);
    static const struct option longopts[] = {KJ_CLI_COMMON_LONGOPTS,
                                             {"type", required_argument, NULL, OPT_TYPE},
                                             {"key", required_argument, NULL, OPT_KEY},
                                             {"payload", required_argument, NULL, OPT_PAYLOAD},
                                             {"meta", required_argument, NULL, OPT_META},
                                             {"count", required_argument, NULL, OPT_COUNT},
                                             {"encoding", required_argument, NULL, OPT_ENCODING},
                                             {"delay", required_argument, NULL, OPT_DELAY},
                                             {"at", required_argument, NULL, OPT_AT},
                                             {NULL, 0, NULL, 0}};
    const char *type = NULL, *key = NULL, *payload_arg = NULL;
    kj_meta_entry meta[MAX_FLAG_META];
    char *meta_copies[MAX_FLAG_META];
    size_t meta_count = 0;
    long long count = 1;
    enqueue_state st = {.encoding = KJ_ENCODING_BINARY, .delay_ms = -1, .at_ms = -1};
    const char *delay_arg = NULL, *at_arg = NULL;
    int opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        switch (opt) {
        case OPT_TYPE:
            type = optarg;
            break;
        case OPT_KEY:
            key = optarg;
            break;
        case OPT_PAYLOAD:
            payload_arg = optarg;
            break;
        case OPT_COUNT:
            if (kj_cli_parse_int(optarg, 1, 100000000, &count))
                return kj_cli_usage_error(&cli, "--count: expected 1..100000000, got '%s'", optarg);
            break;
        case OPT_ENCODING:
            if (kj_encoding_parse(optarg, &st.encoding))
                return kj_cli_usage_error(&cli, "--encoding: expected binary or single-object");
            break;
        case OPT_DELAY:
            if (kj_duration_parse(optarg, &st.delay_ms) != 0 || st.delay_ms < 0)
                return kj_cli_usage_error(&cli,
                                          "--delay: expected a duration such as 30s, 10m or "
                                          "1h30m, got '%s'",
                                          optarg);
            delay_arg = optarg;
            break;
        case OPT_AT:
            if (kj_parse_rfc3339_ms(optarg, &st.at_ms) != 0)
                return kj_cli_usage_error(&cli,
                                          "--at: expected an RFC 3339 time such as "
                                          "2026-12-01T18:00:00Z or 2026-12-01T19:00:00+01:00, "
                                          "got '%s'",
                                          optarg);
            at_arg = optarg;
            break;
        case OPT_META: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || meta_count == MAX_FLAG_META)
                return kj_cli_usage_error(&cli, "--meta: expected k=v (at most %d)", MAX_FLAG_META);
            meta_copies[meta_count] = strndup(optarg, (size_t)(eq - optarg));
            meta[meta_count].key = meta_copies[meta_count];
            meta[meta_count].value = eq + 1;
            meta_count++;
            break;
        }
        }
    }
    if (cli.help) {
        fputs(enqueue_usage, stdout);
        return KJ_EXIT_OK;
    }
    if (optind < argc) return kj_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    if (!type && (key || payload_arg || meta_count || count != 1))
        return kj_cli_usage_error(&cli, "--key/--payload/--meta/--count need --type");
    if (delay_arg && at_arg)
        return kj_cli_usage_error(&cli, "--delay and --at are mutually exclusive");
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;
    if (delay_arg || at_arg) {
        /* refuse here what a worker would dead-letter: due further ahead than it may hold */
        int64_t max = kj_config_schedule_max_delay(&cli.cfg);
        int64_t ahead = at_arg ? st.at_ms - kj_now_ms() : st.delay_ms;
        if (ahead > max) {
            fprintf(stderr,
                    "kjobs enqueue: %s %s: due in %lld ms, more than schedule.max_delay "
                    "(%lld ms); a worker would dead-letter it\n",
                    at_arg ? "--at" : "--delay", at_arg ? at_arg : delay_arg, (long long)ahead,
                    (long long)max);
            kj_cli_free(&cli);
            return KJ_EXIT_USAGE;
        }
    }

    char err[512];
    uint8_t *payload = NULL;
    size_t payload_len = 0;
    if (payload_arg && read_payload_arg(payload_arg, &payload, &payload_len) != 0) {
        fprintf(stderr, "kjobs enqueue: --payload: cannot read %s\n", payload_arg + 1);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    if (kj_codec_init(err, sizeof(err)) != 0) {
        kj_log(KJ_LOG_ERROR, "codec init failed", "{s:s}", "error", err);
        kj_cli_free(&cli);
        return KJ_EXIT_RUNTIME;
    }
    rd_kafka_conf_t *conf = kj_kafka_producer_conf_new(&cli.cfg, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "kjobs enqueue: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &st);
    kj_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
    st.rk = kj_kafka_producer_new(conf, err, sizeof(err));
    if (!st.rk) {
        fprintf(stderr, "kjobs enqueue: %s\n", err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    st.rkt = rd_kafka_topic_new(st.rk, cli.topic, NULL);
    kj_cli_install_signals();

    if (type) {
        for (long long i = 0; i < count && !kj_cli_stop_requested; i++) {
            char id[37];
            kj_job_id_new(id);
            kj_job_record job = {.id = id,
                                 .type = type,
                                 .payload = payload ? payload : (const uint8_t *)"",
                                 .payload_len = payload_len,
                                 .created_at = kj_now_ms(),
                                 .meta = meta,
                                 .meta_count = meta_count};
            produce_job(&st, &job, key, key ? strlen(key) : 0);
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        long lineno = 0;
        while (!kj_cli_stop_requested && (n = getline(&line, &cap, stdin)) != -1) {
            lineno++;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            if (n == 0) continue;
            enqueue_json_line(&st, line, lineno);
        }
        free(line);
    }

    /* Wait for every delivery report; give up after 60 s (or a second signal). */
    long long deadline = kj_now_ms() + 60000;
    while (rd_kafka_outq_len(st.rk) > 0 && kj_now_ms() < deadline)
        rd_kafka_poll(st.rk, 100);
    if (rd_kafka_outq_len(st.rk) > 0) {
        /* purged messages get a delivery report with an error: counted as failed, ids freed */
        rd_kafka_purge(st.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(st.rk, 0);
    }
    long long unacked = st.produced - st.acked - st.failed;
    fflush(stdout);
    int exit_code = KJ_EXIT_OK;
    if (st.failed || st.rejected || unacked || kj_cli_stop_requested) {
        kj_log(KJ_LOG_ERROR, "some jobs were not enqueued", "{s:I,s:I,s:I,s:I}", "acked",
               (json_int_t)st.acked, "failed", (json_int_t)st.failed, "rejected",
               (json_int_t)st.rejected, "unacknowledged", (json_int_t)unacked);
        exit_code = KJ_EXIT_RUNTIME;
    } else {
        kj_log(KJ_LOG_INFO, "jobs enqueued", "{s:I,s:s}", "count", (json_int_t)st.acked, "topic",
               cli.topic);
    }
    rd_kafka_topic_destroy(st.rkt);
    rd_kafka_destroy(st.rk);
    free(payload);
    for (size_t i = 0; i < meta_count; i++)
        free(meta_copies[i]);
    kj_cli_free(&cli);
    return exit_code;
}
