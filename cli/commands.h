/*
 * commands.h — entry points of the `kjobs` subcommands, one per cmd_*.c file. Each parses its
 * own argv (argv[0] is the subcommand name) and returns the process exit code.
 */
#ifndef KJOBS_COMMANDS_H
#define KJOBS_COMMANDS_H

int kj_cmd_broker(int argc, char **argv);
int kj_cmd_enqueue(int argc, char **argv);
int kj_cmd_peek(int argc, char **argv);
int kj_cmd_topics(int argc, char **argv);
int kj_cmd_schema(int argc, char **argv);
int kj_cmd_run(int argc, char **argv);
int kj_cmd_dlq(int argc, char **argv);
int kj_cmd_lag(int argc, char **argv);
int kj_cmd_version(int argc, char **argv);
int kj_cmd_cron(int argc, char **argv);
int kj_cmd_ui(int argc, char **argv);
int kj_cmd_pause(int argc, char **argv);
int kj_cmd_resume(int argc, char **argv);
int kj_cmd_pauses(int argc, char **argv);

#endif /* KJOBS_COMMANDS_H */
