// The dashboard's charts, drawn as inline SVG from GET /v1/stats (no library): jobs that completed and
// failed per minute (stacked bars), the queue per type and run-time p50/p95 per type (horizontal bars).
// Each chart is an image with a spoken summary, and each bar carries its figures in a <title> (a hover
// tooltip) and data- attributes.

import { fill, h } from "./dom.js";
import { duration } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
// drawn at the width of its box, one unit a CSS pixel, so the text keeps its size on a phone
const MIN_WIDTH = 260;
const BAR_ROW = 22;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value != null) el.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) if (child != null) el.append(child);
  return el;
}

const title = (text) => s("title", {}, text);

function svg(width, height, label, testid, ...children) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label,
    "data-testid": testid, class: "chart" }, ...children);
}

/** Run times under a second in ms (the histogram's first bucket is 100 ms), longer ones as durations. */
function runMs(millis) {
  return millis < 1000 ? `${Math.round(millis)} ms` : duration(millis);
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Stacked bars, one per minute, completed under failed; the current minute last. */
export function perMinuteChart(minutes, width) {
  const height = 150;
  const top = 14;
  const bottom = 20;
  const plot = height - top - bottom;
  const left = 34;
  const most = Math.max(1, ...minutes.map((m) => m.completed + m.failed));
  const step = (width - left) / Math.max(1, minutes.length);
  const y = (n) => (n / most) * plot;
  const bars = minutes.map((m, i) => {
    const x = left + i * step + 1;
    const w = Math.max(1, step - 2);
    const done = y(m.completed);
    const failed = y(m.failed);
    return s("g", { "data-testid": "minute-bar", "data-minute": m.minute, "data-completed": m.completed,
      "data-failed": m.failed },
    title(`${clock(m.minute)}: ${m.completed} completed, ${m.failed} failed`),
    s("rect", { x, y: top + plot - done, width: w, height: done, class: "bar completed" }),
    s("rect", { x, y: top + plot - done - failed, width: w, height: failed, class: "bar failed" }));
  });
  const completed = minutes.reduce((n, m) => n + m.completed, 0);
  const failed = minutes.reduce((n, m) => n + m.failed, 0);
  const first = minutes[0];
  const last = minutes[minutes.length - 1];
  return svg(width, height, `Jobs per minute over the last ${minutes.length} minutes: ${completed} completed, ${failed} failed`,
    "chart-per-minute",
    s("line", { x1: left, x2: width, y1: top + plot, y2: top + plot, class: "axis" }),
    s("text", { x: left - 4, y: top + 4, class: "tick", "text-anchor": "end" }, String(most)),
    s("text", { x: left - 4, y: top + plot, class: "tick", "text-anchor": "end" }, "0"),
    first ? s("text", { x: left, y: height - 4, class: "tick" }, clock(first.minute)) : null,
    last ? s("text", { x: width, y: height - 4, class: "tick", "text-anchor": "end" }, "now") : null,
    bars);
}

/** One row per type: a label, then bars (one per series), the value written after the longest. */
function rowsChart(rows, series, { label, testid, format, width }) {
  const height = Math.max(1, rows.length) * BAR_ROW * series.length + 10;
  const most = Math.max(1, ...rows.flatMap((r) => series.map((k) => r.values[k] ?? 0)));
  const labelWidth = Math.min(150, Math.round(width * 0.35));
  const span = Math.max(20, width - labelWidth - 100);
  const groups = rows.map((r, i) => {
    const y0 = 5 + i * BAR_ROW * series.length;
    return s("g", { "data-testid": `${testid}-row`, "data-type": r.name,
      ...Object.fromEntries(series.map((k) => [`data-${k}`, r.values[k] ?? ""])) },
    title(`${r.name}: ${series.map((k) => `${k} ${r.values[k] == null ? "—" : format(r.values[k])}`).join(", ")}`),
    s("text", { x: labelWidth - 8, y: y0 + BAR_ROW * series.length / 2 + 4, class: "label", "text-anchor": "end" },
      r.name.length > 22 ? `${r.name.slice(0, 21)}…` : r.name),
    series.map((k, j) => {
      const v = r.values[k];
      const w = v ? Math.max(2, (v / most) * span) : 0;
      const y = y0 + j * BAR_ROW + 3;
      return [s("rect", { x: labelWidth, y, width: w, height: BAR_ROW - 6, class: `bar ${k}` }),
        s("text", { x: labelWidth + w + 6, y: y + BAR_ROW - 10, class: "tick" }, `${k} ${v == null ? "—" : format(v)}`)];
    }));
  });
  return svg(width, height, label, testid, groups);
}

export function queueChart(byType, width) {
  const rows = Object.entries(byType).filter(([, c]) => c.queued || c.running)
    .map(([name, c]) => ({ name, values: { queued: c.queued, running: c.running } }));
  if (!rows.length) return h("p", { class: "muted", "data-testid": "chart-queue-empty" }, "Nothing queued or running.");
  const spoken = rows.map((r) => `${r.name}: ${r.values.queued} queued, ${r.values.running} running`).join("; ");
  return rowsChart(rows, ["queued", "running"], { label: `Queue per type — ${spoken}`, testid: "chart-queue",
    format: String, width });
}

export function runTimeChart(byType, width) {
  const rows = Object.entries(byType).filter(([, r]) => r.runs)
    .map(([name, r]) => ({ name, values: { p50: r.p50_ms, p95: r.p95_ms } }));
  if (!rows.length) return h("p", { class: "muted", "data-testid": "chart-run-time-empty" }, "No finished runs yet.");
  const spoken = rows.map((r) => `${r.name}: p50 ${runMs(r.values.p50)}, p95 ${runMs(r.values.p95)}`).join("; ");
  return rowsChart(rows, ["p50", "p95"], { label: `Run time per type — ${spoken}`, testid: "chart-run-time",
    format: runMs, width });
}

/** The charts panel; `update(stats)` redraws it. */
export function chartsPanel() {
  const minutes = h("div", { class: "chart-box" });
  const queue = h("div", { class: "chart-box" });
  const runTime = h("div", { class: "chart-box" });
  const element = h("details", { class: "panel charts", open: true, "data-testid": "charts" },
    h("summary", {}, "Activity"),
    h("div", { class: "chart-grid" },
      h("figure", { class: "wide" }, h("figcaption", {}, "Completed ",
        h("span", { class: "key completed" }), " and failed ", h("span", { class: "key failed" }), " per minute"), minutes),
      h("figure", {}, h("figcaption", {}, "Queue per type: queued ", h("span", { class: "key queued" }),
        ", running ", h("span", { class: "key running" })), queue),
      h("figure", {}, h("figcaption", {}, "Run time per type: p50 ", h("span", { class: "key p50" }),
        ", p95 ", h("span", { class: "key p95" }), " (all tenants)"), runTime)));
  return {
    element,
    update(stats) {
      const width = (box) => Math.max(MIN_WIDTH, Math.floor(box.clientWidth));
      fill(minutes, perMinuteChart(stats.per_minute, width(minutes)));
      fill(queue, queueChart(stats.queue_by_type, width(queue)));
      fill(runTime, runTimeChart(stats.run_time_by_type, width(runTime)));
    },
  };
}
