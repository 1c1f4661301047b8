// test_console.js — the operator console (`kjobs ui`, docs/console.md) in a real browser:
// Debian's chromium driven by playwright-core (npm, .deps/node), headless, no sandbox.
//
// Run: NODE_PATH=<repo>/.deps/node/node_modules node test_console.js <kjobs-binary> <artefact-dir>
// Against the embedded broker, one live worker (status reports every 300 ms, an exec handler
// that dead-letters "console.gated" jobs until a gate file exists) and `kjobs ui` with actions
// allowed, it: opens the overview and watches the succeeded count move as jobs run, and the
// retried-in-place count as jobs failing once are retried in place (the worker's
// retry.in_place_attempts = 1); filters
// the dead letters by type; opens one and checks its headers are listed in order and that a
// payload full of markup is shown as text (no element made from it); opens the gate, selects
// two dead letters, replays them and sees them succeed; discards the third (after a confirm) and
// sees it listed as discarded and skipped by a replay; on the Controls page pauses partition 1,
// sees its jobs wait (committed offset still, lag growing) while partition 0's run, and resumes
// it. Screenshots of each step are kept in <artefact-dir> (overview, dlq-filtered, dlq-detail,
// dlq-replayed, dlq-discarded, controls).
// Synchronisation: first stdout lines of the processes, page conditions (waitForFunction), a
// file written by the handler. No sleeps.
'use strict';
const { spawn, spawnSync } = require('child_process');
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const KJOBS = process.argv[2] || path.join(__dirname, '..', '..', 'build', 'kjobs');
const ARTEFACTS = process.argv[3] || path.join(os.tmpdir(), 'kjobs-console-artefacts');
const HANDLER = path.join(__dirname, 'console_handler.py');
const CHROMIUM = process.env.KJOBS_CHROMIUM || '/usr/bin/chromium';
const MARKUP = '{"note":"<img src=x onerror=alert(1)><b>bold</b>"}';

function firstLine(proc, what) {
  return new Promise((resolve, reject) => {
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr += d; });
    readline.createInterface({ input: proc.stdout }).once('line', (l) => resolve(l.trim()));
    proc.once('exit', (code) => reject(new Error(`${what} exited ${code}: ${stderr.slice(-2000)}`)));
  });
}

function stop(proc) {
  if (!proc || proc.exitCode !== null) return Promise.resolve(proc ? proc.exitCode : 0);
  return new Promise((resolve) => { proc.once('exit', (code) => resolve(code)); proc.kill('SIGTERM'); });
}

function kjobs(args) {
  const p = spawnSync(KJOBS, args, { encoding: 'utf8', timeout: 60000 });
  assert.strictEqual(p.status, 0, `kjobs ${args.join(' ')}: ${p.stderr}`);
  return p.stdout;
}

// Resolves once `fn()` is true; polls a file the handler writes (no browser involved).
function until(what, fn, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (fn()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(check, 200);
    };
    check();
  });
}

// Resolves once the async `fn()` is true (the same re-check as harness.wait_until).
async function untilAsync(what, fn, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function main() {
  if (!fs.existsSync(CHROMIUM)) {
    console.log(`skip: ${CHROMIUM} is not installed (scripts/install-deps.sh installs chromium)`);
    return;
  }
  fs.mkdirSync(ARTEFACTS, { recursive: true });
  const gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kjobs-console-')), 'gate');
  const procs = [];
  let browser = null;
  try {
    const broker = spawn(KJOBS, ['broker', '--partitions', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(broker);
    const bootstrap = await firstLine(broker, 'kjobs broker');

    const workerLog = fs.openSync(path.join(ARTEFACTS, 'worker.log'), 'w');
    const worker = spawn(KJOBS, ['run', '-b', bootstrap, '-X', 'fetch.wait.max.ms=5'], {
      stdio: ['ignore', 'ignore', workerLog],
      env: Object.assign({}, process.env, {
        KJOBS_HTTP_LISTEN: '127.0.0.1:0',
        KJOBS_UI_REPORT_INTERVAL: '300ms',
        KJOBS_KAFKA_GROUP_INSTANCE_ID: 'console-test-worker',
        KJOBS_RETRY_IN_PLACE_ATTEMPTS: '1',
        KJOBS_HANDLERS_EXEC: JSON.stringify(['/usr/bin/python3', '-u', HANDLER, gate]),
      }),
    });
    procs.push(worker);

    const ui = spawn(KJOBS, ['ui', '-b', bootstrap, '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: Object.assign({}, process.env, { KJOBS_UI_ALLOW_ACTIONS: 'true' }),
    });
    procs.push(ui);
    const url = await firstLine(ui, 'kjobs ui');
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    let confirmsExpected = 0; // a discard asks first; any other dialog is an error
    page.on('dialog', (d) => {
      if (d.type() === 'confirm' && confirmsExpected > 0) { confirmsExpected--; d.accept(); return; }
      pageErrors.push(`dialog: ${d.message()}`);
      d.dismiss();
    });
    await page.goto(url);

    // --- overview: the worker appears, and the succeeded count moves as jobs run
    await page.waitForSelector('#workers tbody tr[data-worker="console-test-worker"]', { timeout: 60000 });
    const before = Number(await page.textContent('#succeeded-total'));
    kjobs(['enqueue', '-b', bootstrap, '--type', 'kjobs.noop', '--count', '40']);
    await page.waitForFunction((n) => Number(document.getElementById('succeeded-total').textContent) >= n,
      before + 40, { timeout: 60000 });
    assert.strictEqual(Number(await page.textContent('#succeeded-total')), before + 40);
    const state = await page.textContent('#workers tbody tr[data-worker="console-test-worker"] td:nth-child(4)');
    assert.strictEqual(state, 'running');
    // jobs failing once are retried in place: that count moves, the ladder's does not
    const inPlaceBefore = Number(await page.textContent('#in-place-total'));
    const retriedBefore = Number(await page.textContent('#retry-total'));
    kjobs(['enqueue', '-b', bootstrap, '--type', 'kjobs.flaky', '--payload', '1', '--count', '3']);
    await page.waitForFunction((n) => Number(document.getElementById('succeeded-total').textContent) >= n,
      before + 43, { timeout: 60000 });
    assert.strictEqual(Number(await page.textContent('#in-place-total')), inPlaceBefore + 3);
    assert.strictEqual(Number(await page.textContent('#retry-total')), retriedBefore);
    await page.screenshot({ path: path.join(ARTEFACTS, 'overview.png'), fullPage: true });

    // --- dead letters: 3 gated jobs (one with markup in its payload) and 2 of an unknown type
    const gatedIds = kjobs(['enqueue', '-b', bootstrap, '--type', 'console.gated', '--count', '2']).split(/\s+/).filter(Boolean);
    gatedIds.push(...kjobs(['enqueue', '-b', bootstrap, '--type', 'console.gated', '--payload', MARKUP]).split(/\s+/).filter(Boolean));
    kjobs(['enqueue', '-b', bootstrap, '--type', 'kjobs.fail-permanent', '--count', '2']);
    // the DLQ page reads on demand: wait (through the API) until all five are dead-lettered
    await untilAsync('5 dead letters', async () => {
      const r = await fetch(url + 'api/dlq');
      return r.ok && (await r.json()).matched === 5;
    });
    await page.click('button[data-page="dlq"]');
    await page.waitForFunction(() => document.querySelectorAll('#dlq tbody tr').length === 5, null, { timeout: 30000 });
    await page.fill('#f-type', 'console.gated');
    await page.click('#f-apply');
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll('#dlq tbody tr');
      return rows.length === 3 && Array.from(rows).every((r) => r.children[3].textContent === 'console.gated');
    }, null, { timeout: 30000 });
    assert.match(await page.textContent('#dlq-count'), /^3 dead letter/);
    await page.screenshot({ path: path.join(ARTEFACTS, 'dlq-filtered.png'), fullPage: true });

    // --- detail: headers in order, the markup payload shown as text
    const rows = await page.$$eval('#dlq tbody tr', (trs) => trs.map((tr) => ({ ref: tr.dataset.ref, id: tr.children[4].textContent })));
    const markupId = gatedIds[2];
    const markupRow = rows.find((r) => r.id === markupId);
    assert.ok(markupRow, `the markup job ${markupId} is listed: ${JSON.stringify(rows)}`);
    await page.click(`#dlq tbody tr[data-ref="${markupRow.ref}"] td:nth-child(2)`);
    await page.waitForFunction((ref) => document.body.dataset.detail === ref, markupRow.ref);
    const names = await page.$$eval('#detail-headers tbody tr', (trs) => trs.map((tr) => tr.children[1].textContent));
    assert.deepStrictEqual(names.slice(0, 3), ['kjobs-original-topic', 'kjobs-original-partition', 'kjobs-original-offset']);
    assert.ok(names.includes('kjobs-error-class'), names.join(','));
    assert.strictEqual(await page.textContent('#payload'), MARKUP);
    assert.strictEqual(await page.$('#payload img, #payload b, #detail img'), null, 'payload became markup');
    await page.selectOption('#payload-view', 'json');
    assert.strictEqual(await page.textContent('#payload'), JSON.stringify(JSON.parse(MARKUP), null, 2));
    await page.selectOption('#payload-view', 'hex');
    assert.match(await page.textContent('#payload'), /^00000000  7b 22 6e 6f 74 65/);
    await page.screenshot({ path: path.join(ARTEFACTS, 'dlq-detail.png'), fullPage: true });

    // --- replay two: open the gate first, so they succeed when they run again
    fs.writeFileSync(gate, '');
    const chosen = rows.filter((r) => r.id !== markupId).slice(0, 2);
    assert.strictEqual(chosen.length, 2);
    for (const r of chosen) await page.check(`#dlq tbody tr[data-ref="${r.ref}"] input[type=checkbox]`);
    assert.ok(await page.isVisible('#replay'), 'the replay button is shown when actions are allowed');
    await page.click('#replay');
    await page.waitForFunction(() => document.getElementById('action-result').dataset.replayed !== undefined, null, { timeout: 60000 });
    assert.strictEqual(await page.getAttribute('#action-result', 'data-replayed'), '2',
      await page.textContent('#action-result'));
    const okFile = gate + '.ok';
    await until('the two replayed jobs succeeded', () => fs.existsSync(okFile) &&
      chosen.every((r) => fs.readFileSync(okFile, 'utf8').split('\n').includes(r.id)));
    // the list shows them replayed; the third stays new
    await page.click('#f-apply');
    await page.waitForFunction((refs) => refs.every((ref) => {
      const tr = document.querySelector(`#dlq tbody tr[data-ref="${ref}"]`);
      return tr && tr.children[2].textContent === 'replayed';
    }), chosen.map((r) => r.ref), { timeout: 30000 });
    assert.strictEqual(await page.textContent(`#dlq tbody tr[data-ref="${markupRow.ref}"] td:nth-child(3)`), 'new');
    await page.screenshot({ path: path.join(ARTEFACTS, 'dlq-replayed.png'), fullPage: true });

    // --- discard the third: listed as discarded, and a replay of it then replays nothing
    await page.check(`#dlq tbody tr[data-ref="${markupRow.ref}"] input[type=checkbox]`);
    confirmsExpected = 1;
    await page.click('#discard');
    await page.waitForFunction(() => document.getElementById('action-result').dataset.discarded !== undefined, null, { timeout: 60000 });
    assert.strictEqual(await page.getAttribute('#action-result', 'data-discarded'), '1',
      await page.textContent('#action-result'));
    assert.strictEqual(confirmsExpected, 0, 'discard asked for confirmation');
    await page.waitForFunction((ref) => {
      const tr = document.querySelector(`#dlq tbody tr[data-ref="${ref}"]`);
      return tr && tr.children[2].textContent === 'discarded';
    }, markupRow.ref, { timeout: 30000 });
    await page.check(`#dlq tbody tr[data-ref="${markupRow.ref}"] input[type=checkbox]`);
    await page.evaluate(() => { delete document.getElementById('action-result').dataset.replayed; });
    await page.click('#replay');
    await page.waitForFunction(() => document.getElementById('action-result').dataset.replayed !== undefined, null, { timeout: 60000 });
    assert.strictEqual(await page.getAttribute('#action-result', 'data-replayed'), '0',
      await page.textContent('#action-result'));
    assert.match(await page.textContent('#action-result'), /skipped 1/);
    await page.screenshot({ path: path.join(ARTEFACTS, 'dlq-discarded.png'), fullPage: true });

    // --- controls: pause partition 1 from the page, see its jobs wait while partition 0's run
    await page.click('button[data-page="controls"]');
    await page.waitForSelector('#control-parts tbody tr[data-target="jobs:1"] button[data-action="pause"]', { timeout: 30000 });
    const cells = (t) => page.$eval(`#control-parts tbody tr[data-target="${t}"]`, (tr) => ({
      committed: Number(tr.children[2].textContent), logEnd: Number(tr.children[3].textContent),
      lag: Number(tr.children[4].textContent), state: tr.dataset.state, held: Number(tr.dataset.held) }));
    await page.fill('#pause-reason', 'maintenance <b>window</b>');
    await page.click('#control-parts tbody tr[data-target="jobs:1"] button[data-action="pause"]');
    // paused, and held by the worker that owns it (its status record says so)
    await page.waitForFunction(() => {
      const tr = document.querySelector('#control-parts tbody tr[data-target="jobs:1"]');
      return tr && tr.dataset.state === 'paused' && Number(tr.dataset.held) > 0;
    }, null, { timeout: 60000 });
    assert.strictEqual(await page.textContent('#pauses tbody tr[data-target="jobs:1"] td:nth-child(4)'), 'maintenance <b>window</b>');
    assert.strictEqual(await page.$('#pauses b'), null, 'the reason became markup');
    const p0 = await cells('jobs:0');
    const p1 = await cells('jobs:1');
    kjobs(['enqueue', '-b', bootstrap, '--type', 'kjobs.noop', '--count', '40']);
    // partition 0 runs its share (its committed offset moves to its new log end); partition 1's
    // jobs wait: its committed offset stays where it was and its lag grows
    await page.waitForFunction(([c0, c1]) => {
      const get = (t) => document.querySelector(`#control-parts tbody tr[data-target="${t}"]`).children;
      const r0 = get('jobs:0'), r1 = get('jobs:1');
      const end0 = Number(r0[3].textContent), end1 = Number(r1[3].textContent);
      return end0 + end1 >= c0.logEnd + c1.logEnd + 40 && end0 > c0.logEnd && end1 > c1.logEnd &&
        Number(r0[2].textContent) === end0 && Number(r1[4].textContent) === end1 - c1.committed;
    }, [p0, p1], { timeout: 60000 });
    assert.strictEqual((await cells('jobs:1')).committed, p1.committed, 'partition 1 ran while paused');
    await page.screenshot({ path: path.join(ARTEFACTS, 'controls.png'), fullPage: true });
    // resumed from the pauses table: it drains
    await page.click('#pauses tbody tr[data-target="jobs:1"] button[data-action="resume"]');
    await page.waitForFunction(() => {
      const tr = document.querySelector('#control-parts tbody tr[data-target="jobs:1"]');
      return tr && tr.dataset.state === 'running' && tr.dataset.lag === '0';
    }, null, { timeout: 60000 });
    assert.strictEqual(await page.$('#pauses tbody tr'), null);

    // --- and the overview counted them as succeeded
    await page.click('button[data-page="overview"]');
    await page.waitForFunction((n) => Number(document.getElementById('succeeded-total').textContent) >= n,
      before + 42, { timeout: 60000 });
    assert.deepStrictEqual(pageErrors, []);
    console.log(`ok: console in chromium; screenshots in ${ARTEFACTS}`);
  } finally {
    if (browser) await browser.close();
    const codes = [];
    for (const p of procs.reverse()) codes.push(await stop(p));
    assert.deepStrictEqual(codes, [0, 0, 0], `exit codes of ui, worker, broker: ${codes}`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
