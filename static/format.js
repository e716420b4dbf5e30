// Words and numbers as people read them: statuses, durations, error classes.

export const STATUSES = ["queued", "running", "needs_review", "completed", "failed", "canceled", "expired"];
export const STATUS_WORDS = {
  queued: "Queued", running: "Running", needs_review: "Needs review", completed: "Completed",
  failed: "Failed", canceled: "Canceled", expired: "Expired",
};
export const TERMINAL = new Set(["completed", "failed", "canceled", "expired"]);
export const ACTIVE = new Set(["queued", "running", "needs_review"]);
export const RETRYABLE_STATUSES = new Set(["failed", "canceled", "expired"]);

// A running job's record carries lease_expires_at, "its worker's last beat + the worker's lease", so
// lease length = lease_expires_at - last_heartbeat_at, whatever BACKLANE_LEASE_S the workers run with.
// A worker beats several times per lease length (1 s of 4 by default); once half the lease is gone
// without a beat it has missed at least one, and the supervisor restarts the job when the rest runs
// out. That is "stale". Without lease_expires_at (an older server) the default lease is assumed.
const DEFAULT_LEASE_MS = 4_000;
const STALE_LEASE_FRACTION = 0.5;

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

/**
 * Whether the worker's heartbeats stopped, judged when the record was read (`seenAt`, the browser's clock
 * when the answer arrived): between two reads of a healthy job its heartbeat only looks older.
 */
export function isStale(job, seenAt = Date.now()) {
  if (job.status !== "running") return false;
  const beat = ms(job.last_heartbeat_at) ?? ms(job.started_at);
  if (beat == null) return false;
  const expires = ms(job.lease_expires_at);
  const lease = expires != null && expires > beat ? expires - beat : DEFAULT_LEASE_MS;
  return seenAt - beat > lease * STALE_LEASE_FRACTION;
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
