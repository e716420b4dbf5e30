// Words and numbers as people read them: statuses, durations, error classes.

export const STATUSES = ["queued", "running", "needs_review", "completed", "failed", "canceled", "expired"];
export const STATUS_WORDS = {
  queued: "Queued", running: "Running", needs_review: "Needs review", completed: "Completed",
  failed: "Failed", canceled: "Canceled", expired: "Expired",
};
export const TERMINAL = new Set(["completed", "failed", "canceled", "expired"]);
export const ACTIVE = new Set(["queued", "running", "needs_review"]);
export const RETRYABLE_STATUSES = new Set(["failed", "canceled", "expired"]);

// The record does not say the server's lease length; heartbeats older than the default lease (10 s)
// plus a margin mean the worker is probably gone and the supervisor is about to restart the job.
export const STALE_HEARTBEAT_MS = 15_000;

const ERROR_WORDS = {
  input: "The input was not acceptable.",
  transient: "A temporary problem: network, provider outage, rate limit or timeout.",
  policy: "Refused by a rule or by a provider's content filter.",
  worker_lost: "The worker running it stopped responding, too many times.",
  internal: "A bug in the handler or in Backlane.",
  deadline: "It ran out of time.",
};

export function errorWords(error) {
  return ERROR_WORDS[error?.class] ?? "It failed.";
}

export function retryAdvice(error) {
  return error?.retryable
    ? "Running it again may help."
    : "Running it again is unlikely to help unless something changes first.";
}

export function ms(iso) {
  return iso ? Date.parse(iso) : null;
}

/** 850 → "0.9 s", 65_000 → "1 min 5 s", 7_380_000 → "2 h 3 min". */
export function duration(millis) {
  if (millis == null || Number.isNaN(millis)) return "—";
  if (millis < 10_000) return `${(Math.max(0, millis) / 1000).toFixed(1)} s`;
  const s = Math.floor(millis / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} days`;
}

export function ago(iso, now = Date.now()) {
  const t = ms(iso);
  if (t == null) return "—";
  const d = now - t;
  return d < 1000 ? "just now" : `${duration(d)} ago`;
}

/** A heartbeat matters while a worker holds (or just lost) the job; afterwards it is history. */
export function heartbeatMatters(status) {
  return status === "running" || status === "queued";
}

export function isStale(job, now = Date.now()) {
  if (job.status !== "running") return false;
  const beat = ms(job.last_heartbeat_at) ?? ms(job.started_at);
  return beat != null && now - beat > STALE_HEARTBEAT_MS;
}

export function localTime(iso) {
  const t = ms(iso);
  return t == null ? "—" : new Date(t).toLocaleString();
}

export function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
