from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisServer

from shared.connection import connect
from shared.jobs import JobStore
from shared.settings import Settings


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Fast timings so lease expiry and restarts happen within a test's patience."""
    env = {
        "BACKLANE_REDIS_URL": redis_url,
        "BACKLANE_API_KEYS": "acme:key-acme,globex:key-globex",
        "BACKLANE_HEARTBEAT_S": "0.2",
        "BACKLANE_LEASE_S": "1",
        "BACKLANE_SUPERVISOR_INTERVAL_S": "0.1",
        "BACKLANE_TOKEN_SECRET": "test-secret",
    }
    return Settings.from_env(env)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url
    client = connect(settings.redis_url, settings.redis_max_connections)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> JobStore:
    return JobStore(redis, settings)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BACKLANE_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="BACKLANE_SKIP_BROWSER=1")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)
