"""What supervisors decide: the job of an expired lease, or of a worker that stopped beating, is
restarted, failed or canceled; a job past its deadline expires; finished jobs leave their tenant's
counts when their keys expire.

Any number of supervisors may run these at once: each decision is one script on the job's own keys
(``shared/lua/expire_lease.lua``, ``expire_deadline.lua``, ``retire.lua``), and a job that changed
since it was read is looked at again on the next pass.
"""

from __future__ import annotations

import logging
from typing import cast

from shared.job import Job
from shared.jobs import JobStore, Settled
from shared.logs import job_event
from shared.schemas import error_info
from shared.serialization import now_ms

from ..context import apply_key
from ..outcomes import apply_interrupted_error

TRIM_BATCH = 500
#: due leases or deadlines looked at per shard and pass
DUE_BATCH = 500
LEASE_LOST = "the worker stopped heartbeating and its lease expired"
MISSED_START = "the job did not start before its deadline"
REVIEW_WINDOW = "nobody decided the review before its window closed"
#: what a takeover did, for its log line (``job.worker_lost``)
TAKEN_OVER = {
    Settled.RESTARTED: "restarted as a new attempt", Settled.REQUEUED: "back in its queue",
    Settled.FAILED: "failed (no attempt left)", Settled.CANCELED: "canceled (a cancel was asked)",
    Settled.APPLY_INTERRUPTED: "failed during its apply step, for a person to check",
}
log = logging.getLogger("backlane.supervisor")


class Upkeep:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.keys = store.keys
        self.redis = store.redis

    async def _job(self, job_id: str) -> Job | None:
        """The job of an index entry; None (and the entry dropped) when it expired after its retention."""
        job = await self.store.job(job_id)
        if job is None:
            await self.store.forget(job_id)
        return job

    async def expire_lease(self, job_id: str, dead_worker: str | None = None) -> Settled:
        """Restarts the job of a lease that passed (or of ``dead_worker``, which held it and stopped
        beating), or fails or cancels it as its state says."""
        if (job := await self._job(job_id)) is None:
            return Settled.GONE
        settled = await self.store.expire_lease(
            job,
            restarted=error_info("worker_lost", LEASE_LOST, retryable=True, attempt=job.attempt),
            failed=error_info("worker_lost", LEASE_LOST, retryable=False, attempt=job.attempt),
            apply_interrupted=apply_interrupted_error("worker_lost", "the worker was lost during the apply step",
                                                      apply_key(job), job.attempt),
            dead_worker=dead_worker,
        )
        if settled in TAKEN_OVER:
            job_event(log, "job.worker_lost", f"job's worker lost: {TAKEN_OVER[settled]}", level=logging.WARNING,
                      job_id=job.id, job_type=job.type, tenant=job.tenant, attempt=job.attempt,
                      worker=dead_worker or job.lease_owner, outcome=settled.value,
                      cause="the worker stopped beating" if dead_worker else "the lease expired")
        return settled

    async def take_over_dead_workers(self, done: dict[str, int], graced: frozenset[int] = frozenset()) -> None:
        """Takes over every job held by a worker whose beats stopped (``shared/liveness.py``), then forgets
        the worker; adds the outcomes to ``done``. Shards in ``graced`` are left alone (``contact.py``)."""
        now = now_ms()
        for shard, workers in (await self.store.workers.dead(now)).items():
            if shard.shard in graced:
                continue
            for job_id, worker in await self.store.workers.held_by(shard, workers):
                outcome = await self.expire_lease(job_id, worker)
                done[outcome] = done.get(outcome, 0) + 1
            await self.store.workers.bury(shard, now)

    async def expire_deadline(self, job_id: str) -> Settled:
        """Expires a job still queued past its start deadline, or still in review past its window."""
        if (job := await self._job(job_id)) is None:
            return Settled.GONE
        return await self.store.expire_deadline(
            job,
            missed_start=error_info("deadline", MISSED_START, retryable=True, attempt=job.attempt),
            review_window=error_info("deadline", REVIEW_WINDOW, retryable=True, attempt=job.attempt),
        )


    async def trim_tenant_indexes(self) -> int:
        """Drops list-index entries of jobs whose keys have expired, so the per-tenant indexes stay
        bounded even when nobody lists them. Only jobs created before the retention can have expired;
        of those, a job still running or finished lately keeps its entry. Returns how many went."""
        cutoff = now_ms() - self.store.retention_ms
        removed = 0
        keys = [key for shard in self.keys.all_shards
                async for key in self.redis.scan_iter(match=shard.tenant_jobs("*"), count=500)]
        for key in keys:
            start = 0
            while ids := cast(list[str], await self.redis.zrangebyscore(key, "-inf", cutoff, start=start,
                                                                         num=TRIM_BATCH)):
                pipe = self.redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.exists(self.keys.job(job_id))
                gone = [job_id for job_id, alive in zip(ids, await pipe.execute(), strict=True) if not alive]
                removed += await self.store.unlist(key, gone)
                start += len(ids) - len(gone)
        return removed

    async def retire(self, limit: int = 1000, *, now: int | None = None) -> int:
        """Takes finished jobs whose keys have expired (by ``now``, ms) out of their tenant's counts;
        returns how many."""
        return await self.store.retire(now_ms() if now is None else now, limit)

    async def tick(self, graced: frozenset[int] = frozenset()) -> dict[str, int]:
        """One pass over expired leases and passed deadlines; counts what happened. No lease of a shard in
        ``graced`` is taken over (Redis was away: its workers could not beat; ``contact.py``)."""
        done: dict[str, int] = {}
        await self.take_over_dead_workers(done, graced)
        for job_id in await self.store.due(lambda s: s.leases, DUE_BATCH):
            if graced and self.keys.of_job(job_id).shard in graced:
                continue
            outcome = await self.expire_lease(job_id)
            done[outcome] = done.get(outcome, 0) + 1
        for job_id in await self.store.due(lambda s: s.deadlines, DUE_BATCH):
            outcome = await self.expire_deadline(job_id)
            done[f"deadline_{outcome}"] = done.get(f"deadline_{outcome}", 0) + 1
        if retired := await self.retire():
            done["retired"] = retired
        return done
