// The job view (#/jobs/<id>): the record from GET /v1/jobs/<id>, kept fresh, plus the live stream.
//
// The stream decides what is on screen for status, attempt, progress and output (it is ordered by seq);
// the record adds what no event carries: timestamps, the last heartbeat, cancel_requested, review.
// Output shows the newest attempt only: an event with a higher attempt clears it and says why.
// A snapshot (sent first to a view far behind) stands for every event up to its seq: the screen is
// set to what they would have left on it.
// The output follows the newest text until the reader scrolls up in it (or taps "Start"); "Follow"
// brings it back. The progress bar stays indeterminate until a fraction above 0 arrives, and a notice
// that an attempt failed is shown only until the job completes.

import { api, ApiError } from "./api.js";
import { fill, h, show } from "./dom.js";
import { ago, duration, heartbeatMatters, isStale, localTime, ms, pretty, shortId, TERMINAL } from "./format.js";
import {
  actionBar, attemptsPanel, deliveriesPanel, errorPanel, resultPanel, reviewOutcome, reviewPanel,
} from "./jobpanels.js";
import { JobStream } from "./stream.js";
import { waterfallPanel } from "./waterfall.js";

const RECORD_POLL_MS = 2000;
// while the job waits, whether a live worker serves its type is asked this often at most
const SERVED_CHECK_MS = 5000;
const FINISHED_WORDS = {
  completed: "Finished.", failed: "Stopped: it failed.", canceled: "Stopped: canceled.", expired: "Stopped: it expired.",
};
const CONNECTION_WORDS = { connecting: "Connecting…", reconnecting: "Reconnecting…" };
// how close to the end of the output (px) counts as "at the newest text"
const AT_END_PX = 4;

function layout(root) {
  const el = (tag, props, ...kids) => h(tag, props, ...kids);
  const ui = {
    title: el("h1", { tabindex: -1, class: "job-title" }),
    id: el("code", { "data-testid": "job-id" }),
    badge: el("span", { class: "badge", "data-testid": "status" }),
    restart: el("p", { class: "notice warn", role: "status", "data-testid": "restart-notice", hidden: true }),
    connection: el("p", { class: "notice info", role: "status", "data-testid": "connection", hidden: true }),
    unserved: el("p", { class: "notice warn", role: "status", "data-testid": "unserved-notice", hidden: true }),
    alert: el("p", { class: "notice danger", role: "alert", "data-testid": "action-error" }),
    attempt: el("dd", { "data-testid": "attempt" }),
    elapsed: el("dd", { "data-testid": "elapsed" }),
    runTime: el("dd", { "data-testid": "run-time" }),
    queued: el("dd"),
    heartbeat: el("dd", { "data-testid": "heartbeat" }),
    created: el("dd"),
    retryOf: el("dd"),
    step: el("p", { class: "step", "data-testid": "step" }),
    progressMessage: el("p", { class: "muted", "data-testid": "progress-message" }),
    // hidden until the handler reports progress: an empty indeterminate bar says nothing
    progress: el("progress", { max: 1, "data-testid": "progress", "aria-label": "Progress", hidden: true }),
    actions: el("div"),
    panels: el("div"),
    output: el("pre", { class: "output", "data-testid": "output", tabindex: 0, "aria-label": "Output",
      "aria-live": "off" }),
    outputNote: el("p", { class: "muted", "data-testid": "output-note" }),
    outputStart: el("button", { type: "button", class: "quiet small", "data-testid": "output-start" }, "↑ Start"),
    outputFollow: el("button", { type: "button", class: "quiet small", "data-testid": "output-follow",
      hidden: true }, "↓ Follow newest"),
    deliveries: el("div"),
    result: el("div"),
    attempts: el("div"),
    trace: el("div"),
    input: el("pre", { class: "code", tabindex: 0 }),
  };
  const fact = (label, dd) => [el("dt", {}, label), dd];
  fill(root,
    el("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, el("a", { href: "#/jobs" }, "← All jobs")),
    el("header", { class: "job-head" },
      el("div", {}, el("p", { class: "eyebrow" }, "Job ", ui.id), ui.title), ui.badge),
    ui.restart, ui.unserved, ui.connection, ui.alert,
    el("div", { class: "job-grid" },
      el("section", { class: "panel", "aria-label": "Progress" },
        ui.step, ui.progress, ui.progressMessage, ui.actions),
      el("section", { class: "panel", "aria-label": "Details" },
        el("dl", { class: "facts" },
          fact("Attempt", ui.attempt), fact("Elapsed", ui.elapsed), fact("Run time", ui.runTime),
          fact("Waited in queue", ui.queued), fact("Last heartbeat", ui.heartbeat),
          fact("Created", ui.created), fact("Retry of", ui.retryOf)))),
    ui.panels,
    el("section", { class: "panel output-card", "aria-labelledby": "output-title" },
      el("div", { class: "output-head" }, el("h2", { id: "output-title" }, "Output"), ui.outputNote,
        el("span", { class: "output-tools" }, ui.outputStart, ui.outputFollow)),
      ui.output),
    ui.result,
    ui.trace,
    ui.attempts,
    ui.deliveries,
    el("details", { class: "panel" }, el("summary", {}, "Input"), ui.input));
  return ui;
}

function restartWords(reason, error, attempt) {
  if (reason === "approved") return `Approved — applying it, attempt ${attempt}`;
  if (reason === "worker_lost") return `Worker lost — restarted, attempt ${attempt}`;
  if (error?.class) return `Attempt ${attempt - 1} failed (${error.class}: ${error.message ?? ""}) — retried, attempt ${attempt}`;
  return `Restarted, attempt ${attempt}`;
}

function waitingWords(job, status) {
  if (status !== "queued") return "";
  const readyAt = ms(job.ready_at);
  return readyAt && readyAt > Date.now()
    ? `Waiting to run again at ${new Date(readyAt).toLocaleTimeString()} (back-off)`
    : "Waiting for a worker…";
}

function requeueWords(event, attempt) {
  if (event.reason === "approved") return "Approved — waiting for a worker to apply it";
  if (event.reason === "worker_lost") return `Worker lost — waiting to restart (attempt ${attempt} was lost)`;
  return `Attempt ${attempt} stopped (${event.error?.class ?? event.reason}) — waiting to run again`;
}

export function jobView(root, jobId) {
  const ui = layout(root);
  const state = {
    job: null, jobSeenAt: 0, stream: null, streamState: "connecting", status: null, attempt: 0, lastSeq: 0,
    requeue: null, lastStatusEvent: null, panelsKey: null, noteDraft: "", progressSeen: false, outputText: new Text(""), disposed: false, polling: null,
    unserved: false, servedCheckedAt: 0, fractionSeen: false, follow: true, autoTop: 0, touching: false,
    deliveriesKey: null,
  };
  ui.output.append(state.outputText);

  function displayStatus() {
    const { job, status, streamState, lastSeq } = state;
    // while the stream is cut off, the record may know newer news than the stream delivered
    if (!status || (streamState === "reconnecting" && job.last_seq > lastSeq)) return job.status;
    return status;
  }

  function renderRecord() {
    const { job } = state;
    const status = displayStatus();
    const attempt = Math.max(state.attempt, job.attempt);
    document.title = `${status} · ${job.type} — Backlane`;
    ui.title.textContent = job.type;
    ui.id.textContent = job.id;
    ui.badge.textContent = status;
    ui.badge.dataset.status = status;
    ui.attempt.textContent = attempt ? `${attempt} of ${job.max_attempts}` : `not started (up to ${job.max_attempts})`;
    ui.queued.textContent = duration(job.timing?.queue_ms);
    ui.created.textContent = localTime(job.created_at);
    fill(ui.retryOf, job.retry_of ? h("a", { href: `#/jobs/${job.retry_of}` }, shortId(job.retry_of)) : "—");
    ui.input.textContent = pretty(job.input);
    if (!state.progressSeen && !TERMINAL.has(status)) ui.progressMessage.textContent = waitingWords(job, status);
    checkServed(status);
    // rebuilt only when what they show changes: a poll must not wipe a half-written note or move focus
    const key = JSON.stringify([status, job.cancel_requested, job.result, job.error, job.review, job.applied,
      job.attempts, state.lastStatusEvent?.result ?? null]);
    if (key !== state.panelsKey) {
      state.panelsKey = key;
      fill(ui.actions, actionBar({ job, status, onJob: setJob, alertEl: ui.alert }));
      renderPanels(status);
    }
    tick();
  }

  function renderPanels(status) {
    const { job, lastStatusEvent } = state;
    // a rebuilt review panel keeps what was typed (state.noteDraft): a refresh of the record after the
    // status event (its result, its attempts) would otherwise wipe a note before Approve is pressed
    const oldNote = ui.panels.querySelector('[data-testid="review-note"]');
    const noteFocused = oldNote !== null && document.activeElement === oldNote;
    const panels = [];
    if (status === "needs_review") {
      panels.push(reviewPanel({ job, proposed: job.result ?? lastStatusEvent?.result, onJob: setJob,
        alertEl: ui.alert, draft: state.noteDraft, onDraft: (text) => { state.noteDraft = text; } }));
    }
    const error = job.error ?? (TERMINAL.has(status) ? lastStatusEvent?.error : null);
    if (error && (status === "failed" || status === "expired")) panels.push(errorPanel(error, status));
    panels.push(reviewOutcome(job.review));
    fill(ui.panels, panels);
    if (noteFocused) ui.panels.querySelector('[data-testid="review-note"]')?.focus();
    const result = job.result ?? lastStatusEvent?.result;
    fill(ui.result, status === "completed" && result != null ? resultPanel(result, job.applied) : null);
    const wasOpen = ui.attempts.querySelector("details")?.open;
    const history = attemptsPanel(job.attempts);
    if (history && wasOpen) history.open = true;
    fill(ui.attempts, history);
  }

  /** A queued job whose type no live worker serves waits until one starts: say so. */
  async function checkServed(status) {
    showUnserved(status);
    if (status !== "queued" || Date.now() - state.servedCheckedAt < SERVED_CHECK_MS) return;
    state.servedCheckedAt = Date.now();
    try {
      const answer = await api.workers();
      state.unserved = !answer.workers.some((worker) => worker.job_types.includes(state.job.type));
    } catch {
      return; // the job view works without it
    }
    if (!state.disposed) showUnserved(displayStatus());
  }

  function showUnserved(status) {
    const visible = status === "queued" && state.unserved;
    if (visible && !ui.unserved.childNodes.length) {
      fill(ui.unserved, `No worker serves this type (${state.job.type}): the job waits until one that does starts. `,
        h("a", { href: "#/workers" }, "See the workers"));
    }
    show(ui.unserved, visible);
  }

  /** Clocks that move without events: elapsed, run time, heartbeat age. */
  function tick() {
    const { job } = state;
    if (!job) return;
    const status = displayStatus();
    const now = Date.now();
    const end = TERMINAL.has(status) ? (ms(job.finished_at) ?? now) : now;
    ui.elapsed.textContent = duration(end - ms(job.created_at));
    const running = status === "running" && job.started_at;
    ui.runTime.textContent = running ? duration(now - ms(job.started_at)) : duration(job.timing?.run_ms);
    ui.heartbeat.textContent = job.last_heartbeat_at && heartbeatMatters(status) ? ago(job.last_heartbeat_at, now) : "—";
    const stale = isStale({ ...job, status }, state.jobSeenAt);
    ui.heartbeat.classList.toggle("stale", stale);
    if (stale) ui.heartbeat.append(" (stale: the worker may be gone)");
  }

  function setJob(job) {
    if (state.disposed) return;
    state.job = job;
    state.jobSeenAt = Date.now(); // staleness is judged as of this read, not as the clock moves on
    renderRecord();
  }

  /** The waterfall, fetched again when a step moves or the job changes (at most one fetch at a time). */
  async function refreshTrace() {
    if (state.tracing) { state.traceAgain = true; return; }
    state.tracing = true;
    try {
      const trace = await api.trace(jobId);
      if (!state.disposed) fill(ui.trace, waterfallPanel(trace));
    } catch {
      // the trace is extra: the job view goes on without it
    } finally {
      state.tracing = false;
      if (state.traceAgain && !state.disposed) { state.traceAgain = false; setTimeout(refreshTrace, 300); }
    }
  }

  async function refreshJob() {
    const job = await api.getJob(jobId);
    setJob(job);
    refreshDeliveries(job);
    return job;
  }

  /** The webhook's log, fetched again when the record says the deliveries moved. */
  async function refreshDeliveries(job) {
    if (!job.webhook_url) return;
    const key = JSON.stringify([job.webhook, job.last_seq]);
    if (key === state.deliveriesKey) return;
    state.deliveriesKey = key;
    try {
      const answer = await api.deliveries(jobId);
      if (state.disposed) return;
      const wasOpen = ui.deliveries.querySelector("details")?.open;
      fill(ui.deliveries, deliveriesPanel(answer, wasOpen));
    } catch {
      state.deliveriesKey = null; // the log is extra: try again at the next poll
    }
  }

  function onEvent(event) {
    state.lastSeq = event.seq;
    if (event.type === "snapshot") {
      onSnapshot(event);
      return;
    }
    if (event.attempt > state.attempt) {
      if (state.attempt >= 1) {
        const why = state.requeue ?? {};
        setNotice(restartWords(why.reason, why.error, event.attempt), why.reason);
        if (why.reason === "approved") {
          // the apply step is not a re-run: it does not repeat the draft, so the approved draft stays
          ui.outputNote.textContent = `The approved draft (attempt ${state.attempt}); the apply step's output follows.`;
        } else {
          state.outputText.data = ""; // a re-run repeats what it keeps: show only the newest attempt
          ui.outputNote.textContent = `Showing the output of attempt ${event.attempt}.`;
        }
      }
      state.attempt = event.attempt;
    }
    if (event.attempt < state.attempt) return; // an older attempt's late word: not shown
    if (event.type === "output") {
      state.outputText.appendData(event.text);
      followOutput();
    } else if (event.type === "progress") {
      showProgress(event);
    } else if (event.type === "status") {
      onStatus(event);
      refreshTrace();
    } else if (event.type === "step") {
      refreshTrace();
    }
  }

  function showProgress(event) {
    state.progressSeen = true;
    show(ui.progress, true);
    ui.step.textContent = event.step ? `Step: ${event.step}` : "";
    ui.progressMessage.textContent = event.message ?? "";
    // a bar at 0 looks stuck for the whole first step: indeterminate until the work has a measure
    if (typeof event.fraction === "number" && (event.fraction > 0 || state.fractionSeen)) {
      state.fractionSeen = true;
      ui.progress.value = event.fraction;
    } else {
      ui.progress.removeAttribute("value"); // indeterminate
    }
  }

  /** What the events up to the snapshot would have left on screen: output, attempt, notices, progress, status. */
  function onSnapshot(snapshot) {
    const { attempt } = snapshot;
    state.attempt = attempt;
    state.outputText.data = (snapshot.draft ?? "") + snapshot.text;
    if (snapshot.draft != null) {
      setNotice(restartWords("approved", null, attempt), "approved");
      ui.outputNote.textContent = `The approved draft (attempt ${attempt - 1}); the apply step's output follows.`;
    } else if (attempt > 1) {
      // how the attempt before ended: the record's attempt history has its reason and error
      const before = state.job?.attempts?.find((a) => a.attempt === attempt - 1) ?? {};
      setNotice(restartWords(before.reason, before.error, attempt), before.reason);
      ui.outputNote.textContent = `Showing the output of attempt ${attempt}.`;
    }
    if (snapshot.progress) showProgress(snapshot.progress);
    if (snapshot.status_event) onStatus(snapshot.status_event);
    followOutput();
  }

  /** A new attempt is news: a warning after a failure, plain information after an approval. */
  function setNotice(words, reason) {
    ui.restart.textContent = words;
    ui.restart.className = `notice ${reason === "approved" ? "info" : "warn"}`;
    ui.restart.dataset.reason = reason ?? "";
    show(ui.restart, true);
  }

  function onStatus(event) {
    state.status = event.status;
    state.lastStatusEvent = event;
    if (event.status === "queued" && event.reason && state.attempt >= 1) {
      state.requeue = { reason: event.reason, error: event.error };
      setNotice(requeueWords(event, state.attempt), event.reason);
    }
    if (event.status === "completed") {
      ui.progress.value = 1;
      // "attempt N failed — retried" was news while the job went on; once it completed it is history
      // (the attempts panel keeps it)
      if (ui.restart.dataset.reason !== "approved") show(ui.restart, false);
    }
    if (TERMINAL.has(event.status)) {
      ui.output.dataset.complete = "true";
      ui.progressMessage.textContent = FINISHED_WORDS[event.status];
    }
    if (state.job) renderRecord();
    refreshJob().catch(() => {}); // timestamps, result, error and review come with the record
  }

  /** Keeps the newest output in view while following; never while a finger is on it. */
  function followOutput() {
    const out = ui.output;
    // moved up since the page last scrolled it: the reader's doing, even if its scroll event is yet to come
    if (state.follow && out.scrollTop < state.autoTop - 1) setFollow(false);
    if (!state.follow || state.touching) return;
    out.scrollTop = out.scrollHeight;
    state.autoTop = out.scrollTop;
  }

  function setFollow(follow) {
    state.follow = follow;
    show(ui.outputFollow, !follow);
  }

  // the reader moved up from where the page last put it: stop following; back at the end: follow again
  ui.output.addEventListener("scroll", () => {
    const out = ui.output;
    const atEnd = out.scrollHeight - out.scrollTop - out.clientHeight <= AT_END_PX;
    if (atEnd) setFollow(true);
    else if (out.scrollTop < state.autoTop - 1) setFollow(false);
  }, { passive: true });
  ui.output.addEventListener("touchstart", () => { state.touching = true; }, { passive: true });
  ui.output.addEventListener("touchend", () => { state.touching = false; }, { passive: true });
  ui.output.addEventListener("touchcancel", () => { state.touching = false; }, { passive: true });
  ui.outputStart.addEventListener("click", () => {
    setFollow(false);
    ui.output.scrollTop = 0;
    ui.output.scrollIntoView({ block: "nearest" });
  });
  ui.outputFollow.addEventListener("click", () => {
    state.autoTop = 0; // where the reader left it is not a move away
    setFollow(true);
    followOutput();
  });

  function onStreamState(streamState) {
    state.streamState = streamState;
    const words = CONNECTION_WORDS[streamState];
    ui.connection.textContent = words ?? "";
    show(ui.connection, Boolean(words) && (streamState === "reconnecting" || state.lastSeq > 0));
    // after the end, the record is polled only while its webhook still has deliveries to make
    if (streamState === "done" && !state.job?.webhook?.pending) stopPolling();
  }

  function stopPolling() {
    clearInterval(state.polling);
    state.polling = null;
  }

  async function start() {
    let job;
    try {
      job = await api.getJob(jobId);
    } catch (err) {
      const words = err instanceof ApiError && err.status === 404 ? "No such job (or not yours)." : err.message;
      fill(root, h("nav", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← All jobs")),
        h("h1", { tabindex: -1 }, "Job not available"),
        h("p", { class: "notice danger", role: "alert", "data-testid": "load-error" }, words));
      return;
    }
    if (state.disposed) return;
    setJob(job);
    refreshDeliveries(job);
    state.stream = new JobStream(job, { onEvent, onState: onStreamState, refreshJob });
    state.clock = setInterval(tick, 1000);
    state.polling = setInterval(() => {
      if (state.streamState === "done" && !state.job?.webhook?.pending) {
        stopPolling();
        return;
      }
      if (!document.hidden) refreshJob().catch(() => {}); // heartbeats are not events: poll lightly
      if (!document.hidden && !TERMINAL.has(state.job?.status)) refreshTrace(); // model calls are not events
    }, RECORD_POLL_MS);
    refreshTrace();
  }

  start();
  return () => {
    state.disposed = true;
    state.stream?.close();
    stopPolling();
    clearInterval(state.clock);
  };
}
