/*
 * exec_handler.h — the "any language" handler (handlers.exec): job batches go to a long-lived
 * child process per worker thread over JSON lines (or binary frames, below) on its stdin/stdout.
 * It plugs into the registry as the fallback batch handler (kj_handlers_set_fallback), so it
 * receives every type no built-in or plugin handler claims, or only handlers.exec_types when set.
 *
 * PROTOCOL (fixed shape, see docs and examples/exec/README.md)
 *   kjobs writes one line per batch:
 *     {"batch_id":N,"batch":[{"id","type","key","topic","partition","offset","attempt","meta":{},
 *      "payload_b64"}]}
 *   `batch_id` is a positive integer, new for every request to a child (never reused by it).
 *   `key` is the Kafka key as a string, or null when the job has none. A key that is not valid
 *   UTF-8 is sent as null plus an extra "key_b64" field (standard base64).
 *   The child answers with one line:
 *     {"batch_id":N,"results":[{"id","status":"ok"|"retry"|"fail","error":"...",
 *      "retry_after_ms":N}]}
 *   Results are matched to jobs by id (jobs sharing an id take results in order). A job without
 *   a result is retried with error "no result from handler"; results with unknown ids are
 *   ignored. `error` and `retry_after_ms` are optional (retry_after_ms: a non-negative number
 *   of milliseconds, fractions dropped, or null; it only matters with status "retry"). Extra
 *   fields are ignored.
 *
 * BINARY FRAMING (handlers.exec_protocol = "binary"; byte layout in examples/exec/README.md)
 *   The same exchange without JSON or base64: after starting, the child writes the ASCII line
 *   "kjobs-exec binary 1\n" (KJ_EXEC_BINARY_HELLO) and from then on both sides write frames:
 *   a u32 length (little-endian, bytes that follow) and a body. Request body: 'B', u64
 *   batch_id, u32 job count, then per job a 56-byte fixed header (numbers and field lengths)
 *   followed by the field bytes, the payload last and as it is. Reply body: 'R', u64 batch_id,
 *   u32 result count (at most the job count), then per job in batch order (result i is job i;
 *   jobs past the count: "no result from handler") a status byte 0 ok / 1 retry / 2 fail, and
 *   for 1 and 2 an i64 retry_after_ms (-1: none) and a u32-length error text. The child is
 *   untrusted: a missing hello, a length above max_reply_bytes, a wrong kind byte, a status
 *   outside 0..2, a field running past its frame or bytes left over in it are an invalid reply
 *   (retryable, the child is killed and restarted, as for a bad JSON line), never a crash. A
 *   well-formed frame with another batch_id is discarded and counted like a stray JSON reply.
 *
 * CORRELATION (a reply never counts for another batch)
 *   A reply line is the pending batch's reply when its batch_id equals the request's. A line
 *   with any other batch_id (a repeated or late reply, an id never sent) is discarded with the
 *   warning "exec child reply discarded" and counted in kjobs_exec_stray_replies_total, and
 *   kjobs keeps reading until the real reply or the timeout. Children that do not echo
 *   batch_id (older ones) are still served: their line is the reply unless it has results and
 *   none of them names a job of the pending batch — then it is a leftover of an earlier batch
 *   and discarded the same way. (Such a child that repeats a reply whose ids recur in the next
 *   batch cannot be told apart; echo batch_id.) Complete lines already waiting when a batch
 *   starts are discarded before the request is written ("exec child wrote output between
 *   batches; discarded", also counted).
 *
 * FAILURES
 *   - No complete reply line within handlers.exec_timeout (measured from the first byte of the
 *     request): every job of the batch fails with outcome timeout (error class "timeout"), the
 *     child's process group is killed, and a new child starts on the thread's next batch.
 *   - The child exits, closes stdout, cannot be started, or answers something that is not one
 *     JSON line of the shape above (or longer than max_reply_bytes): the batch fails as a
 *     retryable error and the child is killed and restarted — not before a backoff that starts
 *     at backoff_initial_ms and doubles up to backoff_max_ms (reset by a successful batch). A
 *     batch arriving during the backoff waits for it (the worker thread sleeps; it never spins
 *     and never burns the jobs' attempts on a child that is known to be down).
 *   - Output that answers no pending batch is discarded with a warning (CORRELATION above).
 *
 * CHILD PROCESS
 *   Started with posix_spawnp(argv) on a thread's first batch, in its own process group (a
 *   terminal's Ctrl-C reaches kjobs, which drains, not the children), default signal
 *   dispositions and an empty signal mask, and kjobs' environment minus KJOBS_RDKAFKA_*
 *   (librdkafka properties, often credentials). Its stderr is read without blocking during and
 *   before every batch and at exit, and every line is logged at info as
 *   {"msg":"exec child stderr","child_pid":N,"stream":"stderr","line":"..."}.
 *   On kj_exec_handler_free every child's stdin is closed, children get shutdown_wait_ms to
 *   exit, then their process groups are SIGKILLed. kjobs ignores SIGPIPE; a write to a dead
 *   child is an EPIPE and handled as "child exited".
 *
 * @locality kj_exec_handler_new/_register/_free: main thread, before workers start / after
 *           they stopped. The batch function: any worker thread; each thread only ever touches
 *           its own child (no lock on the hot path).
 */
#ifndef KJOBS_EXEC_HANDLER_H
#define KJOBS_EXEC_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"
#include "processor/handlers.h"

#define KJ_EXEC_DEFAULT_BACKOFF_INITIAL_MS 100
#define KJ_EXEC_DEFAULT_BACKOFF_MAX_MS     10000
#define KJ_EXEC_DEFAULT_MAX_REPLY_BYTES    ((size_t)64 << 20)
#define KJ_EXEC_DEFAULT_SHUTDOWN_WAIT_MS   2000
/** The line a binary-framing child writes first on stdout (exactly these bytes). */
#define KJ_EXEC_BINARY_HELLO "kjobs-exec binary 1\n"

/** Wire format between kjobs and the child (handlers.exec_protocol). */
typedef enum { KJ_EXEC_JSON_LINES = 0, KJ_EXEC_BINARY = 1 } kj_exec_protocol;

/** Longest stderr line logged as one entry; longer lines are split. */
#define KJ_EXEC_STDERR_LINE_MAX 4096

typedef struct kj_exec_handler kj_exec_handler;

/** Everything the handler needs; zero fields take the defaults above. */
typedef struct kj_exec_options {
    char *const *argv; /* program and arguments (copied); argv[0] looked up in PATH */
    size_t argc;
    int64_t timeout_ms; /* per batch; must be > 0 */
    int64_t backoff_initial_ms, backoff_max_ms;
    size_t max_reply_bytes;
    int64_t shutdown_wait_ms;
    char *const *types; /* types routed to the child (copied); NULL/0 = every unclaimed type */
    size_t type_count;
    kj_exec_protocol protocol; /* default (0): JSON lines */
} kj_exec_options;

/** From the configuration: handlers.exec, _types, _timeout and _protocol. NULL with errstr. */
kj_exec_handler *kj_exec_handler_new(const kj_config *cfg, char *errstr, size_t errstr_size);
/**
 * From explicit options (tests). Fails when argv is empty or argv[0] is not an executable
 * found in PATH; the message never quotes the command (it may carry secrets).
 */
kj_exec_handler *kj_exec_handler_new_opts(const kj_exec_options *opts, char *errstr,
                                          size_t errstr_size);

/** Install as the registry's fallback batch handler for the configured types. */
void kj_exec_handler_register(kj_exec_handler *h, kj_handler_registry *reg);

/** The batch handler itself (what the registry calls; `opaque` is the kj_exec_handler). */
void kj_exec_handler_batch(const kjobs_job_t *const *jobs, kjobs_result_t *const *results,
                           size_t count, void *opaque);

/** Pid of the calling thread's child, or -1 when it has none running (tests, diagnostics). */
int kj_exec_handler_child_pid(kj_exec_handler *h);

/** Stop every child (close stdin, wait, SIGKILL) and free. No batch may be running. NULL ok. */
void kj_exec_handler_free(kj_exec_handler *h);

#endif /* KJOBS_EXEC_HANDLER_H */
