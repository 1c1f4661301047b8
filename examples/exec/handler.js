#!/usr/bin/env node
// handler.js — an example kjobs exec handler in Node.js (no dependencies).
//
// kjobs starts this once per worker thread (handlers.exec = ["node", "handler.js"]) and speaks
// JSON lines with it: one {"batch":[...]} line in on stdin, one {"results":[...]} line out on
// stdout, per batch, echoing the request's "batch_id" so kjobs can tell a late or repeated reply
// from the pending one. Anything written to stderr ends up in kjobs' JSON log. The process exits
// when stdin closes (kjobs is shutting down). See README.md for the protocol.
//
// Job types: email.send / exec.ok -> ok; exec.retry -> retry (payload: retry_after_ms);
// exec.fail -> fail; exec.crash -> exit(3) mid-batch; exec.garbage -> a non-JSON reply;
// exec.sleep -> sleep payload ms, then ok; anything else -> fail "unknown job type".
'use strict';
const readline = require('readline');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function handle(job) {
  const payload = Buffer.from(job.payload_b64, 'base64').toString('utf8');
  switch (job.type) {
    case 'email.send':
    case 'exec.ok':
      return { id: job.id, status: 'ok' };
    case 'exec.retry': {
      const r = { id: job.id, status: 'retry', error: `exec.retry: asked to retry (attempt ${job.attempt})` };
      if (/^\d+$/.test(payload.trim())) r.retry_after_ms = Number(payload.trim());
      return r;
    }
    case 'exec.fail':
      return { id: job.id, status: 'fail', error: 'exec.fail: permanent failure' };
    case 'exec.crash':
      process.stderr.write(`handler.js: exec.crash job ${job.id}, exiting with status 3\n`);
      process.exit(3);
      break;
    case 'exec.garbage':
      return 'garbage';
    case 'exec.sleep':
      await sleep(Number(payload) || 0);
      return { id: job.id, status: 'ok' };
    default:
      return { id: job.id, status: 'fail', error: `unknown job type ${JSON.stringify(job.type)}` };
  }
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) { // one batch per line; the loop ends at EOF
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    const batch = request.batch;
    const results = [];
    let garbage = false;
    for (const job of batch) {
      const r = await handle(job);
      if (r === 'garbage') garbage = true;
      else results.push(r);
    }
    const types = [...new Set(batch.map((j) => j.type))].sort();
    process.stderr.write(`handler.js[${process.pid}]: batch of ${batch.length} job(s), types ${JSON.stringify(types)}\n`);
    process.stdout.write(garbage ? 'this is not JSON\n' : JSON.stringify({ batch_id: request.batch_id, results }) + '\n');
  }
}

main().catch((e) => {
  process.stderr.write(`handler.js: ${e.stack || e}\n`);
  process.exit(1);
});
