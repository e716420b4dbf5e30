"""Riding through a Redis outage: a call that finds Redis out of reach is tried again, with back-off,
until Redis answers or the outage has lasted ``BACKLANE_REDIS_OUTAGE_S``.

redis-py's own retry (``shared/connection.py``) covers about 1.5 s; a restart of Redis from its AOF, a
failover or a stalled host takes longer. A worker's writes go through ``RideThrough.call`` so an
attempt keeps running through such an outage instead of failing as ``transient``:

    call ─▶ try ── answer ──────────────────────────────────────────────▶ the answer (Redis seen: now)
             │  └─ an error reply (STALE, GAP, …) ────────────────────────▶ raised at once
             └─ Redis out of reach (connection refused or dropped, timed out, loading, read-only
                replica, cluster down) ─▶ back-off (50 ms doubling to 500 ms) ─▶ try again
                                          └─ out of reach since the last answer for longer than
                                             the outage allowed ─▶ RedisOutOfReach

The outage is measured from the moment this process first found Redis out of reach (the later of its
last answer and the start of the call that failed first): every call waiting out one outage gives up
at the same moment, however late it began. One try may hang rather than
fail (a stopped Redis accepts connections and never answers): each try is bounded by that moment too.

A try sent again may have reached Redis the first time (its reply was lost): only calls whose second
run changes nothing more are ridden through. The fenced scripts are built for it: ``append`` and
``record`` take the attempt-local index of what they write, ``checkpoint`` the attempt-local number of
the save, ``beat`` never moves a worker's entry back, and a status change that already happened is
refused (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ClusterDownError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("backlane.redis")
T = TypeVar("T")

#: error replies that say Redis cannot serve the command right now, not that the command is wrong: a
#: replica that was a master (failover), a master without its replicas, a Cluster that lost a slot, a
#: Redis still loading its data (redis-py raises some as ConnectionError already)
_NOT_NOW = ("READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "NOREPLICAS")
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5


def out_of_reach(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis could not be reached (or could not serve now), as opposed to a reply."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError | ReadOnlyError
                  | ClusterDownError | TryAgainError):
        return True
    if isinstance(exc, ResponseError):
        text = str(exc)
        # a script's error carries the inner command's reply after its own prefix
        return text.startswith(_NOT_NOW) or any(f" {code} " in f" {text} " for code in _NOT_NOW)
    return False


class RedisOutOfReach(RedisConnectionError):
    """Redis stayed out of reach for longer than the outage a caller rides through."""


class RideThrough:
    """Tries calls again while Redis is out of reach, for at most ``outage_s`` (0: once, as redis-py
    does). One per process: it remembers when Redis last answered."""

    def __init__(self, outage_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.outage_s = outage_s
        self.clock = clock
        #: when Redis last answered a call made here (None: not yet)
        self.last_answer: float | None = None
        #: outages ridden through (each counted once, when Redis answers again)
        self.outages = 0
        self._down_since: float | None = None

    def answered(self) -> None:
        """Redis answered (a call made elsewhere counts too: it tells when the outage began)."""
        now = self.clock()
        if self._down_since is not None:
            log.warning("Redis answers again after %.1f s out of reach", now - self._down_since)
            self.outages += 1
            self._down_since = None
        self.last_answer = now

    def _since(self, start: float) -> float:
        """When the outage a call started at ``start`` waits out began (as far as this process knows)."""
        if self._down_since is not None:
            return self._down_since
        return max(start, self.last_answer or start)

    async def call(self, fn: Callable[[], Awaitable[T]], what: str, *, patience_s: float | None = None) -> T:
        """``await fn()``, tried again while Redis is out of reach for at most ``patience_s`` (default:
        the outage allowed; ``math.inf``: until it answers). Raises ``RedisOutOfReach`` past it; every
        other error at once."""
        patience = self.outage_s if patience_s is None else patience_s
        start = self.clock()
        backoff = FIRST_BACKOFF_S
        while True:
            since = self._since(start)
            give_up = since + patience
            try:
                if math.isinf(give_up) or patience <= 0:  # no bound, or one try as redis-py makes it
                    value = await fn()
                else:
                    async with asyncio.timeout(max(0.0, give_up - self.clock())):
                        value = await fn()
            except Exception as exc:
                if not out_of_reach(exc):
                    self.answered()  # an error reply is an answer
                    raise
                now = self.clock()
                if self._down_since is None:
                    self._down_since = since
                    log.warning("Redis out of reach (%s: %s); riding through for up to %g s",
                                what, exc or type(exc).__name__, patience)
                if now >= give_up:
                    raise RedisOutOfReach(
                        f"Redis out of reach for {now - since:.1f} s ({what}), longer than "
                        f"BACKLANE_REDIS_OUTAGE_S={self.outage_s:g}: {exc or type(exc).__name__}") from exc
                await asyncio.sleep(min(backoff * (0.5 + random.random() / 2), max(0.0, give_up - now)))
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            self.answered()
            return value
