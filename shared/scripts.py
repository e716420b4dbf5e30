"""Loads the Lua scripts in ``lua/`` and runs them. Every atomic mutation of Redis goes through here.

Each script is sent as one chunk: the transition table rendered from ``shared/status.py``, the
lease constants of ``shared/liveness.py`` and the priority offsets of ``shared/priority.py``, then
``lib.lua``, then the script itself, so the status machine is written once and enforced in Redis.
A ``durable`` call is followed by ``WAIT`` on the same connection when replicas are asked for
(``shared/replicas.py``).
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import PipelineCommand
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from .liveness import HELD_BY_WORKER, NOTICES_KEPT_MS
from .priority import render_lua as render_priorities
from .replicas import NotReplicated, WaitFor
from .status import TERMINAL, TRANSITIONS

SCRIPT_NAMES = (
    "create", "claim", "start", "take", "beat", "heartbeat", "append", "transition", "cancel", "expire_lease",
    "checkpoint", "decide", "expire_deadline", "webhook_claim", "webhook_done", "retire", "make_ready", "count_create",
    "record", "snapshot", "purge", "admit", "settle", "note_wait", "reserve", "release", "contact",
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
    constants = f"local HELD_BY_WORKER = {HELD_BY_WORKER}\nlocal NOTICES_KEPT_MS = {NOTICES_KEPT_MS}\n"
    return render_status_table() + constants + render_priorities() + _read("lib") + "\n" + _read(name)


class Scripts:
    """The registered scripts of one Redis client (EVALSHA, falling back to EVAL once).

    On a single Redis, the scripts that this process's tasks run in the same turn of the event loop go
    out together, in one pipeline: a worker finishing several jobs at once, or an API creating several,
    pays one write and one read of the socket for all of them (a send costs tens of µs on a VM). Each
    caller still gets its own reply or its own error. A Cluster client refuses scripts in a pipeline:
    there each script goes out on its own.
    """

    def __init__(self, redis: Redis, wait_for: WaitFor | None = None) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {n: redis.register_script(source(n)) for n in SCRIPT_NAMES}
        self._together = not isinstance(redis, RedisCluster)
        #: how many replicas a durable call waits for, and how long (None: it does not wait)
        self.wait_for = wait_for if wait_for and wait_for.replicas > 0 else None
        self._waiting: list[tuple[str, list[str], list[Any], asyncio.Future[Any], bool]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def run(self, name: str, keys: list[str], args: list[Any], *, durable: bool = False) -> Any:
        """The script's reply. ``durable``: with replicas asked for, ``NotReplicated`` (carrying the reply)
        when fewer confirmed it in time."""
        durable = durable and self.wait_for is not None
        if not self._together:
            if durable:
                return await self._run_on_its_node(name, keys, args)
            return await self._scripts[name](keys=keys, args=args)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((name, keys, args, reply, durable))
        if len(self._waiting) == 1:  # the first of this turn sends them all, once the turn is over
            sender = loop.create_task(self._send())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await reply

    async def _send(self) -> None:
        calls, self._waiting = self._waiting, []
        wait = self.wait_for if any(durable for *_, durable in calls) else None
        if len(calls) == 1 and wait is None:
            name, keys, args, reply, _ = calls[0]
            try:
                result = await self._scripts[name](keys=keys, args=args)
            except Exception as exc:
                _answer(reply, exc)
            else:
                _answer(reply, result)
            return
        pipe = self.redis.pipeline(transaction=False)
        try:
            for name, keys, args, _, _ in calls:
                await self._scripts[name](keys=keys, args=args, client=pipe)
            if wait is not None:  # one connection for the whole pipeline: WAIT covers each script in it
                pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed (after redis-py's retries): every caller hears it
            for _, _, _, reply, _ in calls:
                _answer(reply, exc)
            return
        confirmed = results.pop() if wait is not None else None
        for (_, _, _, reply, durable), result in zip(calls, results, strict=True):
            _answer(reply, _confirmed(result, confirmed, wait) if durable else result)

    async def _run_on_its_node(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """On a Cluster: the script and WAIT on one connection to the master of the keys' slot."""
        assert self.wait_for is not None and isinstance(self.redis, RedisCluster)
        script = self._scripts[name]
        await self.redis.initialize()  # maps the slots on first use (a no-op after)
        node = self.redis.get_node_from_key(keys[0])
        assert node is not None
        for _ in range(2):
            commands = [PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
                        PipelineCommand(1, "WAIT", self.wait_for.replicas, self.wait_for.timeout_ms)]
            await node.execute_pipeline(commands)
            result, confirmed = commands[0].result, commands[1].result
            if isinstance(result, NoScriptError):  # that node has not seen the script yet
                await self.redis.script_load(script.script)  # a Cluster client loads it on every master
                continue
            if isinstance(result, Exception):
                raise result
            answer = _confirmed(result, confirmed, self.wait_for)
            if isinstance(answer, NotReplicated):
                raise answer
            return answer
        raise NoScriptError(f"script {name} would not load on {node.name}")

    async def run_many(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Runs the script once per (keys, args), all in this turn: so in one pipeline on a single Redis
        (``run``), side by side on a Cluster."""
        return list(await asyncio.gather(*(self.run(name, keys, args) for keys, args in calls)))

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]


def _confirmed(result: Any, confirmed: Any, wait: WaitFor | None) -> Any:
    """The script's result, or NotReplicated carrying it when WAIT counted fewer replicas than asked."""
    if wait is None or isinstance(result, Exception):
        return result
    if isinstance(confirmed, Exception):  # WAIT itself failed: nothing says the replicas have it
        return NotReplicated(result, 0, wait)
    return result if int(confirmed) >= wait.replicas else NotReplicated(result, int(confirmed), wait)


def _answer(reply: asyncio.Future[Any], result: Any) -> None:
    """Hands a caller its reply, or raises its error in it (a caller that was cancelled meanwhile is gone)."""
    if reply.done():
        return
    if isinstance(result, Exception):
        reply.set_exception(result)
    else:
        reply.set_result(result)
