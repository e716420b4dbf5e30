"""Concurrency at claim: a worker takes a job only while its resources have a place for it.

    reserve.lua (each resource the worker's types use, its own slot) ─▶ places: 'crm=2;db=0'
        │
        ▼
    take.lua (a shard's slot) starts at most that many jobs of each resource; the rest stay queued
        │
        ▼
    release.lua: the reservations end, each started job holds its own place (<job id>:<token>)
    … the attempt ends ─▶ release.lua gives the place back; if a worker was turned away meanwhile,
                          wake tokens go to the types that use the resource

A resource's count lives in its own slot and a take runs in a shard's, so on a Cluster no one script
can see both: places are reserved first, then taken, then what was not used is given back. Holds last
a lease and are renewed with the worker's beat, so a dead worker's places come back by themselves.
A paused resource (or one whose breaker is open) grants no place: its jobs stay ``queued``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy
from shared.resources import PLACEHOLDER, ResourceLimit, resolve
from shared.serialization import now_ms

from .leases import Started

log = logging.getLogger("backlane.worker")


@dataclass
class Reserved:
    """What one take may use: places per resource (``take.lua`` ARGV 8) and the reservations to end."""

    granted: dict[str, int] = field(default_factory=dict)

    @property
    def argument(self) -> str:
        return ";".join(f"{name}={n}" for name, n in self.granted.items())


def _pattern(template: str) -> re.Pattern[str]:
    parts = PLACEHOLDER.split(template)
    # split keeps the names at odd indexes: literal, name, literal, ...
    return re.compile("^" + "".join(re.escape(p) if i % 2 == 0 else "[^,]+" for i, p in enumerate(parts)) + "$")


class Places:
    def __init__(self, store: JobStore, worker_id: str, policies: Iterable[JobTypePolicy], hold_ms: int) -> None:
        self.store = store
        self.worker_id = worker_id
        self.hold_ms = hold_ms
        self.policies = {p.name: p for p in policies}
        configured = store.settings.resources
        #: the configured resources each type's jobs may use
        self.by_type: dict[str, list[ResourceLimit]] = {}
        for policy in self.policies.values():
            names: list[str] = []
            for template in policy.uses:
                pattern = _pattern(template)
                names += [name for name in configured if pattern.match(name)]
            self.by_type[policy.name] = [configured[n] for n in dict.fromkeys(names)]
        self.resources = {r.name: r for limits in self.by_type.values() for r in limits}
        #: job id → (its hold member, the resources it holds a place of)
        self.held: dict[str, tuple[str, list[str]]] = {}

    @property
    def active(self) -> bool:
        return bool(self.resources)

    def queue_uses(self, job_types: list[str]) -> list[str]:
        """take.lua's ARGV 9..: per type, its resources, or '@' for a job's own ``uses`` field."""
        out = []
        for name in job_types:
            uses = self.policies[name].uses if name in self.policies else ()
            out.append("@" if any("{" in u for u in uses) else ",".join(uses))
        return out

    async def reserve(self, n: int) -> Reserved:
        """Up to ``n`` places of every resource the worker's types use (none while it is paused)."""
        now = now_ms()
        names = sorted(self.resources)
        replies = await asyncio.gather(*(self.store.scripts.run(
            "reserve", [self.store.keys.resource(name).held, self.store.keys.resource(name).state],
            [now, self.worker_id, n, self.resources[name].concurrency or "", self.hold_ms]) for name in names))
        return Reserved({name: int(reply[0]) for name, reply in zip(names, replies, strict=True)})

    async def settle(self, reserved: Reserved, started: list[Started]) -> None:
        """Ends the take's reservations; each job it started holds its own place."""
        adds: dict[str, list[str]] = {name: [] for name in reserved.granted}
        for s in started:
            member = f"{s.job_id}:{s.token}"
            names = [n for n in self.uses(s) if n in adds]
            for name in names:
                adds[name].append(member)
            if names:
                self.held[s.job_id] = (member, names)
        until = now_ms() + self.hold_ms
        await asyncio.gather(*(self._release(name, until, reserved.granted[name], members, [])
                               for name, members in adds.items() if reserved.granted[name] or members))

    async def release(self, job_id: str) -> None:
        """The job's attempt ended here: its places go back."""
        held = self.held.pop(job_id, None)
        if held is None:
            return
        member, names = held
        await asyncio.gather(*(self._release(name, 0, 0, [], [member]) for name in names))

    async def renew(self) -> None:
        """Keeps the places of the jobs still running here for another hold (with the worker's beat)."""
        by_resource: dict[str, list[str]] = {}
        for member, names in self.held.values():
            for name in names:
                by_resource.setdefault(name, []).append(member)
        until = now_ms() + self.hold_ms
        await asyncio.gather(*(self.store.redis.zadd(self.store.keys.resource(name).held,
                                                     dict.fromkeys(members, until), xx=True)
                               for name, members in by_resource.items()))

    def uses(self, started: Started) -> list[str]:
        policy = self.policies.get(started.job.type)
        return list(resolve(policy.uses, started.job.input)) if policy else []

    async def _release(self, name: str, until: int, reserved: int, hold: list[str], drop: list[str]) -> None:
        keys = self.store.keys.resource(name)
        woken = await self.store.scripts.run("release", [keys.held, keys.state],
                                             [until, self.worker_id, reserved, len(hold), *hold, *drop])
        if int(woken):
            await self._wake(name)

    async def _wake(self, name: str) -> None:
        """A place was freed while a worker was turned away: a wake token on every shard for each type
        that uses the resource (its jobs may be anywhere)."""
        types = [t for t, limits in self.by_type.items() if any(r.name == name for r in limits)]
        pipe = self.store.redis.pipeline(transaction=False)
        for shard in self.store.keys.all_shards:
            for t in types:
                pipe.lpush(shard.wake(t), "1")
                pipe.ltrim(shard.wake(t), 0, 15)
        await pipe.execute()
