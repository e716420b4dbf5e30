// The job's trace as a waterfall (GET /v1/jobs/<id>/trace): one row per span (attempts, steps, model
// calls, the apply step), indented under its parent, its bar placed on the job's time line, with its
// duration, tokens and cost. A replayed step is marked: a later attempt got its result back for free.

import { h } from "./dom.js";
import { duration, ms } from "./format.js";

export function money(usd) {
  if (usd == null) return null;
  if (usd === 0) return "$0";
  return usd < 0.01 ? `$${usd.toPrecision(2)}` : `$${usd.toFixed(2)}`;
}

function tokens(usage) {
  if (!usage) return "";
  const cached = usage.cached_tokens ? ` (${usage.cached_tokens} cached)` : "";
  return `${usage.input_tokens} in${cached} · ${usage.output_tokens} out`;
}

function depthOf(span, byId) {
  let depth = 0;
  for (let p = byId.get(span.parent_id); p && p.kind !== "job"; p = byId.get(p.parent_id)) depth += 1;
  return depth;
}

/** The spans in tree order: each one followed by its children, oldest first. */
function ordered(spans) {
  const children = new Map();
  for (const s of spans) {
    if (!children.has(s.parent_id)) children.set(s.parent_id, []);
    children.get(s.parent_id).push(s);
  }
  const out = [];
  const walk = (id) => (children.get(id) ?? []).forEach((s) => { out.push(s); walk(s.id); });
  walk("job");
  return out;
}

export function waterfallPanel(trace, now = Date.now()) {
  const spans = trace?.spans ?? [];
  const job = spans.find((s) => s.kind === "job");
  if (!job || spans.length < 2) return null;
  const byId = new Map(spans.map((s) => [s.id, s]));
  const start = ms(job.start);
  const end = Math.max(ms(job.end) ?? now, ...spans.map((s) => ms(s.end) ?? now));
  const width = Math.max(1, end - start);
  const rows = ordered(spans).map((span) => {
    const from = ms(span.start) ?? start;
    const to = ms(span.end) ?? now;
    const left = ((from - start) / width) * 100;
    const size = Math.max(0.4, ((to - from) / width) * 100);
    const replayed = span.status === "replayed";
    const took = replayed ? span.attributes?.["step.duration_ms"] : to - from;
    const label = span.kind === "llm" ? `model ${span.name}` : span.kind === "attempt" ? span.name
      : span.kind === "apply" ? "apply" : `step ${span.name}${(span.attributes?.["step.occurrence"] ?? 1) > 1
        ? ` #${span.attributes["step.occurrence"]}` : ""}`;
    const cost = replayed ? "free (replayed)" : money(span.cost_usd) ?? (span.usage ? "no price" : "");
    return h("li", { class: `span span-${span.kind} span-${span.status}`, "data-testid": "span",
      "data-kind": span.kind, "data-status": span.status, "data-span-id": span.id,
      style: `--depth: ${depthOf(span, byId)}` },
    h("span", { class: "span-name" }, label,
      replayed ? h("span", { class: "tag", "data-testid": "replayed" }, `replayed from attempt ${
        span.attributes?.["step.replayed_from_attempt"] ?? "?"}`) : null,
      span.status === "error" ? h("span", { class: "tag warn" }, span.attributes?.interrupted ? "cut off" : "failed")
        : null,
      span.status === "running" ? h("span", { class: "tag" }, "running") : null),
    h("span", { class: "span-track", "aria-hidden": "true" },
      h("span", { class: "span-bar", style: `left: ${left}%; width: ${size}%` })),
    h("span", { class: "span-time" }, took == null ? "" : duration(took)),
    h("span", { class: "span-tokens", "data-testid": "span-tokens" }, tokens(span.usage)),
    h("span", { class: "span-cost", "data-testid": "span-cost" }, cost));
  });
  const total = money(job.cost_usd);
  return h("section", { class: "panel waterfall", "aria-labelledby": "trace-title", "data-testid": "waterfall" },
    h("h2", { id: "trace-title" }, "Trace"),
    h("p", { class: "muted", "data-testid": "trace-total" },
      `${tokens(job.usage) || "No model calls recorded"}${total ? ` · ${total}` : job.usage ? " · no price" : ""}`),
    h("ol", { class: "spans" }, rows));
}
