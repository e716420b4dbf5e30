// The operator dashboard (#/jobs?status=&type=&q=): counts per status, a filtered list (newest first, paged),
// a search (q: a job id prefix, or metadata key=value), highlights for what needs a person, and bulk
// retry/cancel of ticked rows (bulk.js). Refreshed every few seconds while the tab is visible.

import { api } from "./api.js";
import { bulkBar } from "./bulk.js";
import { chartsPanel } from "./charts.js";
import { copyButton } from "./copy.js";
import { fill, h, show } from "./dom.js";
import { ago, duration, heartbeatMatters, isStale, ms, shortId, STATUS_WORDS, STATUSES } from "./format.js";
import { money } from "./waterfall.js";

// a phone's count tiles are narrow: one line each, so every count stays on the same baseline
const SHORT_WORDS = { needs_review: "Review" };
const PAGE_SIZE = 20;
const REFRESH_MS = 3000;
const CHART_MINUTES = 30;

function readFilters() {
  const query = new URLSearchParams(location.hash.split("?")[1] ?? "");
  return { status: query.get("status") ?? "", type: query.get("type") ?? "", q: query.get("q") ?? "" };
}

function writeFilters({ status, type, q }) {
  const query = new URLSearchParams();
  if (status) query.set("status", status);
  if (type) query.set("type", type);
  if (q) query.set("q", q);
  const suffix = query.size ? `?${query}` : "";
  history.replaceState(null, "", `${location.pathname}${location.search}#/jobs${suffix}`);
}

/**
 * The list's search parameters for what a person typed: hex digits are the start of a job id, `key=value`
 * (or `metadata.key=value`) a metadata value. Throws a sentence for anything else.
 */
export function searchParams(text) {
  const q = text.trim();
  if (!q) return {};
  const eq = q.indexOf("=");
  if (eq >= 0) {
    const key = q.slice(0, eq).trim().replace(/^metadata\./, "");
    const value = q.slice(eq + 1).trim();
    if (!key || !value) throw new Error("Search metadata as key=value, as in customer=acme.");
    return { [`metadata.${key}`]: value };
  }
  if (/^[0-9a-f]{1,32}$/i.test(q)) return { id_prefix: q.toLowerCase() };
  throw new Error("Search by the start of a job id (hex digits, 0-9 a-f) or by metadata as key=value.");
}

/** Jobs per status, of one type or of all: the server keeps the counts, so this is one request a refresh. */
function perStatus(answer, type) {
  const counts = type ? answer.by_type[type] ?? {} : answer.counts;
  return STATUSES.map((s) => counts[s] ?? 0);
}

function runTime(job, now) {
  if (job.status === "running" && job.started_at) return duration(now - ms(job.started_at));
  return duration(job.timing?.run_ms);
}

/** The job's cost, "no price" for calls without one, and a tag when an attempt paid twice for a step. */
function costOf(job) {
  const usage = job.usage ?? {};
  if (!usage.calls) return "—";
  const repaid = (usage.attempts ?? []).filter((a) => a.repaid).map((a) => a.attempt);
  return h("span", { "data-testid": "job-cost" }, money(usage.cost_usd) ?? "no price",
    repaid.length ? h("span", { class: "tag warn", "data-testid": "paid-twice",
      title: "A restarted attempt paid again for model calls in a step that had not completed" },
    `paid twice: attempt ${repaid.join(", ")}`) : null);
}

function errorCell(error) {
  if (!error) return "—";
  const message = error.message ?? "";
  return h("span", { class: "error-text", "data-testid": "job-error", title: message || null },
    h("strong", {}, error.class ?? "error"), message ? `: ${message}` : null);
}

function row(job, now, bulk) {
  const stale = isStale(job, now);
  const attention = job.status === "needs_review" || job.status === "failed" || stale;
  // "—" keeps the desktop table's columns; a phone's card leaves such a cell out (class "none")
  const cell = (label, ...kids) => h("td", { "data-label": label,
    class: kids.filter((k) => k != null).join("") === "—" ? "none" : null }, ...kids);
  const tick = h("input", { type: "checkbox", "data-testid": "select-job", "aria-label": `Select job ${job.id}`,
    checked: bulk.selected.has(job.id) });
  tick.addEventListener("change", () => bulk.toggle(job.id, tick.checked));
  const tr = h("tr", { "data-testid": "job-row", "data-job-id": job.id, "data-status": job.status,
    class: [attention && "attention", stale && "stale", `row-${job.status}`].filter(Boolean).join(" ") },
  h("td", { class: "pick" }, tick),
  cell("Job", h("a", { href: `#/jobs/${job.id}`, "data-job-id": job.id, "aria-label": `Open job ${job.id}` },
    h("code", {}, shortId(job.id))), copyButton(job.id, `job id ${job.id}`)),
  cell("Type", job.type),
  cell("Status", h("span", { class: "badge", "data-status": job.status }, job.status)),
  cell("Attempt", `${job.attempt} / ${job.max_attempts}`),
  cell("Age", ago(job.created_at, now)),
  cell("Run time", runTime(job, now)),
  cell("Heartbeat", heartbeatMatters(job.status) ? ago(job.last_heartbeat_at, now) : "—",
    stale ? h("span", { class: "tag warn" }, "stale") : null),
  cell("Cost", costOf(job)),
  cell("Error", errorCell(job.error)));
  tr.addEventListener("click", (e) => {
    if (!e.target.closest("a, button, input, td.pick")) location.hash = `#/jobs/${job.id}`;
  });
  return tr;
}

export function dashboardView(root) {
  const filters = readFilters();
  const statusSelect = h("select", { id: "filter-status", "data-testid": "filter-status" },
    h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const typeSelect = h("select", { id: "filter-type", "data-testid": "filter-type" },
    h("option", { value: "" }, "Any type"));
  const countTiles = h("div", { class: "counts", role: "group", "aria-label": "Jobs per status" });
  const costs = h("p", { class: "muted", "data-testid": "cost-by-type", hidden: true });
  const body = h("tbody");
  const empty = h("p", { class: "muted empty", "data-testid": "empty", hidden: true });
  const updated = h("span", { class: "muted", "aria-live": "off", "data-testid": "updated" });
  const problem = h("p", { class: "notice danger", role: "alert", hidden: true });
  const newer = h("button", { type: "button", "data-testid": "page-newer" }, "← Newer");
  const older = h("button", { type: "button", "data-testid": "page-older" }, "Older →");
  const pageLabel = h("span", { class: "muted", "data-testid": "page" });
  const refresh = h("button", { type: "button", "data-testid": "refresh" }, "Refresh");
  const searchInput = h("input", { id: "search", type: "search", "data-testid": "search", value: filters.q,
    placeholder: "id prefix, or key=value", "aria-describedby": "search-help search-error", autocomplete: "off" });
  const searchError = h("p", { class: "field-error", id: "search-error", role: "alert", "data-testid": "search-error" });
  const searchForm = h("form", { class: "field search", role: "search" },
    h("label", { for: "search" }, "Search"),
    h("div", { class: "search-row" }, searchInput, h("button", { type: "submit" }, "Search")),
    h("span", { class: "visually-hidden", id: "search-help" },
      "The start of a job id, or a metadata value as key=value"),
    searchError);
  const selectAll = h("input", { type: "checkbox", "data-testid": "select-all", "aria-label": "Select every job on this page" });
  const bulk = bulkBar({ onDone: () => load() });
  const charts = chartsPanel();

  fill(root,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Jobs"),
      h("a", { class: "button primary", href: "#/new" }, "New job")),
    countTiles,
    costs,
    charts.element,
    h("div", { class: "panel filters" },
      h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
      h("div", { class: "field" }, h("label", { for: "filter-type" }, "Type"), typeSelect),
      searchForm,
      h("div", { class: "field grow" }, updated, refresh)),
    problem,
    bulk.element,
    h("div", { class: "table-wrap" },
      h("table", { class: "jobs", "data-testid": "jobs" },
        h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "pick" }, selectAll), ["Job", "Type", "Status", "Attempt", "Age", "Run time", "Heartbeat", "Cost", "Error"]
          .map((name) => h("th", { scope: "col" }, name)))),
        body)),
    empty,
    h("nav", { class: "pager", "aria-label": "Pages" }, newer, pageLabel, older));

  statusSelect.value = filters.status;
  const cursors = [null]; // cursors[i] opens page i; the first page has none
  let page = 0;
  let nextCursor = null;
  let inflight = null;
  let disposed = false;

  async function load() {
    inflight?.abort();
    const controller = new AbortController();
    inflight = controller;
    const { signal } = controller;
    const filter = { status: filters.status, type: filters.type };
    // the charts are a side view: when they cannot be read, the list still refreshes
    api.stats(CHART_MINUTES, signal).then((stats) => {
      if (!disposed && !signal.aborted) charts.update(stats);
    }).catch(() => {});
    let search;
    try {
      search = searchParams(filters.q);
      searchError.textContent = "";
    } catch (err) {
      searchError.textContent = err.message;
      if (inflight === controller) inflight = null;
      return;
    }
    try {
      const [list, counts] = await Promise.all([
        api.listJobs({ ...filter, ...search, cursor: cursors[page], limit: PAGE_SIZE }, signal),
        api.jobCounts(signal),
      ]);
      if (disposed || signal.aborted) return;
      render(list, perStatus(counts, filter.type));
      renderCosts(counts.usage_by_type ?? {});
      show(problem, false);
    } catch (err) {
      if (err.name === "AbortError" || disposed) return;
      problem.textContent = `Could not refresh: ${err.message}`;
      show(problem, true);
    } finally {
      if (inflight === controller) inflight = null;
    }
  }

  function renderCosts(byType) {
    const parts = Object.entries(byType).map(([type, u]) =>
      `${type}: ${money(u.cost_usd) ?? "no price"} (${u.calls} model call${u.calls === 1 ? "" : "s"}, ${u.tokens} tokens)`);
    costs.textContent = parts.length ? `Model cost by type — ${parts.join(" · ")}` : "";
    show(costs, parts.length > 0);
  }

  function render(list, counts) {
    const now = Date.now();
    const focused = document.activeElement?.dataset?.jobId; // keep keyboard focus across refreshes
    bulk.keepOnly(new Set(list.jobs.map((job) => job.id)));
    fill(body, list.jobs.map((job) => row(job, now, bulk)));
    syncSelectAll();
    if (focused) body.querySelector(`a[data-job-id="${CSS.escape(focused)}"]`)?.focus();
    nextCursor = list.next_cursor;
    empty.textContent = filters.q && nextCursor
      ? "None of the jobs searched so far match: “Older →” searches further back."
      : filters.status || filters.type || filters.q ? "No jobs match these filters." : "No jobs yet.";
    show(empty, list.jobs.length === 0);
    newer.disabled = page === 0;
    older.disabled = !nextCursor;
    pageLabel.textContent = `Page ${page + 1}`;
    const total = counts.reduce((sum, n) => sum + n, 0);
    fill(countTiles, [["", total, "All"], ...STATUSES.map((s, i) => [s, counts[i], STATUS_WORDS[s]])]
      .map(([status, count, label]) => {
        const button = h("button", { type: "button", class: `count count-${status || "all"}`,
          "aria-pressed": String(filters.status === status), "data-testid": `count-${status || "all"}`,
          "data-count": count, "aria-label": `${label}: ${count}` },
        h("span", { class: "count-n" }, count), h("span", { class: "count-label" }, label),
        SHORT_WORDS[status] ? h("span", { class: "count-label short", "aria-hidden": "true" }, SHORT_WORDS[status]) : null);
        button.addEventListener("click", () => setFilter({ status }));
        return button;
      }));
    updated.textContent = `Updated ${new Date(now).toLocaleTimeString()}`;
  }

  function syncSelectAll() {
    const ticks = [...body.querySelectorAll("[data-testid=select-job]")];
    const on = ticks.filter((t) => t.checked).length;
    selectAll.checked = ticks.length > 0 && on === ticks.length;
    selectAll.indeterminate = on > 0 && on < ticks.length;
    selectAll.disabled = ticks.length === 0;
  }

  function setFilter(change) {
    Object.assign(filters, change);
    bulk.clear();
    statusSelect.value = filters.status;
    typeSelect.value = filters.type;
    writeFilters(filters);
    cursors.length = 1;
    page = 0;
    load();
  }

  statusSelect.addEventListener("change", () => setFilter({ status: statusSelect.value }));
  typeSelect.addEventListener("change", () => setFilter({ type: typeSelect.value }));
  refresh.addEventListener("click", load);
  searchForm.addEventListener("submit", (e) => {
    e.preventDefault();
    setFilter({ q: searchInput.value.trim() });
  });
  selectAll.addEventListener("change", () => {
    for (const tick of body.querySelectorAll("[data-testid=select-job]")) {
      tick.checked = selectAll.checked;
      bulk.toggle(tick.closest("tr").dataset.jobId, tick.checked);
    }
  });
  body.addEventListener("change", syncSelectAll);
  newer.addEventListener("click", () => {
    bulk.clear();
    if (page > 0) page -= 1;
    load();
  });
  older.addEventListener("click", () => {
    if (!nextCursor) return;
    bulk.clear();
    cursors[page + 1] = nextCursor;
    page += 1;
    load();
  });

  api.jobTypes().then((types) => {
    const names = new Set(types.map((t) => t.name));
    if (filters.type) names.add(filters.type);
    for (const name of [...names].sort()) typeSelect.append(h("option", { value: name }, name));
    typeSelect.value = filters.type;
  }).catch(() => {}); // the list still works without the type names

  load();
  const timer = setInterval(() => {
    if (!document.hidden && !inflight && !bulk.busy) load();
  }, REFRESH_MS);
  return () => {
    disposed = true;
    clearInterval(timer);
    inflight?.abort();
  };
}
