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
function isGroup(r) { return Array.isArray(r.parts); }

// haltedWhy says in a word or two why a rotation (or part) halted, from
// the reason the workers wrote.
function haltedWhy(reason) {
  reason = reason || "";
  if (reason.startsWith("error budget")) return "error budget";
  if (reason.startsWith("rotation-wide error budget")) return "rotation-wide budget";
  if (reason.startsWith("halted with its rotation")) return "with its rotation";
  if (/^\S+ \(.*\) halted: /.test(reason) || reason.startsWith("part ")) return "a region halted";
  return "access denied";
}

// stateBadge names the state as status and list do; a rotation halted by
// its budget, or by credentials the API refused (401/403), is "failed"
// there too, and the badge says it can be resumed and why it halted. A
// part waiting for its turn says so.
function stateBadge(r) {
  const word = r.waiting ? "waiting" : halted(r) ? "halted" : r.state;
  const label = { completed_with_errors: "completed with errors", halted: "halted: " + haltedWhy(r.reason), waiting: "waiting for its turn" }[word] || word;
  return el("span", { class: "state " + word, "data-state": r.state }, label);
}

// place names a rotation's region and project: the workers' own region
// by its name when the worker knows it, the default project as such.
function place(r) {
  return [r.region || cfg.region || "default region", r.project_id ? r.project_id.slice(0, 8) + "…" : "default project"];
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
  const link = (r) => el("a", { href: `${cfg.console}/${encodeURIComponent(r.id)}`, class: "mono" }, r.id);
  const figures = (r) => [
    el("td", {}, stateBadge(r)),
    el("td", {}, bar(r.counts), el("div", { class: "muted" }, pct(r.done, r.counts.total).toFixed(1) + "%")),
    el("td", { class: "num" }, `${num(r.done)} / ${num(r.counts.total)}`),
    el("td", { class: "num" }, num(r.counts.failed)),
    el("td", { class: "num" }, r.rate ? r.rate.toFixed(1) + "/s" : "—"),
    el("td", { class: "num" }, r.eta_seconds !== undefined ? dur(r.eta_seconds) : "—")];
  // A rotation across regions is one row, its parts a row each under it.
  const rows = data.rotations.flatMap((r) => [
    el("tr", { "data-rotation": r.id, class: isGroup(r) ? "group" : null },
      el("td", {}, link(r), el("div", { class: "muted" }, r.keypair)),
      isGroup(r)
        ? el("td", {}, `${r.parts.length} regions / projects`,
          el("div", { class: "muted" }, [...new Set(r.parts.map((p) => place(p)[0]))].join(" · ")))
        : el("td", {}, place(r)[0], el("div", { class: "muted mono" }, place(r)[1])),
      ...figures(r),
      el("td", {}, when(r.created_at)),
      el("td", {}, when(r.finished_at))),
    ...(r.parts || []).map((p, i) => el("tr", { "data-rotation": p.id, "data-group": r.id, class: i === r.parts.length - 1 ? "part last" : "part" },
      el("td", {}, el("span", { class: "muted" }, "↳ "), link(p)),
      el("td", {}, place(p)[0], el("div", { class: "muted mono" }, place(p)[1])),
      ...figures(p),
      el("td", {}),
      el("td", {}, when(p.finished_at))))]);
  const pager = el("div", { class: "pager" },
    offset > 0 ? el("a", { href: `?offset=${Math.max(0, offset - limit)}` }, "← Newer") : null,
    // The index lists a rotation across regions a part at a time: the
    // range is of its entries, shown only when there is more than a page.
    el("span", { class: "muted" }, offset > 0 || data.total > limit
      ? `entries ${offset + 1}–${offset + data.listed} of ${num(data.total)} (a rotation across regions has one a part)` : ""),
    offset + limit < data.total ? el("a", { href: `?offset=${offset + limit}` }, "Older →") : null);
  main.replaceChildren(
    el("h1", {}, "Rotations"),
    el("p", { class: "muted" }, "Newest first. A rotation across regions and projects is one row, with its parts under it, a (region, project) each with its own bar and failures. A rotation's page has its waves (or its parts), failures by error code, progress over time and controls."),
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

// controls are a rotation's buttons: the whole's (ids as the tests and
// operators know them), or, with a part's id as prefix, a part's in the
// table of parts. A part waiting for its turn is left to the workers.
function controls(r, prefix) {
  if (readOnly || finished(r) || r.state === "cancelled" || r.waiting) return null;
  const id = r.id;
  const ident = (name) => (prefix ? `${prefix}-${name}` : name);
  const out = el("div", { class: "actions", id: prefix ? null : "controls" });
  if (r.state === "running" && !halted(r)) {
    out.append(el("button", { class: prefix ? null : "primary", id: ident("pause"), onclick: () => control(id, "pause") }, "Pause"));
  }
  if (r.state === "paused" || isGroup(r) && r.state === "running" && r.parts.some((p) => p.state === "paused" && !p.waiting)) {
    out.append(el("button", { class: prefix ? null : "primary", id: ident("resume"), onclick: () => control(id, "resume") }, "Resume"));
  }
  if (halted(r) && prefix && haltedWhy(r.reason) === "with its rotation") {
    // Its rotation would halt it again: the whole's Resume lifts the halt.
    out.append(el("span", { class: "muted small" }, "resume the rotation"));
  } else if (halted(r)) {
    // A new budget is optional: a rotation halted by refused credentials
    // resumes within its budget once they are fixed. A rotation across
    // regions takes each part's and the whole's.
    const input = el("input", { id: ident("max-errors"), size: 6, placeholder: String(r.counts.failed + 10), "aria-label": "new error budget" });
    const body = { max_errors: () => input.value.trim() };
    out.append(el("label", {}, isGroup(r) ? "Per part " : "New budget ", input));
    if (isGroup(r) && r.max_errors_total >= 0) {
      const total = el("input", { id: ident("max-errors-total"), size: 6, placeholder: String(r.counts.failed + 10), "aria-label": "new rotation-wide error budget" });
      body.max_errors_total = () => total.value.trim();
      out.append(el("label", {}, "Rotation-wide ", total));
    }
    out.append(el("button", { class: prefix ? null : "primary", id: ident("resume"),
      onclick: () => control(id, "resume", Object.fromEntries(Object.entries(body).map(([k, f]) => [k, f()]))) }, "Resume"));
  }
  out.append(el("button", { class: prefix ? null : "danger", id: ident("cancel"), onclick: () => confirmCancel(id) }, "Cancel…"));
  return out;
}

// parts is the table of a rotation across regions: a row a (region,
// project), each with its bar, failures against its budget, pace, wave
// and controls.
function parts(d) {
  return el("table", { id: "parts" },
    el("thead", {}, el("tr", {}, ["Part", "Region", "Project", "State", "Progress", "Done", "Failed", "Rate", "ETA", "Wave", ""]
      .map((h, i) => el("th", { class: i >= 5 && i <= 8 ? "num" : null }, h)))),
    el("tbody", {}, d.parts.map((p, i) => el("tr", { "data-rotation": p.id },
      el("td", {}, el("a", { href: `${cfg.console}/${encodeURIComponent(p.id)}`, class: "mono" }, p.id)),
      el("td", {}, place(p)[0]),
      el("td", { class: "mono", title: p.project_id || "" }, place(p)[1]),
      el("td", {}, stateBadge(p), halted(p) && p.reason ? el("div", { class: "muted small" }, p.reason) : null),
      el("td", {}, bar(p.counts), el("div", { class: "muted" }, pct(p.done, p.counts.total).toFixed(1) + "%")),
      el("td", { class: "num" }, `${num(p.done)} / ${num(p.counts.total)}`),
      el("td", { class: "num" + (p.max_errors >= 0 && p.counts.failed > p.max_errors ? " over" : "") },
        p.max_errors >= 0 ? `${num(p.counts.failed)} of ${num(p.max_errors)}` : num(p.counts.failed)),
      el("td", { class: "num" }, p.rate ? p.rate.toFixed(1) + "/s" : "—"),
      el("td", { class: "num" }, p.eta_seconds !== undefined ? dur(p.eta_seconds) : "—"),
      el("td", {}, p.waves.length ? `${finished(p) ? p.waves.length : p.wave} of ${p.waves.length}` : "—"),
      el("td", {}, controls(p, `part-${i + 1}`))))));
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
  // A rotation across regions: each part has its own budget (in the
  // table), and the whole may have one besides.
  const whole = isGroup(d) ? [
    el("p", { class: "muted" }, d.max_errors_total >= 0
      ? "Across all regions; each part also has its own (in the table)."
      : "The parts' budgets summed: each part has its own (in the table), the rotation none besides."),
    el("p", { class: "muted", id: "on-region-halt" }, d.on_region_halt === "continue"
      ? "When a part halts, the others finish (--on-region-halt continue)."
      : "When a part halts, every part halts (--on-region-halt halt).")] : [];
  if (b.max_errors < 0) return el("div", {}, el("p", {}, `${num(b.failed)} failed; no error budget.`), ...whole);
  const used = Math.min(100, pct(b.failed, Math.max(b.max_errors, 1)));
  return el("div", { class: "budget" },
    el("p", {}, `${num(b.failed)} failed of ${num(b.max_errors)} allowed`,
      b.failed > b.max_errors ? " — exceeded" : ""),
    el("div", { class: "bar" }, el("i", { class: "bad", style: `width:${b.max_errors === 0 && b.failed === 0 ? 0 : used}%` })),
    ...whole);
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
  const st = (detail || "").split(":")[0].replaceAll(" ", "_"); // "completed with errors" (older: with underscores)
  return { succeeded: "ok", completed_with_errors: "cwe", failed: "bad", cancelled: "can" }[st] || "ok";
}

// timeline draws the rotation's history, oldest first: when, what, who,
// and the figures that go with it; a gap in the entries' numbers is where
// the capped history left entries out.
// partLabel names a part of a rotation across places in its history by
// its region (and project, when the region holds several), its id in the
// tooltip: the ids differ only in their last digits.
function partLabel(d, id) {
  const p = (d.parts || []).find((p) => p.id === id);
  if (!p) return el("span", { class: "mono muted" }, ` ${id}`);
  const [region, project] = place(p);
  const shared = d.parts.filter((q) => place(q)[0] === region).length > 1;
  return el("span", { class: "muted", title: id }, ` · ${region}${shared ? " / " + project : ""}`);
}

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
      el("span", { class: "what" }, historyWords[e.kind] || e.kind, e.rotation ? partLabel(d, e.rotation) : null),
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
      el("div", { class: "muted" }, `keypair ${d.keypair} · ` +
        (isGroup(d) ? `${d.parts.length} regions and projects` : `${place(d)[0]} / ${d.project_id || "default project"}`),
        d.group ? [" · part of ", el("a", { href: `${cfg.console}/${encodeURIComponent(d.group)}`, class: "mono" }, d.group)] : null,
        ` · created ${when(d.created_at)}` + (finished(d) ? ` · finished ${when(d.finished_at)}` : "")),
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
    // main is no el(): a null here would show as the text "null".
    ...(isGroup(d) ? [el("div", { class: "card" }, el("h2", {}, "Regions and projects"), parts(d))] : []),
    el("div", { class: "cols" },
      el("div", { class: "card" }, el("h2", {}, "Progress over time"), chart(d),
        el("div", { class: "legend" }, el("span", {}, el("i", { style: "background:var(--green)" }), "ended"),
          el("span", {}, el("i", { style: "background:var(--red)" }), "failed"), el("span", {}, "dashed: all servers"))),
      el("div", {},
        el("div", { class: "card" }, el("h2", {}, isGroup(d) ? "Rotation-wide error budget" : "Error budget"), budget(d)),
        isGroup(d) ? null : el("div", { class: "card" }, el("h2", {}, "Waves"), waves(d)))),
    el("div", { class: "card" }, el("h2", {}, "Failures by error code"), failures(d)),
    el("div", { class: "card", id: "timeline" }, el("h2", {}, "History"), timeline(d)),
    el("div", { class: "card muted" },
      `chunk size ${d.chunk_size} · ${num(d.chunks)} chunks, ${num(d.batches)} batches with retries · max attempts ${d.max_attempts} · ` +
      `verification ${d.verify ? "on" : "off"}` + (d.pause_after_wave ? " · pauses after each wave" : "")));
  schedule(finished(d) ? slow * 6 : fast);
}

refresh();
