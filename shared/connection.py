"""Redis connections, and the start-up check that says plainly when Redis could lose jobs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

import redis as sync_redis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .sentinel import is_sentinel_url, parse_sentinel_url
from .shards import CLUSTER_SHARDS

log = logging.getLogger("backlane.redis")
#: per node on a Cluster, whose client cannot wait for a free connection: high enough never to refuse
#: (``BoundedCluster`` keeps the commands in flight to BACKLANE_REDIS_MAX_CONNECTIONS)
CLUSTER_CONNECTIONS_PER_NODE = 1000


#: commands that wait for data rather than for Redis: they do not count against a Cluster client's limit
BLOCKING = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BZPOPMIN", "BZPOPMAX", "XREAD", "XREADGROUP"})


class BoundedCluster(RedisCluster):
    """A Cluster client that runs at most ``limit`` commands at once, as the single Redis's blocking
    pool does: redis-py's Cluster client opens one more connection for each concurrent command (and
    fails past its maximum), so a burst of requests would otherwise open a connection each. Blocking
    reads wait for data, not for Redis, and are left out of the count."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = asyncio.Semaphore(limit)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if str(args[0]).upper() in BLOCKING:
            return await self._run(*args, **kwargs)
        async with self._limit:
            return await self._run(*args, **kwargs)

    async def _run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (AttributeError, TypeError) as exc:
            if not torn_down_under_us(exc):
                raise
            # nothing was written: the connection's stream was gone before the first byte went out
            log.debug("a Cluster connection was torn down while in use (%s): sending again", exc)
            return await super().execute_command(*args, **kwargs)


def torn_down_under_us(exc: BaseException) -> bool:
    """redis-py's Cluster client can hand out a connection that another task is disconnecting (its
    node disconnects idle connections after a topology change while one is taken): the write then
    fails inside the stream, before any byte is sent, with ``'NoneType' object has no attribute
    'writelines'`` (or the transport's ``'NoneType' object is not callable``) instead of a
    ConnectionError its retries would handle. Only those two are taken for it."""
    text = str(exc)
    return ("'NoneType' object has no attribute 'writelines'" in text
            or "'NoneType' object is not callable" in text)


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master of a Sentinel service over a bounded pool that waits for a free connection, as
    ``BlockingConnectionPool`` does for a single Redis."""


class ShardsMismatch(RuntimeError):
    """This process would name keys for a different number of shards than the data was written with."""


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def detect_cluster(url: str, timeout_s: float = 3.0) -> bool:
    """Whether the server at ``url`` is a Cluster node (``INFO cluster``). When Redis cannot be reached,
    a single Redis is assumed and a warning says so: processes then start as they did before Redis was
    up (the API answers 503 until it is). A Sentinel URL names no Cluster."""
    if is_sentinel_url(url):
        return False
    client = sync_redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except sync_redis.RedisError as exc:
        log.warning("could not ask Redis whether it is a Cluster (%s); assuming a single Redis", exc)
        return False
    finally:
        client.close()


def connect(url: str, max_connections: int, *, block_s: float = 0, name: str | None = None) -> Redis:
    """A client of the Redis at ``url``: of the whole Cluster when that is a Cluster node, else over a
    bounded pool that waits for a free connection instead of failing.

    The socket timeout sits above the longest blocking read (``block_s``): redis-py's default
    of 5 s would otherwise cut an XREAD BLOCK short. RESP2 is fixed on purpose: reply shapes
    (XREAD's list of [stream, entries], for one) are then the same on every server we run against,
    including the in-process fallback of ``backlane dev``, which speaks only RESP2.

    Commands are retried on connection errors and timeouts (a Redis restart, a dropped socket).
    A resent script does no harm: ``create`` finds the job its first run made (by the client's
    idempotency key, else by the job id), ``take`` and ``start`` answer the attempts they already
    began, ``append`` skips events the attempt has already written, and the status scripts refuse a
    change that already happened (docs/protocol.md lists each reply).

    A Cluster client has the commands Backlane uses with the same signatures, so it is handed out
    typed as ``Redis``; ``is_cluster`` tells the few places that differ. A ``redis+sentinel://`` URL
    gives a client of the service's master as the sentinels name it (``shared/sentinel.py``).
    """
    common: dict[str, Any] = dict(
        decode_responses=True,
        protocol=2,
        socket_timeout=max(5.0, block_s + 5.0),
        socket_connect_timeout=5,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # shows in CLIENT LIST, so an operator can count each process type's connections
        client_name=name,
    )
    if is_sentinel_url(url):
        return _sentinel_master(url, max_connections, common)
    if detect_cluster(url):
        cluster = BoundedCluster.from_url(url, max_connections=CLUSTER_CONNECTIONS_PER_NODE,
                                          limit=max_connections, **common)
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, health_check_interval=30, **common)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections too


def _sentinel_master(url: str, max_connections: int, common: dict[str, Any]) -> Redis:
    parsed = parse_sentinel_url(url)
    timeouts = {k: v for k, v in common.items() if k.startswith("socket_")}
    sentinels = Sentinel(list(parsed.sentinels), sentinel_kwargs={**timeouts, "protocol": 2},  # type: ignore[no-untyped-call]
                         **common)
    credentials = {k: v for k, v in (("username", parsed.username), ("password", parsed.password)) if v}
    # check_connection: a PING as each connection opens, so one that reached a demoted master fails there
    return cast(Redis, sentinels.master_for(
        parsed.service, redis_class=Redis, connection_pool_class=SentinelBlockingPool,
        max_connections=max_connections, timeout=10, db=parsed.db, check_connection=True, **credentials))


def dedicated(redis: Redis, socket_timeout: float) -> Redis:
    """A client of its own for long blocking reads, configured like ``redis`` (on a Cluster, a client of
    the whole Cluster, so a read follows its slot when the slot moves)."""
    if isinstance(redis, RedisCluster):
        node = _first_node(redis)
        own = RedisCluster(host=node.host, port=node.port, max_connections=CLUSTER_CONNECTIONS_PER_NODE,
                           retry=redis.retry, **_node_options(node.connection_kwargs, socket_timeout))
        return cast(Redis, own)
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = max(kwargs.get("socket_timeout") or 0.0, socket_timeout)
    if isinstance(pool, SentinelConnectionPool):  # its connections ask the sentinels for the master too
        kwargs.pop("connection_pool", None)
        sentinel_pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            pool.service_name, pool.sentinel_manager, max_connections=1,
                                               connection_class=pool.connection_class,
                                               check_connection=pool.check_connection, **kwargs)
        return Redis.from_pool(sentinel_pool)
    own_pool = ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs)
    return Redis.from_pool(own_pool)  # owned: its aclose() closes its connection


def pubsub_client(redis: Redis) -> tuple[Redis, bool]:
    """A client to SUBSCRIBE with, and whether the caller must close it. A Cluster carries classic
    pub/sub messages to every node, so on a Cluster one node's connection hears every PUBLISH."""
    if isinstance(redis, RedisCluster):
        node = _first_node(redis)
        return Redis(host=node.host, port=node.port, **_node_options(node.connection_kwargs, None)), True
    return redis, False


def _first_node(redis: RedisCluster) -> ClusterNode:
    """A node of the Cluster, known before the client's first command (which maps the slots)."""
    return redis.get_default_node() or next(iter(redis.nodes_manager.startup_nodes.values()))


def _node_options(kwargs: dict[str, Any], socket_timeout: float | None) -> dict[str, Any]:
    """What a new client of a Cluster node keeps of the Cluster client's options."""
    kept = {name: kwargs[name] for name in ("username", "password", "client_name", "socket_connect_timeout")
            if kwargs.get(name) is not None}
    timeout = kwargs.get("socket_timeout")
    if socket_timeout is not None:
        timeout = max(timeout or 0.0, socket_timeout)
    return {**kept, "decode_responses": True, "protocol": 2, "socket_timeout": timeout}


def shards_for(redis: Redis, configured: int | None) -> int:
    """The number of shards: as configured, else one on a single Redis and ``CLUSTER_SHARDS`` on a Cluster."""
    return configured or (CLUSTER_SHARDS if is_cluster(redis) else 1)


async def agree_on_shards(redis: Redis, key: str, shards: int) -> None:
    """Records the number of shards on first start and refuses to start with a different one: key
    names depend on it, so a process that disagreed would not see the jobs of the others."""
    await redis.set(key, shards, nx=True)
    recorded = int(await redis.get(key) or shards)
    if recorded != shards:
        raise ShardsMismatch(
            f"the data in Redis was written with {recorded} shard(s) but this process uses {shards}: "
            f"set BACKLANE_SHARDS={recorded}")


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
    """Reads the settings that decide whether accepted jobs survive; logs plainly when they may not
    (on a Cluster, those of the node the client first reached: masters are usually set up alike)."""
    cfg: dict[str, str] = {}
    for name in ("maxmemory-policy", "appendonly", "save"):
        try:
            if isinstance(redis, RedisCluster):
                reply = await redis.config_get(name, target_nodes=_first_node(redis))
            else:
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
