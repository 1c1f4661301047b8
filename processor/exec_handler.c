/*
 * exec_handler.c — the handlers.exec batch handler: one long-lived child per worker thread,
 * JSON lines or binary frames on its stdin/stdout, stderr relayed to kjobs' log. Protocol, failure
 * handling and the child's environment are described in exec_handler.h.
 *
 * Threading: a child belongs to the thread that started it (a _Thread_local table maps the
 * handler's unique id to the thread's child), so the batch path takes no lock. Every child is
 * also linked into its handler's list (under a mutex, only when a child record is created) so
 * kj_exec_handler_free can stop them all. A TLS entry is only dereferenced when its id
 * matches, and ids are never reused, so entries of freed handlers are harmless.
 *
 * I/O: the child's three pipe ends are non-blocking and a batch is one poll(2) loop that writes
 * the request, reads the reply and drains stderr at the same time, so neither a large batch
 * nor a chatty stderr can deadlock against the child, and the deadline covers all of it.
 */
#include "processor/exec_handler.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/encoding.h"
#include "common/hash.h"
#include "processor/log.h"
#include "processor/metrics.h"

extern char **environ;

#define READ_CHUNK    65536
#define DEATH_WAIT_MS 1000 /* after EOF/EPIPE: time for the child to exit on its own */
#define TLS_SLOTS     8

typedef struct exec_child {
    kj_exec_handler *owner;
    pid_t pid; /* -1 when not running */
    int in_fd, out_fd, err_fd;
    char *out_buf; /* reply bytes read so far */
    size_t out_len, out_cap;
    char err_line[KJ_EXEC_STDERR_LINE_MAX];
    size_t err_len;
    int64_t backoff_ms;    /* delay applied at the next failure */
    int64_t not_before_ms; /* monotonic: no (re)start before this */
    uint64_t batch_seq;    /* batch_id of the last request sent (never reused by this child) */
    bool hello_seen;       /* binary framing: the child's hello line was read */
    struct exec_child *next;
} exec_child;

struct kj_exec_handler {
    uint64_t id;
    char **argv; /* NULL-terminated */
    char **types;
    size_t type_count;
    char **envp; /* NULL-terminated; environ minus KJOBS_RDKAFKA_* */
    int64_t timeout_ms, backoff_initial_ms, backoff_max_ms, shutdown_wait_ms;
    size_t max_reply;
    kj_exec_protocol protocol;
    pthread_mutex_t lock;
    exec_child *children;
};

static _Thread_local struct {
    uint64_t id;
    exec_child *child;
} tls_children[TLS_SLOTS];
static _Thread_local unsigned tls_evict;
static atomic_uint_fast64_t next_handler_id = 1;

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static char **strv_copy(char *const *v, size_t n) {
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = strdup(v[i]);
    return out;
}

static void strv_free(char **v) {
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* argv[0] as posix_spawnp will find it: a path with '/', or an executable file in $PATH. */
static bool program_exists(const char *name) {
    struct stat st;
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 && stat(name, &st) == 0 && !S_ISDIR(st.st_mode);
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/bin:/usr/bin";
    char buf[4096];
    for (const char *p = path;;) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        int n = snprintf(buf, sizeof(buf), "%.*s/%s", (int)dlen, dlen ? p : ".", name);
        if (n > 0 && (size_t)n < sizeof(buf) && access(buf, X_OK) == 0 && stat(buf, &st) == 0 &&
            !S_ISDIR(st.st_mode))
            return true;
        if (!end) return false;
        p = end + 1;
    }
}

static json_t *base64_json(const void *data, size_t len) {
    char *b64 = kj_base64_encode(data, len);
    json_t *j = json_string(b64);
    free(b64);
    return j;
}

/* ---- child stderr ----------------------------------------------------------------------- */

static void stderr_emit(exec_child *c) {
    size_t len = c->err_len;
    if (len && c->err_line[len - 1] == '\r') len--;
    char *line = kj_utf8_clean_dup(c->err_line, len); /* invalid bytes become U+FFFD */
    kj_log(KJ_LOG_INFO, "exec child stderr", "{s:i,s:s,s:s}", "child_pid", (int)c->pid, "stream",
           "stderr", "line", line ? line : "");
    free(line);
    c->err_len = 0;
}

static void stderr_feed(exec_child *c, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            stderr_emit(c);
            continue;
        }
        c->err_line[c->err_len++] = p[i];
        if (c->err_len == sizeof(c->err_line) - 1) stderr_emit(c);
    }
}

/* Read what stderr has now (at most `budget` bytes). At EOF the fd is closed and a partial
 * line is flushed. */
static void stderr_drain(exec_child *c, size_t budget) {
    char buf[READ_CHUNK];
    while (c->err_fd >= 0 && budget > 0) {
        ssize_t n = read(c->err_fd, buf, sizeof(buf) < budget ? sizeof(buf) : budget);
        if (n > 0) {
            stderr_feed(c, buf, (size_t)n);
            budget -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                if (c->err_len) stderr_emit(c);
                close(c->err_fd);
                c->err_fd = -1;
            }
            return;
        }
    }
}

/* ---- child lifecycle -------------------------------------------------------------------- */

static int child_spawn(exec_child *c, char *err, size_t errsz) {
    kj_exec_handler *h = c->owner;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, ep[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(ep, O_CLOEXEC)) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        goto fail;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    posix_spawnattr_init(&at);
    sigset_t none, deflt;
    sigemptyset(&none);
    sigemptyset(&deflt);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaddset(&deflt, s);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &deflt);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = posix_spawnp(&pid, h->argv[0], &fa, &at, h->argv, h->envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        snprintf(err, errsz, "cannot start the handlers.exec program: %s", strerror(rc));
        goto fail;
    }
    close(in[0]);
    close(out[1]);
    close(ep[1]);
    c->pid = pid;
    c->in_fd = in[1];
    c->out_fd = out[0];
    c->err_fd = ep[0];
    fcntl(c->in_fd, F_SETFL, fcntl(c->in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(c->out_fd, F_SETFL, fcntl(c->out_fd, F_GETFL) | O_NONBLOCK);
    fcntl(c->err_fd, F_SETFL, fcntl(c->err_fd, F_GETFL) | O_NONBLOCK);
    c->out_len = 0;
    c->err_len = 0;
    c->hello_seen = false;
    kj_log(KJ_LOG_INFO, "exec child started", "{s:i}", "child_pid", (int)pid);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
        if (ep[i] >= 0) close(ep[i]);
    }
    return -1;
}

static bool child_has_exited(pid_t pid) {
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

/*
 * Stop the child: give it until `deadline_ms` (monotonic) to exit on its own while its stderr
 * is relayed, then SIGKILL its process group (before reaping, so the pid cannot have been
 * reused), reap it, relay the rest of its stderr, close everything and log the exit.
 * `status_out` receives "exit N" / "signal N".
 */
static void child_stop(exec_child *c, int64_t deadline_ms, const char *reason, kj_log_level level,
                       char *status_out, size_t status_size) {
    if (c->in_fd >= 0) close(c->in_fd);
    c->in_fd = -1;
    int64_t nap = 1;
    while (!child_has_exited(c->pid)) {
        int64_t left = deadline_ms - mono_ms();
        if (left <= 0) break;
        if (c->err_fd >= 0) {
            struct pollfd p = {.fd = c->err_fd, .events = POLLIN};
            if (poll(&p, 1, (int)(nap < left ? nap : left)) > 0) stderr_drain(c, 1 << 20);
        } else {
            sleep_ms(nap < left ? nap : left);
        }
        if (nap < 20) nap *= 2;
    }
    kill(-c->pid, SIGKILL);
    kill(c->pid, SIGKILL);
    int st = 0;
    while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
    }
    stderr_drain(c, 1 << 20);
    if (c->err_len) stderr_emit(c);
    char status[64];
    if (WIFEXITED(st))
        snprintf(status, sizeof(status), "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(status, sizeof(status), "signal %d", WTERMSIG(st));
    else
        snprintf(status, sizeof(status), "status %d", st);
    if (status_out) snprintf(status_out, status_size, "%s", status);
    kj_log(level, "exec child exited", "{s:i,s:s,s:s}", "child_pid", (int)c->pid, "status", status,
           "reason", reason);
    if (c->out_fd >= 0) close(c->out_fd);
    if (c->err_fd >= 0) close(c->err_fd);
    c->out_fd = c->err_fd = -1;
    c->pid = -1;
    c->out_len = 0;
    c->err_len = 0;
}

/* After a failure: the next start waits for the backoff, which doubles up to the maximum. */
static int64_t schedule_restart(exec_child *c) {
    kj_exec_handler *h = c->owner;
    int64_t delay = c->backoff_ms;
    c->not_before_ms = mono_ms() + delay;
    c->backoff_ms = delay * 2 > h->backoff_max_ms ? h->backoff_max_ms : delay * 2;
    return delay;
}

static exec_child *thread_child(kj_exec_handler *h) {
    for (int i = 0; i < TLS_SLOTS; i++)
        if (tls_children[i].id == h->id) return tls_children[i].child;
    exec_child *c = calloc(1, sizeof(*c));
    c->owner = h;
    c->pid = -1;
    c->in_fd = c->out_fd = c->err_fd = -1;
    c->backoff_ms = h->backoff_initial_ms;
    pthread_mutex_lock(&h->lock);
    c->next = h->children;
    h->children = c;
    pthread_mutex_unlock(&h->lock);
    int slot = -1;
    for (int i = 0; i < TLS_SLOTS && slot < 0; i++)
        if (tls_children[i].id == 0) slot = i;
    if (slot < 0) slot = (int)(tls_evict++ % TLS_SLOTS); /* the evicted child lives until free */
    tls_children[slot].id = h->id;
    tls_children[slot].child = c;
    return c;
}

/* A reply line that answers no pending batch: dropped with a warning and counted. */
static void stray_line(exec_child *c, const char *why, uint64_t expected, json_t *got,
                       size_t bytes) {
    kj_metrics_exec_stray_reply();
    char got_text[32] = "none";
    if (json_is_integer(got))
        snprintf(got_text, sizeof(got_text), "%lld", (long long)json_integer_value(got));
    else if (got)
        snprintf(got_text, sizeof(got_text), "not an integer");
    kj_log(KJ_LOG_WARN, "exec child reply discarded", "{s:i,s:s,s:I,s:s,s:I}", "child_pid",
           (int)c->pid, "reason", why, "expected_batch_id", (json_int_t)expected, "reply_batch_id",
           got_text, "bytes", (json_int_t)bytes);
}

static bool out_reserve(exec_child *c, size_t more);

/*
 * Before a batch with binary framing: frames cannot be told apart from their neighbours
 * without reading them, so output waiting here is kept (bounded: a length above max_reply is
 * an invalid reply anyway) for exchange_binary to judge frame by frame, stale batch ids
 * discarded there. Only EOF is acted on: the child exited while idle.
 */
static void child_check_idle_binary(exec_child *c) {
    for (;;) {
        if (c->out_len > c->owner->max_reply + 4 || !out_reserve(c, READ_CHUNK)) return;
        ssize_t n = read(c->out_fd, c->out_buf + c->out_len, READ_CHUNK);
        if (n > 0) {
            c->out_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            child_stop(c, mono_ms() + DEATH_WAIT_MS, "closed stdout while idle", KJ_LOG_WARN, NULL,
                       0);
            schedule_restart(c);
        }
        return; /* EAGAIN: nothing more now */
    }
}

/*
 * Before a batch: relay stderr written while idle, discard complete stray stdout lines (no
 * request is pending, so none of them can be a reply) and keep a partial last line for the
 * exchange to judge once it is complete, and notice a child that exited while idle (it is then
 * reaped and restarted after the backoff).
 */
static void child_check_idle(exec_child *c) {
    stderr_drain(c, 1 << 20);
    if (c->owner->protocol == KJ_EXEC_BINARY) {
        child_check_idle_binary(c);
        return;
    }
    char buf[READ_CHUNK];
    size_t lines = 0, bytes = 0;
    bool eof = false;
    for (;;) {
        /* complete lines waiting (read now, or left after the last reply) answer nothing: no
         * request is pending. Only a partial last line is kept, for the exchange to judge. */
        char *last = c->out_len ? memrchr(c->out_buf, '\n', c->out_len) : NULL;
        if (last) {
            size_t cut = (size_t)(last - c->out_buf) + 1;
            for (size_t i = 0; i < cut; i++)
                lines += c->out_buf[i] == '\n';
            bytes += cut;
            memmove(c->out_buf, c->out_buf + cut, c->out_len - cut);
            c->out_len -= cut;
        }
        if (c->out_len > c->owner->max_reply) { /* judged as garbage anyway: drop, bounded */
            bytes += c->out_len;
            c->out_len = 0;
        }
        if (eof) break;
        ssize_t n = read(c->out_fd, buf, sizeof(buf));
        if (n > 0) {
            if (c->out_cap - c->out_len < (size_t)n) {
                size_t cap = c->out_cap ? c->out_cap : 2 * READ_CHUNK;
                while (cap - c->out_len < (size_t)n)
                    cap *= 2;
                c->out_buf = realloc(c->out_buf, cap);
                c->out_cap = cap;
            }
            memcpy(c->out_buf + c->out_len, buf, (size_t)n);
            c->out_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n != 0) break; /* EAGAIN: nothing more now (lines already handled above) */
        eof = true;        /* one more pass for what was read before EOF */
    }
    for (size_t i = 0; i < lines; i++)
        kj_metrics_exec_stray_reply();
    if (lines || bytes)
        kj_log(KJ_LOG_WARN, "exec child wrote output between batches; discarded", "{s:i,s:I,s:I}",
               "child_pid", (int)c->pid, "lines", (json_int_t)lines, "bytes", (json_int_t)bytes);
    if (eof) {
        child_stop(c, mono_ms() + DEATH_WAIT_MS, "closed stdout while idle", KJ_LOG_WARN, NULL, 0);
        schedule_restart(c);
    }
}

/* ---- jobs by id ----------------------------------------------------------------------- */

/* Open-addressing index of a batch's jobs by id; `done` marks jobs that took a result. */
typedef struct {
    const kjobs_job_t *const *jobs;
    size_t count, cap;
    size_t *table;
    bool *done;
} job_index;

static void job_index_init(job_index *ix, const kjobs_job_t *const *jobs, size_t count) {
    ix->jobs = jobs;
    ix->count = count;
    ix->cap = 16;
    while (ix->cap < count * 2)
        ix->cap *= 2;
    ix->table = malloc(ix->cap * sizeof(size_t));
    ix->done = calloc(count ? count : 1, sizeof(bool));
    for (size_t k = 0; k < ix->cap; k++)
        ix->table[k] = SIZE_MAX;
    for (size_t i = 0; i < count; i++) {
        size_t k = kj_hash_str(kjobs_job_id(jobs[i])) & (ix->cap - 1);
        while (ix->table[k] != SIZE_MAX)
            k = (k + 1) & (ix->cap - 1);
        ix->table[k] = i;
    }
}

static void job_index_free(job_index *ix) {
    free(ix->table);
    free(ix->done);
}

/* The first job with this id that has no result yet (any job with it when `any`), or SIZE_MAX. */
static size_t job_index_find(const job_index *ix, const char *id, bool any) {
    for (size_t k = kj_hash_str(id) & (ix->cap - 1); ix->table[k] != SIZE_MAX;
         k = (k + 1) & (ix->cap - 1)) {
        size_t i = ix->table[k];
        if ((any || !ix->done[i]) && strcmp(kjobs_job_id(ix->jobs[i]), id) == 0) return i;
    }
    return SIZE_MAX;
}

/* ---- one request/reply exchange ---------------------------------------------------------- */

typedef enum { EX_OK, EX_TIMEOUT, EX_DIED, EX_GARBAGE } ex_status;
typedef enum { LINE_REPLY, LINE_STALE, LINE_GARBAGE } line_kind;

/* Room for `more` bytes after out_len, the buffer capped at max_reply + 2 READ_CHUNKs. False
 * when the cap is reached (the caller reports a reply that is too long). */
static bool out_reserve(exec_child *c, size_t more) {
    size_t limit = c->owner->max_reply + 2 * READ_CHUNK;
    if (c->out_cap - c->out_len >= more) return true;
    size_t cap = c->out_cap ? c->out_cap * 2 : 2 * READ_CHUNK;
    while (cap < limit && cap - c->out_len < more)
        cap *= 2;
    if (cap > limit) cap = limit;
    if (cap - c->out_len < more) return false;
    char *p = realloc(c->out_buf, cap);
    if (!p) return false;
    c->out_buf = p;
    c->out_cap = cap;
    return true;
}

/*
 * One poll(2) round of an exchange: write what the child takes of `req` (from *written on),
 * read what stdout has into c->out_buf, relay stderr; wait at most until `deadline_ms`.
 * EX_OK means "look at c->out_buf again" (progress or not); anything else ends the exchange.
 */
static ex_status pump(exec_child *c, const char *req, size_t req_len, size_t *written,
                      int64_t deadline_ms, char *why, size_t whysz) {
    kj_exec_handler *h = c->owner;
    struct pollfd fds[3];
    int nfds = 0, in_i = -1, out_i, err_i = -1;
    if (*written < req_len) {
        in_i = nfds;
        fds[nfds++] = (struct pollfd){.fd = c->in_fd, .events = POLLOUT};
    }
    out_i = nfds;
    fds[nfds++] = (struct pollfd){.fd = c->out_fd, .events = POLLIN};
    if (c->err_fd >= 0) {
        err_i = nfds;
        fds[nfds++] = (struct pollfd){.fd = c->err_fd, .events = POLLIN};
    }
    int64_t left = deadline_ms - mono_ms();
    if (left <= 0) return EX_TIMEOUT;
    int rc = poll(fds, (nfds_t)nfds, left > 1000000 ? 1000000 : (int)left);
    if (rc < 0) {
        if (errno == EINTR) return EX_OK;
        snprintf(why, whysz, "poll: %s", strerror(errno));
        return EX_DIED;
    }
    if (rc == 0) return EX_OK; /* the caller re-checks the deadline */
    if (err_i >= 0 && fds[err_i].revents) stderr_drain(c, READ_CHUNK);
    if (in_i >= 0 && fds[in_i].revents) {
        ssize_t n = write(c->in_fd, req + *written, req_len - *written);
        if (n > 0) {
            *written += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(why, whysz, "writing the batch failed: %s", strerror(errno));
            return EX_DIED; /* EPIPE: the child closed stdin or exited */
        }
    }
    if (fds[out_i].revents) {
        if (!out_reserve(c, READ_CHUNK)) {
            snprintf(why, whysz, "reply longer than %zu bytes", h->max_reply);
            return EX_GARBAGE;
        }
        ssize_t n = read(c->out_fd, c->out_buf + c->out_len, READ_CHUNK);
        if (n == 0) {
            snprintf(why, whysz, "child closed stdout");
            return EX_DIED;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return EX_OK;
            snprintf(why, whysz, "reading the reply failed: %s", strerror(errno));
            return EX_DIED;
        }
        c->out_len += (size_t)n;
    }
    return EX_OK;
}

/*
 * Which batch does this complete reply line answer? With "batch_id": the pending batch only if
 * it is that batch's id, otherwise stale (a repeated or late reply, or an id never sent). Without
 * it (children that do not echo the id): the pending batch, unless it has results and none of
 * them names a job of the batch — then it is a leftover of an earlier batch. Not JSON: garbage.
 */
static line_kind classify_line(exec_child *c, const char *line, size_t len, uint64_t batch_id,
                               const job_index *ix, json_t **root_out, char *why, size_t whysz) {
    json_error_t jerr;
    /* "\u0000" is valid JSON: allow it (a NUL in an error string ends the text there) rather
     * than fail a whole batch for one job's error text */
    json_t *root = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        snprintf(why, whysz, "not JSON (%s at column %d)", jerr.text, jerr.column);
        return LINE_GARBAGE;
    }
    json_t *bid = json_is_object(root) ? json_object_get(root, "batch_id") : NULL;
    if (bid && !json_is_null(bid)) {
        if (json_is_integer(bid) && (uint64_t)json_integer_value(bid) == batch_id) {
            *root_out = root;
            return LINE_REPLY;
        }
        stray_line(c, "batch_id is not the pending batch's", batch_id, bid, len + 1);
        json_decref(root);
        return LINE_STALE;
    }
    json_t *arr = json_is_object(root) ? json_object_get(root, "results") : NULL;
    size_t n = json_array_size(arr), named = 0, ours = 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(arr, i), "id"));
        if (!id) continue;
        named++;
        if (job_index_find(ix, id, true) != SIZE_MAX) ours++;
    }
    if (named > 0 && ours == 0) {
        stray_line(c, "no batch_id and no result names a job of the pending batch", batch_id, NULL,
                   len + 1);
        json_decref(root);
        return LINE_STALE;
    }
    *root_out = root;
    return LINE_REPLY;
}

/*
 * Write `req` and read reply lines, relaying stderr, until `deadline_ms`, discarding stale lines
 * (classify_line). On EX_OK *root_out is the parsed reply; bytes after it stay in c->out_buf.
 */
static ex_status exchange(exec_child *c, const char *req, size_t req_len, uint64_t batch_id,
                          const job_index *ix, int64_t deadline_ms, json_t **root_out, char *why,
                          size_t whysz) {
    kj_exec_handler *h = c->owner;
    size_t written = 0, scanned = 0;
    for (;;) {
        /* complete lines first: a partial line kept from the idle check may have completed */
        char *nl;
        while (c->out_len > scanned &&
               (nl = memchr(c->out_buf + scanned, '\n', c->out_len - scanned)) != NULL) {
            size_t line_len = (size_t)(nl - c->out_buf);
            if (line_len > h->max_reply) {
                snprintf(why, whysz, "reply longer than %zu bytes", h->max_reply);
                return EX_GARBAGE;
            }
            line_kind k =
                classify_line(c, c->out_buf, line_len, batch_id, ix, root_out, why, whysz);
            if (k == LINE_GARBAGE) return EX_GARBAGE;
            size_t rest = c->out_len - (line_len + 1);
            memmove(c->out_buf, c->out_buf + line_len + 1, rest);
            c->out_len = rest;
            scanned = 0;
            if (k == LINE_REPLY) {
                if (written < req_len) {
                    json_decref(*root_out);
                    *root_out = NULL;
                    snprintf(why, whysz, "reply arrived before the whole batch was written");
                    return EX_GARBAGE;
                }
                return EX_OK;
            }
        }
        scanned = c->out_len;
        if (c->out_len > h->max_reply) {
            snprintf(why, whysz, "reply longer than %zu bytes", h->max_reply);
            return EX_GARBAGE;
        }

        ex_status st = pump(c, req, req_len, &written, deadline_ms, why, whysz);
        if (st != EX_OK) return st;
    }
}

/* ---- request and reply -------------------------------------------------------------------- */

static void set_str(json_t *obj, const char *k, const char *v) {
    json_object_set_new(obj, k, v ? json_string(v) : json_null());
}

static char *build_request(uint64_t batch_id, const kjobs_job_t *const *jobs, size_t count,
                           size_t *len_out) {
    json_t *batch = json_array();
    for (size_t i = 0; i < count; i++) {
        const kjobs_job_t *job = jobs[i];
        json_t *o = json_object();
        set_str(o, "id", kjobs_job_id(job));
        set_str(o, "type", kjobs_job_type(job));
        size_t klen = 0;
        const char *key = kjobs_job_key(job, &klen);
        if (!key) {
            json_object_set_new(o, "key", json_null());
        } else if (kj_utf8_valid(key, klen) && memchr(key, '\0', klen) == NULL) {
            json_object_set_new(o, "key", json_stringn(key, klen));
        } else {
            json_object_set_new(o, "key", json_null());
            json_object_set_new(o, "key_b64", base64_json(key, klen));
        }
        set_str(o, "topic", kjobs_job_topic(job));
        json_object_set_new(o, "partition", json_integer(kjobs_job_partition(job)));
        json_object_set_new(o, "offset", json_integer(kjobs_job_offset(job)));
        json_object_set_new(o, "attempt", json_integer(kjobs_job_attempt(job)));
        json_object_set_new(o, "created_at", json_integer(kjobs_job_created_at(job)));
        json_t *meta = json_object();
        for (size_t m = 0; m < job->record.meta_count; m++)
            set_str(meta, job->record.meta[m].key, job->record.meta[m].value);
        json_object_set_new(o, "meta", meta);
        set_str(o, "traceparent", kjobs_job_traceparent(job)); /* validated, or null */
        set_str(o, "tracestate", kjobs_job_tracestate(job));
        size_t plen = 0;
        const void *payload = kjobs_job_payload(job, &plen);
        json_object_set_new(o, "payload_b64", base64_json(payload, plen));
        json_array_append_new(batch, o);
    }
    json_t *root = json_object(); /* batch_id first: a streaming reader sees it at once */
    json_object_set_new(root, "batch_id", json_integer((json_int_t)batch_id));
    json_object_set_new(root, "batch", batch);
    char *text = json_dumps(root, JSON_COMPACT); /* compact output has no newline */
    json_decref(root);
    if (!text) return NULL;
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    text[len] = '\n';
    text[len + 1] = '\0';
    *len_out = len + 1;
    return text;
}

/* Check the reply's shape, then apply it. 0, or -1 (nothing applied) with `why`. */
static int apply_reply(json_t *root, job_index *ix, kjobs_result_t *const *results, char *why,
                       size_t whysz) {
    json_t *arr = json_is_object(root) ? json_object_get(root, "results") : NULL;
    if (!json_is_array(arr)) {
        snprintf(why, whysz, "expected an object with a \"results\" array");
        return -1;
    }
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(arr, i);
        json_t *id = json_object_get(r, "id"), *st = json_object_get(r, "status");
        json_t *er = json_object_get(r, "error"), *ra = json_object_get(r, "retry_after_ms");
        const char *s = json_string_value(st);
        const char *bad = NULL;
        if (!json_is_object(r))
            bad = "is not an object";
        else if (!json_is_string(id))
            bad = "has no string \"id\"";
        else if (!s || (strcmp(s, "ok") && strcmp(s, "retry") && strcmp(s, "fail")))
            bad = "has no \"status\" of \"ok\", \"retry\" or \"fail\"";
        else if (er && !json_is_string(er) && !json_is_null(er))
            bad = "has a non-string \"error\"";
        else if (ra && !json_is_null(ra) &&
                 !(json_is_number(ra) && json_number_value(ra) >= 0 &&
                   json_number_value(ra) <= 1e300))
            bad = "has a \"retry_after_ms\" that is not a non-negative number";
        if (bad) {
            snprintf(why, whysz, "results[%zu] %s", i, bad);
            return -1;
        }
    }
    /* jobs sharing an id take results in order */
    for (size_t r = 0; r < n; r++) {
        json_t *res = json_array_get(arr, r);
        const char *id = json_string_value(json_object_get(res, "id"));
        size_t job = job_index_find(ix, id, false);
        if (job == SIZE_MAX) continue; /* unknown (or repeated) id: ignored */
        ix->done[job] = true;
        const char *status = json_string_value(json_object_get(res, "status"));
        const char *error = json_string_value(json_object_get(res, "error"));
        json_t *ra = json_object_get(res, "retry_after_ms");
        if (strcmp(status, "ok") == 0) {
            kjobs_result_ok(results[job]);
        } else if (strcmp(status, "retry") == 0) {
            /* huge delays are capped like a plugin's (kjobs_result_retry: 30 days); convert
             * only values an int64 can hold */
            double d = json_is_number(ra) ? json_number_value(ra) : -1;
            int64_t delay = d < 0 ? -1 : d >= 9e18 ? INT64_MAX : (int64_t)d;
            kjobs_result_retry(results[job], delay, "%s",
                               error && *error ? error : "retry requested by exec handler");
        } else {
            kjobs_result_fail(results[job], "%s",
                              error && *error ? error : "failed by exec handler");
        }
    }
    for (size_t i = 0; i < ix->count; i++)
        if (!ix->done[i]) kjobs_result_retry(results[i], -1, "no result from handler");
    return 0;
}

/* ---- binary framing (exec_handler.h, BINARY FRAMING; layout in examples/exec/README.md) ---- */

#define BIN_JOB_HEADER   56 /* fixed part of a job record in a request */
#define BIN_BODY_HEADER  13 /* kind byte, u64 batch_id, u32 count */
#define BIN_HELLO_LEN    (sizeof(KJ_EXEC_BINARY_HELLO) - 1)
#define BIN_STATUS_OK    0
#define BIN_STATUS_RETRY 1
#define BIN_STATUS_FAIL  2

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* A length as the frame writes it: -1 (as u32 0xFFFFFFFF) for an absent optional field. */
static uint32_t opt_len(const char *s, size_t len) {
    return s ? (uint32_t)len : UINT32_MAX;
}

/*
 * The request frame of a batch (u32 length + body), malloc'd, or NULL when a field does not fit
 * a u32 length or the frame would pass 4 GiB.
 */
static char *build_request_binary(uint64_t batch_id, const kjobs_job_t *const *jobs, size_t count,
                                  size_t *len_out) {
    /* pass 1: the size, so the frame is one allocation */
    size_t total = 4 + BIN_BODY_HEADER;
    for (size_t i = 0; i < count; i++) {
        const kjobs_job_t *job = jobs[i];
        size_t klen = 0, plen = 0;
        const char *key = kjobs_job_key(job, &klen);
        kjobs_job_payload(job, &plen);
        const char *tp = kjobs_job_traceparent(job), *ts = kjobs_job_tracestate(job);
        total += BIN_JOB_HEADER + strlen(kjobs_job_id(job)) + strlen(kjobs_job_type(job)) +
                 (key ? klen : 0) + strlen(kjobs_job_topic(job)) + (tp ? strlen(tp) : 0) +
                 (ts ? strlen(ts) : 0) + plen;
        for (size_t m = 0; m < job->record.meta_count; m++)
            total += 8 + strlen(job->record.meta[m].key) + strlen(job->record.meta[m].value);
        if (klen >= UINT32_MAX || plen >= UINT32_MAX) return NULL;
    }
    if (total - 4 > UINT32_MAX || count > UINT32_MAX) return NULL;
    uint8_t *out = malloc(total), *p = out;
    if (!out) return NULL;
    put_u32(p, (uint32_t)(total - 4));
    p[4] = 'B';
    put_u64(p + 5, batch_id);
    put_u32(p + 13, (uint32_t)count);
    p += 4 + BIN_BODY_HEADER;
    for (size_t i = 0; i < count; i++) {
        const kjobs_job_t *job = jobs[i];
        size_t klen = 0, plen = 0;
        const char *key = kjobs_job_key(job, &klen);
        const void *payload = kjobs_job_payload(job, &plen);
        const char *id = kjobs_job_id(job), *type = kjobs_job_type(job);
        const char *topic = kjobs_job_topic(job);
        const char *tp = kjobs_job_traceparent(job), *ts = kjobs_job_tracestate(job);
        size_t idl = strlen(id), tyl = strlen(type), tol = strlen(topic);
        size_t tpl = tp ? strlen(tp) : 0, tsl = ts ? strlen(ts) : 0;
        put_u32(p, (uint32_t)kjobs_job_partition(job));
        put_u32(p + 4, (uint32_t)kjobs_job_attempt(job));
        put_u64(p + 8, (uint64_t)kjobs_job_offset(job));
        put_u64(p + 16, (uint64_t)kjobs_job_created_at(job));
        put_u32(p + 24, (uint32_t)idl);
        put_u32(p + 28, (uint32_t)tyl);
        put_u32(p + 32, opt_len(key, klen));
        put_u32(p + 36, (uint32_t)tol);
        put_u32(p + 40, opt_len(tp, tpl));
        put_u32(p + 44, opt_len(ts, tsl));
        put_u32(p + 48, (uint32_t)job->record.meta_count);
        put_u32(p + 52, (uint32_t)plen);
        p += BIN_JOB_HEADER;
        memcpy(p, id, idl), p += idl;
        memcpy(p, type, tyl), p += tyl;
        if (key) memcpy(p, key, klen), p += klen;
        memcpy(p, topic, tol), p += tol;
        if (tp) memcpy(p, tp, tpl), p += tpl;
        if (ts) memcpy(p, ts, tsl), p += tsl;
        for (size_t m = 0; m < job->record.meta_count; m++) {
            size_t kl = strlen(job->record.meta[m].key), vl = strlen(job->record.meta[m].value);
            put_u32(p, (uint32_t)kl);
            put_u32(p + 4, (uint32_t)vl);
            p += 8;
            memcpy(p, job->record.meta[m].key, kl), p += kl;
            memcpy(p, job->record.meta[m].value, vl), p += vl;
        }
        if (plen) memcpy(p, payload, plen), p += plen;
    }
    *len_out = total;
    return (char *)out;
}

/*
 * Write the request frame and read frames until the pending batch's reply, discarding
 * well-formed frames of other batches (counted), until `deadline_ms`. On EX_OK *body and *body_len
 * point into c->out_buf (valid until it changes; the caller consumes *consume bytes after use).
 */
static ex_status exchange_binary(exec_child *c, const char *req, size_t req_len, uint64_t batch_id,
                                 int64_t deadline_ms, const uint8_t **body, size_t *body_len,
                                 size_t *consume, char *why, size_t whysz) {
    kj_exec_handler *h = c->owner;
    size_t written = 0;
    for (;;) {
        if (!c->hello_seen && c->out_len > 0) {
            size_t n = c->out_len < BIN_HELLO_LEN ? c->out_len : BIN_HELLO_LEN;
            if (memcmp(c->out_buf, KJ_EXEC_BINARY_HELLO, n) != 0) {
                snprintf(why, whysz,
                         "handlers.exec_protocol is binary but the child did not start with the "
                         "line \"kjobs-exec binary 1\"");
                return EX_GARBAGE;
            }
            if (n == BIN_HELLO_LEN) {
                memmove(c->out_buf, c->out_buf + n, c->out_len - n);
                c->out_len -= n;
                c->hello_seen = true;
            }
        }
        while (c->hello_seen && c->out_len >= 4) {
            const uint8_t *b = (const uint8_t *)c->out_buf;
            uint32_t len = get_u32(b);
            if (len > h->max_reply) {
                snprintf(why, whysz, "frame length %" PRIu32 " above the limit of %zu bytes", len,
                         h->max_reply);
                return EX_GARBAGE;
            }
            if (len < BIN_BODY_HEADER) {
                snprintf(why, whysz, "frame length %" PRIu32 " below the %d-byte reply header", len,
                         BIN_BODY_HEADER);
                return EX_GARBAGE;
            }
            if (c->out_len - 4 < len) {
                if (!out_reserve(c, len + 4 - c->out_len)) {
                    snprintf(why, whysz, "reply longer than %zu bytes", h->max_reply);
                    return EX_GARBAGE;
                }
                break; /* the rest of the frame is still to come */
            }
            if (b[4] != 'R') {
                snprintf(why, whysz, "frame kind 0x%02x, expected 'R' (0x52)", b[4]);
                return EX_GARBAGE;
            }
            uint64_t got = get_u64(b + 5);
            if (got != batch_id) { /* a repeated or late reply: dropped, counted */
                kj_metrics_exec_stray_reply();
                kj_log(KJ_LOG_WARN, "exec child reply discarded", "{s:i,s:s,s:I,s:I,s:I}",
                       "child_pid", (int)c->pid, "reason", "batch_id is not the pending batch's",
                       "expected_batch_id", (json_int_t)batch_id, "reply_batch_id", (json_int_t)got,
                       "bytes", (json_int_t)len + 4);
                memmove(c->out_buf, c->out_buf + 4 + len, c->out_len - 4 - len);
                c->out_len -= 4 + (size_t)len;
                continue;
            }
            if (written < req_len) {
                snprintf(why, whysz, "reply arrived before the whole batch was written");
                return EX_GARBAGE;
            }
            *body = b + 4;
            *body_len = len;
            *consume = 4 + (size_t)len;
            return EX_OK;
        }
        ex_status st = pump(c, req, req_len, &written, deadline_ms, why, whysz);
        if (st != EX_OK) return st;
    }
}

/* Check a reply body, then apply it (result i is job i). 0, or -1 (nothing applied) with why. */
static int apply_reply_binary(const uint8_t *body, size_t len, kjobs_result_t *const *results,
                              size_t count, char *why, size_t whysz) {
    uint32_t n = get_u32(body + 9);
    if (n > count) {
        snprintf(why, whysz, "%" PRIu32 " results for a batch of %zu jobs", n, count);
        return -1;
    }
    /* pass 1: every result well-formed and inside the frame */
    size_t pos = BIN_BODY_HEADER;
    for (uint32_t i = 0; i < n; i++) {
        if (pos >= len) {
            snprintf(why, whysz, "result %" PRIu32 " runs past the end of the frame", i);
            return -1;
        }
        uint8_t st = body[pos++];
        if (st == BIN_STATUS_OK) continue;
        if (st != BIN_STATUS_RETRY && st != BIN_STATUS_FAIL) {
            snprintf(why, whysz, "result %" PRIu32 " has status %u, expected 0, 1 or 2", i, st);
            return -1;
        }
        if (len - pos < 12 || len - pos - 12 < get_u32(body + pos + 8)) {
            snprintf(why, whysz, "result %" PRIu32 " runs past the end of the frame", i);
            return -1;
        }
        pos += 12 + get_u32(body + pos + 8);
    }
    if (pos != len) {
        snprintf(why, whysz, "%zu bytes after the last result", len - pos);
        return -1;
    }
    /* pass 2: apply */
    pos = BIN_BODY_HEADER;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t st = body[pos++];
        if (st == BIN_STATUS_OK) {
            kjobs_result_ok(results[i]);
            continue;
        }
        int64_t delay = (int64_t)get_u64(body + pos);
        uint32_t elen = get_u32(body + pos + 8);
        /* untrusted text: invalid UTF-8 becomes U+FFFD; the result keeps at most KJ_ERROR_MAX */
        size_t keep = elen < 4 * KJ_ERROR_MAX ? elen : 4 * KJ_ERROR_MAX;
        char *error = keep ? kj_utf8_clean_dup((const char *)body + pos + 12, keep) : NULL;
        pos += 12 + elen;
        if (st == BIN_STATUS_RETRY)
            kjobs_result_retry(results[i], delay < 0 ? -1 : delay, "%s",
                               error && *error ? error : "retry requested by exec handler");
        else
            kjobs_result_fail(results[i], "%s", error && *error ? error : "failed by exec handler");
        free(error);
    }
    for (size_t i = n; i < count; i++)
        kjobs_result_retry(results[i], -1, "no result from handler");
    return 0;
}

/* ---- the batch handler -------------------------------------------------------------------- */

static void fail_all(kjobs_result_t *const *results, size_t count, kj_outcome outcome,
                     const char *msg) {
    for (size_t i = 0; i < count; i++) {
        kj_result_set(results[i], outcome, "%s", msg);
        results[i]->delay_ms = -1;
    }
}

void kj_exec_handler_batch(const kjobs_job_t *const *jobs, kjobs_result_t *const *results,
                           size_t count, void *opaque) {
    kj_exec_handler *h = opaque;
    exec_child *c = thread_child(h);
    char err[512], msg[KJ_ERROR_MAX];
    if (count == 0) return;
    if (c->pid > 0) child_check_idle(c);
    if (c->pid <= 0) {
        int64_t wait = c->not_before_ms - mono_ms();
        if (wait > 0) sleep_ms(wait); /* restart backoff: block this thread, never spin */
        if (child_spawn(c, err, sizeof(err)) != 0) {
            int64_t delay = schedule_restart(c);
            kj_log(KJ_LOG_ERROR, "exec child failed to start", "{s:s,s:I}", "error", err,
                   "retry_in_ms", (json_int_t)delay);
            snprintf(msg, sizeof(msg), "exec handler: %s", err);
            fail_all(results, count, KJ_OUTCOME_RETRY, msg);
            return;
        }
    }
    size_t req_len = 0;
    uint64_t batch_id = ++c->batch_seq;
    bool binary = h->protocol == KJ_EXEC_BINARY;
    char *req = binary ? build_request_binary(batch_id, jobs, count, &req_len)
                       : build_request(batch_id, jobs, count, &req_len);
    if (!req) {
        fail_all(results, count, KJ_OUTCOME_RETRY,
                 binary ? "exec handler: cannot encode the batch as a binary frame"
                        : "exec handler: cannot encode the batch as JSON");
        return;
    }
    int64_t deadline = mono_ms() + h->timeout_ms;
    ex_status st;
    if (binary) {
        const uint8_t *body = NULL;
        size_t body_len = 0, consume = 0;
        st = exchange_binary(c, req, req_len, batch_id, deadline, &body, &body_len, &consume, err,
                             sizeof(err));
        if (st == EX_OK) {
            if (apply_reply_binary(body, body_len, results, count, err, sizeof(err)) != 0)
                st = EX_GARBAGE;
            memmove(c->out_buf, c->out_buf + consume, c->out_len - consume);
            c->out_len -= consume;
        }
    } else {
        job_index ix;
        job_index_init(&ix, jobs, count);
        json_t *reply = NULL;
        st = exchange(c, req, req_len, batch_id, &ix, deadline, &reply, err, sizeof(err));
        if (st == EX_OK && apply_reply(reply, &ix, results, err, sizeof(err)) != 0) st = EX_GARBAGE;
        json_decref(reply);
        job_index_free(&ix);
    }
    free(req);
    if (st == EX_OK) {
        c->backoff_ms = h->backoff_initial_ms; /* bytes after the reply: judged at the next batch */
        return;
    }
    pid_t pid = c->pid;
    char status[64];
    if (st == EX_TIMEOUT) {
        child_stop(c, mono_ms(), "timeout", KJ_LOG_WARN, status, sizeof(status));
        c->not_before_ms = 0; /* the timeout itself paced this child; restart at once */
        snprintf(msg, sizeof(msg), "exec handler: no reply within %lld ms (child %d killed%s)",
                 (long long)h->timeout_ms, (int)pid,
                 binary && !c->hello_seen ? "; it never wrote the binary hello line, "
                                            "handlers.exec_protocol is binary"
                                          : "");
        fail_all(results, count, KJ_OUTCOME_TIMEOUT, msg);
        return;
    }
    if (st == EX_GARBAGE) {
        child_stop(c, mono_ms(), "invalid reply", KJ_LOG_WARN, status, sizeof(status));
        snprintf(msg, sizeof(msg), "exec handler: invalid reply from child %d: %s", (int)pid, err);
    } else {
        child_stop(c, mono_ms() + DEATH_WAIT_MS, err, KJ_LOG_WARN, status, sizeof(status));
        snprintf(msg, sizeof(msg), "exec handler: child %d exited during the batch (%s; %s%s)",
                 (int)pid, status, err,
                 binary && !c->hello_seen ? "; it never wrote the binary hello line, "
                                            "handlers.exec_protocol is binary"
                                          : "");
    }
    int64_t delay = schedule_restart(c);
    kj_log(KJ_LOG_WARN, "exec batch failed, child restarts after backoff", "{s:i,s:s,s:I,s:I}",
           "child_pid", (int)pid, "error", msg, "jobs", (json_int_t)count, "retry_in_ms",
           (json_int_t)delay);
    fail_all(results, count, KJ_OUTCOME_RETRY, msg);
}

/* ---- construction ------------------------------------------------------------------------- */

kj_exec_handler *kj_exec_handler_new_opts(const kj_exec_options *o, char *errstr,
                                          size_t errstr_size) {
    if (!o->argv || o->argc == 0 || !o->argv[0] || !o->argv[0][0]) {
        snprintf(errstr, errstr_size, "handlers.exec: empty command");
        return NULL;
    }
    if (o->timeout_ms <= 0) {
        snprintf(errstr, errstr_size, "handlers.exec_timeout: must be positive");
        return NULL;
    }
    if (!program_exists(o->argv[0])) {
        /* the command is not quoted: handlers.exec words may carry secrets */
        snprintf(errstr, errstr_size,
                 "handlers.exec: the program (first word) is not an executable file or not "
                 "found in PATH");
        return NULL;
    }
    kj_exec_handler *h = calloc(1, sizeof(*h));
    h->id = atomic_fetch_add(&next_handler_id, 1);
    h->argv = strv_copy(o->argv, o->argc);
    h->types = o->type_count ? strv_copy(o->types, o->type_count) : NULL;
    h->type_count = o->type_count;
    h->timeout_ms = o->timeout_ms;
    h->backoff_initial_ms =
        o->backoff_initial_ms > 0 ? o->backoff_initial_ms : KJ_EXEC_DEFAULT_BACKOFF_INITIAL_MS;
    h->backoff_max_ms = o->backoff_max_ms > 0 ? o->backoff_max_ms : KJ_EXEC_DEFAULT_BACKOFF_MAX_MS;
    if (h->backoff_max_ms < h->backoff_initial_ms) h->backoff_max_ms = h->backoff_initial_ms;
    h->max_reply = o->max_reply_bytes > 0 ? o->max_reply_bytes : KJ_EXEC_DEFAULT_MAX_REPLY_BYTES;
    h->protocol = o->protocol;
    h->shutdown_wait_ms =
        o->shutdown_wait_ms > 0 ? o->shutdown_wait_ms : KJ_EXEC_DEFAULT_SHUTDOWN_WAIT_MS;
    size_t n = 0, k = 0;
    while (environ && environ[n])
        n++;
    h->envp = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "KJOBS_RDKAFKA_", 14) != 0) h->envp[k++] = strdup(environ[i]);
    pthread_mutex_init(&h->lock, NULL);
    return h;
}

kj_exec_handler *kj_exec_handler_new(const kj_config *cfg, char *errstr, size_t errstr_size) {
    kj_exec_options o = {.argv = cfg->handlers_exec,
                         .argc = cfg->handlers_exec_count,
                         .timeout_ms = cfg->handlers_exec_timeout_ms,
                         .types = cfg->handlers_exec_types,
                         .type_count = cfg->handlers_exec_type_count,
                         .protocol = cfg->handlers_exec_protocol &&
                                             strcmp(cfg->handlers_exec_protocol, "binary") == 0
                                         ? KJ_EXEC_BINARY
                                         : KJ_EXEC_JSON_LINES};
    char why[512];
    kj_exec_handler *h = kj_exec_handler_new_opts(&o, why, sizeof(why));
    if (!h) {
        /* "handlers.exec...: reason" → "FILE:LINE: handlers.exec...: reason" (the setting's
         * place, as config errors give it; never its value) */
        const char *colon = strstr(why, ": ");
        char key[64], place[400];
        snprintf(key, sizeof(key), "%.*s", colon ? (int)(colon - why) : 0, why);
        if (colon && strncmp(key, "handlers.exec", 13) == 0) {
            kj_config_place(cfg, key, place, sizeof(place));
            snprintf(errstr, errstr_size, "%s%s", place, colon);
        } else {
            snprintf(errstr, errstr_size, "%s", why);
        }
    }
    return h;
}

void kj_exec_handler_register(kj_exec_handler *h, kj_handler_registry *reg) {
    kj_handlers_set_fallback(reg, kj_exec_handler_batch, h, h->types, h->type_count);
}

int kj_exec_handler_child_pid(kj_exec_handler *h) {
    for (int i = 0; i < TLS_SLOTS; i++)
        if (tls_children[i].id == h->id)
            return tls_children[i].child->pid > 0 ? tls_children[i].child->pid : -1;
    return -1;
}

void kj_exec_handler_free(kj_exec_handler *h) {
    if (!h) return;
    /* close every stdin first so the children wind down in parallel, then stop them in turn
     * against one shared deadline */
    for (exec_child *c = h->children; c; c = c->next)
        if (c->pid > 0 && c->in_fd >= 0) {
            close(c->in_fd);
            c->in_fd = -1;
        }
    int64_t deadline = mono_ms() + h->shutdown_wait_ms;
    for (exec_child *c = h->children, *next; c; c = next) {
        next = c->next;
        if (c->pid > 0) child_stop(c, deadline, "shutdown", KJ_LOG_INFO, NULL, 0);
        free(c->out_buf);
        free(c);
    }
    for (int i = 0; i < TLS_SLOTS; i++)
        if (tls_children[i].id == h->id) tls_children[i].id = 0;
    strv_free(h->argv);
    strv_free(h->types);
    strv_free(h->envp);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
