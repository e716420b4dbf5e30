"""Liveness per worker process, not per job.

A worker beats once per ``heartbeat_s`` per shard (``beat.lua``): its entry in the shard's ``workers``
index then says it is alive until now + ``lease_s``, and that one entry keeps every job it runs there.
So heartbeat traffic does not grow with the jobs a worker runs, and a dead worker's jobs are all
found at once: the supervisor sees its entry pass, takes over each job whose ``lease_owner`` it is
(``expire_lease.lua`` with that worker named), and leaves it a ``lost`` notice for the case it was
only frozen. What a worker publishes about itself (host, types, running jobs) rides on the same beats
(``shared/worker_info.py``). A worker that takes jobs (``take.lua``) registers in the same step, so no job is ever
held by a worker the index does not know.

The leases index still lists every running job: a lease taken by a worker is scored
``HELD_BY_WORKER`` + its start + the lease, so it is never due by itself (only its worker's death
makes it due); a lease scored below that (``claim.lua``/``start.lua`` without a beating worker) is
renewed per job by ``heartbeat.lua`` and expires by its own score, as before.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from .job import Job
from .keys import Keys, ShardKeys
from .status import Status

#: leases from this score on are kept by their worker's beats (about 31,700 years of ms: above any
#: real time, and well within the integers a ZSET score holds exactly)
HELD_BY_WORKER = 10**15
#: how long a worker's notices wait for its next beat: a worker frozen longer finds its attempts'
#: writes refused instead (their tokens are old)
NOTICES_KEPT_MS = 3_600_000


def held_score(started_ms: int, lease_ms: int) -> int:
    """The leases-index score of a lease a worker's beats keep, taken at ``started_ms``."""
    return HELD_BY_WORKER + started_ms + lease_ms


class Workers:
    """The workers index of every shard (``ShardKeys.workers``), as the supervisor, the worker and the
    API read it. Beats and takes write it in their scripts."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def dead(self, now: int) -> dict[ShardKeys, list[str]]:
        """Per shard, the workers whose last beat (or take) no longer keeps them alive at ``now``."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zrangebyscore(shard.workers, "-inf", now)
        replies = await pipe.execute()
        return {shard: ids for shard, ids in zip(self.keys.all_shards, replies, strict=True) if ids}

    async def held_by(self, shard: ShardKeys, workers: list[str]) -> list[tuple[str, str]]:
        """(job id, worker) of each lease in ``shard`` that one of ``workers`` holds through its beats."""
        ids = cast(list[str], await self.redis.zrangebyscore(shard.leases, HELD_BY_WORKER, "+inf"))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "lease_owner")
        wanted = set(workers)
        return [(job_id, owner) for job_id, owner in zip(ids, await pipe.execute(), strict=True) if owner in wanted]

    async def bury(self, shard: ShardKeys, dead_at: int) -> None:
        """Drops the entries of workers dead at ``dead_at`` whose jobs were taken over (one that beat since
        is alive past it, and stays)."""
        await self.redis.zremrangebyscore(shard.workers, "-inf", dead_at)

    async def leave(self, worker: str) -> None:
        """A worker that ends holds nothing more: its entries go, so no supervisor looks for its jobs, and
        its published info (``shared/worker_info.py``) with them."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zrem(shard.workers, worker)
        pipe.delete(self.keys.worker_home(worker).worker_info(worker))
        await pipe.execute()

    async def alive_until(self, jobs: list[Job]) -> list[int | None]:
        """For each job, until when (ms) the worker holding it is alive by its beats, in one round trip;
        None when the job is not running, or its worker holds it by a per-job lease, or is gone."""
        held = [(job.id, job.lease_owner) for job in jobs if job.status == Status.RUNNING and job.lease_owner]
        if not held:
            return [None] * len(jobs)
        pipe = self.redis.pipeline(transaction=False)
        for job_id, owner in held:
            pipe.zscore(self.keys.of_job(job_id).workers, owner)
        scores = dict(zip((job_id for job_id, _ in held), await pipe.execute(), strict=True))
        return [None if (score := scores.get(job.id)) is None else int(score) for job in jobs]
