"""What a worker process publishes about itself, and the live workers as the API reads them.

Liveness stays where it was: a worker is alive while its entry in a shard's ``workers`` index is in
the future (``shared/liveness.py``). Next to it each worker keeps one hash of facts about itself
(``ShardKeys.worker_info``, in the shard ``Keys.worker_home`` picks): host, pid, version, the types it
serves, its concurrency, the jobs it runs. The worker writes it as part of a beat it sends anyway
(``beat.lua``, KEYS 3), and only when something changed or the hash needs its expiry pushed back
(every ``INFO_REFRESH_MS``): an idle worker adds one write every 15 s, a busy one at most one per beat.

    worker ── beat (every heartbeat_s) ──> bl:{S}:workers        worker id → alive until (ms)
          └─ the same beat, when changed ─> bl:{S'}:worker:ID:info   the facts; expires after INFO_TTL
    reader: ids alive in any shard's workers index → their info hashes (one pipeline each)

So a worker is listed exactly while the supervisor counts it alive: it drops out ``lease_s`` after its
last beat (a ``kill -9``), or at once when it drains (``Workers.leave`` deletes both). Its info hash
outlives it by at most ``info_ttl_ms``; a worker whose hash is missing (it was frozen longer than that)
is still listed, with what its id and index entry say, until its next write.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from functools import cache
from typing import NamedTuple, cast

from redis.asyncio import Redis

from .keys import Keys
from .serialization import dumps, loads

#: an unchanged worker rewrites its info this often, which pushes its expiry back
INFO_REFRESH_MS = 15_000


def info_ttl_ms(lease_ms: int) -> int:
    """How long a worker's info hash lives after a write: three missed refreshes, and a lease, more."""
    return 4 * INFO_REFRESH_MS + lease_ms


@cache
def package_version() -> str:
    """The installed Backlane's version (pyproject.toml), or "unknown" when run from a tree not installed."""
    try:
        return importlib.metadata.version("backlane")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RunningJob(NamedTuple):
    """A job a worker runs, as its info lists it: the tenant lets the API show each tenant only its own."""

    id: str
    tenant: str
    type: str


@dataclass(frozen=True)
class WorkerInfo:
    """The hash ``bl:{S}:worker:ID:info``, every field a string in Redis."""

    #: the worker id, as in the ``workers`` index and on its jobs' ``lease_owner``
    id: str
    host: str
    pid: int
    #: the Backlane version the worker runs
    version: str
    #: the job types it claims, sorted
    job_types: tuple[str, ...]
    #: jobs it runs at once at most
    concurrency: int
    #: when the process started serving (ms)
    started_at: int
    #: its lease: its last beat was ``lease_ms`` before the time its ``workers`` entry says it is alive until
    lease_ms: int
    #: the jobs it runs now, sorted by id (as of its last write: at most one beat old)
    running: tuple[RunningJob, ...] = ()
    #: it got SIGTERM: it claims nothing more and ends once its running jobs have
    draining: bool = False

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id, "host": self.host, "pid": str(self.pid), "version": self.version,
            "types": dumps(list(self.job_types)), "concurrency": str(self.concurrency),
            "started_at": str(self.started_at), "lease_ms": str(self.lease_ms),
            "running": dumps([list(job) for job in self.running]), "draining": "1" if self.draining else "0",
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> WorkerInfo | None:
        """The info a hash holds, or None when it is missing or unreadable (written by another version)."""
        try:
            return cls(
                id=raw["id"], host=raw["host"], pid=int(raw["pid"]), version=raw["version"],
                job_types=tuple(loads(raw["types"])), concurrency=int(raw["concurrency"]),
                started_at=int(raw["started_at"]), lease_ms=int(raw["lease_ms"]),
                running=tuple(RunningJob(*job) for job in loads(raw.get("running") or "[]")),
                draining=raw.get("draining") == "1",
            )
        except (KeyError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class LiveWorker:
    """A worker whose beats keep it alive now."""

    id: str
    #: until when (ms) its last beat (or take) keeps it alive: the latest over the shards
    alive_until: int
    #: its published facts; None while its hash is missing (see the module docstring)
    info: WorkerInfo | None = field(default=None)

    def last_seen(self, default_lease_ms: int) -> int:
        """When (ms) it last beat, by its own lease (or ``default_lease_ms`` when its info is missing)."""
        return self.alive_until - (self.info.lease_ms if self.info else default_lease_ms)

    @property
    def job_types(self) -> tuple[str, ...]:
        return self.info.job_types if self.info else ()


async def live_workers(redis: Redis, keys: Keys, now: int) -> list[LiveWorker]:
    """Every worker alive at ``now`` (ms), sorted by id, with its info: two pipelined round trips."""
    pipe = redis.pipeline(transaction=False)
    for shard in keys.all_shards:
        pipe.zrangebyscore(shard.workers, f"({now}", "+inf", withscores=True)
    alive: dict[str, int] = {}
    for rows in await pipe.execute():
        for worker, score in rows:
            alive[worker] = max(alive.get(worker, 0), int(score))
    if not alive:
        return []
    ids = sorted(alive)
    pipe = redis.pipeline(transaction=False)
    for worker in ids:
        pipe.hgetall(keys.worker_home(worker).worker_info(worker))
    hashes = cast(list[dict[str, str]], await pipe.execute())
    return [LiveWorker(worker, alive[worker], WorkerInfo.from_hash(raw) if raw else None)
            for worker, raw in zip(ids, hashes, strict=True)]
