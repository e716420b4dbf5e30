"""Redis connections, and the start-up check that says plainly when Redis could lose jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("backlane.redis")


def connect(url: str, max_connections: int, *, block_s: float = 0, name: str | None = None) -> Redis:
    """A client over a bounded pool that waits for a free connection instead of failing.

    The socket timeout sits above the longest blocking read (``block_s``): redis-py's default
    of 5 s would otherwise cut an XREAD BLOCK short. RESP2 is fixed on purpose: reply shapes
    (XREAD's list of [stream, entries], for one) are then the same on every server we run against,
    including the in-process fallback of ``backlane dev``, which speaks only RESP2.

    Commands are retried on connection errors and timeouts (a Redis restart, a dropped socket).
    A resent script does no harm: ``create`` always carries an idempotency key, ``start`` answers
    the attempt it already began, ``append`` skips events the attempt has already written, and the
    status scripts refuse a change that already happened (docs/protocol.md lists each reply).
    """
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        protocol=2,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=max(5.0, block_s + 5.0),
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # shows in CLIENT LIST, so an operator can count each process type's connections
        client_name=name,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections too


@dataclass(frozen=True)
class Durability:
    maxmemory_policy: str
    aof: bool
    rdb: bool

    def warnings(self) -> list[str]:
        out = []
        if self.maxmemory_policy != "noeviction":
            out.append(
                f"maxmemory-policy is {self.maxmemory_policy!r}: Redis may evict job keys under memory "
                "pressure and jobs would be lost; set it to 'noeviction'"
            )
        if not self.aof and not self.rdb:
            out.append("Redis persists nothing (no AOF, no RDB): a Redis restart loses every job")
        elif not self.aof:
            out.append("Redis has no AOF: a Redis restart loses jobs written since the last RDB snapshot")
        return out


async def check_durability(redis: Redis) -> Durability:
    """Reads the settings that decide whether accepted jobs survive; logs plainly when they may not."""
    cfg: dict[str, str] = {}
    for name in ("maxmemory-policy", "appendonly", "save"):
        try:
            reply = await redis.config_get(name)
        except Exception:  # CONFIG may be disabled on managed Redis
            continue
        cfg.update({str(k): str(v) for k, v in reply.items()})

    def text(name: str) -> str:
        return cfg.get(name, "")

    result = Durability(
        maxmemory_policy=text("maxmemory-policy") or "unknown",
        aof=text("appendonly") == "yes",
        rdb=bool(text("save").strip()),
    )
    for warning in result.warnings():
        log.warning("%s", warning)
    return result
