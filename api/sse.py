"""``GET /v1/jobs/{id}/events``: replay after the cursor, then live, then close after the terminal event.

    cursor C (Last-Event-ID, else ?after=, else the start)
      │  job terminal and C ≥ terminal_id ─────────────────────────────▶ 204 (EventSource stops)
      │  C past the stream's newest entry (a made-up cursor) ───────────────▶ 400
      ├─ XRANGE after C, in pages, until a short page ───────────────────▶ replay
      ├─ hub.subscribe(job, last sent) ── then XRANGE after last sent again: covers up to the hub's H
      ├─ queue (everything after H), skipping ids ≤ last sent ───────────▶ live
      │     └─ lagged (queue was full) → unsubscribe, back to XRANGE from last sent
      └─ terminal status event sent ──────────────────────────────────────▶ end of response

Every event goes out as ``id: <stream id>``, ``event: <type>``, ``data: <stored JSON as is>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.jobs import CURSOR, parse_stream_id
from shared.serialization import loads
from shared.status import TERMINAL

from .auth import events_tenant
from .backend import Backend, backend
from .errors import BadRequest, NotFound
from .hub import Entry
from .records import job_id_param

PAGE = 500
HEADERS = {
    # exactly this: Starlette would otherwise append "; charset=utf-8"
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_TERMINAL = frozenset(s.value for s in TERMINAL)


def _cursor(request: Request) -> str | None:
    """Last-Event-ID wins over ?after= (EventSource sends the header on its reconnects to the same URL)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if raw is not None and not CURSOR.match(raw.strip()):
        raise BadRequest("malformed cursor: expected the id of an event, like 1700000000000-0")
    return raw.strip() if raw is not None else None


async def _tail(b: Backend, job_id: str) -> tuple[int, int]:
    """The id of the stream's newest entry (0-0 when there is none)."""
    rows = cast(list[tuple[str, Any]], await b.redis.xrevrange(b.keys.events(job_id), count=1))
    return parse_stream_id(rows[0][0]) if rows else (0, 0)


def _is_terminal(event_type: str, data: str) -> bool:
    return event_type == "status" and loads(data).get("status") in _TERMINAL


class _Sender:
    """Encodes entries and remembers the last id sent and whether the terminal event went out."""

    def __init__(self, cursor: str | None) -> None:
        self.last = cursor or "0-0"
        self.last_key = parse_stream_id(self.last)
        self.done = False

    def encode(self, entries: list[Entry]) -> bytes:
        parts: list[str] = []
        for entry_id, event_type, data in entries:
            key = parse_stream_id(entry_id)
            if key <= self.last_key:  # already sent: the replay and the live feed overlap
                continue
            parts.append(f"id: {entry_id}\nevent: {event_type}\ndata: {data}\n\n")
            self.last, self.last_key = entry_id, key
            if _is_terminal(event_type, data):
                self.done = True
                break
        return "".join(parts).encode()


async def _stream(b: Backend, job_id: str, cursor: str | None) -> AsyncIterator[bytes]:
    sender = _Sender(cursor)

    async def catch_up() -> AsyncIterator[bytes]:
        while not sender.done:
            rows = await b.store.read_events(job_id, sender.last, count=PAGE)
            chunk = sender.encode(rows)
            if chunk:
                yield chunk
            if len(rows) < PAGE:
                return

    b.metrics.sse_clients.inc()
    try:
        # first replay alone, so a stream the hub does not watch yet starts at its tail
        async for chunk in catch_up():
            yield chunk
        while not sender.done:
            sub = b.hub.subscribe(job_id, sender.last)
            try:
                async for chunk in catch_up():
                    yield chunk
                while not sender.done:
                    batch = await sub.next_batch()
                    if batch is None:
                        b.metrics.sse_lagged.inc()
                        break
                    chunk = sender.encode(batch)
                    if chunk:
                        yield chunk
            finally:
                b.hub.unsubscribe(sub)
    finally:
        b.metrics.sse_clients.dec()


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep="\n")


async def job_events(request: Request) -> Response:
    job_id = job_id_param(request)
    cursor = _cursor(request)
    b = backend(request)
    owner = events_tenant(request, b.settings, await b.secret(), job_id)
    raw = await b.store.get(owner, job_id)
    if raw is None:
        raise NotFound("no such job")
    terminal_id = raw.get("terminal_id")
    if raw["status"] in _TERMINAL and cursor and terminal_id and parse_stream_id(cursor) >= parse_stream_id(
        terminal_id
    ):
        return Response(status_code=204)
    if cursor and parse_stream_id(cursor) > await _tail(b, job_id):
        # well-formed but made up: replaying after it would skip every event still to come
        raise BadRequest("cursor is past the newest event of this job: pass the id of an event you received")
    return EventSourceResponse(
        _stream(b, job_id, cursor),
        headers=HEADERS, ping=b.settings.keepalive_s, sep="\n", ping_message_factory=_ping,
    )


routes = [Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"], name="job_events")]
