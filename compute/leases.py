"""An attempt's lease: claim, start, heartbeat, and the writes fenced by it.

Every write carries the attempt's lease token (its fencing token); the scripts refuse it once another
attempt holds the job (``shared/lua/lib.lua``), and ``LeaseLost`` tells the attempt to stop writing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from shared.job import Job
from shared.jobs import JobStore
from shared.serialization import dumps, members, now_ms, rfc3339


class LeaseLost(Exception):
    """This attempt no longer holds the job (its lease expired and the job moved on): stop writing."""


@dataclass(frozen=True)
class Started:
    """An attempt that holds the job: its fencing token, and the job as the start left it."""

    job_id: str
    token: int
    attempt: int
    job: Job


class Attempts:
    def __init__(self, store: JobStore, worker_id: str) -> None:
        self.store = store
        self.worker_id = worker_id
        self.keys = store.keys

    async def claim(self, job_types: list[str], lease_ms: int, shards: Iterable[int] | None = None,
                    ) -> tuple[str | None, str | None, int | None]:
        """Claims from the first of ``shards`` (default: every shard) whose queues have a job ready:
        (job id, its type, None); else (None, None, ms when the soonest delayed job is ready, or None)."""
        soonest: int | None = None
        for shard in range(self.keys.shards) if shards is None else shards:
            keys = self.keys.shard(shard)
            queues = {keys.queue(t): t for t in job_types}
            job_id, answer = await self.store.scripts.run("claim", [keys.leases, *queues], [now_ms(), lease_ms])
            if job_id:
                return job_id, queues[answer], None  # the script answers the queue the job came from
            if answer:
                ready = int(float(answer))
                soonest = ready if soonest is None else min(soonest, ready)
        return None, None, soonest

    async def start(self, job_id: str, job_type: str, lease_ms: int) -> Started | None:
        """queued → running under a new token; None when the job was canceled or expired in between, or
        another worker started it after this claim was requeued. A resent start answers the same attempt."""
        now = now_ms()
        reply = await self.store.scripts.run(
            "start", self.store.job_keys(job_id, job_type),
            [job_id, self.worker_id, now, rfc3339(now), lease_ms, self.store.retention_ms],
        )
        if reply[0] != "ok":
            return None
        return Started(job_id, int(reply[1]), int(reply[2]), Job.from_flat(reply[3]))

    async def heartbeat(self, leases: list[tuple[str, int]], lease_ms: int) -> list[str]:
        """Renews many leases in one round trip: 'ok', 'cancel' or 'lost' for each (job id, token)."""
        now = now_ms()
        calls = []
        for job_id, token in leases:
            shard = self.keys.of_job(job_id)
            calls.append(([self.keys.job(job_id), shard.leases, shard.stats], [job_id, token, now, lease_ms]))
        return [str(r) for r in await self.store.scripts.run_many("heartbeat", calls)]

    async def append(self, job_id: str, token: int, index: int, events: list[tuple[str, dict[str, Any]]]) -> int:
        """Writes events (type, members) as the attempt's events number index, index+1, …; returns how
        many the attempt has written. A resent batch writes only what is new."""
        args: list[Any] = [token, index]
        for event_type, body in events:
            args += [event_type, members(body)]
        try:
            return int(await self.store.scripts.run(
                "append", [self.keys.job(job_id), self.keys.events(job_id), self.keys.of_job(job_id).stats], args
            ))
        except ResponseError as exc:
            if str(exc).startswith("STALE"):
                raise LeaseLost(str(exc)) from None
            raise

    async def save_checkpoint(self, job_id: str, token: int, value: Any) -> None:
        try:
            await self.store.scripts.run(
                "checkpoint", [self.keys.job(job_id), self.keys.checkpoint(job_id), self.keys.of_job(job_id).stats],
                [token, dumps(value)],
            )
        except ResponseError as exc:
            if str(exc).startswith("STALE"):
                raise LeaseLost(str(exc)) from None
            raise
