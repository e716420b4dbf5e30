"""Keeping a worker alive and hearing about cancels.

One beat per ``heartbeat_s`` says the worker process is alive (``shared/liveness.py``), which keeps
every lease it holds, however many jobs it runs; its reply carries the notices left for the worker:
cancels, and attempts the supervisor took over while the worker seemed dead (it was frozen). Cancels
also arrive over pub/sub, so a handler stops well under a second after the request; the notice is
the backstop when the pub/sub connection was down at the moment of the cancel. What the worker
publishes about itself rides on the beat when it changed (``compute/presence.py``).

A beat that fails (Redis out of reach) is tried again every ``BEAT_RETRY_S``, so the first beat after
an outage lands at most that long after Redis is back: supervisors give every lease a full lease from
then (``compute/supervisor/contact.py``), and the worker's attempts ride the outage through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from redis.asyncio import Redis

from shared.connection import pubsub_client
from shared.serialization import now_ms

from .leases import Attempts
from .presence import Presence

log = logging.getLogger("backlane.worker")
#: how soon a failed beat is tried again (the heartbeat when it is shorter)
BEAT_RETRY_S = 0.25

#: why the worker stops a running attempt: a cancel request, a lost lease, or its own drain
StopReason = Literal["cancel", "lost", "drain"]
#: the token of this worker's running attempt of a job, or None
Token = Callable[[str], int | None]
Stop = Callable[[str, StopReason], None]


async def beat_loop(attempts: Attempts, heartbeat_s: float, lease_ms: int, token: Token, stop: Stop,
                    presence: Presence | None = None) -> None:
    """Beats now and every ``heartbeat_s``, forever; ``stop`` is told of cancels and lost attempts, and
    ``presence``'s info goes with a beat when it changed."""
    failing = False
    while True:
        now = now_ms()
        info = presence.next(now) if presence is not None else None
        try:
            notices = await attempts.beat(lease_ms, info.fields() if info is not None else None)
            if info is not None and presence is not None:
                presence.written(info, now)
        except Exception as exc:
            # the lease outlives a few missed beats (lease_s > heartbeat_s), and supervisors that saw Redis
            # away give it a full lease once Redis is back: the next beat, soon, may get through
            if not failing:
                log.warning("heartbeat failed (%s); trying again every %g s", exc, min(heartbeat_s, BEAT_RETRY_S))
            failing = True
            await asyncio.sleep(min(heartbeat_s, BEAT_RETRY_S))
            continue
        if failing:
            log.warning("heartbeat answered again")
            failing = False
        for notice in notices:
            kind, job_id, *rest = notice.split(" ")
            if kind == "cancel":
                stop(job_id, "cancel")
            elif kind == "lost" and rest and token(job_id) == int(rest[0]):
                # only the attempt that was taken over: a newer one of the same job may run here now
                log.warning("job %s attempt was taken over while this worker seemed dead", job_id)
                stop(job_id, "lost")
        await asyncio.sleep(heartbeat_s)


async def cancel_listener(redis: Redis, channel: str, stop: Stop) -> None:
    """Stops the attempts whose job ids are published on ``channel`` (ids of other workers' jobs are
    ignored by ``stop``); reconnects when the connection drops."""
    client, owned = pubsub_client(redis)
    try:
        await _listen(client, channel, stop)
    finally:
        if owned:
            await client.aclose()


async def _listen(redis: Redis, channel: str, stop: Stop) -> None:
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                job_id = message.get("data")
                if isinstance(job_id, str):
                    stop(job_id, "cancel")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("cancel listener lost its connection; reconnecting", exc_info=True)
            await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
