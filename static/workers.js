// The workers page (#/workers): every live worker (GET /v1/workers) with what it serves and runs; each of
// your running jobs links to its job view. Refreshed every few seconds while the tab is visible.

import { api } from "./api.js";
import { fill, h, show } from "./dom.js";
import { ago, localTime, shortId } from "./format.js";

const REFRESH_MS = 3000;

function runningCell(worker) {
  const { count, jobs } = worker.running;
  const others = count - jobs.length; // other tenants' jobs are counted, not named
  return [
    h("span", { "data-testid": "running-count" }, `${count} / ${worker.concurrency ?? "?"}`),
    jobs.length ? h("ul", { class: "running-jobs" }, jobs.map((job) => h("li", {},
      h("a", { href: `#/jobs/${job.id}`, "data-testid": "running-job", "data-job-id": job.id,
        "aria-label": `Open job ${job.id}` }, h("code", {}, shortId(job.id))), ` ${job.type}`))) : null,
    others > 0 && jobs.length ? h("span", { class: "muted" }, ` +${others} of other tenants`) : null,
  ];
}

function row(worker, now) {
  const cell = (label, ...kids) => h("td", { "data-label": label }, ...kids);
  return h("tr", { "data-testid": "worker-row", "data-worker-id": worker.id },
    cell("Worker", h("code", { title: worker.id }, worker.id),
      worker.draining ? h("span", { class: "tag warn", "data-testid": "draining" }, "draining") : null),
    cell("Host", worker.host ?? "—", worker.pid != null ? h("span", { class: "muted" }, ` pid ${worker.pid}`) : null),
    cell("Version", worker.version ?? "—"),
    cell("Types", worker.job_types.join(", ") || "—"),
    cell("Running", runningCell(worker)),
    cell("Started", h("span", { title: localTime(worker.started_at) }, ago(worker.started_at, now))),
    cell("Last seen", ago(worker.last_seen_at, now)));
}

export function workersView(root) {
  const body = h("tbody");
  const empty = h("p", { class: "muted empty", "data-testid": "no-workers", hidden: true },
    "No live workers. Start one with ", h("code", {}, "backlane worker"), ".");
  const unserved = h("p", { class: "notice warn", role: "status", "data-testid": "unserved-types", hidden: true });
  const problem = h("p", { class: "notice danger", role: "alert", hidden: true });
  const updated = h("span", { class: "muted", "aria-live": "off", "data-testid": "updated" });
  fill(root,
    h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Workers"), updated),
    problem, unserved,
    h("div", { class: "table-wrap" },
      h("table", { class: "jobs workers", "data-testid": "workers" },
        h("caption", { class: "visually-hidden" }, "Live workers"),
        h("thead", {}, h("tr", {}, ["Worker", "Host", "Version", "Types", "Running", "Started", "Last seen"]
          .map((name) => h("th", { scope: "col" }, name)))),
        body)),
    empty);

  let inflight = null;
  let disposed = false;

  async function load() {
    const controller = new AbortController();
    inflight = controller;
    try {
      const answer = await api.workers(controller.signal);
      if (disposed) return;
      const now = Date.now();
      fill(body, answer.workers.map((worker) => row(worker, now)));
      show(empty, answer.workers.length === 0);
      unserved.textContent = answer.unserved_types.length
        ? `No live worker serves: ${answer.unserved_types.join(", ")}. Jobs of these types wait queued.` : "";
      show(unserved, answer.unserved_types.length > 0);
      updated.textContent = `Updated ${new Date(now).toLocaleTimeString()}`;
      show(problem, false);
    } catch (err) {
      if (err.name === "AbortError" || disposed) return;
      problem.textContent = `Could not refresh: ${err.message}`;
      show(problem, true);
    } finally {
      if (inflight === controller) inflight = null;
    }
  }

  load();
  const timer = setInterval(() => {
    if (!document.hidden && !inflight) load();
  }, REFRESH_MS);
  return () => {
    disposed = true;
    clearInterval(timer);
    inflight?.abort();
  };
}
