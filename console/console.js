/*
 * console.js — the operator console's client (`kjobs ui`, docs/console.md). Dependency-free.
 *
 * It polls the JSON API (processor/console.h) and fills the page. Everything it shows comes
 * from Kafka (status records, headers, payloads) and is untrusted: it is only ever put into the
 * page with textContent / createElement, never parsed as markup (no HTML string is ever
 * assigned to an element: tests/integration/test_console_api.py checks it). The token, when
 * the console asks for one, lives in sessionStorage and goes out as an Authorization header
 * only (no cookie, so no other site can make the browser send it).
 */
"use strict";

const state = { page: "overview", config: null, last: null, timer: null, selected: new Set(), detail: null };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "–" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

function showErrors(list) {
  const p = $("errors");
  if (!list || list.length === 0) { p.hidden = true; p.textContent = ""; return; }
  p.hidden = false;
  p.textContent = list.join(" · ");
}

function headers(extra) {
  const h = Object.assign({ "Accept": "application/json" }, extra || {});
  const token = sessionStorage.getItem("kjobs-token");
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({ headers: headers() }, options || {});
  const r = await fetch(path, opts);
  if (r.status === 401) { askToken(); throw new Error("token required"); }
  const body = await r.json().catch(() => ({ error: "not JSON (" + r.status + ")" }));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function askToken() {
  $("login").hidden = false;
  document.querySelector("main").hidden = true;
}

function ms(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  if (seconds < 1) return (seconds * 1000).toFixed(1) + " ms";
  return seconds.toFixed(2) + " s";
}

function age(msv) {
  if (msv < 1000) return msv + " ms";
  if (msv < 120000) return (msv / 1000).toFixed(1) + " s";
  if (msv < 7200000) return Math.round(msv / 60000) + " min";
  return (msv / 3600000).toFixed(1) + " h";
}

function ago(msAgo) {
  if (typeof msAgo !== "number" || !isFinite(msAgo)) return "–";
  if (msAgo < 0) msAgo = 0;
  if (msAgo < 1500) return "now";
  if (msAgo < 120000) return Math.round(msAgo / 1000) + " s ago";
  return Math.round(msAgo / 60000) + " min ago";
}

function when(epochMs) {
  if (epochMs === null || epochMs === undefined) return "–";
  const d = new Date(epochMs);
  const delta = epochMs - Date.now();
  const rel = delta > 0 ? "in " + Math.round(delta / 1000) + " s" : Math.round(-delta / 1000) + " s ago";
  return d.toISOString().replace(".000Z", "Z") + " (" + rel + ")";
}

/* ---- overview -------------------------------------------------------------------------------- */

function perSecond(now, prev, count, unit) {
  if (!prev) return "";
  const dt = (now.now - prev.now) / 1000;
  if (dt <= 0) return "";
  const d = (count(now) || 0) - (count(prev) || 0);
  return d >= 0 ? (d / dt).toFixed(1) + " " + unit : "";
}

function rate(now, prev, key) {
  return perSecond(now, prev, (o) => o.totals.jobs[key], "jobs/s");
}

function workerRow(w) {
  const st = el("span", w.state, "state-" + String(w.state).replace(/[^a-z_]/g, ""));
  const errs = Array.isArray(w.errors) ? w.errors : [];
  const lastErr = errs.length ? errs[errs.length - 1] : null;
  const errText = lastErr ? (lastErr.msg || "") + (lastErr.error ? ": " + lastErr.error : "") : "";
  const a = w.assignment || {};
  const j = w.jobs || {};
  const h = w.handler || {};
  const tr = row([w.worker_id, w.host, w.version, st, a.count, j.ok, j.retry, j.dead_lettered,
    ms(h.p50_seconds), ms(h.p99_seconds), w.in_flight, ago(w.age_ms) + (w.stale ? " (stale)" : ""), errText],
    w.stale ? "stale" : "");
  tr.dataset.worker = String(w.worker_id);
  return tr;
}

function renderOverview(o) {
  const jobs = o.totals.jobs || {};
  $("succeeded-total").textContent = jobs.ok || 0;
  $("retry-total").textContent = jobs.retry || 0;
  $("dead-total").textContent = jobs.dead_lettered || 0;
  $("rate-ok").textContent = rate(o, state.last, "ok");
  $("rate-retry").textContent = rate(o, state.last, "retry");
  $("rate-dead").textContent = rate(o, state.last, "dead_lettered");
  $("in-place-total").textContent = o.totals.retries_in_place || 0;
  $("rate-in-place").textContent = perSecond(o, state.last, (x) => x.totals.retries_in_place, "tries/s");
  $("lag-main").textContent = o.totals.lag_main;
  $("lag-ladder").textContent = o.totals.lag_ladder;
  const oldest = (o.oldest_waiting_ms || {})[o.main_topic];
  $("oldest-waiting").textContent = oldest === undefined ? "none" : age(oldest);
  state.last = o;

  const live = o.workers.filter((w) => !w.stale).length;
  $("workers-note").textContent = live + " live, " + (o.workers.length - live) + " stale" +
    (o.status_loaded ? "" : " (still reading " + o.status_topic + ")");
  /* the server keeps only the documented fields of the documented types (status_project in
   * processor/console_data.c); a row that still fails to render is skipped, never the table */
  fill("workers", o.workers.map((w) => { try { return workerRow(w); } catch (e) { return null; } })
    .filter((tr) => tr !== null));
  $("group-state").textContent = (o.group || "") + (o.group_state ? " — " + o.group_state : "");
  fill("members", (o.members || []).map((m) => row([m.group_instance_id || m.member_id, m.client_id, m.host,
    (m.assignment || []).map((p) => p.topic + ":" + p.partition).join(", ")])));
  fill("lag", (o.lag || []).map((l) => row([l.topic, l.partition, l.committed, l.log_end, l.lag])));
  showErrors(o.errors);
}

/* ---- retries --------------------------------------------------------------------------------- */

function duration(msv) {
  if (msv % 3600000 === 0) return msv / 3600000 + "h";
  if (msv % 60000 === 0) return msv / 60000 + "m";
  if (msv % 1000 === 0) return msv / 1000 + "s";
  return msv + "ms";
}

function renderRetries(r) {
  fill("steps", r.steps.map((s) => row([s.step, s.topic, duration(s.delay_ms), s.waiting, when(s.next_due)])));
  showErrors(r.errors);
}

/* ---- dead letters ---------------------------------------------------------------------------- */

function dlqQuery() {
  const q = new URLSearchParams();
  for (const [name, id] of [["type", "f-type"], ["class", "f-class"], ["q", "f-q"]]) {
    const v = $(id).value.trim();
    if (v) q.set(name, v);
  }
  const since = $("f-since").value;
  if (since) q.set("since", String(new Date(since).getTime()));
  return q.toString();
}

function renderDlq(d) {
  $("dlq-count").textContent = d.matched + " dead letter(s) match" + (d.truncated ? ", newest " + d.items.length + " shown" : "");
  fill("dlq", d.items.map((it) => {
    const box = el("input");
    box.type = "checkbox";
    box.checked = state.selected.has(it.ref);
    box.dataset.ref = String(it.ref);
    box.hidden = !(state.config && state.config.allow_actions); /* nothing to act on: read-only */
    box.addEventListener("click", (ev) => {
      ev.stopPropagation();
      if (box.checked) state.selected.add(it.ref); else state.selected.delete(it.ref);
    });
    const tr = row([box, it.ref, it.state, it.type, it.id, it.error_class, it.error, it.failed_at_iso], "clickable");
    tr.dataset.ref = String(it.ref);
    tr.addEventListener("click", () => showDetail(it.ref));
    return tr;
  }));
  showErrors(d.errors);
}

function b64bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hexdump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const chunk = Array.from(bytes.slice(i, i + 16));
    const hex = chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(i.toString(16).padStart(8, "0") + "  " + hex.padEnd(48, " ") + "  " + ascii);
  }
  return lines.join("\n");
}

function renderPayload() {
  const rec = state.detail;
  if (!rec) return;
  const view = $("payload-view").value;
  const text = typeof rec.payload === "string" ? rec.payload : null;
  const b64 = rec.payload_b64 || rec.value_b64 || "";
  let out;
  if (view === "hex") {
    out = hexdump(b64bytes(b64));
  } else if (view === "json") {
    try { out = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { out = "(not JSON: " + e.message + ")"; }
  } else {
    out = text !== null ? text : "(not valid UTF-8: see hex)";
  }
  $("payload").textContent = out;
}

async function showDetail(handle) {
  try {
    const rec = await api("/api/dlq/" + encodeURIComponent(handle).replace("%3A", ":"));
    document.body.dataset.detail = handle; /* for tests: the detail shown */
    state.detail = rec;
    $("detail").hidden = false;
    $("detail-handle").textContent = handle;
    fill("detail-headers", (rec.headers || []).map((h, i) => {
      const v = h[1];
      const shown = v === null ? "(no value)" : typeof v === "string" ? v : "base64: " + v.base64;
      return row([i + 1, h[0], shown]);
    }));
    $("payload-view").value = typeof rec.payload === "string" ? "text" : "hex";
    renderPayload();
    $("detail-json").textContent = JSON.stringify(rec, null, 2);
  } catch (e) {
    showErrors([String(e.message)]);
  }
}

/* ---- controls: pauses and circuit breakers (processor/group_control.h) ------------------------ */

function target(topic, partition) {
  return partition === null || partition === undefined ? String(topic) : topic + ":" + partition;
}

function controlButton(label, action, topic, partition) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.action = action;
  b.dataset.target = target(topic, partition);
  b.hidden = !(state.config && state.config.allow_actions);
  b.addEventListener("click", () => control(action, topic, partition, b));
  return b;
}

function renderControls(c) {
  const open = (c.breaker && c.breaker.open) || [];
  $("breaker-note").textContent = open.length ? open.length + " open" : "none open";
  fill("breakers", open.map((w) => row([w.worker_id, w.host, w.state, ago(w.age_ms) + (w.stale ? " (stale)" : "")])));
  fill("pauses", (c.pauses || []).map((p) => {
    const tr = row([target(p.topic, p.partition) + (p.partition === null ? " (whole topic)" : ""),
      when(p.at), p.by, p.reason, (p.applied_by || []).join(", "),
      controlButton("Resume", "resume", p.topic, p.partition)]);
    tr.dataset.target = target(p.topic, p.partition);
    return tr;
  }));
  const rows = [];
  for (const t of c.topics || []) {
    const head = row([t.topic, "all", "", "", "", t.paused ? "paused" : "running",
      controlButton(t.paused ? "Resume topic" : "Pause topic", t.paused ? "resume" : "pause", t.topic, null)], "topic-row");
    head.dataset.target = t.topic;
    head.dataset.state = t.paused ? "paused" : "running";
    rows.push(head);
    for (const p of (c.partitions || []).filter((x) => x.topic === t.topic)) {
      const held = (p.applied_by || []).length ? " (held by " + p.applied_by.join(", ") + ")" : "";
      const st = p.paused === "partition" ? "paused" + held : p.paused === "topic" ? "paused with its topic" + held : "running";
      const own = p.paused === "partition";
      const tr = row([p.topic, p.partition, p.committed, p.log_end, p.lag, st,
        p.paused === "topic" ? "" : controlButton(own ? "Resume" : "Pause", own ? "resume" : "pause", p.topic, p.partition)]);
      tr.dataset.target = target(p.topic, p.partition);
      tr.dataset.state = p.paused ? "paused" : "running";
      tr.dataset.held = String((p.applied_by || []).length);
      tr.dataset.lag = String(p.lag);
      rows.push(tr);
    }
  }
  fill("control-parts", rows);
  showErrors(c.errors);
}

async function control(action, topic, partition, button) {
  const out = $("control-result");
  const body = action === "breaker-resume" ? {} : { topic: topic, partition: partition === undefined ? null : partition };
  const reason = $("pause-reason").value.trim();
  if (action === "pause" && reason) body.reason = reason;
  if (button) button.disabled = true;
  try {
    await api("/api/controls/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", "X-Kjobs-Console": "1" }),
      body: JSON.stringify(body),
    });
    out.textContent = action === "breaker-resume" ? "breaker resume requested"
      : (action === "pause" ? "paused " : "resumed ") + target(topic, partition);
    out.dataset.last = action + " " + (action === "breaker-resume" ? "" : target(topic, partition));
  } catch (e) {
    out.textContent = action + " failed: " + e.message;
  } finally {
    if (button) button.disabled = false;
    schedule();
  }
}

/* ---- actions (shown only when the console allows them: ui.allow_actions) ------------------ */

/* Replay or discard the ticked dead letters (POST /api/dlq/replay or /api/dlq/discard). */
async function actOnSelected(action) {
  const refs = Array.from(state.selected);
  const out = $("action-result");
  if (refs.length === 0) { out.textContent = "select dead letters first"; return; }
  if (action === "discard" &&
      !window.confirm("Discard " + refs.length + " dead letter(s)? They will never be replayed; this cannot be undone.")) return;
  for (const id of ["replay", "discard"]) $(id).disabled = true;
  try {
    const r = await api("/api/dlq/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", "X-Kjobs-Console": "1" }),
      body: JSON.stringify({ refs: refs }),
    });
    if (action === "replay") {
      const skipped = r.skipped.replayed + r.skipped.refailed + r.skipped.no_origin + r.skipped.no_value +
        r.skipped.discarded;
      const gone = r.requested - r.selected - skipped;
      out.textContent = "replayed " + r.replayed + " of " + r.requested +
        (skipped ? ", skipped " + skipped + " (already replayed, refailed, discarded or without origin)" : "") +
        (gone > 0 ? ", " + gone + " already replayed before or no longer in the DLQ" : "") +
        (r.failed ? ", " + r.failed + " not acknowledged" : "");
      out.dataset.replayed = String(r.replayed);
    } else {
      const gone = r.requested - r.selected - r.skipped.discarded;
      out.textContent = "discarded " + r.discarded + " of " + r.requested +
        (r.skipped.discarded ? ", " + r.skipped.discarded + " already discarded" : "") +
        (gone > 0 ? ", " + gone + " no longer in the DLQ" : "");
      out.dataset.discarded = String(r.discarded);
    }
    state.selected.clear();
  } catch (e) {
    out.textContent = action + " failed: " + e.message;
  } finally {
    for (const id of ["replay", "discard"]) $(id).disabled = false;
    schedule();
  }
}

/* ---- driving ------------------------------------------------------------------------------- */

async function refresh() {
  try {
    if (state.page === "overview") renderOverview(await api("/api/overview"));
    else if (state.page === "retries") renderRetries(await api("/api/retries"));
    else if (state.page === "dlq") renderDlq(await api("/api/dlq?" + dlqQuery()));
    else if (state.page === "controls") renderControls(await api("/api/controls"));
    document.body.dataset.loaded = state.page; /* for tests: this page has been filled */
  } catch (e) {
    showErrors([String(e.message)]);
  }
}

function schedule() {
  clearTimeout(state.timer);
  const every = state.page === "dlq" ? 0 : 2000; /* the DLQ list is read on demand */
  refresh().finally(() => { if (every) state.timer = setTimeout(schedule, every); });
}

function show(page) {
  state.page = page;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.page === page);
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  delete document.body.dataset.loaded;
  schedule();
}

async function start() {
  try {
    state.config = await api("/api/config");
  } catch (e) {
    showErrors([String(e.message)]);
    return;
  }
  const c = state.config;
  $("where").textContent = "group " + c.group + " · " + c.main_topic + " · " + c.version;
  $("mode").textContent = c.allow_actions ? "actions allowed" : "read-only";
  $("dlq-actions").hidden = !c.allow_actions;
  for (const a of document.querySelectorAll(".control-actions")) a.hidden = !c.allow_actions;
  $("login").hidden = true;
  document.querySelector("main").hidden = false;
  show(state.page);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.page));
  $("dlq-filter").addEventListener("submit", (ev) => { ev.preventDefault(); schedule(); });
  $("payload-view").addEventListener("change", renderPayload);
  $("replay").addEventListener("click", () => actOnSelected("replay"));
  $("discard").addEventListener("click", () => actOnSelected("discard"));
  $("breaker-resume").addEventListener("click", () => control("breaker-resume", null, null, $("breaker-resume")));
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("kjobs-token", $("token").value);
    $("token").value = "";
    start();
  });
  start();
});
