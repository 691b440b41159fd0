// The rotations console: draws the list of rotations and a rotation's page
// from the JSON API (docs/admin.md), and refreshes them while rotations run.
// No framework and no build step: the worker embeds this file as it is.
"use strict";

const cfg = document.body.dataset;
const readOnly = cfg.readonly === "true";
const main = document.getElementById("main");
const fast = 2000, slow = 10000;
let timer = null;

// el builds an element; text goes in as text, never as HTML.
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's content security policy refuses
    // inline style attributes.
    else if (k === "style") for (const decl of v.split(";")) {
      const i = decl.indexOf(":");
      if (i > 0) e.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
    }
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

const nf = new Intl.NumberFormat();
const num = (n) => nf.format(n);
const pct = (a, b) => (b > 0 ? (100 * a) / b : 100);

function when(t) {
  if (!t) return "—";
  const d = new Date(t);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function dur(s) {
  if (s === undefined || s === null || !isFinite(s)) return "—";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  const h = Math.floor(s / 3600);
  if (h < 48) return h + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

function finished(r) { return !!r.finished_at; }
function halted(r) { return r.state === "failed" && !finished(r); }

// stateBadge names the state as status and list do; a rotation halted by
// its budget, or by credentials the API refused (401/403), is "failed"
// there too, and the badge says it can be resumed and why it halted.
function stateBadge(r) {
  const word = halted(r) ? "halted" : r.state;
  const why = (r.reason || "").startsWith("error budget") ? "error budget" : "access denied";
  const label = { completed_with_errors: "completed with errors", halted: "halted: " + why }[word] || word;
  return el("span", { class: "state " + word, "data-state": r.state }, label);
}

function bar(c, big) {
  const t = c.total || 1;
  const part = (cls, n, title) => (n > 0 ? el("i", { class: cls, style: `width:${pct(n, t)}%`, title: `${title}: ${num(n)}` }) : null);
  return el("div", { class: "bar" + (big ? " big" : ""), role: "progressbar", "aria-valuenow": Math.round(pct(c.total - c.pending - c.running, c.total)) },
    part("ok", c.succeeded, "succeeded"), part("skip", c.skipped, "skipped"), part("bad", c.failed, "failed"),
    part("can", c.cancelled, "cancelled"), part("run", c.running, "running"));
}

async function api(path, opts) {
  const res = await fetch(cfg.api + path, Object.assign({ headers: { Accept: "application/json" } }, opts));
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}

function showError(err) {
  let box = document.getElementById("error");
  if (!box) {
    box = el("p", { id: "error", class: "error" });
    main.prepend(box);
  }
  box.textContent = "Could not refresh: " + err.message + " (retrying)";
}

async function refresh() {
  try {
    if (cfg.rotation) await showRotation(cfg.rotation);
    else await showList();
  } catch (err) {
    showError(err);
    schedule(slow);
  }
}

// ---- the list ----

async function showList() {
  const params = new URLSearchParams(location.search);
  const offset = parseInt(params.get("offset") || "0", 10) || 0;
  const limit = 50;
  const data = await api(`?offset=${offset}&limit=${limit}`);
  const rows = data.rotations.map((r) => el("tr", { "data-rotation": r.id },
    el("td", {}, el("a", { href: `${cfg.console}/${encodeURIComponent(r.id)}`, class: "mono" }, r.id),
      el("div", { class: "muted" }, r.keypair)),
    el("td", {}, r.region || "default", el("div", { class: "muted mono" },
      (r.project_id ? r.project_id.slice(0, 8) + "…" : "default project") + (r.group ? ` · part of ${r.group}` : ""))),
    el("td", {}, stateBadge(r)),
    el("td", {}, bar(r.counts), el("div", { class: "muted" }, pct(r.done, r.counts.total).toFixed(1) + "%")),
    el("td", { class: "num" }, `${num(r.done)} / ${num(r.counts.total)}`),
    el("td", { class: "num" }, num(r.counts.failed)),
    el("td", { class: "num" }, r.rate ? r.rate.toFixed(1) + "/s" : "—"),
    el("td", { class: "num" }, r.eta_seconds !== undefined ? dur(r.eta_seconds) : "—"),
    el("td", {}, when(r.created_at)),
    el("td", {}, when(r.finished_at))));
  const pager = el("div", { class: "pager" },
    offset > 0 ? el("a", { href: `?offset=${Math.max(0, offset - limit)}` }, "← Newer") : null,
    el("span", { class: "muted" }, data.total ? `${offset + 1}–${offset + data.rotations.length} of ${num(data.total)}` : ""),
    offset + limit < data.total ? el("a", { href: `?offset=${offset + limit}` }, "Older →") : null);
  main.replaceChildren(
    el("h1", {}, "Rotations"),
    el("p", { class: "muted" }, "Newest first. A rotation across regions and projects is listed part by part, a (region, project) each, with its own bar, failures and controls. A rotation's page has its waves, failures by error code, progress over time and controls."),
    el("div", { class: "card" },
      data.rotations.length === 0
        ? el("p", { class: "muted" }, "No rotations yet. Start one with: enqueue start --keypair KEYPAIR servers.txt")
        : el("table", { id: "rotations" },
          el("thead", {}, el("tr", {}, ["Rotation", "Region / project", "State", "Progress", "Done", "Failed", "Rate", "ETA", "Created", "Finished"]
            .map((h, i) => el("th", { class: i >= 4 && i <= 7 ? "num" : null }, h)))),
          el("tbody", {}, rows)),
      pager));
  schedule(data.rotations.some((r) => !finished(r)) ? fast : slow);
}

// ---- one rotation ----

async function control(id, action, body) {
  const buttons = main.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    await api(`/${encodeURIComponent(id)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    alert(`${action} failed: ${err.message}`);
  }
  await refresh();
}

function confirmCancel(id) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-id").textContent = id;
  document.getElementById("confirm-yes").onclick = () => { dlg.close(); control(id, "cancel"); };
  document.getElementById("confirm-no").onclick = () => dlg.close();
  dlg.showModal();
}

function controls(r) {
  if (readOnly || finished(r) || r.state === "cancelled") return null;
  const id = r.id;
  const out = el("div", { class: "actions", id: "controls" });
  if (r.state === "running") {
    out.append(el("button", { class: "primary", id: "pause", onclick: () => control(id, "pause") }, "Pause"));
  }
  if (r.state === "paused") {
    out.append(el("button", { class: "primary", id: "resume", onclick: () => control(id, "resume") }, "Resume"));
  }
  if (halted(r)) {
    // A new budget is optional: a rotation halted by refused credentials
    // resumes within its budget once they are fixed.
    const input = el("input", { id: "max-errors", size: 8, placeholder: String(r.counts.failed + 10), "aria-label": "new error budget" });
    out.append(el("label", {}, "New budget ", input),
      el("button", { class: "primary", id: "resume", onclick: () => control(id, "resume", { max_errors: input.value.trim() }) }, "Resume"));
  }
  out.append(el("button", { class: "danger", id: "cancel", onclick: () => confirmCancel(id) }, "Cancel…"));
  return out;
}

function stat(label, value, title) {
  return el("div", { class: "stat", title }, el("div", { class: "n" }, value), el("div", { class: "l" }, label));
}

// chart draws progress over time: servers ended and failed, against the
// total, from the API's cumulative history.
function chart(d) {
  const h = d.history || [];
  const W = 760, H = 220, L = 56, R = 12, T = 12, B = 26;
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "progress over time" });
  if (h.length < 2) {
    svg.append(s("text", { x: L, y: H / 2 }, "No outcomes yet."));
    return svg;
  }
  const t0 = Date.parse(h[0].at), t1 = Math.max(Date.parse(h[h.length - 1].at), t0 + 1000);
  const max = Math.max(d.counts.total, 1);
  const x = (t) => L + ((Date.parse(t) - t0) / (t1 - t0)) * (W - L - R);
  const y = (n) => T + (1 - n / max) * (H - T - B);
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s("line", { class: "total", x1: L, y1: y(max), x2: W - R, y2: y(max) }),
    s("text", { x: L - 6, y: y(max) + 4, "text-anchor": "end" }, num(max)),
    s("text", { x: L - 6, y: H - B + 4, "text-anchor": "end" }, "0"),
    s("text", { x: L, y: H - 8 }, when(h[0].at)),
    s("text", { x: W - R, y: H - 8, "text-anchor": "end" }, when(h[h.length - 1].at)),
    s("polyline", { class: "ended", points: h.map((p) => `${x(p.at).toFixed(1)},${y(p.ended).toFixed(1)}`).join(" ") }),
    s("polyline", { class: "failed", points: h.map((p) => `${x(p.at).toFixed(1)},${y(p.failed).toFixed(1)}`).join(" ") }));
  return svg;
}

function waves(d) {
  return el("table", { id: "waves" },
    el("thead", {}, el("tr", {}, el("th", {}, "Wave"), el("th", {}, "Chunks"), el("th", { class: "num" }, "Servers"), el("th", {}, "State"))),
    el("tbody", {}, d.waves.map((w) => el("tr", {},
      el("td", {}, `${w.wave} of ${d.waves.length}`),
      el("td", {}, w.first_chunk === w.last_chunk ? String(w.first_chunk) : `${w.first_chunk}–${w.last_chunk}`),
      el("td", { class: "num" }, num(w.servers)),
      el("td", {}, w.state === "current" ? `current: ${num(w.open)} to go` : w.state)))));
}

function budget(d) {
  const b = d.budget;
  if (b.max_errors < 0) return el("p", {}, `${num(b.failed)} failed; no error budget.`);
  const used = Math.min(100, pct(b.failed, Math.max(b.max_errors, 1)));
  return el("div", { class: "budget" },
    el("p", {}, `${num(b.failed)} failed of ${num(b.max_errors)} allowed`,
      b.failed > b.max_errors ? " — exceeded" : ""),
    el("div", { class: "bar" }, el("i", { class: "bad", style: `width:${b.max_errors === 0 && b.failed === 0 ? 0 : used}%` })));
}

function failures(d) {
  if (d.failures.length === 0) return el("p", { class: "muted" }, "No failures.");
  return el("table", { id: "failures" },
    el("thead", {}, el("tr", {}, el("th", {}, "Error code"), el("th", { class: "num" }, "Servers"), el("th", {}, "Examples"))),
    el("tbody", {}, d.failures.map((f) => el("tr", {},
      el("td", { class: "mono" }, f.code),
      el("td", { class: "num" }, num(f.count)),
      el("td", {}, el("ul", { class: "examples" }, (f.examples || []).map((e) =>
        el("li", {}, el("span", { class: "mono" }, e.server_id), ` (attempt ${e.attempts}): ${e.error_msg}`))))))));
}

// historyWords name the history's kinds for people; a kind this console
// does not know shows as it is.
const historyWords = {
  created: "Created", keypair_imported: "Keypair imported", wave_started: "Wave started", paused: "Paused",
  resumed: "Resumed", halted_budget: "Halted: error budget", halted: "Halted", cancelled: "Cancelled",
  finished: "Finished", keypair_retired: "Old keypair retired",
};
const historyClass = {
  created: "run", keypair_imported: "run", wave_started: "run", paused: "warn", resumed: "run",
  halted_budget: "bad", halted: "bad", cancelled: "can", finished: "ok", keypair_retired: "ok",
};

// endClass colours a finish by the state its detail begins with.
function endClass(detail) {
  const st = (detail || "").split(":")[0];
  return { succeeded: "ok", completed_with_errors: "cwe", failed: "bad", cancelled: "can" }[st] || "ok";
}

// timeline draws the rotation's history, oldest first: when, what, who,
// and the figures that go with it; a gap in the entries' numbers is where
// the capped history left entries out.
function timeline(d) {
  const h = d.timeline || [];
  if (h.length === 0) return el("p", { class: "muted" }, "No history: the rotation was started by a release that kept none.");
  const rows = [];
  let prev = 0;
  for (const e of h) {
    if (!e.rotation && prev && e.seq > prev + 1) {
      rows.push(el("li", { class: "gap" }, `… ${num(e.seq - prev - 1)} entries left out …`));
    }
    prev = e.rotation ? prev : e.seq;
    rows.push(el("li", { class: `kind-${e.kind}` },
      el("i", { class: e.kind === "finished" ? endClass(e.detail) : historyClass[e.kind] || "can" }),
      el("time", { datetime: e.at, title: e.at }, when(e.at)),
      el("span", { class: "what" }, historyWords[e.kind] || e.kind, e.rotation ? el("span", { class: "mono muted" }, ` ${e.rotation}`) : null),
      el("span", { class: "who" }, e.actor ? `by ${e.actor}` : ""),
      el("span", { class: "detail" }, e.detail || "")));
  }
  return el("ol", { class: "timeline" }, rows);
}

async function showRotation(id) {
  const d = await api(`/${encodeURIComponent(id)}`);
  const c = d.counts;
  const report = (f) => `${cfg.api}/${encodeURIComponent(id)}/report?format=${f}`;
  const elapsed = ((finished(d) ? Date.parse(d.finished_at) : Date.now()) - Date.parse(d.created_at)) / 1000;
  document.title = `${id} · ${d.state} · cph-rekey`;
  main.replaceChildren(
    el("p", {}, el("a", { href: `${cfg.console}/` }, "← All rotations")),
    el("div", { class: "card" },
      el("h1", {}, el("span", { class: "mono", id: "rotation-id" }, id), stateBadge(d)),
      el("div", { class: "muted" }, `keypair ${d.keypair} · ${d.region || "default region"} / ${d.project_id || "default project"}` +
        (d.group ? ` · part of ${d.group}` : "") + ` · created ${when(d.created_at)}` + (finished(d) ? ` · finished ${when(d.finished_at)}` : "")),
      d.reason ? el("p", { class: "reason", id: "reason" }, d.reason) : null,
      d.newer_release ? el("p", { class: "reason", id: "newer-release" }, `Written by a newer cph-rekey (schema ${d.schema}): ` +
        "this worker leaves it to the workers that know it, and its figures here may be incomplete. Finish the rolling upgrade.") : null,
      el("div", { style: "margin:14px 0 4px" }, bar(c, true)),
      el("div", { class: "legend" },
        [["ok", "succeeded", c.succeeded], ["skip", "skipped", c.skipped], ["bad", "failed", c.failed],
          ["can", "cancelled", c.cancelled], ["run", "running", c.running]].map(([cls, l, n]) =>
          el("span", {}, el("i", { class: cls }), `${l} ${num(n)}`)),
        el("span", {}, `pending ${num(c.pending)}`)),
      el("div", { class: "actions", style: "margin-top:14px" },
        controls(d),
        el("a", { class: "button", href: report("csv"), download: `${id}-report.csv` }, "Report CSV"),
        el("a", { class: "button", href: report("json"), download: `${id}-report.json` }, "Report JSON"),
        el("a", { class: "button", href: `${cfg.ui}/queues/rekey-submit` }, "Tasks in the asynq UI"))),
    el("div", { class: "card grid" },
      stat("servers", num(c.total)), stat("done", `${pct(d.done, c.total).toFixed(1)}%`),
      stat("succeeded", num(c.succeeded)), stat("failed", num(c.failed)), stat("skipped", num(c.skipped)),
      stat("cancelled", num(c.cancelled)), stat("running", num(c.running), `${num(c.verifying)} of them verifying`),
      stat("pending", num(c.pending)), stat("rate", d.rate ? d.rate.toFixed(1) + "/s" : "—", "servers ended per second, last minute"),
      stat("eta", d.eta_seconds !== undefined ? dur(d.eta_seconds) : "—"), stat(finished(d) ? "took" : "elapsed", dur(elapsed)),
      stat("retried", num(c.retried), "server submissions repeated after a transient failure")),
    el("div", { class: "cols" },
      el("div", { class: "card" }, el("h2", {}, "Progress over time"), chart(d),
        el("div", { class: "legend" }, el("span", {}, el("i", { style: "background:var(--green)" }), "ended"),
          el("span", {}, el("i", { style: "background:var(--red)" }), "failed"), el("span", {}, "dashed: all servers"))),
      el("div", {},
        el("div", { class: "card" }, el("h2", {}, "Error budget"), budget(d)),
        el("div", { class: "card" }, el("h2", {}, "Waves"), waves(d)))),
    el("div", { class: "card" }, el("h2", {}, "Failures by error code"), failures(d)),
    el("div", { class: "card", id: "timeline" }, el("h2", {}, "History"), timeline(d)),
    el("div", { class: "card muted" },
      `chunk size ${d.chunk_size} · ${num(d.chunks)} chunks, ${num(d.batches)} batches with retries · max attempts ${d.max_attempts} · ` +
      `verification ${d.verify ? "on" : "off"}` + (d.pause_after_wave ? " · pauses after each wave" : "")));
  schedule(finished(d) ? slow * 6 : fast);
}

refresh();
