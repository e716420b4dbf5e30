// The parts of the job view a person acts on: cancel, review (approve / reject with a note), the error
// of a failed job with Retry, the final result and the webhook delivery log. Each returns an element
// built from the current state.

import { api, ApiError } from "./api.js";
import { h } from "./dom.js";
import { errorWords, localTime, pretty, retryAdvice, RETRYABLE_STATUSES } from "./format.js";

function message(err) {
  return err instanceof ApiError ? err.message : String(err);
}

/** Runs an action with its button disabled; shows a failure in `alertEl`. */
async function act(button, alertEl, action) {
  button.disabled = true;
  alertEl.textContent = "";
  try {
    await action();
  } catch (err) {
    alertEl.textContent = message(err);
  } finally {
    button.disabled = false;
  }
}

/**
 * Buttons that change the job: Cancel while it is active, Retry once it failed, was canceled or expired.
 * @param {{job, status, onJob(job), alertEl}} ctx
 */
export function actionBar({ job, status, onJob, alertEl }) {
  const bar = h("div", { class: "actions" });
  if (["queued", "running", "needs_review"].includes(status) && job.phase !== "apply") {
    // an approved action being applied cannot be called back (the API refuses): no button to promise it
    if (job.cancel_requested) {
      bar.append(h("p", { class: "muted", "data-testid": "cancel-requested" },
        "Cancel requested — the worker is stopping it."));
    } else {
      const cancel = h("button", { type: "button", class: "danger", "data-testid": "cancel" }, "Cancel job");
      cancel.addEventListener("click", () => act(cancel, alertEl, async () => {
        onJob((await api.cancel(job.id)).data);
      }));
      bar.append(cancel);
    }
  }
  if (RETRYABLE_STATUSES.has(status)) {
    // after an error that says running it again is unlikely to help, Retry is no longer the suggested step
    const hopeless = status === "failed" && job.error && !job.error.retryable;
    const retry = h("button", { type: "button", class: hopeless ? null : "primary", "data-testid": "retry",
      "data-emphasis": hopeless ? "secondary" : "primary" }, "Retry as a new job");
    retry.addEventListener("click", () => act(retry, alertEl, async () => {
      const fresh = await api.retry(job.id);
      location.hash = `#/jobs/${fresh.id}`;
    }));
    bar.append(retry);
  }
  return bar.childElementCount ? bar : null;
}

/** needs_review: the proposed result, a note, and Approve / Reject. The note starts from `draft` and
 * reports each change to `onDraft`, so a rebuilt panel keeps what was typed. */
export function reviewPanel({ job, proposed, onJob, alertEl, draft = "", onDraft = () => {} }) {
  const noteId = `note-${job.id}`;
  const note = h("textarea", { id: noteId, rows: 2, maxlength: 2000, "data-testid": "review-note",
    placeholder: "Why you approve or reject (optional)" });
  note.value = draft;
  note.addEventListener("input", () => onDraft(note.value));
  const approve = h("button", { type: "button", class: "primary", "data-testid": "approve" }, "Approve");
  const reject = h("button", { type: "button", class: "danger", "data-testid": "reject" }, "Reject");
  approve.addEventListener("click", () => act(approve, alertEl, async () => {
    onJob(await api.approve(job.id, note.value.trim(), job.action_hash));
  }));
  reject.addEventListener("click", () => act(reject, alertEl, async () => {
    onJob(await api.reject(job.id, note.value.trim()));
  }));
  return h("section", { class: "panel review", "aria-labelledby": "review-title", "data-testid": "review" },
    h("h2", { id: "review-title" }, "Waiting for your review"),
    h("p", {}, "The handler finished. Its result counts only once a person approves it."),
    h("h3", {}, "Proposed result"),
    h("pre", { class: "code", "data-testid": "proposed-result", tabindex: 0 }, pretty(proposed ?? null)),
    h("label", { for: noteId }, "Note"),
    note,
    h("div", { class: "actions" }, approve, reject));
}

/** Shown when the job ended with an error (or when a decided review left a note). */
export function errorPanel(error, status) {
  return h("section", { class: "panel error", role: "group", "aria-labelledby": "error-title",
    "data-testid": "error", "data-error-class": error.class ?? "" },
  h("h2", { id: "error-title" }, status === "failed" ? "Why it failed" : "Last error"),
  h("p", { class: "error-words" }, errorWords(error), " ",
    h("span", { class: "muted" }, `(class: ${error.class ?? "unknown"}, attempt ${error.attempt ?? "?"})`)),
  h("p", { class: "error-message", "data-testid": "error-message" }, error.message ?? ""),
  h("p", { "data-testid": "error-retryable" }, retryAdvice(error)));
}

export function reviewOutcome(review) {
  if (!review?.state || review.state === "pending") return null;
  return h("p", { class: "muted", "data-testid": "review-outcome" },
    `Review: ${review.state}${review.by ? ` by ${review.by}` : ""}`,
    review.note ? ` — “${review.note}”` : "");
}

export function resultPanel(result, applied) {
  return h("section", { class: "panel", "aria-labelledby": "result-title" },
    h("h2", { id: "result-title" }, "Result"),
    h("pre", { class: "code", "data-testid": "result", tabindex: 0 }, pretty(result)),
    applied ? [h("h3", {}, "Applied"), h("pre", { class: "code", "data-testid": "applied", tabindex: 0 },
      pretty(applied))] : null);
}

/** Each attempt: when and where it ran, how it ended. */
export function attemptsPanel(attempts) {
  if (!attempts || attempts.length < 2) return null;
  const cell = (label, value) => h("td", { "data-label": label }, value ?? "—");
  return h("details", { class: "panel", "data-testid": "attempts" },
    h("summary", {}, `Attempts (${attempts.length})`),
    h("div", { class: "table-wrap flat" }, h("table", { class: "attempts" },
      h("thead", {}, h("tr", {}, ["#", "Worker", "Started", "Ended", "How", "Error"]
        .map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, attempts.map((a) => h("tr", {},
        cell("#", String(a.attempt)), cell("Worker", a.worker), cell("Started", localTime(a.started_at)),
        cell("Ended", a.ended_at ? localTime(a.ended_at) : null), cell("How", a.reason ?? a.status),
        cell("Error", a.error ? `${a.error.class}: ${a.error.message}` : null)))))));
}

/** The job's webhook: where its deliveries stand and each recent attempt, newest first (GET …/deliveries). */
export function deliveriesPanel(answer, wasOpen) {
  const { webhook, deliveries } = answer ?? {};
  if (!webhook) return null;
  const state = webhook.pending
    ? `Pending${webhook.failures ? ` after ${webhook.failures} failed attempt${webhook.failures === 1 ? "" : "s"}` : ""}` +
      (webhook.next_attempt_at ? `, next attempt ${localTime(webhook.next_attempt_at)}` : "")
    : "Every status change delivered";
  const cell = (label, value) => h("td", { "data-label": label }, value ?? "—");
  const panel = h("details", { class: "panel", "data-testid": "deliveries" },
    h("summary", {}, `Webhook deliveries (${deliveries.length})`),
    h("p", {}, "To ", h("code", {}, webhook.url), ". ",
      h("span", { "data-testid": "delivery-state" }, state), "."),
    deliveries.length
      ? h("div", { class: "table-wrap flat" }, h("table", { class: "attempts" },
        h("thead", {}, h("tr", {}, ["At", "Event", "Status", "Answer", "Time"]
          .map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, deliveries.map((d) => h("tr", { "data-testid": "delivery", "data-ok": String(Boolean(d.ok)) },
          cell("At", localTime(d.at)), cell("Event", `#${d.seq}`), cell("Status", d.status),
          cell("Answer", d.error ?? (d.http_status ? `HTTP ${d.http_status}` : null)),
          cell("Time", d.ms != null ? `${d.ms} ms` : null))))))
      : h("p", { class: "muted" }, "No delivery attempted yet."));
  if (wasOpen) panel.open = true;
  return panel;
}
