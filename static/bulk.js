// Retry or cancel many jobs of the dashboard at once: the rows a person ticked (or every row on the page)
// go one request each to the same endpoints the job view uses, a few at a time, and each job's answer is
// listed, so a job the server refused (already finished, not retryable) says why.
//
//   tick rows ─▶ "Retry selected" ─────────────────▶ POST /v1/jobs/{id}/retry  ─▶ one line per job
//            └▶ "Cancel selected" ─▶ confirm ──────▶ POST /v1/jobs/{id}/cancel ─┘

import { api } from "./api.js";
import { fill, h, show } from "./dom.js";
import { shortId } from "./format.js";

// few enough that a page of 20 does not queue behind the browser's per-host connection limit
const PARALLEL = 4;

const ACTIONS = {
  retry: {
    verb: "Retry", run: (id) => api.retry(id),
    said: (answer) => ["retried as ", h("a", { href: `#/jobs/${answer.id}` }, h("code", {}, shortId(answer.id)))],
  },
  cancel: {
    verb: "Cancel", run: (id) => api.cancel(id),
    said: (answer) => (answer.status === 202 ? "cancel requested: its worker stops it" : "canceled"),
  },
};

async function eachLimited(items, limit, work) {
  const queue = [...items];
  const lanes = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await work(queue.shift());
  });
  await Promise.all(lanes);
}

/**
 * The bar above the jobs table, with the selection it acts on (`selected`: job ids). `onDone()` is called
 * after an action has run on every selected job, or the selection was cleared (the dashboard reloads then).
 */
export function bulkBar({ onDone }) {
  const selected = new Set();
  const count = h("span", { "data-testid": "selected-count", "aria-live": "polite" });
  const retry = h("button", { type: "button", "data-testid": "bulk-retry" }, "Retry selected");
  const cancel = h("button", { type: "button", "data-testid": "bulk-cancel" }, "Cancel selected");
  const clear = h("button", { type: "button", class: "quiet", "data-testid": "bulk-clear" }, "Clear");
  const confirmText = h("span");
  const confirmYes = h("button", { type: "button", class: "danger", "data-testid": "bulk-confirm" }, "Yes, cancel them");
  const confirmNo = h("button", { type: "button", "data-testid": "bulk-keep" }, "Keep them");
  const confirm = h("div", { class: "bulk-confirm", role: "group", hidden: true }, confirmText, confirmYes, confirmNo);
  const results = h("ul", { class: "bulk-results", "data-testid": "bulk-results" });
  const resultsPanel = h("div", { class: "panel", hidden: true },
    h("h2", { "data-testid": "bulk-summary" }), results);
  const element = h("div", {},
    h("div", { class: "bulk", "data-testid": "bulk-bar" }, count, retry, cancel, clear, confirm),
    resultsPanel);
  let busy = false;

  function update() {
    const n = selected.size;
    count.textContent = n ? `${n} selected` : "Tick jobs to retry or cancel them together";
    for (const button of [retry, cancel]) button.disabled = busy || n === 0;
    show(clear, n > 0 && !busy);
    if (n === 0) show(confirm, false);
  }

  async function run(kind) {
    const action = ACTIONS[kind];
    const ids = [...selected];
    busy = true;
    show(confirm, false);
    update();
    const lines = new Map(ids.map((id) => [id, h("li", { "data-testid": "bulk-result", "data-job-id": id,
      "data-outcome": "pending" }, h("code", {}, shortId(id)), " — …")]));
    fill(results, [...lines.values()]);
    const summary = resultsPanel.querySelector("h2");
    summary.textContent = `${action.verb}: ${ids.length} job${ids.length === 1 ? "" : "s"}…`;
    show(resultsPanel, true);
    let ok = 0;
    await eachLimited(ids, PARALLEL, async (id) => {
      const line = lines.get(id);
      try {
        const answer = await action.run(id);
        fill(line, h("code", {}, shortId(id)), " — ", action.said(answer));
        line.dataset.outcome = "ok";
        ok += 1;
      } catch (err) {
        fill(line, h("code", {}, shortId(id)), " — not done: ", err.message);
        line.dataset.outcome = "refused";
      }
    });
    summary.textContent = `${action.verb}: ${ok} of ${ids.length} done` +
      (ok < ids.length ? `, ${ids.length - ok} refused (see why below)` : "");
    selected.clear();
    busy = false;
    update();
    onDone();
  }

  retry.addEventListener("click", () => run("retry"));
  cancel.addEventListener("click", () => {
    confirmText.textContent = `Cancel ${selected.size} job${selected.size === 1 ? "" : "s"}?`;
    show(confirm, true);
    confirmNo.focus();
  });
  confirmYes.addEventListener("click", () => run("cancel"));
  confirmNo.addEventListener("click", () => show(confirm, false));
  clear.addEventListener("click", () => {
    selected.clear();
    onDone();
  });
  update();

  return {
    element,
    selected,
    /** Keeps only the ids on screen selected: a job that left the page must not be acted on unseen. */
    keepOnly(ids) {
      for (const id of [...selected]) if (!ids.has(id)) selected.delete(id);
      update();
    },
    toggle(id, on) {
      if (on) selected.add(id);
      else selected.delete(id);
      update();
    },
    clear() {
      selected.clear();
      update();
    },
    get busy() { return busy; },
  };
}
