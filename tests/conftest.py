from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parent))

from redis_cluster import LocalCluster
from redis_server import RedisServer

from shared.connection import connect
from shared.jobs import JobStore
from shared.settings import Settings

# BACKLANE_TEST_REDIS=cluster runs every test that takes ``redis_url`` (and so ``settings``, ``redis``, ``store``)
# against a private three-master Redis Cluster instead of a single redis-server.
REDIS_MODES = ("single", "cluster")
REDIS_MODE = os.environ.get("BACKLANE_TEST_REDIS") or "single"


def pytest_configure(config: pytest.Config) -> None:
    if REDIS_MODE not in REDIS_MODES:
        raise pytest.UsageError(f"BACKLANE_TEST_REDIS={REDIS_MODE!r}: want one of {', '.join(REDIS_MODES)} or unset")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """An empty Redis: the session's redis-server, or with BACKLANE_TEST_REDIS=cluster one node of the cluster."""
    if REDIS_MODE == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url
    import redis as sync_redis

    redis_server: RedisServer = request.getfixturevalue("redis_server")
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
        # receivers listen on 127.0.0.1; tests of the refusals turn this off (tests/test_webhook_targets.py)
        "BACKLANE_WEBHOOK_ALLOW_PRIVATE": "1",
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
    if REDIS_MODE == "cluster":
        # @pytest.mark.single_redis: the test needs one plain Redis (it runs its own redis-server, kills
        # Redis or uses the in-process fake), so a cluster run has nothing to say about it
        single = pytest.mark.skip(reason="single_redis: needs one plain Redis, and BACKLANE_TEST_REDIS=cluster")
        for item in items:
            if "single_redis" in item.keywords:
                item.add_marker(single)
