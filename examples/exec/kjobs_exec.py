"""kjobs_exec.py — write a kjobs exec handler in Python without writing the protocol by hand.

It speaks the binary framing (handlers.exec_protocol = "binary"; the byte layout is in
README.md, "Binary framing"): payloads arrive as bytes, nothing is base64 or JSON, and the
reply for a batch of all-ok jobs is one byte per job. Standard library only; copy this file
next to your handler or put it on PYTHONPATH.

    import kjobs_exec

    def handle(job):                       # one job; return normally = ok
        if job.type == "email.send":
            send(job.payload)              # bytes
            return
        raise kjobs_exec.Fail(f"unknown type {job.type}")   # permanent: straight to the DLQ

    kjobs_exec.serve(handle)

A job (`Job`) has: id, type, topic (str); key (bytes, or None when the record has none);
partition, offset, attempt, created_at (int; created_at in epoch ms); traceparent, tracestate
(str or None); meta (dict of str); payload (bytes).

Outcomes: return normally (or return None/True) -> ok; raise `Retry(error, retry_after_ms=None)`
-> another attempt down the retry ladder (optionally not before retry_after_ms); raise
`Fail(error)` -> dead-lettered as permanent; any other exception -> retried with its text as
the error (it is also printed to stderr). `serve_batch(fn)` hands over the whole batch instead:
fn(jobs) returns a list with one entry per job, in order: None (ok), a Retry or a Fail.

While serving, sys.stdout is redirected to stderr, so a stray print() lands in kjobs' log
instead of corrupting the frames. The loop ends when kjobs closes stdin (shutdown).
"""
import os
import struct
import sys
import traceback

HELLO = b"kjobs-exec binary 1\n"
_LEN = struct.Struct("<I")
_BODY = struct.Struct("<cQI")  # kind, batch_id, count: 13 bytes
_JOB = struct.Struct("<iiqqIIIIIIII")  # the 56-byte fixed header of a job record
_META = struct.Struct("<II")
_RESULT = struct.Struct("<BqI")  # status, retry_after_ms, error length (non-ok results)
_ABSENT = 0xFFFFFFFF  # length of an absent key, traceparent or tracestate


class Retry(Exception):
    """Run the job again (down the retry ladder); retry_after_ms: not before this delay."""

    def __init__(self, error="", retry_after_ms=None):
        super().__init__(error)
        self.error = str(error)
        self.retry_after_ms = retry_after_ms


class Fail(Exception):
    """A permanent failure: the job goes to the dead-letter topic."""

    def __init__(self, error=""):
        super().__init__(error)
        self.error = str(error)


class Job:
    __slots__ = ("id", "type", "key", "topic", "partition", "offset", "attempt", "created_at",
                 "traceparent", "tracestate", "meta", "payload")

    def __repr__(self):
        return f"Job(id={self.id!r}, type={self.type!r}, offset={self.offset})"


class ProtocolError(Exception):
    """kjobs sent something this helper does not understand (a newer protocol?)."""


def parse_batch(body):
    """A request body (after its u32 length) -> (batch_id, [Job])."""
    kind, batch_id, count = _BODY.unpack_from(body, 0)
    if kind != b"B":
        raise ProtocolError(f"request kind {kind!r}, expected b'B'")
    pos = _BODY.size
    jobs = []
    for _ in range(count):
        (partition, attempt, offset, created_at, idl, tyl, kl, tol, tpl, tsl, mc,
         pl) = _JOB.unpack_from(body, pos)
        pos += _JOB.size
        j = Job()
        j.partition, j.attempt, j.offset, j.created_at = partition, attempt, offset, created_at
        j.id = body[pos:pos + idl].decode("utf-8", "replace")
        pos += idl
        j.type = body[pos:pos + tyl].decode("utf-8", "replace")
        pos += tyl
        if kl == _ABSENT:
            j.key = None
        else:
            j.key = body[pos:pos + kl]
            pos += kl
        j.topic = body[pos:pos + tol].decode("utf-8", "replace")
        pos += tol
        if tpl == _ABSENT:
            j.traceparent = None
        else:
            j.traceparent = body[pos:pos + tpl].decode("ascii", "replace")
            pos += tpl
        if tsl == _ABSENT:
            j.tracestate = None
        else:
            j.tracestate = body[pos:pos + tsl].decode("ascii", "replace")
            pos += tsl
        meta = {}
        for _ in range(mc):
            mk, mv = _META.unpack_from(body, pos)
            pos += 8
            k = body[pos:pos + mk].decode("utf-8", "replace")
            pos += mk
            meta[k] = body[pos:pos + mv].decode("utf-8", "replace")
            pos += mv
        j.meta = meta
        j.payload = body[pos:pos + pl]
        pos += pl
        jobs.append(j)
    if pos != len(body):
        raise ProtocolError(f"{len(body) - pos} bytes after the last job")
    return batch_id, jobs


def encode_reply(batch_id, results):
    """One reply frame: results[i] for job i, each None (ok), a Retry or a Fail."""
    out = bytearray(4 + _BODY.size)
    _BODY.pack_into(out, 4, b"R", batch_id, len(results))
    for r in results:
        if r is None:
            out.append(0)
            continue
        err = r.error.encode("utf-8", "replace")
        if isinstance(r, Retry):
            delay = -1 if r.retry_after_ms is None else max(0, int(r.retry_after_ms))
            out += _RESULT.pack(1, delay, len(err))
        else:
            out += _RESULT.pack(2, -1, len(err))
        out += err
    _LEN.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def _read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) < n:
        if data:
            raise ProtocolError(f"stdin ended inside a frame ({len(data)} of {n} bytes)")
        return None
    return data


def serve_batch(handle_batch):
    """Serve kjobs until stdin closes; handle_batch(jobs) -> [None | Retry | Fail] per job."""
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # print() and child processes now write to stderr, never into the frames
    sys.stdout = sys.stderr
    out.write(HELLO)
    while True:
        head = _read_exact(inp, 4)
        if head is None:
            return  # EOF: kjobs is shutting down
        (length,) = _LEN.unpack(head)
        body = _read_exact(inp, length)
        if body is None:
            raise ProtocolError("stdin ended inside a frame")
        batch_id, jobs = parse_batch(body)
        results = handle_batch(jobs)
        if len(results) != len(jobs):
            raise ValueError(f"handle_batch returned {len(results)} results for {len(jobs)} jobs")
        frame = encode_reply(batch_id, results)
        view = memoryview(frame)
        while view:
            view = view[out.write(view):]


def _one(handle, job):
    try:
        handle(job)
        return None
    except (Retry, Fail) as e:
        return e
    except Exception as e:  # a bug in the handler: retried, and visible in kjobs' log
        traceback.print_exc(file=sys.stderr)
        return Retry(f"{type(e).__name__}: {e}")


def serve(handle):
    """Serve kjobs until stdin closes, calling handle(job) for every job (see the module doc)."""
    serve_batch(lambda jobs: [_one(handle, j) for j in jobs])
