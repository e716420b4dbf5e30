"""The live workers as this API process sees them, and the job types that none of them serves.

``GET /v1/workers`` reads Redis each time (``shared/worker_info.py``: two pipelined round trips). A
submit and ``/readyz`` only ask which types are served: that answer is cached for ``refresh_s``, so a
submit pays no Redis read for it most of the time, and every full read refreshes it. A type flagged
unserved may have gained a worker within the last ``refresh_s``; the flag is a warning, never a refusal
(the job waits ``queued`` for a worker, as the contract says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from shared.jobs import JobStore
from shared.serialization import now_ms, rfc3339
from shared.worker_info import LiveWorker, live_workers

REFRESH_S = 1.0


class LiveWorkers:
    def __init__(self, store: JobStore, refresh_s: float = REFRESH_S) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._served: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def read(self) -> list[LiveWorker]:
        """Every live worker, read now."""
        started = time.monotonic()
        workers = await live_workers(self.store.redis, self.store.keys, now_ms())
        if started > self._read_at:
            self._served = frozenset(t for w in workers for t in w.job_types)
            self._read_at = started
        return workers

    async def served(self) -> frozenset[str]:
        """The types some live worker serves, as of at most ``refresh_s`` ago."""
        if time.monotonic() - self._read_at >= self.refresh_s:
            started = time.monotonic()
            async with self._lock:  # concurrent submits share one read
                if self._read_at < started:
                    await self.read()
        return self._served

    async def unserved(self, types: Iterable[str]) -> list[str]:
        """Those of ``types`` no live worker serves, sorted."""
        served = await self.served()
        return sorted(set(types) - served)


def unserved_warning(job_type: str) -> str:
    """The warning of a submit whose type no live worker serves."""
    return f"no live worker serves job type {job_type!r}: the job waits queued until one that does starts"


def unserved_types_warning(types: list[str]) -> str:
    """The warning of ``/readyz`` when known types have no live worker."""
    return "no live worker serves job types: " + ", ".join(types)


def worker_record(worker: LiveWorker, tenant: str, default_lease_ms: int) -> dict[str, Any]:
    """A worker as ``GET /v1/workers`` answers it. Its running jobs are counted whoever owns them, but only
    the asking tenant's are named: other tenants' job ids are theirs alone."""
    info = worker.info
    running = info.running if info else ()
    return {
        "id": worker.id,
        "host": info.host if info else None,
        "pid": info.pid if info else None,
        "version": info.version if info else None,
        "job_types": list(worker.job_types),
        "concurrency": info.concurrency if info else None,
        "running": {
            "count": len(running),
            "jobs": [{"id": job.id, "type": job.type} for job in running if job.tenant == tenant],
        },
        "draining": info.draining if info else False,
        "started_at": rfc3339(info.started_at) if info else None,
        "last_seen_at": rfc3339(worker.last_seen(default_lease_ms)),
        "alive_until": rfc3339(worker.alive_until),
    }
