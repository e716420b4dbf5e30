"""Keeping a worker's leases alive and hearing about cancels.

One heartbeat pipeline renews every running lease each ``heartbeat_s``; its replies say which
attempts were asked to cancel or lost their lease. Cancels also arrive over pub/sub, so a
handler stops well under a second after the request; the heartbeat reply is the backstop when
the pub/sub connection was down at the moment of the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from redis.asyncio import Redis

from shared.connection import pubsub_client

from .leases import Attempts

log = logging.getLogger("backlane.worker")

#: why the worker stops a running attempt: a cancel request, a lost lease, or its own drain
StopReason = Literal["cancel", "lost", "drain"]
Leases = Callable[[], list[tuple[str, int]]]
Stop = Callable[[str, StopReason], None]


async def heartbeat_loop(attempts: Attempts, heartbeat_s: float, lease_ms: int, leases: Leases, stop: Stop) -> None:
    """Renews the leases ``leases()`` names, forever; ``stop`` is told of cancels and lost leases."""
    while True:
        await asyncio.sleep(heartbeat_s)
        held = leases()
        if not held:
            continue
        try:
            replies = await attempts.heartbeat(held, lease_ms)
        except Exception:
            # the lease outlives a few missed beats (lease_s > heartbeat_s); the next one may get through
            log.exception("heartbeat failed; the leases run on until the next one")
            continue
        for (job_id, _), reply in zip(held, replies, strict=True):
            if reply == "cancel":
                stop(job_id, "cancel")
            elif reply == "lost":
                stop(job_id, "lost")


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
