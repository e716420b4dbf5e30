"""Compacted resume: a client far behind gets one ``snapshot`` event, then the events after it.

    GET /v1/jobs/{id}/events, cursor C, ?compact= (true unless false)
      │  compact=false, or the job has no more than a page of events ────────▶ every event after C
      │  JobStore.snapshot(C): one script reads the job hash, the text's length and the newest
      │     ids; GETRANGE reads the text up to that length
      │     not far behind (a page or less after C, or C in the newest attempt with more
      │     of its output held than the skipped events would cost) ──────────▶ every event after C
      └─ far behind ─▶ id: S  event: snapshot  data: {…, "cursor": S, "text": …}
                       then event_feed.events_after(S): every event after S, live, exact

The snapshot stands for every event up to S: the newest attempt's output so far and the job's status
and progress as they stand at S (``shared/lua/snapshot.lua`` reads them in one step, and the text
read after it is the text of that instant: they describe one instant, and nothing scans the stream).
Concatenating its text with the output of the events after it gives what a full replay gives. Its
``id`` is S, so Last-Event-ID or ``?after=`` resumes right after it. A snapshot of a finished job
covers the terminal event: the response ends after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from shared.job import Job
from shared.jobs import Snapshot
from shared.serialization import dumps

from .backend import Backend
from .errors import BadRequest
from .event_feed import PAGE

#: what an event costs a client on the wire besides its text: `id: 1733000000000-0`, `event: output`,
#: `data: {"type":"output","seq":12345,"attempt":1,"text":""}` and the line ends
EVENT_BYTES = 90
_COMPACT = {"true": True, "false": False}


def compact_param(request: Request) -> bool:
    """``?compact=``: true (the default) lets a client far behind start from a snapshot; false asks for
    every event."""
    given = request.query_params.getlist("compact")
    if not given:
        return True
    if len(given) > 1:
        raise BadRequest("compact is given more than once: pass it once, true or false")
    if given[0] not in _COMPACT:
        raise BadRequest(f"compact must be true or false, not {given[0]!r}")
    return _COMPACT[given[0]]


async def far_behind(b: Backend, job: Job, cursor: str | None) -> Snapshot | None:
    """The snapshot to send a client whose cursor is ``cursor`` first, or None when it is not far
    behind. A job whose whole stream fits in one page needs no look."""
    if job.last_seq <= PAGE:
        return None
    snapshot = await b.store.snapshot(job.id, cursor, PAGE, EVENT_BYTES)
    if snapshot is not None:
        b.metrics.sse_snapshots.inc()
    return snapshot


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as one SSE event. The stored events' JSON goes in as it is, not parsed again."""
    data = (f'{{"type":"snapshot","seq":{snapshot.seq},"attempt":{snapshot.attempt},'
            f'"status":{dumps(snapshot.status)},"cursor":"{snapshot.cursor}",'
            f'"status_event":{snapshot.status_event or "null"}')
    if snapshot.progress is not None:
        data += f',"progress":{snapshot.progress}'
    if snapshot.draft is not None:
        data += f',"draft":{dumps(snapshot.draft)}'
    data += f',"text":{dumps(snapshot.text)}}}'
    return f"id: {snapshot.cursor}\nevent: snapshot\ndata: {data}\n\n".encode()


async def then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then everything ``rest`` yields. Closing this closes ``rest`` (a generator): its
    subscription ends now, not whenever the generator is collected."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        if (close := getattr(rest, "aclose", None)) is not None:
            await close()
