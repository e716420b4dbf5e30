// Follows one job's event stream with the browser's own EventSource.
//
//   open(links.events)          a fresh EventSource has no cursor: the server replays the whole history,
//     │                         so a reload rebuilds the screen from the stream itself (a long one
//     │                         starts with a snapshot: one event standing for every event up to it)
//     ├─ event (seq > last)  → onEvent; seq ≤ last is a repeat and is dropped
//     ├─ error, CONNECTING   → "reconnecting": the browser retries by itself with Last-Event-ID
//     ├─ error, CLOSED       → the server refused (e.g. the events token expired): fetch the job again
//     │                         for a fresh links.events and reopen with ?after=<last cursor>
//     └─ terminal status     → close(): no reconnect loop (the server would answer 204 anyway); a
//                               snapshot of a finished job carries it too

import { TERMINAL } from "./format.js";

const EVENT_TYPES = ["status", "output", "progress", "snapshot"];
const RETRY_MS = [1000, 2000, 4000, 8000, 10000];

export class JobStream {
  /**
   * @param {object} job  the job record (its links.events)
   * @param {{onEvent(data), onState(state), refreshJob(): Promise<object>}} handlers
   *   state is "connecting" | "live" | "reconnecting" | "done"
   */
  constructor(job, handlers) {
    this.handlers = handlers;
    this.lastSeq = 0;
    this.lastId = null;
    this.source = null;
    this.done = false;
    this.failures = 0;
    this.timer = null;
    this._open(job.links.events);
  }

  close() {
    this.done = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  _open(url) {
    if (this.done) return;
    const address = new URL(url, location.href);
    if (this.lastId) address.searchParams.set("after", this.lastId);
    const source = new EventSource(address);
    this.source = source;
    this.handlers.onState(this.lastSeq ? "reconnecting" : "connecting");
    source.onopen = () => {
      this.failures = 0;
      this.handlers.onState("live");
    };
    source.onerror = () => this._onError(source);
    for (const type of EVENT_TYPES) source.addEventListener(type, (e) => this._onMessage(e));
  }

  _onMessage(message) {
    if (this.done) return;
    const data = JSON.parse(message.data);
    if (data.seq <= this.lastSeq) return;
    this.lastSeq = data.seq;
    this.lastId = message.lastEventId || this.lastId;
    this.handlers.onEvent(data);
    if ((data.type === "status" || data.type === "snapshot") && TERMINAL.has(data.status)) {
      this.close();
      this.handlers.onState("done");
    }
  }

  _onError(source) {
    if (this.done || source !== this.source) return;
    this.handlers.onState("reconnecting");
    if (source.readyState === EventSource.CLOSED) this._recover();
  }

  /** The browser gave up on this URL: ask for the job again (a fresh token), then resume after our cursor. */
  async _recover() {
    this.source?.close();
    this.source = null;
    try {
      const job = await this.handlers.refreshJob();
      if (this.done) return;
      if (TERMINAL.has(job.status) && this.lastSeq >= job.last_seq) {
        this.close(); // everything was already shown
        this.handlers.onState("done");
        return;
      }
      this._open(job.links.events);
    } catch {
      const wait = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
      this.failures += 1;
      this.timer = setTimeout(() => this._recover(), wait);
    }
  }
}
