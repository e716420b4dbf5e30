"""The job types the API accepts, cached in the process instead of read from Redis on every request.

Workers register their types in Redis (``JobStore.register_types``). The cache reads them again at
most every ``refresh_s``, and at once when a request names a type it has not seen: a worker that has
just registered a new type is never refused for it. A changed policy of a known type (a new input
schema) takes effect within ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import time

from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy

REFRESH_S = 5.0


class JobTypes:
    def __init__(self, store: JobStore, refresh_s: float = REFRESH_S) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._types: dict[str, JobTypePolicy] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def all(self) -> dict[str, JobTypePolicy]:
        """Built-in and registered types by name."""
        if time.monotonic() - self._read_at >= self.refresh_s:
            await self._refresh()
        return self._types

    async def get(self, name: str) -> JobTypePolicy | None:
        """The policy of ``name``; an unknown name reads Redis again before it is called unknown."""
        types = await self.all()
        if name not in types:
            types = await self._refresh()
        return types.get(name)

    async def _refresh(self) -> dict[str, JobTypePolicy]:
        started = time.monotonic()
        async with self._lock:  # concurrent misses share one read
            if self._read_at < started:
                self._types = await self.store.job_types()
                self._read_at = time.monotonic()
        return self._types
