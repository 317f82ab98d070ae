// Canaria dashboard: the overview (/) and one ModelDeployment (/md/<ns>/<name>), both fed by the JSON API
// and refreshed when /api/stream (a watch on ModelDeployments) says something changed.
"use strict";

const main = document.getElementById("main");
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
};
const getJSON = async (url) => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
};
const path = window.location.pathname.split("/").filter(Boolean);
const page = path[0] === "md" ? { namespace: path[1], name: path[2] } : null;

// ---------------------------------------------------------------------------------------- overview

let filters = { namespace: "", phase: "" };

async function showOverview() {
  const data = await getJSON("/api/overview");
  document.getElementById("scope").textContent = data.scope;
  const namespaces = [...new Set(data.rows.map((r) => r.namespace))].sort();
  const phases = [...new Set(data.rows.map((r) => r.phase || "-"))].sort();
  const select = (key, values) =>
    el("select", { id: `filter-${key}`, onchange: (e) => { filters[key] = e.target.value; render(); } },
      el("option", { value: "" }, `all ${key}s`),
      values.map((v) => { const o = el("option", { value: v }, v); if (filters[key] === v) o.selected = true; return o; }));
  const table = el("table", { id: "overview" });
  const render = () => {
    table.replaceChildren(el("tr", {}, ["namespace", "name", "phase", "ready", "stable", "canary", "step", "verdict", "owner"].map((h) => el("th", {}, h))));
    for (const row of data.rows) {
      if (filters.namespace && row.namespace !== filters.namespace) continue;
      if (filters.phase && (row.phase || "-") !== filters.phase) continue;
      table.append(el("tr", { "data-name": row.name },
        el("td", {}, row.namespace),
        el("td", {}, el("a", { href: `/md/${row.namespace}/${row.name}` }, row.name)),
        el("td", { class: `phase phase-${row.phase}` }, row.phase || "-"),
        el("td", {}, row.ready || "-"),
        el("td", {}, row.stable || "-"),
        el("td", {}, row.canary ? `${row.canary} (${row.weight}%)` : "-"),
        el("td", {}, row.step || "-"),
        el("td", { class: `verdict-${row.verdict}` }, row.verdict || "-"),
        el("td", {}, row.owner || "-")));
    }
  };
  render();
  main.replaceChildren(el("div", { class: "filters" }, select("namespace", namespaces), select("phase", phases)), table);
}

// ------------------------------------------------------------------------------------ one rollout

const fmt = (v) => (v === null || v === undefined ? "—" : typeof v === "number" ? Number(v.toPrecision(4)) : v);
const plots = new Map();

function versionCard(v) {
  const lineage = Object.entries(v.lineage || {}).map(([k, x]) => `${k} ${x}`).join(", ");
  const evaluation = Object.entries(v.evaluation || {}).map(([k, x]) => `${k} ${fmt(x)}`).join(", ");
  return el("div", { class: "card", "data-role": v.role },
    el("div", { class: "role" }, v.role), el("strong", {}, v.version), el("div", { class: "muted" }, v.uri),
    lineage ? el("div", {}, lineage) : null, evaluation ? el("div", {}, evaluation) : null);
}

async function act(action) {
  const reason = `from the dashboard`;
  const response = await fetch(`/api/md/${page.namespace}/${page.name}/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json", "X-Canaria-Dashboard": "1" },
    body: JSON.stringify({ reason }),
  });
  const answer = await response.json().catch(() => ({}));
  document.getElementById("action-result").textContent = response.ok ? `${action} requested (${answer.id})` : answer.error || response.statusText;
}

function drawPlot(container, metric, series, markers, bounds) {
  const versions = Object.keys(series.series);
  const times = [...new Set(versions.flatMap((v) => (Array.isArray(series.series[v]) ? series.series[v].map((p) => p[0]) : [])))].sort((a, b) => a - b);
  const errors = versions.filter((v) => !Array.isArray(series.series[v])).map((v) => `${v}: ${series.series[v].error}`);
  const data = [times];
  const lines = [{}];
  for (const v of versions) {
    if (!Array.isArray(series.series[v])) continue;
    const byTime = new Map(series.series[v].map(([t, x]) => [t, x]));
    data.push(times.map((t) => (byTime.has(t) ? byTime.get(t) : null)));
    lines.push({ label: v === metric.analysed ? `${v} (analysed)` : v, stroke: v === metric.analysed ? "#0b5cad" : "#8a96a3", width: 2 });
  }
  for (const [key, label] of [["max", "max"], ["min", "min"]]) {
    if (metric[key] !== null && metric[key] !== undefined) {
      data.push(times.map(() => metric[key]));
      lines.push({ label: `${label} ${metric[key]}`, stroke: "#c62828", dash: [6, 4], width: 1 });
    }
  }
  const box = el("div", { class: "plot", "data-metric": metric.name, "data-points": String(times.length) });
  container.append(el("h3", {}, metric.name, metric.dryRun ? " (dry run)" : ""), box);
  if (errors.length) container.append(el("div", { class: "error" }, errors.join("; ")));
  const markerTimes = markers.map((m) => ({ t: Date.parse(m.time) / 1000, label: m.reason }));
  const verdicts = bounds.filter((r) => r.name === metric.name && r.at);
  const opts = {
    width: Math.min(900, main.clientWidth - 40), height: 220, series: lines,
    scales: { x: { time: true, range: [series.start, series.end] } },
    hooks: { draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      for (const m of markerTimes) {
        const x = u.valToPos(m.t, "x", true);
        ctx.strokeStyle = "#a15c00"; ctx.setLineDash([2, 3]);
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        ctx.fillStyle = "#a15c00"; ctx.fillText(m.label, x + 3, u.bbox.top + 10);
      }
      for (const r of verdicts) {
        if (r.value === null) continue;
        const x = u.valToPos(Date.parse(r.at) / 1000, "x", true), y = u.valToPos(r.value, "y", true);
        ctx.fillStyle = r.verdict === "Pass" ? "#1a7f37" : "#c62828";
        ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
      }
      ctx.restore();
    }] },
  };
  plots.set(metric.name, new uPlot(opts, data, box));
}

async function showRollout() {
  const base = `/api/md/${page.namespace}/${page.name}`;
  const d = await getJSON(base);
  document.getElementById("scope").textContent = `${d.namespace}/${d.name}`;
  const stepCount = d.steps.length;
  const current = d.step ? d.step.index : null;
  const steps = el("div", { class: "steps", id: "steps" }, d.steps.map((s, i) =>
    el("span", { class: `step${current === i + 1 ? " current" : current && i + 1 < current ? " done" : ""}`, "data-index": String(i + 1) },
      s.mirror ? `shadow ${s.mirror}%` : `${s.weight}%`, s.pause ? ` · ${s.pause}` : s.manual ? " · manual" : "")));
  const header = el("section", { id: "summary" },
    el("h2", {}, d.name, " ", el("span", { class: `phase phase-${d.phase}`, id: "phase" }, d.phase || "-")),
    el("div", { id: "message" }, d.message || ""), el("div", { class: "muted", id: "next" }, d.next || ""),
    d.owner ? el("div", {}, "owner: ", d.owner, d.intendedUse ? ` — ${d.intendedUse}` : "") : null,
    el("div", { id: "step-text" }, d.stepText || `${stepCount} steps`), steps);
  const sections = [header];
  if (Object.keys(d.actions).length) {
    sections.push(el("section", { class: "actions", id: "actions" }, el("h2", {}, "Actions"),
      Object.entries(d.actions).map(([a, why]) => {
        const b = el("button", { id: `action-${a}`, title: why || a, onclick: () => act(a) }, a);
        if (why) b.disabled = true;
        return b;
      }), el("span", { id: "action-result", class: "muted" })));
  }
  sections.push(el("section", {}, el("h2", {}, "Versions"), el("div", { class: "cards" }, d.versions.map(versionCard))));
  const metricsBox = el("section", { id: "metrics" }, el("h2", {}, "Analysis"));
  sections.push(metricsBox);
  sections.push(el("section", {}, el("h2", {}, "Conditions"), el("table", {}, d.conditions.map((c) =>
    el("tr", {}, el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason), el("td", {}, c.message || ""))))));
  sections.push(el("section", {}, el("h2", {}, "Audit trail"), el("table", { id: "history" },
    el("tr", {}, ["time", "reason", "version", "message", "who"].map((h) => el("th", {}, h))),
    d.history.map((h) => el("tr", { "data-reason": h.reason || "" }, el("td", {}, h.time), el("td", {}, h.reason),
      el("td", {}, h.version || ""), el("td", {}, h.message), el("td", {}, h.user || ""))))));
  main.replaceChildren(...sections);
  if (!d.metrics.length) { metricsBox.append(el("div", { class: "muted" }, "no analysis metrics")); return; }
  const s = await getJSON(`${base}/series`);
  if (s.error) { metricsBox.append(el("div", { class: "error" }, s.error)); return; }
  plots.clear();
  for (const metric of d.metrics) {
    const series = s.metrics.find((m) => m.name === metric.name);
    drawPlot(metricsBox, metric, { ...series, start: s.start, end: s.end }, d.markers, d.results);
  }
}

// --------------------------------------------------------------------------------------------- live

// One rendering at a time: a change that arrives while the page is being built is shown right after, so
// an older answer can never overwrite a newer one.
let running = false, again = false;
async function show() {
  if (running) { again = true; return; }
  running = true;
  try {
    do {
      again = false;
      try { await (page ? showRollout() : showOverview()); }
      catch (e) { main.replaceChildren(el("div", { class: "error" }, String(e))); }
    } while (again);
  } finally { running = false; }
}
let pending = null;
const refresh = () => { if (!pending) pending = setTimeout(() => { pending = null; show(); }, 150); };
const live = document.getElementById("live");
const events = new EventSource("/api/stream");
events.onopen = () => { live.textContent = "live"; };
events.onerror = () => { live.textContent = "reconnecting…"; };
events.onmessage = (e) => {
  const change = JSON.parse(e.data);
  if (!page || (change.namespace === page.namespace && change.name === page.name)) refresh();
};
show();
