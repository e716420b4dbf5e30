"""``GET /v1/jobs/{id}/events``: the job's events as SSE, after the client's cursor.

    cursor C (Last-Event-ID, else ?after=, else the start)
      │  malformed (a part above 2^64 - 1 too) ──────────────────────────▶ 400
      │  ?compact= neither true nor false, or given twice ────────────────▶ 400
      │  C past the stream's newest entry (a made-up cursor) ─────────────▶ 400
      │  job terminal and C ≥ terminal_id ───────────────────────────────▶ 204 (EventSource stops)
      │  far behind C (api/snapshot.py; not with ?compact=false) ────────▶ a snapshot, then as below
      │                                                                     after its cursor
      │  job terminal, the first page after C reaches the terminal event ─▶ those events, one chunk,
      │                                                                     then the end
      │  the tenant holds BACKLANE_SSE_MAX_PER_TENANT streams here already ▶ 429 (api/stream_slots.py)
      └─ event_feed.events_after(job, C): replay, then live ──────────────▶ one chunk per batch;
                                                                          the response ends after
                                                                          the terminal event

Every event goes out as ``id: <stream id>``, ``event: <type>``, ``data: <stored JSON as is>``; a
snapshot as ``id: <the stream id it covers>``, ``event: snapshot`` (``api/snapshot.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.jobs import CURSOR, parse_stream_id
from shared.status import TERMINAL

from ..auth import events_tenant
from ..backend import Backend, backend
from ..entries import Entry, encode, entries
from ..errors import BadRequest, NotFound
from ..event_feed import PAGE, ended_within, events_after
from ..records import EVENTS_PATH, job_id_param
from ..snapshot import compact_param, far_behind, then
from ..snapshot import encode as encode_snapshot
from ..sse import event_stream_response, whole_stream_response
from ._events_doc import EVENTS, documented

#: each part of a Redis stream id is an unsigned 64-bit number
MAX_STREAM_PART = 2**64 - 1


def _cursor(request: Request) -> str | None:
    """Last-Event-ID wins over ?after= (EventSource sends the header on its reconnects to the same URL)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if raw is None:
        return None
    cursor = raw.strip()
    if not CURSOR.match(cursor) or max(parse_stream_id(cursor)) > MAX_STREAM_PART:
        raise BadRequest("malformed cursor: expected the id of an event, like 1700000000000-0")
    return cursor


async def _stream(b: Backend, job_id: str, cursor: str | None,
                  first: list[Entry] | None) -> AsyncIterator[bytes]:
    b.metrics.sse_clients.inc()
    try:
        async for batch in events_after(b, job_id, cursor, first, idle_s=b.settings.keepalive_s):
            yield encode(batch)
    finally:
        b.metrics.sse_clients.dec()


@documented(get=EVENTS)
async def job_events(request: Request) -> Response:
    job_id = job_id_param(request)
    cursor = _cursor(request)
    compact = compact_param(request)
    b = backend(request)
    owner = events_tenant(request, b.settings, await b.secret(), job_id)
    job = await b.store.get(owner, job_id)
    if job is None:
        raise NotFound("no such job")
    if cursor and parse_stream_id(cursor) > parse_stream_id(await b.store.stream_tail(job_id) or "0-0"):
        # well-formed but made up: replaying after it would skip every event still to come
        raise BadRequest("cursor is past the newest event of this job: pass the id of an event you received")
    first = None
    if job.status in TERMINAL:
        if cursor and job.terminal_id and parse_stream_id(cursor) >= parse_stream_id(job.terminal_id):
            return Response(status_code=204)
    if compact and (snapshot := await far_behind(b, job, cursor)) is not None:
        if snapshot.status in TERMINAL:  # it covers the terminal event: nothing follows
            return whole_stream_response(encode_snapshot(snapshot))
        chunks = then(encode_snapshot(snapshot), _stream(b, job_id, snapshot.cursor, None))
        return b.streams.hold(owner, event_stream_response(chunks))
    if job.status in TERMINAL:
        first = entries(await b.store.read_events(job_id, cursor, count=PAGE))
        if (ended := ended_within(cursor, first)) is not None:  # every event still to send is here
            return whole_stream_response(encode(ended))
    return b.streams.hold(owner, event_stream_response(_stream(b, job_id, cursor, first)))


routes = [Route(EVENTS_PATH, job_events, methods=["GET"], name="job_events")]
