"""Connections to a real redis-server: the start-up durability check (spec section 7), the pool."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shared.connection import BoundedCluster, check_durability, connect

pytestmark = pytest.mark.anyio


async def test_an_evicting_maxmemory_policy_is_warned_about(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    before = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    try:
        await redis.config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, logger="backlane.redis"):
            found = await check_durability(redis)
        assert found.maxmemory_policy == "allkeys-lru"
        warned = [r.getMessage() for r in caplog.records if r.name == "backlane.redis"]
        assert any("allkeys-lru" in m and "noeviction" in m for m in warned), warned

        caplog.clear()
        await redis.config_set("maxmemory-policy", "noeviction")
        with caplog.at_level(logging.WARNING, logger="backlane.redis"):
            await check_durability(redis)
        assert not any("maxmemory-policy" in r.getMessage() for r in caplog.records)
    finally:
        await redis.config_set("maxmemory-policy", before)


async def test_closing_a_client_closes_its_pool_s_connections(redis: Redis, redis_url: str) -> None:
    """Bug: an API process (or an app in a test thread) that shut down left its pooled connections
    open on Redis until garbage collection. Cause: ``Redis(connection_pool=pool)`` does not own the
    pool, so ``aclose()`` left it alone. Fix: ``Redis.from_pool``."""
    client = connect(redis_url, 4, name="backlane-closing")
    await asyncio.gather(*(client.blpop(["nothing"], timeout=0.2) for _ in range(3)))  # three connections
    named = [c for c in await redis.client_list() if c.get("name") == "backlane-closing"]
    assert len(named) == 3
    await client.aclose()
    # Redis drops a closed connection from CLIENT LIST once its event loop has read the close: under
    # load that is not at once. A leaked pool never closes them (``client`` is still referenced).
    deadline = asyncio.get_running_loop().time() + 5
    while [c for c in await redis.client_list() if c.get("name") == "backlane-closing"]:
        assert asyncio.get_running_loop().time() < deadline, "the pool's connections are still open on Redis"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("torn", ["'NoneType' object has no attribute 'writelines'",
                                  "'NoneType' object is not callable"])
async def test_a_cluster_command_on_a_connection_torn_down_under_it_is_sent_again(
        monkeypatch: pytest.MonkeyPatch, torn: str) -> None:
    """redis-py's Cluster client leaks these instead of a ConnectionError when a connection it handed out
    is being disconnected; nothing was sent, so the command goes again. Any other error stands."""
    calls: list[tuple[object, ...]] = []

    async def flaky(self: RedisCluster, *args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise AttributeError(torn) if "writelines" in torn else TypeError(torn)
        if args[0] == "BROKEN":
            raise AttributeError("'Job' object has no attribute 'id'")
        return "OK"

    monkeypatch.setattr(RedisCluster, "execute_command", flaky)
    client = BoundedCluster(host="127.0.0.1", port=1, limit=2)
    assert await client.execute_command("GET", "k") == "OK" and len(calls) == 2
    calls.clear()
    calls.append(("warm",))  # the next call's first try does not fail: a plain error is not retried
    with pytest.raises(AttributeError, match="'Job' object"):
        await client.execute_command("BROKEN")
    assert len(calls) == 2
