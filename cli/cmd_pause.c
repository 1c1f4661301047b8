/*
 * cmd_pause.c — `kjobs pause TARGET` and `kjobs resume TARGET | --breaker`: the operator's
 * controls over the whole consumer group (processor/group_control.h). One file for both: they
 * are the same command writing opposite records — a pause value, or a tombstone under the same
 * key — plus resume's --breaker, which asks every worker whose circuit breaker is open to close
 * it (what SIGUSR1 does to one worker). They only write to the control topic and wait for the
 * broker's acknowledgement; the workers apply it within a poll-loop tick of reading it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "processor/group_control.h"
#include "processor/log.h"
#include "processor/topic_layout.h"

static const char pause_usage[] =
    "usage: kjobs pause [-c FILE] [-b BROKERS] [-X prop=val] [--reason TEXT] [--timeout SECONDS]\n"
    "                   TOPIC[:PARTITION]\n"
    "\n"
    "Pauses a topic, or one partition of it, for every worker of every group consuming it,\n"
    "until `kjobs resume` — across restarts and rebalances. Jobs already running finish and are\n"
    "committed; nothing else of it runs. TOPIC is the main topic or a retry-ladder topic of\n"
    "the configuration. Written to the control topic <topics.main>.control (docs/operations.md,\n"
    "\"Operator controls\").\n"
    "\n"
    "  --reason TEXT      why, shown by `kjobs pauses` and the console (at most 512 bytes)\n"
    "  --timeout SECONDS  wait this long for the broker's acknowledgement (default 30)\n";

static const char resume_usage[] =
    "usage: kjobs resume [-c FILE] [-b BROKERS] [-X prop=val] [--timeout SECONDS]\n"
    "                    TOPIC[:PARTITION] | --breaker\n"
    "\n"
    "Ends a pause of `kjobs pause` (the same TOPIC or TOPIC:PARTITION: a partition paused with\n"
    "its whole topic resumes with the topic). With --breaker instead: every worker whose DLQ\n"
    "circuit breaker is open closes it, as SIGUSR1 does to one worker.\n"
    "\n"
    "  --breaker          resume the open circuit breakers of the group's workers\n"
    "  --timeout SECONDS  wait this long for the broker's acknowledgement (default 30)\n";

enum { OPT_REASON = KJ_OPT_COMMON_LAST + 1, OPT_TIMEOUT, OPT_BREAKER };

/* What stays paused after a resume, said on stderr: a partition resumed while its whole topic
 * is paused, or partitions with pauses of their own when their topic is resumed. */
static void warn_still_paused(const kj_config *cfg, const kj_ctl_key *k) {
    char err[512];
    kj_ctl_follower *f = kj_ctl_follower_new(cfg, err, sizeof(err));
    if (!f) return;
    if (kj_ctl_follower_load(f, kj_now_ms() + 10000, err, sizeof(err)) == 0) {
        size_t n;
        const kj_ctl_pause *list = kj_ctl_state_list(kj_ctl_follower_state(f), &n);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(list[i].topic, k->topic) != 0) continue;
            if (k->partition >= 0 && list[i].partition < 0)
                fprintf(stderr,
                        "kjobs resume: note: the whole topic %s is paused too; partition %d stays "
                        "paused until `kjobs resume %s`\n",
                        k->topic, (int)k->partition, k->topic);
            else if (k->partition < 0 && list[i].partition >= 0)
                fprintf(stderr,
                        "kjobs resume: note: partition %s:%d has a pause of its own and stays "
                        "paused until `kjobs resume %s:%d`\n",
                        k->topic, (int)list[i].partition, k->topic, (int)list[i].partition);
        }
    }
    kj_ctl_follower_free(f);
}

static int control_command(int argc, char **argv, bool pause) {
    const char *name = pause ? "kjobs pause" : "kjobs resume";
    const char *usage = pause ? pause_usage : resume_usage;
    kj_cli cli;
    kj_cli_init(&cli, name, usage);
    static const struct option pause_opts[] = {KJ_CLI_COMMON_LONGOPTS,
                                               {"reason", required_argument, NULL, OPT_REASON},
                                               {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                               {NULL, 0, NULL, 0}};
    static const struct option resume_opts[] = {KJ_CLI_COMMON_LONGOPTS,
                                                {"breaker", no_argument, NULL, OPT_BREAKER},
                                                {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                                {NULL, 0, NULL, 0}};
    const char *reason = "";
    bool breaker = false;
    long long timeout_s = 30;
    int opt, rc;
    while ((opt = getopt_long(argc, argv, KJ_CLI_COMMON_SHORTOPTS, pause ? pause_opts : resume_opts,
                              NULL)) != -1) {
        if ((rc = kj_cli_common_option(&cli, opt, optarg)) < 0) return KJ_EXIT_USAGE;
        if (rc) continue;
        if (opt == OPT_REASON) {
            reason = optarg;
            if (strlen(reason) > KJ_CTL_MAX_REASON)
                return kj_cli_usage_error(&cli, "--reason: at most %d bytes", KJ_CTL_MAX_REASON);
        } else if (opt == OPT_BREAKER) {
            breaker = true;
        } else if (opt == OPT_TIMEOUT) {
            if (kj_cli_parse_int(optarg, 1, 3600, &timeout_s))
                return kj_cli_usage_error(&cli, "--timeout: expected 1..3600 seconds");
        }
    }
    if (cli.help) {
        fputs(usage, stdout);
        return KJ_EXIT_OK;
    }
    int targets = argc - optind;
    if (breaker ? targets != 0 : targets != 1)
        return kj_cli_usage_error(&cli, breaker ? "--breaker takes no TOPIC"
                                                : "expected one TOPIC or TOPIC:PARTITION");
    char err[512];
    kj_ctl_key k;
    if (breaker) {
        memset(&k, 0, sizeof(k));
        k.kind = KJ_CTL_BREAKER_RESUME;
        k.partition = -1;
    } else if (kj_ctl_target_parse(argv[optind], &k, err, sizeof(err)) != 0) {
        return kj_cli_usage_error(&cli, "%s", err);
    }
    if ((rc = kj_cli_load_config(&cli)) != KJ_EXIT_OK) return rc;
    if (cli.topic && strcmp(cli.topic, cli.cfg.main_topic) != 0 &&
        kj_config_set(&cli.cfg, "topics.main", cli.topic, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: --topic: %s\n", name, err);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    /* a pause names what this configuration consumes; a resume may lift any pause in force
     * (one written by another client, of a topic since deleted), kj_ctl_write checks that */
    if (!breaker && pause && !kj_topic_is_consumed(&cli.cfg, k.topic)) {
        fprintf(stderr,
                "%s: %s is not the main topic or a retry-ladder topic of this configuration "
                "(topics.main = %s)\n",
                name, k.topic, cli.cfg.main_topic);
        kj_cli_free(&cli);
        return KJ_EXIT_USAGE;
    }
    kj_ctl_value v;
    memset(&v, 0, sizeof(v));
    v.paused = pause;
    v.at = kj_now_ms();
    kj_ctl_whoami(v.by, sizeof(v.by));
    snprintf(v.reason, sizeof(v.reason), "%s", reason);
    int w = kj_ctl_write(&cli.cfg, &k, pause || breaker ? &v : NULL, (int)timeout_s * 1000, NULL,
                         err, sizeof(err));
    int exit_code = KJ_EXIT_OK;
    if (w != 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit_code = w == 2 ? KJ_EXIT_USAGE : KJ_EXIT_RUNTIME;
    } else if (breaker) {
        printf("breaker resume requested\n");
        kj_log(KJ_LOG_INFO, "control written", "{s:s,s:s}", "key", KJ_CTL_BREAKER_KEY, "by", v.by);
    } else {
        if (k.partition >= 0)
            printf("%s %s:%d\n", pause ? "paused" : "resumed", k.topic, (int)k.partition);
        else
            printf("%s %s\n", pause ? "paused" : "resumed", k.topic);
        kj_log(KJ_LOG_INFO, "control written", "{s:s,s:s,s:i,s:s}", "action",
               pause ? "pause" : "resume", "topic", k.topic, "partition", (int)k.partition, "by",
               v.by);
        if (!pause) warn_still_paused(&cli.cfg, &k);
    }
    fflush(stdout);
    kj_cli_free(&cli);
    return exit_code;
}

int kj_cmd_pause(int argc, char **argv) {
    return control_command(argc, argv, true);
}

int kj_cmd_resume(int argc, char **argv) {
    return control_command(argc, argv, false);
}
