// loadgen live dashboard: reads server-sent events from /events and draws them with uPlot.
// Everything shown is what the run measures (see loadgen/dashboard/board.py); nothing is
// computed here but formatting and chart series.
"use strict";

// Okabe-Ito: distinguishable with the common colour-vision deficiencies; dashes tell the
// service-time twin and the offered rate apart without colour at all.
const C = { orange: "#E69F00", sky: "#56B4E9", green: "#009E73", blue: "#0072B2",
            red: "#D55E00", purple: "#CC79A7", black: "#000000", grey: "#8a939c" };
const PHASE_NAMES = { complete: "complete", ack: "ack", first_response: "first response", callback: "callback" };

const model = { meta: null, frames: [], state: {}, steps: [], controls: [], version: 0 };
const charts = {};
let phase = null;

const $ = (id) => document.getElementById(id);

function fmtCount(v) {
  if (v === null || v === undefined) return "–";
  return Math.round(v).toLocaleString("en-US");
}
function fmtRate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 1000) return Math.round(v).toLocaleString("en-US");
  if (v >= 100) return v.toFixed(0);
  return v.toFixed(1);
}
function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 10000) return (v / 1000).toFixed(1) + " s";
  if (v >= 1000) return (v / 1000).toFixed(2) + " s";
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
function fmtClock(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}
function setValue(id, text, raw) {
  const el = $(id);
  el.textContent = text;
  el.dataset.value = raw === null || raw === undefined ? "" : String(raw);
}

// --- charts ----------------------------------------------------------------------------------

function size(el) {
  const w = Math.max(260, el.clientWidth);
  return { width: w, height: Math.round(Math.min(260, Math.max(180, w * 0.42))) };
}
// Axis ticks: a latency tick carries its unit (0.1 ms .. 10 s on a log axis), a count has no
// decimals it does not need.
function msTick(v) {
  if (v === null || v === undefined) return "";
  if (v >= 1000) return +(v / 1000).toPrecision(3) + " s";
  return +v.toPrecision(3) + " ms";
}
function countTick(v) {
  if (v === null || v === undefined) return "";
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en-US") : String(+v.toPrecision(4));
}
// whole seconds only: m:ss labels of half-second ticks would repeat
const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
function timeAxis() {
  return { label: "time since start (m:ss)", labelSize: 18, values: (u, v) => v.map(fmtClock), space: 60, incrs: TIME_INCRS };
}
const COUNT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1e6];
const fromZero = (u, min, max) => [0, max > 0 ? max * 1.08 : 1];
function yAxis(label, fmt, extra) {
  return Object.assign({ label, labelSize: 18, size: 64, values: (u, v) => v.map(fmt) }, extra || {});
}
// Log axes: a labelled line per decade only (1-2-5 lines would crowd the labels).
function decades(u, axisIdx, min, max) {
  const out = [];
  for (let d = Math.pow(10, Math.floor(Math.log10(Math.max(min, 1e-3)))); d <= max * 1.0001; d *= 10) {
    if (d >= min * 0.9999) out.push(+d.toPrecision(1));
  }
  if (out.length >= 2) return out;
  // less than two decades in view: 1-2-5 steps instead
  const fine = [];
  for (let d = Math.pow(10, Math.floor(Math.log10(Math.max(min, 1e-3)))); d <= max * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) { const v = +(d * m).toPrecision(1); if (v >= min * 0.9999 && v <= max * 1.0001) fine.push(v); }
  }
  return fine.length ? fine : [min, max];
}
function line(label, colour, extra) {
  return Object.assign({ label, stroke: colour, width: 1.6, points: { show: false },
                         value: (u, v) => (v === null || v === undefined ? "–" : fmtRate(v)) }, extra || {});
}
function msLine(label, colour, extra) {
  return line(label, colour, Object.assign({ value: (u, v) => (v === null || v === undefined ? "–" : fmtMs(v) + " ms") }, extra || {}));
}

function makeChart(id, series, axes, scales, data) {
  const el = $(id);
  const opts = Object.assign({ series, axes, scales: scales || { x: { time: false } },
                               legend: { live: false }, cursor: { drag: { x: false, y: false } } }, size(el));
  const chart = new uPlot(opts, data, el);
  charts[id] = chart;
  return chart;
}

function buildCharts() {
  const sides = model.meta.sides;
  const rateSeries = [{ label: "t", value: (u, v) => fmtClock(v) }];
  if (sides === "devices") {
    rateSeries.push(line("served", C.blue));
  } else {
    rateSeries.push(line("offered", C.black, { dash: [6, 4], width: 1.4 }),
                    line("sent", C.sky), line("achieved", C.blue, { width: 2 }));
  }
  makeChart("chart-rates", rateSeries, [timeAxis(), yAxis("ops/s", countTick)],
            { x: { time: false }, y: { range: fromZero } }, rateData());

  makeChart("chart-latency", [
    { label: "t", value: (u, v) => fmtClock(v) },
    msLine("p50", C.green), msLine("p90", C.orange), msLine("p99", C.red, { width: 2 }),
    msLine("p99 service", C.purple, { dash: [5, 4] }),
  ], [timeAxis(), yAxis("latency (log scale)", msTick, { splits: decades })], { x: { time: false }, y: { distr: 3 } }, latencyData());

  const ticks = [2, 10, 100, 1000, 10000, 100000, 1000000];
  const tickNames = { 1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 10000: "99.99%", 100000: "99.999%", 1000000: "max" };
  makeChart("chart-spectrum", [
    { label: "percentile", value: (u, v) => (v === null ? "–" : spectrumName(v)) },
    msLine("from intended time", C.red, { width: 2, points: { show: true, size: 5 } }),
    msLine("service time", C.purple, { dash: [5, 4], points: { show: true, size: 5 } }),
  ], [
    { label: "percentile (log scale of 1/(1-p))", labelSize: 18, splits: () => ticks,
      values: (u, v) => v.map((x) => tickNames[Math.round(x)] || ""), space: 30 },
    yAxis("latency (log scale)", msTick, { splits: decades }),
  ], { x: { time: false, distr: 3, range: [1, 1000000] }, y: { distr: 3 } }, spectrumData());

  makeChart("chart-inflight", [
    { label: "t", value: (u, v) => fmtClock(v) },
    line("in flight", C.blue, { scale: "ops", value: (u, v) => fmtCount(v) }),
    line("CPU % of a core", C.orange, { scale: "pct", dash: [5, 4], value: (u, v) => (v === null ? "–" : v.toFixed(0) + " %") }),
  ], [timeAxis(), yAxis("in flight (ops)", countTick, { scale: "ops", incrs: COUNT_INCRS }),
      { scale: "pct", side: 1, label: "CPU (% of a core)", labelSize: 18, size: 50, grid: { show: false },
        values: (u, v) => v.map((x) => x.toFixed(0)) }],
  { x: { time: false }, ops: { range: fromZero }, pct: { auto: false, range: [0, 100] } }, inflightData());

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) chart.setSize(size($(id)));
  });
}

function spectrumName(x) {
  if (x >= 1000000) return "max";
  const p = 100 * (1 - 1 / x);
  return (p >= 99.9 ? p.toFixed(3) : p >= 99 ? p.toFixed(2) : p.toFixed(0)) + "%";
}

function rateData() {
  const f = model.frames, t = f.map((x) => x.t);
  if (model.meta.sides === "devices") return [t, f.map((x) => x.served)];
  return [t, f.map((x) => x.offered), f.map((x) => x.sent), f.map((x) => x.achieved)];
}
function latencyData() {
  const f = model.frames, t = f.map((x) => x.t);
  const pick = (x, name, i) => { const v = (x.latency[name] || [])[i]; return v === undefined || v === null ? null : Math.max(v, 0.001); };
  return [t, f.map((x) => pick(x, phase, 0)), f.map((x) => pick(x, phase, 1)), f.map((x) => pick(x, phase, 2)),
          f.map((x) => pick(x, phase + ".service", 2))];
}
function spectrumData() {
  const spec = model.state.spectrum || {};
  const main = model.meta.sides === "devices" ? "callback" : "complete";
  const a = spec[main] || [], b = spec[main + ".service"] || [];
  const xs = a.map(([p]) => (p >= 100 ? 1000000 : 1 / (1 - p / 100)));
  const ys = (rows) => xs.map((_, i) => (rows[i] && rows[i][1] !== null ? Math.max(rows[i][1], 0.001) : null));
  return [xs, ys(a), ys(b)];
}
function inflightData() {
  const f = model.frames;
  return [f.map((x) => x.t), f.map((x) => x.in_flight), f.map((x) => x.cpu)];
}

function buildCapacity() {
  if (charts["chart-capacity"]) return;
  $("capacity-panel").hidden = false;
  $("steps-panel").hidden = false;
  makeChart("chart-capacity", [
    { label: "offered", value: (u, v) => (v === null ? "–" : fmtRate(v) + " ops/s") },
    msLine("p99 passed", C.green, { paths: () => null, points: { show: true, size: 9, fill: C.green } }),
    msLine("p99 failed", C.red, { paths: () => null, points: { show: true, size: 9, fill: "#fff", width: 2 } }),
  ], [{ label: "offered rate (ops/s)", labelSize: 18, values: (u, v) => v.map(countTick) },
      yAxis("p99 (log scale)", msTick, { splits: decades })],
  { x: { time: false }, y: { distr: 3 } }, capacityData());
}
function capacityData() {
  const steps = [...model.steps].sort((a, b) => a.offered_rate - b.offered_rate);
  const p99 = (s) => { const v = s.p99_ms.complete ?? Object.values(s.p99_ms)[0]; return v === undefined ? null : Math.max(v, 0.001); };
  return [steps.map((s) => s.offered_rate),
          steps.map((s) => (s.verdict === "pass" ? p99(s) : null)),
          steps.map((s) => (s.verdict !== "pass" ? p99(s) : null))];
}

function redraw() {
  if (model.meta.kind === "capacity") {
    if (model.steps.length) charts["chart-capacity"].setData(capacityData());
    return;
  }
  charts["chart-rates"].setData(rateData());
  charts["chart-latency"].setData(latencyData());
  charts["chart-spectrum"].setData(spectrumData());
  charts["chart-inflight"].setData(inflightData());
  if (model.steps.length) { buildCapacity(); charts["chart-capacity"].setData(capacityData()); }
}

// --- panels ------------------------------------------------------------------------------------

function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const [text, c] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (c) td.className = c;
    tr.appendChild(td);
  }
  return tr;
}
function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}
function kv(tableId, pairs) {
  fill($(tableId).tBodies[0], pairs.map(([k, v, cls]) => row([[k, "l"], [v, cls || ""]])));
}

function renderState() {
  const s = model.state, meta = model.meta, last = model.frames[model.frames.length - 1];
  document.body.dataset.frames = String(model.frames.length);
  document.body.dataset.version = String(model.version);
  $("stage").textContent = s.stage || "–";
  $("elapsed").textContent = fmtClock(s.t);
  $("left").textContent = s.ended ? "ended" : s.phase === "drain" ? "draining" : fmtClock(s.time_left_s);
  const rates = s.rates || {};
  const final = s.ended && s.summary ? s.summary : null;
  for (const el of document.querySelectorAll(".rate-when")) el.textContent = final ? "whole run" : "now";
  if (final) {
    setValue("offered", meta.open_model ? fmtRate(final.offered_rate) : "closed", final.offered_rate);
    setValue("sent", fmtRate(final.sent_rate), final.sent_rate);
    setValue("achieved", fmtRate(final.achieved_rate), final.achieved_rate);
  } else {
    setValue("offered", meta.open_model ? fmtRate(last ? last.offered : null) : "closed", last ? last.offered : null);
    setValue("sent", fmtRate(last ? last.sent : null), last ? last.sent : null);
    setValue("achieved", fmtRate(last ? (meta.sides === "devices" ? last.served : last.achieved) : null),
             last ? (meta.sides === "devices" ? last.served : last.achieved) : null);
  }
  setValue("in-flight", fmtCount(s.in_flight), s.in_flight);
  const main = meta.sides === "devices" ? "callback" : "complete";
  const lat = (s.latency_ms || {})[main] || {};
  $("p99-label").textContent = `p99 ${main}`;
  setValue("p99", lat.p99 === null || lat.p99 === undefined ? "–" : msTick(lat.p99), lat.p99);
  setValue("error-rate", s.error_rate === undefined ? "–" : (100 * s.error_rate).toFixed(2) + " %", s.error_rate);
  const ops = s.operations || {};
  setValue("ops-sent", fmtCount(ops.sent), ops.sent);
  setValue("ops-completed", fmtCount(ops.completed), ops.completed);
  setValue("ops-failed", fmtCount(ops.failed), ops.failed);
  setValue("ops-timed-out", fmtCount(ops.timed_out), ops.timed_out);
  setValue("ops-errors", fmtCount(ops.errors), ops.errors);
  for (const id of ["ops-failed", "ops-timed-out", "ops-errors"]) $(id).classList.toggle("bad", ($(id).dataset.value | 0) > 0);
  document.body.dataset.sentRate = rates.sent ?? "";
  document.body.dataset.achievedRate = rates.achieved ?? "";

  fill($("ops-table").tBodies[0], (s.by_operation || []).map((r) => {
    const tr = row([[r.name, "l"], [fmtCount(r.count)], [fmtCount(r.bad), r.bad ? "bad" : ""], [fmtRate(r.rate)],
                    [fmtRate(r.current)], [fmtMs(r.latency_ms.p50)], [fmtMs(r.latency_ms.p90)],
                    [fmtMs(r.latency_ms.p99)], [fmtMs(r.latency_ms.max)]], r.name === "all" ? "total" : "");
    tr.dataset.name = r.name;
    tr.dataset.count = String(r.count);
    tr.dataset.p99 = r.latency_ms.p99 ?? "";
    return tr;
  }));

  const checks = s.thresholds || [];
  const list = $("thresholds");
  if (!checks.length) list.replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "none" }));
  else list.replaceChildren(...checks.map((c) => {
    const li = document.createElement("li");
    li.className = c.ok ? "pass" : "fail";
    const actual = c.actual === null || c.actual === undefined ? (c.reason || "no data") : `actual ${+c.actual.toFixed(4)}`;
    li.innerHTML = `<span class="mark">${c.ok ? "✓" : "✗"}</span>`;
    li.append(`${c.expression} `, Object.assign(document.createElement("span"), { className: "muted", textContent: `(${actual})` }));
    return li;
  }));

  const h = s.health || {};
  kv("health", [
    ["send lateness p99", h.lateness_p99_ms === null || h.lateness_p99_ms === undefined ? "–" : fmtMs(h.lateness_p99_ms) + " ms"],
    ["event-loop lag p99", h.loop_lag_p99_ms === null || h.loop_lag_p99_ms === undefined ? "–" : fmtMs(h.loop_lag_p99_ms) + " ms"],
    ["CPU (mean, % of a core)", h.cpu_percent === null || h.cpu_percent === undefined ? "–" : h.cpu_percent.toFixed(0) + " %"],
    ["late sends (> 2 ms)", fmtCount(h.late_sends), h.late_sends ? "bad" : ""],
  ]);
  const banner = $("banner");
  const reasons = h.reasons || [];
  banner.hidden = !reasons.length;
  banner.textContent = reasons.length ? "Generator saturated — these numbers describe loadgen, not the target: " + reasons.join("; ") : "";

  fill($("errors").tBodies[0], (s.errors_by_cause || []).length
    ? s.errors_by_cause.map((e) => row([[e.cause, "l"], [fmtCount(e.count), "bad"], [e.first || "", "msg"]]))
    : [row([["none", "l muted"], [""], [""]])]);
  const codes = Object.entries(s.results || {});
  kv("results", codes.length ? codes.map(([k, v]) => [k, fmtCount(v), k === "SUCCESSFUL" ? "" : "bad"]) : [["none yet", ""]]);

  const fleet = s.fleet;
  $("fleet-panel").hidden = !fleet;
  if (fleet) {
    const pairs = [["served now", fmtRate(fleet.served_per_s) + " ops/s"], ["received", fmtCount(fleet.received)],
                   ["completed", fmtCount(fleet.completed)]];
    for (const [k, v] of Object.entries(fleet.flows)) pairs.push([`flow ${k}`, fmtCount(v)]);
    for (const [k, v] of Object.entries(fleet.faults)) pairs.push([`fault ${k}`, fmtCount(v), "bad"]);
    for (const [k, v] of Object.entries(fleet.refused)) pairs.push([`refused ${k}`, fmtCount(v), "bad"]);
    if (fleet.undelivered) pairs.push(["undelivered POSTs", fmtCount(fleet.undelivered), "bad"]);
    kv("fleet", pairs);
  }

  fill($("steps").tBodies[0], model.steps.map((st) => row([[String(st.index)], [fmtRate(st.offered_rate)], [fmtRate(st.achieved_rate)],
    [fmtMs(st.p99_ms.complete ?? Object.values(st.p99_ms)[0])], [st.verdict + (st.reasons.length ? ": " + st.reasons.join("; ") : ""), "l msg"]])));

  const used = $("controls");
  if (!model.controls.length) used.replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "none" }));
  else used.replaceChildren(...model.controls.map((c) => Object.assign(document.createElement("li"), {
    textContent: `${fmtClock(c.at_s)}  ${c.kind === "rate" ? `rate set to ${fmtRate(c.rate)} ops/s (stage ${c.stage})` : "stop: the load ended, in-flight operations drain"}`,
  })));

  if (s.ended) {
    setStatus("ended", "ended" + (s.verdict ? " — " + s.verdict : ""));
    $("stop").disabled = true;
    $("rate-set").disabled = true;
  }
}

function setStatus(kind, text) {
  const el = $("status");
  el.className = "status " + kind;
  el.textContent = text;
  document.body.dataset.state = kind;
}

// --- events ------------------------------------------------------------------------------------

function onSnapshot(doc) {
  const first = !model.meta;
  Object.assign(model, doc);
  if (first) {
    document.title = `loadgen — ${doc.meta.title}`;
    document.body.classList.toggle("capacity", doc.meta.kind === "capacity");
    $("title").textContent = doc.meta.title;
    $("rate-form").hidden = !doc.meta.open_model;
    const phases = Object.keys(PHASE_NAMES).filter((p) => doc.frames.some((f) => f.latency[p]) || p === (doc.meta.sides === "devices" ? "callback" : "complete"));
    phase = phases[0];
    $("phase").replaceChildren(...phases.map((p) => Object.assign(document.createElement("option"), { value: p, textContent: PHASE_NAMES[p] })));
    $("spectrum-phase").textContent = `ms, ${doc.meta.sides === "devices" ? "callback" : "complete"}, every operation so far`;
    if (doc.meta.kind === "capacity") buildCapacity(); else buildCharts();
  }
  renderState();
  redraw();
}

function onUpdate(doc) {
  model.frames = model.frames.slice(0, doc.first).concat(doc.frames);
  Object.assign(model, { state: doc.state, steps: doc.steps, controls: doc.controls, version: doc.version });
  const have = new Set([...$("phase").options].map((o) => o.value));
  for (const f of doc.frames) for (const p of Object.keys(f.latency)) {
    if (PHASE_NAMES[p] && !have.has(p)) { have.add(p); $("phase").append(Object.assign(document.createElement("option"), { value: p, textContent: PHASE_NAMES[p] })); }
  }
  renderState();
  redraw();
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("snapshot", (e) => { setStatus(model.state.ended ? "ended" : "live", "live"); onSnapshot(JSON.parse(e.data)); });
  source.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  source.addEventListener("open", () => { if (!model.state.ended) setStatus("live", "live"); });
  source.addEventListener("error", () => {
    if (model.state.ended) { source.close(); setStatus("ended", $("status").textContent); return; }
    setStatus("lost", "connection lost — retrying");
  });
}

async function control(path, body) {
  const msg = $("control-message");
  msg.className = "";
  msg.textContent = "…";
  try {
    const answer = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const doc = await answer.json();
    if (!answer.ok) { msg.className = "error"; msg.textContent = doc.error || `refused (${answer.status})`; return; }
    msg.textContent = path === "/api/stop" ? "stopping: in-flight operations drain" : `rate ${fmtRate(doc.rate)} ops/s from ${fmtClock(doc.at_s)}`;
  } catch (err) {
    msg.className = "error";
    msg.textContent = "no answer from the run";
  }
}

$("stop").addEventListener("click", () => { $("stop").disabled = true; control("/api/stop", {}); });
$("rate-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("rate-input").value.trim();
  const rate = text === "" ? NaN : Number(text);
  control("/api/rate", { rate: Number.isFinite(rate) ? rate : text });
});
$("phase").addEventListener("change", (e) => { phase = e.target.value; charts["chart-latency"].setData(latencyData()); });
if (location.search.includes("token=")) history.replaceState(null, "", location.pathname);  // the cookie has it now
connect();
