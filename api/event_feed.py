"""The events of one job after a cursor: replay, then live, exact, ending after the terminal event.

    cursor C (None: from the first event)
      ├─ XRANGE after C, in pages, until a short page ───────────────────▶ replay
      ├─ hub.subscribe(job, last sent) ── H past last sent (the hub reads the stream already):
      │     XRANGE after last sent again, which covers up to H
      ├─ queue (everything after H), skipping ids ≤ last sent ───────────▶ live
      │     └─ lagged (the queue was full) → unsubscribe, subscribe again and XRANGE from last sent
      │        (whatever H is: the replay moves the client on, the hub's next read might not)
      ├─ nothing for idle_s ──────────────────────────────────────────────▶ an empty batch (keep-alive)
      └─ terminal status event ──────────────────────────────────────────▶ the iterator ends

The first replay runs before subscribing, so a stream the hub does not watch yet starts at its tail:
there H is the last id sent, and nothing is left between the replay and the live feed. C must not lie
past the stream's newest entry (the SSE route refuses such a cursor with 400).
Both the SSE route (``api/routes/events.py``) and the OpenAI-compatible stream
(``api/routes/openai_responses.py``) read
this iterator; each only encodes what it yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.jobs import parse_stream_id

from .backend import Backend
from .entries import Entry, entries

#: stream entries one XRANGE reads
PAGE = 500


class _Position:
    """The last entry handed out and whether the terminal one was among them."""

    def __init__(self, cursor: str | None) -> None:
        self.last = cursor or "0-0"
        self._key = parse_stream_id(self.last)
        self.done = False

    def take(self, batch: list[Entry]) -> list[Entry]:
        """The entries after the last one handed out, up to and including the terminal event."""
        if batch and batch[0].key > self._key and not any(e.terminal for e in batch):
            # the common case live: all new, none ends the job
            self.last, self._key = batch[-1].id, batch[-1].key
            return batch
        fresh: list[Entry] = []
        for entry in batch:
            if entry.key <= self._key:  # already handed out: the replay and the live feed overlap
                continue
            fresh.append(entry)
            self.last, self._key = entry.id, entry.key
            if entry.terminal:
                self.done = True
                break
        return fresh


def ended_within(cursor: str | None, rows: list[Entry]) -> list[Entry] | None:
    """The events after ``cursor`` up to the terminal one, when ``rows`` (the first page read after the
    cursor) reach it: then there is nothing live to wait for. None when they do not."""
    position = _Position(cursor)
    batch = position.take(rows)
    return batch if position.done else None


async def events_after(b: Backend, job_id: str, cursor: str | None, first: list[Entry] | None = None,
                       idle_s: float | None = None) -> AsyncIterator[list[Entry]]:
    """Batches of the job's events after ``cursor``, oldest first, each event exactly once; ends after
    the terminal status event (never, for a job that never ends: the caller stops reading). ``first``:
    the first page after ``cursor`` (up to PAGE entries) if the caller read it already. ``idle_s``:
    with nothing new for that long, an empty batch (the caller's cue for a keep-alive)."""
    position = _Position(cursor)

    async def replay(rows: list[Entry] | None = None) -> AsyncIterator[list[Entry]]:
        while not position.done:
            if rows is None:
                rows = entries(await b.store.read_events(job_id, position.last, count=PAGE))
            if batch := position.take(rows):
                yield batch
            if len(rows) < PAGE:
                return
            rows = None

    async for batch in replay(first):
        yield batch
    lagged = False
    while not position.done:
        sub = b.hub.subscribe(job_id, position.last, within=True)
        try:
            # what the hub read before this subscription; after a lag, the stream is read here whatever
            # the hub's cursor: its next read could overflow the queue again, and the client must move on
            if lagged or parse_stream_id(sub.start) > parse_stream_id(position.last):
                async for batch in replay():
                    yield batch
            while not position.done:
                live = await sub.next_batch(idle_s)
                if live is None:  # lagged: read the rest from the stream, then subscribe again
                    b.metrics.sse_lagged.inc()
                    lagged = True
                    break
                if batch := position.take(live):
                    yield batch
                elif not live:
                    yield live
        finally:
            b.hub.unsubscribe(sub)
