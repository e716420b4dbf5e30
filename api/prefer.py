"""``Prefer: wait=N`` on ``POST /v1/jobs`` (RFC 7240): answer with the finished job when it ends within
N seconds.

    Prefer: wait=N ──▶ N an integer from 1 to BACKLANE_MAX_WAIT_S? ── no ──▶ 400 saying why
      └─ create (or find, for an Idempotency-Key replay) the job
           └─ follow its stream from its newest event (api/event_feed.py: the hub's blocking read,
              no polling) until the terminal event or N s
                ├─ ended ──────▶ 200, the finished record
                └─ still going ▶ 202, the record as it is
         both with ``Preference-Applied: wait=N``

Other preferences in the header are ignored, as RFC 7240 asks.
"""

from __future__ import annotations

import asyncio
import contextlib

from shared.job import Job
from shared.status import TERMINAL

from .backend import Backend
from .errors import BadRequest
from .event_feed import events_after


def wait_preference(header: str | None, max_s: int) -> int | None:
    """The N of a ``wait=N`` preference, or None without one; 400 when N is not 1 to ``max_s``."""
    if header is None:
        return None
    for preference in header.split(","):
        name, sep, value = preference.partition(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        raw = value.strip().strip('"')
        if not sep or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= max_s:
            raise BadRequest(f"Prefer: wait must be a whole number of seconds from 1 to {max_s}, got {value.strip()!r}")
        return int(raw)
    return None


async def _until_ended(b: Backend, job_id: str) -> Job | None:
    # the tail first, then the status: a job not ended after the tail was read ends with an event after it
    tail = await b.store.stream_tail(job_id)
    job = await b.store.job(job_id)
    if job is None or job.status in TERMINAL:
        return job
    async for _ in events_after(b, job_id, tail):
        pass
    return await b.store.job(job_id)


async def wait_for_end(b: Backend, job: Job, seconds: int) -> Job:
    """The job once it has ended, or as it is after ``seconds``."""
    if job.status in TERMINAL:
        return job
    with contextlib.suppress(TimeoutError):
        ended = await asyncio.wait_for(_until_ended(b, job.id), seconds)
        if ended is not None:
            return ended
    return await b.store.job(job.id) or job
