"""An attempt's lease: take (claim and start), the worker's beat that keeps it, and the writes fenced by
it.

Every write carries the attempt's lease token (its fencing token); the scripts refuse it once another
attempt holds the job (``shared/lua/lib.lua``), and ``LeaseLost`` tells the attempt to stop writing.
The writes ride through a Redis outage (``shared/ride_through.py``): only a refusal ends the attempt,
not Redis being away; each write is built so that sending it again changes nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from shared.job import Job
from shared.jobs import JobStore
from shared.ride_through import RideThrough
from shared.serialization import dumps, members, now_ms, rfc3339
from shared.worker_info import info_ttl_ms

from .errors import TransientError


class LeaseLost(Exception):
    """This attempt no longer holds the job (its lease expired and the job moved on): stop writing."""


class WritesLost(TransientError):
    """Redis no longer has writes it acknowledged to this attempt (a failover promoted a replica that
    lacked them, or a restart lost what its AOF had not synced): the attempt cannot go on with gaps,
    so it ends as ``transient`` and the next attempt writes the output whole again."""


@dataclass(frozen=True)
class Started:
    """An attempt that holds the job: its fencing token, and the job as the start left it."""

    job_id: str
    token: int
    attempt: int
    job: Job


@dataclass(frozen=True)
class CallUsage:
    """The usage of one model call, as ``record.lua`` counts it."""

    model: str
    #: the step it was made in (``<name>#<n>``), or ``-`` outside any step
    step: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    #: what it cost (nano-USD); None when the model has no price
    cost_nusd: int | None


@dataclass
class Record:
    """One fenced ``record.lua`` write: any of a step's stored result, one span, one call's usage, and
    the events that go with them."""

    step_field: str = ""
    step_value: str = ""
    span_id: str = ""
    span: str = ""
    usage: CallUsage | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Attempts:
    def __init__(self, store: JobStore, worker_id: str, ride: RideThrough | None = None) -> None:
        self.store = store
        self.worker_id = worker_id
        self.keys = store.keys
        #: how the attempts' writes and reads wait out a Redis outage
        self.ride = ride or RideThrough(store.settings.redis_outage_s)
        #: the now of the last take of each shard: take.lua tells a resend by it, so no two takes of one
        #: shard share it
        self._last_take_ms: dict[int, int] = {}

    async def take(self, job_types: list[str], n: int, lease_ms: int, shards: Iterable[int] | None = None,
                   places: str = "", queue_uses: list[str] | None = None) -> tuple[list[Started], int | None]:
        """Claims and starts up to ``n`` ready jobs, in one round trip, from the first of ``shards``
        (default: every shard) whose queues have any (``take.lua``): their attempts, running under new
        tokens, the longest-ready first, and when to take again (ms: now when more may be ready there,
        else when its soonest delayed job is ready; None: only a new job's wake token will tell). ([],
        the soonest delayed job's ms over the shards, or None) when none has a job ready. ``places``
        (``compute/places.py``): how many jobs of each concurrency-limited resource may start, and
        ``queue_uses`` the resources of each type's jobs (take.lua ARGV 8, 9..)."""
        soonest: int | None = None
        for shard in range(self.keys.shards) if shards is None else shards:
            keys = self.keys.shard(shard)
            now, last = now_ms(), self._last_take_ms.get(shard, 0)
            if now <= last:
                # a second take of the shard in one ms waits for the next (a clock stepped back is not
                # waited out): take.lua tells a resend by the now
                if last - now < 10:
                    await asyncio.sleep((last + 1 - now) / 1000)
                now = max(now_ms(), last + 1)
            self._last_take_ms[shard] = now
            reply = await self.store.scripts.run(
                "take",
                [keys.leases, keys.deadlines, keys.counts, keys.webhook_outbox, keys.workers,
                 *(keys.queue(t) for t in job_types)],
                [n, self.worker_id, now, rfc3339(now), lease_ms, self.store.retention_ms, keys.base,
                 *([places, *(queue_uses or [])] if places else [])],
            )
            ready = int(float(reply[0])) if reply[0] else None
            if len(reply) > 1:
                # this shard's next only: the other shards' new jobs come with wake tokens, but one of
                # theirs queued for later is seen by the next take that finds this shard empty
                return [Started(job_id, int(token), int(attempt), Job.from_flat(flat))
                        for job_id, token, attempt, flat in reply[1:]], ready
            if ready is not None:
                soonest = ready if soonest is None else min(soonest, ready)
        return [], soonest

    async def beat(self, lease_ms: int, info: dict[str, str] | None = None) -> list[str]:
        """Says this worker is alive for ``lease_ms`` more, in every shard (``beat.lua``), which keeps every
        lease it took; the notices left for it meanwhile ('cancel <job id>', 'lost <job id> <token>').
        ``info``: the worker's published facts, written by the beat of its home shard
        (``shared/worker_info.py``)."""
        until = now_ms() + lease_ms
        calls: list[tuple[list[str], list[Any]]] = [
            ([shard.workers, shard.notices(self.worker_id)], [self.worker_id, until]) for shard in self.keys.all_shards]
        if info is not None:
            home = self.keys.worker_home(self.worker_id)
            keys, args = calls[home.shard]
            keys.append(home.worker_info(self.worker_id))
            args += [info_ttl_ms(lease_ms), *(x for pair in info.items() for x in pair)]
        replies = await self.store.scripts.run_many("beat", calls)
        self.ride.answered()
        return [str(notice) for notices in replies for notice in notices]

    async def append(self, job_id: str, token: int, index: int, events: list[tuple[str, dict[str, Any]]]) -> int:
        """Writes events (type, members) as the attempt's events number index, index+1, …; returns how
        many the attempt has written. A resent batch writes only what is new."""
        args: list[Any] = [token, index]
        for event_type, body in events:
            args += [event_type, members(body)]
        return int(await self._fenced("append", self.store.append_keys(job_id), args))

    async def record(self, job_id: str, token: int, index: int, record: Record) -> int:
        """Writes the attempt's record number ``index`` (``record.lua``); returns how many events the
        attempt has written. A record sent again changes nothing more."""
        u = record.usage
        usage = ([u.model, u.step, u.input_tokens, u.cached_tokens, u.output_tokens,
                  "" if u.cost_nusd is None else u.cost_nusd] if u else ["", "", 0, 0, 0, ""])
        args: list[Any] = [token, index, record.step_field, record.step_value, record.span_id, record.span, *usage]
        for event_type, body in record.events:
            args += [event_type, members(body)]
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.of_job(job_id).stats, k.steps(job_id), k.trace(job_id),
                k.of_job(job_id).counts]
        return int(await self._fenced("record", keys, args))

    async def note_wait(self, job_id: str, token: int, waiting_for: str) -> None:
        """Sets (or, with '', clears) what the attempt waits for, ``waiting_for`` on the job (``note_wait.lua``)."""
        await self._fenced("note_wait", [self.keys.job(job_id), self.keys.of_job(job_id).stats], [token, waiting_for])

    async def save_checkpoint(self, job_id: str, token: int, value: Any, number: int) -> None:
        """Saves the attempt's checkpoint number ``number`` (1, 2, …): one sent again, or overtaken by a
        later save, changes nothing."""
        keys = [self.keys.job(job_id), self.keys.checkpoint(job_id), self.keys.of_job(job_id).stats]
        await self._fenced("checkpoint", keys, [token, dumps(value), number])

    async def _fenced(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Runs a fenced script, riding through an outage; ``LeaseLost`` when Redis refuses the token."""
        try:
            return await self.ride.call(lambda: self.store.scripts.run(script, keys, args), script)
        except ResponseError as exc:
            if str(exc).startswith("STALE"):
                raise LeaseLost(str(exc)) from None
            if str(exc).startswith("GAP"):
                raise WritesLost(f"Redis lost this attempt's last writes ({exc})") from None
            raise
