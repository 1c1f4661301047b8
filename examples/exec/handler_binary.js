#!/usr/bin/env node
// handler_binary.js — the example handler of handler.js, on the binary framing through the
// kjobs_exec helper (handlers.exec_protocol = "binary"; handlers.exec = ["node",
// "examples/exec/handler_binary.js"]). No protocol code here: kjobs_exec.serve() reads the
// frames, calls handle() per job and writes the replies. See README.md.
//
// Job types: email.send / exec.ok -> ok; exec.retry -> retry (ASCII payload: retry_after_ms);
// exec.fail -> permanent failure; exec.crash -> exit(3) mid-batch; exec.sleep -> sleep payload
// ms, then ok; anything else -> permanent failure "unknown job type".
'use strict';
const kjobs = require('./kjobs_exec');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

kjobs.serve(async (job) => {
  switch (job.type) {
    case 'email.send':
    case 'exec.ok':
      return;
    case 'exec.retry': {
      const text = job.payload.toString('utf8').trim();
      throw new kjobs.Retry(`exec.retry: asked to retry (attempt ${job.attempt})`,
        /^\d+$/.test(text) ? Number(text) : null);
    }
    case 'exec.fail':
      throw new kjobs.Fail('exec.fail: permanent failure');
    case 'exec.crash':
      console.log(`handler_binary.js: exec.crash job ${job.id}, exiting with status 3`); // to stderr
      process.exit(3);
      break;
    case 'exec.sleep':
      await sleep(Number(job.payload.toString('utf8')) || 0);
      return;
    default:
      throw new kjobs.Fail(`unknown job type ${JSON.stringify(job.type)}`);
  }
});
