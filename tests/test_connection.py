"""The start-up durability check against a real redis-server (spec section 7)."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from shared.connection import check_durability

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
