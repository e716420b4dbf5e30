"""The limits of named resources, kept in Redis for every worker and API process at once.

    ctx.limit(name) ──▶ admit.lua ──▶ admitted ─▶ the call ─▶ settle.lua (real tokens; ok / fail / pause)
                          │                                     │
                          └─ refused: {wait ms, reason} ◀───────┘ a pause or an open breaker refuses
                             (sleep, ask again)                    every caller until it ends

Each resource's keys carry its own hash tag (``ResourceKeys``), not a shard's: a window of calls is one
budget for the whole cluster, so its scripts run in the resource's slot, apart from the job scripts
(which run in a shard's). Nothing of a job is written by them: the job's own ``waiting_for`` is a
fenced write of its attempt (``note_wait.lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from .keys import Keys
from .resources import ResourceLimit
from .scripts import Scripts
from .serialization import now_ms, rfc3339

#: how long a breaker's probe may take before another caller probes (its worker may have died)
PROBE_MS = 60_000
#: why a call waits: the reasons admit.lua answers, in words for a progress note
REASONS = {
    "paused": "paused after a Retry-After",
    "breaker": "its breaker is open after repeated failures",
    "requests": "its requests limit",
    "tokens": "its tokens limit",
    "concurrency": "its concurrency limit",
}


@dataclass(frozen=True)
class Admission:
    admitted: bool
    #: admitted: what settle.lua takes
    member: str = ""
    #: admitted: transient failures in a row so far, -1 for the breaker's probe (its outcome must be told)
    failures: int = 0
    #: refused: ask again after this long, and why
    wait_ms: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Settled:
    paused_until: int
    breaker: str
    open_until: int

    def waits_until(self, now: int) -> tuple[int, str] | None:
        """When the resource admits calls again and why, if it does not now (a pause, an open breaker)."""
        if self.paused_until > now:
            return self.paused_until, "paused"
        if self.breaker == "open" and self.open_until > now:
            return self.open_until, "breaker"
        return None


class Limiter:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def admit(self, limit: ResourceLimit, call_id: str, tokens: int = 0, job_id: str = "",
                    waited: bool = False) -> Admission:
        k = self.keys.resource(limit.name)
        reply = await self.scripts.run(
            "admit", [k.calls, k.state, k.waiting],
            [now_ms(), call_id, max(0, int(tokens)), limit.requests or "", limit.tokens or "", limit.window_ms,
             job_id, "1" if waited else "0", PROBE_MS],
        )
        if int(reply[0]) == 0:
            failures = -1 if reply[2] == "probe" else int(reply[2])
            return Admission(True, member=str(reply[1]), failures=failures)
        return Admission(False, wait_ms=int(reply[0]), reason=str(reply[1]))

    async def settle(self, limit: ResourceLimit, member: str, *, tokens: int | None = None, outcome: str = "",
                     pause_until_ms: int = 0) -> Settled:
        """``outcome``: 'ok', 'fail' (transient), 'pause' (until ``pause_until_ms``), 'none', or '' (tokens only)."""
        k = self.keys.resource(limit.name)
        reply = await self.scripts.run(
            "settle", [k.calls, k.state],
            [now_ms(), member, "" if tokens is None else max(0, int(tokens)), outcome, pause_until_ms,
             limit.breaker_failures, int(limit.breaker_open_s * 1000)],
        )
        return Settled(int(reply[0]), str(reply[1]), int(reply[2]))

    async def pause(self, limit: ResourceLimit, until_ms: int) -> Settled:
        """Pauses the resource for every caller until ``until_ms`` (an operator, or a Retry-After seen
        outside any call)."""
        return await self.settle(limit, "-:0", outcome="pause", pause_until_ms=until_ms)

    async def views(self, resources: dict[str, ResourceLimit]) -> list[dict[str, Any]]:
        """What ``GET /v1/resources`` shows of each resource: its limits, its use now, who waits, a
        pause and the breaker; one pipeline for all of them."""
        now = now_ms()
        names = sorted(resources)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            k, limit = self.keys.resource(name), resources[name]
            pipe.hgetall(k.state)
            pipe.zrangebyscore(k.calls, now - limit.window_ms + 1, "+inf")
            pipe.zcount(k.waiting, now, "+inf")
            pipe.zcount(k.held, now, "+inf")
        replies = await pipe.execute()
        views = []
        for i, name in enumerate(names):
            state = cast(dict[str, str], replies[4 * i])
            calls = cast(list[str], replies[4 * i + 1])
            views.append(resource_view(resources[name], state, calls, int(replies[4 * i + 2]),
                                       int(replies[4 * i + 3]), now))
        return views


def _int(state: dict[str, str], name: str) -> int:
    return int(float(state.get(name) or 0))


def resource_view(limit: ResourceLimit, state: dict[str, str], calls: list[str], waiting: int, running: int,
                  now: int) -> dict[str, Any]:
    paused = _int(state, "paused_until")
    breaker = state.get("breaker") or "closed"
    open_until = _int(state, "open_until")
    if breaker == "open" and open_until <= now:
        breaker = "half_open"  # the next call is the probe
    return {
        "name": limit.name,
        "limits": limit.to_json(),
        "in_use": {
            "running": running,
            "requests": len(calls),
            "tokens": sum(int(m.rpartition(":")[2]) for m in calls),
        },
        "waiting": waiting,
        "paused_until": rfc3339(paused) if paused > now else None,
        "breaker": {"state": breaker, "failures": _int(state, "failures"),
                    "open_until": rfc3339(open_until) if breaker == "open" else None},
        "totals": {
            "admitted": _int(state, "admitted"),
            "tokens": _int(state, "tokens_total"),
            "waits": {reason: _int(state, f"waits|{reason}") for reason in REASONS},
            "pauses": _int(state, "pauses"),
            "breaker_opens": _int(state, "breaker_opens"),
        },
    }
