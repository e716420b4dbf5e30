"""Loads the Lua scripts in ``lua/`` and runs them. Every atomic mutation of Redis goes through here.

Each script is sent as one chunk: the transition table rendered from ``shared/status.py``, then
``lib.lua``, then the script itself, so the status machine is written once and enforced in Redis.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from .status import TERMINAL, TRANSITIONS

SCRIPT_NAMES = (
    "create", "claim", "start", "take", "heartbeat", "append", "transition", "cancel", "expire_lease", "checkpoint",
    "decide", "expire_deadline", "webhook_claim", "webhook_done", "retire", "make_ready", "count_create",
)


def render_status_table() -> str:
    rows = []
    for current, targets in TRANSITIONS.items():
        inner = ", ".join(f"{t.value} = true" for t in sorted(targets))
        rows.append(f"  {current.value} = {{{inner}}},")
    terminal = ", ".join(f"{t.value} = true" for t in sorted(TERMINAL))
    return "local TRANSITIONS = {\n" + "\n".join(rows) + "\n}\nlocal TERMINAL = {" + terminal + "}\n"


def _read(name: str) -> str:
    return resources.files("shared").joinpath("lua", f"{name}.lua").read_text()


@cache
def source(name: str) -> str:
    """The full text Redis receives for script ``name``."""
    return render_status_table() + _read("lib") + "\n" + _read(name)


class Scripts:
    """The registered scripts of one Redis client (EVALSHA, falling back to EVAL once)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {n: redis.register_script(source(n)) for n in SCRIPT_NAMES}

    async def run(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        return await self._scripts[name](keys=keys, args=args, client=client)

    async def run_many(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Runs the script once per (keys, args): in one pipeline on a single Redis; side by side on a
        Cluster, whose client refuses scripts in a pipeline (each call goes to its own slot's master)."""
        if isinstance(self.redis, RedisCluster):
            return list(await asyncio.gather(*(self.run(name, keys, args) for keys, args in calls)))
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            await self.run(name, keys, args, client=pipe)
        return list(await pipe.execute())

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]
