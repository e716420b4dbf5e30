// The HTTP API (README: "HTTP API (v1)"), with the stored key as a Bearer token. Every failure becomes an ApiError
// carrying the server's {"error": {"code", "message"}}; a 401 also tells the app to ask for a key.

import { getKey } from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0 when the server could not be reached
    this.code = code;
  }
}

export const UNAUTHORIZED_EVENT = "backlane:unauthorized";

async function call(path, { method = "GET", body, signal } = {}) {
  const headers = { Authorization: `Bearer ${getKey() ?? ""}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: { message: error.message ?? "" } }));
    }
    throw new ApiError(response.status, error.code ?? `http_${response.status}`,
      error.message ?? `${response.status} ${response.statusText}`);
  }
  return { status: response.status, data };
}

const job = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

export const api = {
  jobTypes: async () => (await call("/v1/job-types")).data,
  createJob: async (body) => (await call("/v1/jobs", { method: "POST", body })).data,
  getJob: async (id, signal) => (await call(job(id), { signal })).data,
  /** {status?, type?, cursor?, limit?} → {jobs, next_cursor} */
  listJobs: async (params, signal) => {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) if (value) query.set(name, String(value));
    return (await call(`/v1/jobs?${query}`, { signal })).data;
  },
  /** → {counts: {status: n}, total, by_type: {type: {status: n}}}: the tenant's jobs, exact, in one request */
  jobCounts: async (signal) => (await call("/v1/jobs/counts", { signal })).data,
  /** → {per_minute: [{minute, completed, failed}], queue_by_type: {type: {queued, running}},
   *     run_time_by_type: {type: {runs, p50_ms, p95_ms}}}: what the dashboard charts */
  stats: async (minutes, signal) => (await call(`/v1/stats?minutes=${minutes}`, { signal })).data,
  /** → {status: 200 canceled | 202 cancel requested, data: job} */
  cancel: (id) => call(`${job(id)}/cancel`, { method: "POST" }),
  /** actionHash: the proposal the reviewer saw; the server refuses the approval if it changed since */
  approve: async (id, note, actionHash) => (await call(`${job(id)}/approve`, { method: "POST",
    body: { ...(note ? { note } : {}), ...(actionHash ? { action_hash: actionHash } : {}) } })).data,
  reject: async (id, note) => (await call(`${job(id)}/reject`, { method: "POST", body: note ? { note } : {} })).data,
  /** → {job_id, spans: [{id, parent_id, kind, name, status, attempt, start, end, attributes, usage, cost_usd}]} */
  trace: async (id, signal) => (await call(`${job(id)}/trace`, { signal })).data,
  /** → {webhook: {url, delivered_through, pending, failures, next_attempt_at} | null, deliveries: [...]} */
  deliveries: async (id, signal) => (await call(`${job(id)}/deliveries`, { signal })).data,
  retry: async (id) => (await call(`${job(id)}/retry`, { method: "POST" })).data,
  /** → {workers: [...], unserved_types: [...]}: the live workers, what they serve and run */
  workers: async (signal) => (await call("/v1/workers", { signal })).data,
};
