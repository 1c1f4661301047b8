// kjobs_exec.js — write a kjobs exec handler in Node.js without writing the protocol by hand.
//
// It speaks the binary framing (handlers.exec_protocol = "binary"; the byte layout is in
// README.md, "Binary framing"): payloads arrive as Buffers, nothing is base64 or JSON, and the
// reply for a batch of all-ok jobs is one byte per job. No dependencies; copy this file next
// to your handler or require it from here.
//
//   const kjobs = require('./kjobs_exec');
//   kjobs.serve(async (job) => {              // one job; returning (or resolving) = ok
//     if (job.type === 'email.send') return send(job.payload);   // Buffer
//     throw new kjobs.Fail(`unknown type ${job.type}`);          // permanent: to the DLQ
//   });
//
// A job has: id, type, topic (string); key (Buffer, or null when the record has none);
// partition, attempt (number); offset, createdAt (number; createdAt in epoch ms); traceparent,
// tracestate (string or null); meta (object of strings); payload (Buffer).
//
// Outcomes: return/resolve -> ok; throw `new Retry(error, retryAfterMs)` -> another attempt
// down the retry ladder (optionally not before retryAfterMs); throw `new Fail(error)` ->
// dead-lettered as permanent; any other exception -> retried with its message as the error
// (the stack goes to stderr). Jobs of a batch run one after another, in order.
// `serveBatch(fn)` hands over the whole batch instead: fn(jobs) returns (or resolves to) an
// array with one entry per job, in order: null (ok), a Retry or a Fail.
//
// While serving, console.log writes to stderr, so a stray log line lands in kjobs' log instead
// of corrupting the frames. The process ends when kjobs closes stdin (shutdown).
'use strict';

const HELLO = Buffer.from('kjobs-exec binary 1\n', 'latin1');
const ABSENT = 0xffffffff; // length of an absent key, traceparent or tracestate
const JOB_HEADER = 56;
const BODY_HEADER = 13;

class Retry extends Error {
  constructor(error = '', retryAfterMs = null) {
    super(String(error));
    this.retryAfterMs = retryAfterMs;
  }
}

class Fail extends Error {
  constructor(error = '') {
    super(String(error));
  }
}

class ProtocolError extends Error {}

// A request body (after its u32 length) -> { batchId (BigInt), jobs }.
function parseBatch(body) {
  if (body.length < BODY_HEADER || body[0] !== 0x42 /* 'B' */) {
    throw new ProtocolError(`request kind ${body[0]}, expected 'B'`);
  }
  const batchId = body.readBigUInt64LE(1);
  const count = body.readUInt32LE(9);
  let pos = BODY_HEADER;
  const jobs = new Array(count);
  const str = (n) => {
    const s = body.toString('utf8', pos, pos + n);
    pos += n;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const h = pos;
    const job = {
      partition: body.readInt32LE(h),
      attempt: body.readInt32LE(h + 4),
      offset: Number(body.readBigInt64LE(h + 8)),
      createdAt: Number(body.readBigInt64LE(h + 16)),
    };
    const idl = body.readUInt32LE(h + 24);
    const tyl = body.readUInt32LE(h + 28);
    const kl = body.readUInt32LE(h + 32);
    const tol = body.readUInt32LE(h + 36);
    const tpl = body.readUInt32LE(h + 40);
    const tsl = body.readUInt32LE(h + 44);
    const mc = body.readUInt32LE(h + 48);
    const pl = body.readUInt32LE(h + 52);
    pos += JOB_HEADER;
    job.id = str(idl);
    job.type = str(tyl);
    if (kl === ABSENT) job.key = null;
    else {
      job.key = body.subarray(pos, pos + kl);
      pos += kl;
    }
    job.topic = str(tol);
    job.traceparent = tpl === ABSENT ? null : str(tpl);
    job.tracestate = tsl === ABSENT ? null : str(tsl);
    job.meta = {};
    for (let m = 0; m < mc; m++) {
      const mk = body.readUInt32LE(pos);
      const mv = body.readUInt32LE(pos + 4);
      pos += 8;
      const k = str(mk);
      job.meta[k] = str(mv);
    }
    job.payload = body.subarray(pos, pos + pl);
    pos += pl;
    if (pos > body.length) throw new ProtocolError('a job runs past the end of the frame');
    jobs[i] = job;
  }
  if (pos !== body.length) throw new ProtocolError(`${body.length - pos} bytes after the last job`);
  return { batchId, jobs };
}

// One reply frame: results[i] for job i, each null/undefined (ok), a Retry or a Fail.
function encodeReply(batchId, results) {
  let size = 4 + BODY_HEADER;
  const errs = results.map((r) => {
    if (r == null) {
      size += 1;
      return null;
    }
    const e = Buffer.from(r.message || '', 'utf8');
    size += 13 + e.length;
    return e;
  });
  const out = Buffer.alloc(size);
  out.writeUInt32LE(size - 4, 0);
  out[4] = 0x52; // 'R'
  out.writeBigUInt64LE(batchId, 5);
  out.writeUInt32LE(results.length, 13);
  let pos = 4 + BODY_HEADER;
  results.forEach((r, i) => {
    if (r == null) {
      out[pos++] = 0;
      return;
    }
    const retry = r instanceof Retry;
    out[pos] = retry ? 1 : 2;
    const delay = retry && r.retryAfterMs != null ? BigInt(Math.max(0, Math.floor(r.retryAfterMs))) : -1n;
    out.writeBigInt64LE(delay, pos + 1);
    out.writeUInt32LE(errs[i].length, pos + 9);
    errs[i].copy(out, pos + 13);
    pos += 13 + errs[i].length;
  });
  return out;
}

// Serve kjobs until stdin closes; handleBatch(jobs) -> [null | Retry | Fail] per job.
async function serveBatch(handleBatch) {
  // stdout is for frames only; on Linux, writes to a pipe are synchronous and in order
  console.log = console.info = console.debug = (...a) => console.error(...a);
  const writeAll = (buf) => process.stdout.write(buf);
  writeAll(HELLO);
  let pending = [];
  let have = 0;
  const take = (n) => { // n bytes from the front of what has arrived
    const all = pending.length === 1 ? pending[0] : Buffer.concat(pending, have);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    pending = rest.length ? [rest] : [];
    have = rest.length;
    return head;
  };
  for await (const chunk of process.stdin) {
    pending.push(chunk);
    have += chunk.length;
    for (;;) {
      if (have < 4) break;
      const first = pending[0].length >= 4 ? pending[0] : Buffer.concat(pending, have);
      const len = first.readUInt32LE(0);
      if (have < 4 + len) break;
      const frame = take(4 + len);
      const { batchId, jobs } = parseBatch(frame.subarray(4));
      const results = await handleBatch(jobs);
      if (!Array.isArray(results) || results.length !== jobs.length) {
        throw new Error(`handleBatch returned ${results && results.length} results for ${jobs.length} jobs`);
      }
      writeAll(encodeReply(batchId, results));
    }
  }
}

// Serve kjobs until stdin closes, calling handle(job) (sync or async) for every job.
function serve(handle) {
  return serveBatch(async (jobs) => {
    const results = new Array(jobs.length);
    for (let i = 0; i < jobs.length; i++) {
      try {
        const r = handle(jobs[i]);
        if (r && typeof r.then === 'function') await r;
        results[i] = null;
      } catch (e) {
        if (e instanceof Retry || e instanceof Fail) results[i] = e;
        else {
          process.stderr.write(`kjobs_exec: job ${jobs[i].id}: ${(e && e.stack) || e}\n`);
          results[i] = new Retry(`${(e && e.name) || 'Error'}: ${(e && e.message) || e}`);
        }
      }
    }
    return results;
  }).catch((e) => {
    process.stderr.write(`kjobs_exec: ${(e && e.stack) || e}\n`);
    process.exit(1);
  });
}

module.exports = { serve, serveBatch, Retry, Fail, ProtocolError, parseBatch, encodeReply, HELLO };
