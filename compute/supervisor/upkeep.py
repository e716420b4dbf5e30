"""What supervisors do: find expired leases and deadlines and settle each job atomically.

Any number of supervisors may run these at once: each decision is one script on the job's own keys.
"""

from __future__ import annotations

from typing import cast

from shared.jobs import JobStore
from shared.serialization import now_ms, rfc3339

TRIM_BATCH = 500


class Upkeep:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.keys = store.keys
        self.redis = store.redis

    async def _settle(self, script: str, job_id: str) -> str:
        job_type = cast(str | None, await self.redis.hget(self.keys.job(job_id), "type"))
        if job_type is None:  # expired after its retention; drop the index entries
            await self.redis.zrem(self.keys.leases, job_id)
            await self.redis.zrem(self.keys.deadlines, job_id)
            return "gone"
        now = now_ms()
        result: str = await self.store.scripts.run(
            script, self.store.job_keys(job_id, job_type), [job_id, now, rfc3339(now), self.store.retention_ms]
        )
        return result

    async def expire_lease(self, job_id: str) -> str:
        """'restarted', 'failed', 'canceled', 'requeued', 'alive', 'not_running' or 'gone'."""
        return await self._settle("expire_lease", job_id)

    async def expire_deadline(self, job_id: str) -> str:
        """'expired', 'not_due', 'not_applicable' or 'gone'."""
        return await self._settle("expire_deadline", job_id)

    async def due(self, index: str, limit: int = 500) -> list[str]:
        return cast(list[str], await self.redis.zrangebyscore(index, "-inf", now_ms(), start=0, num=limit))

    async def next_due_ms(self, index: str) -> int | None:
        first = await self.redis.zrange(index, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def trim_tenant_indexes(self) -> int:
        """Drops list-index entries of jobs whose keys have expired, so the per-tenant indexes stay
        bounded even when nobody lists them. Only jobs created before the retention can have expired;
        of those, a job still running or finished lately keeps its entry. Returns how many went."""
        cutoff = now_ms() - self.store.retention_ms
        removed = 0
        async for key in self.redis.scan_iter(match=self.keys.tenant_jobs("*"), count=500):
            start = 0
            while ids := cast(list[str], await self.redis.zrangebyscore(key, "-inf", cutoff, start=start,
                                                                         num=TRIM_BATCH)):
                pipe = self.redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.exists(self.keys.job(job_id))
                gone = [job_id for job_id, alive in zip(ids, await pipe.execute(), strict=True) if not alive]
                if gone:
                    removed += int(await self.redis.zrem(key, *gone))
                start += len(ids) - len(gone)
        return removed

    async def retire(self, limit: int = 1000, *, now: int | None = None) -> int:
        """Takes finished jobs whose keys have expired (by ``now``, ms) out of their tenant's counts;
        returns how many."""
        keys = [self.keys.retiring, self.keys.counts]
        return int(await self.store.scripts.run("retire", keys, [now_ms() if now is None else now, limit]))

    async def tick(self) -> dict[str, int]:
        """One pass over expired leases and passed deadlines; counts what happened."""
        done: dict[str, int] = {}
        for job_id in await self.due(self.keys.leases):
            outcome = await self.expire_lease(job_id)
            done[outcome] = done.get(outcome, 0) + 1
        for job_id in await self.due(self.keys.deadlines):
            outcome = await self.expire_deadline(job_id)
            done[f"deadline_{outcome}"] = done.get(f"deadline_{outcome}", 0) + 1
        if retired := await self.retire():
            done["retired"] = retired
        return done
