"""The supervisor: restarts work whose lease expired, expires jobs past their deadlines, and
delivers webhooks. Any number may run at once: every decision is one atomic script per job. After a
Redis outage no lease is taken over before its worker had a lease's time to beat again (``contact.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from redis.asyncio import Redis

from shared.connection import check_durability, connect
from shared.jobs import JobStore
from shared.serialization import now_ms
from shared.settings import Settings
from shared.tasks import cancel_until_done

from .contact import Contact
from .upkeep import Upkeep
from .webhook_delivery import WebhookDeliverer

log = logging.getLogger("backlane.supervisor")
TRIM_EVERY_S = 300.0


class Supervisor:
    def __init__(self, settings: Settings, redis: Redis, *, webhooks: bool = True) -> None:
        self.settings = settings
        self.upkeep = Upkeep(JobStore(redis, settings))
        self.contact = Contact(self.upkeep.store, settings)
        #: shard → ms of grace it had left at the last pass (``contact.py``)
        self.graced: dict[int, int] = {}
        self.deliverer = WebhookDeliverer(settings, redis) if webhooks else None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        if self.deliverer:
            self.deliverer.stop()

    async def tick(self) -> dict[str, int]:
        """One pass over expired leases and passed deadlines; says what it did."""
        self.graced = await self.contact.touch() if self.contact.running else {}
        done = await self.upkeep.tick(graced=frozenset(self.graced))
        for outcome, n in done.items():
            if outcome not in ("alive", "deadline_not_due"):
                log.info("supervisor: %s × %d", outcome, n)
        return done

    async def run(self) -> None:
        touch = asyncio.create_task(self.contact.run(), name="contact")
        tasks = [asyncio.create_task(self._loop(), name="upkeep")]
        if self.deliverer:
            tasks.append(asyncio.create_task(self.deliverer.run(), name="webhooks"))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_until_done([touch, *tasks])

    async def _loop(self) -> None:
        next_trim = 0.0
        while not self._stop.is_set():
            try:
                await self.tick()
                if time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + TRIM_EVERY_S
                    if removed := await self.upkeep.trim_tenant_indexes():
                        log.info("supervisor: dropped %d expired entries from tenant indexes", removed)
                # a worker's entry passing is due too: its jobs are taken over the moment its beats lapse
                soonest = await self.upkeep.store.next_due_ms(lambda s: s.leases, lambda s: s.deadlines,
                                                              lambda s: s.workers)
                wait = self.settings.supervisor_interval_s
                if self.graced:  # look again as soon as a grace ends
                    wait = min(wait, min(self.graced.values()) / 1000)
                if soonest is not None:
                    wait = min(wait, max(0.0, (soonest - now_ms()) / 1000))
            except Exception:
                log.exception("supervisor pass failed; trying again")
                wait = 1.0
            # asyncio.timeout, not wait_for, which on Python 3.11 may swallow a cancel as the time runs out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wait)):
                    await self._stop.wait()


async def run_supervisor(settings: Settings) -> None:
    """``backlane supervisor``: runs until SIGTERM/SIGINT."""
    assert settings.redis_url
    redis = connect(settings.redis_url, settings.redis_max_connections, name="backlane-supervisor")
    await check_durability(redis)  # says plainly when Redis could lose jobs
    supervisor = Supervisor(settings, redis)
    await supervisor.upkeep.store.agree_on_shards()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    log.info("supervisor running (lease %.1f s, interval %.1f s)", settings.lease_s, settings.supervisor_interval_s)
    try:
        await supervisor.run()
    finally:
        await redis.aclose()
