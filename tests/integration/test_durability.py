"""An accepted job survives a Redis crash when Redis runs with AOF."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer

from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    yield server
    server.cleanup()


async def test_accepted_jobs_and_their_events_survive_kill_9_of_redis(aof_server: RedisServer) -> None:
    settings = Settings(redis_url=aof_server.url)
    redis = connect(aof_server.url, 4)
    store = JobStore(redis, settings)
    ids = [
        (await store.create(NewJob(tenant="acme", type="demo.story", input={"n": i}, max_attempts=3), f"k{i}")).job_id
        for i in range(20)
    ]
    aof_server.kill()  # SIGKILL: no shutdown save, only the AOF
    aof_server.start()
    for i, job_id in enumerate(ids):
        raw = await store.load(job_id)  # redis-py reconnects on its own
        assert raw is not None and raw["status"] == "queued" and raw["input"] == f'{{"n":{i}}}'
        assert len(await store.read_events(job_id, None)) == 1
        # the idempotency key survived too: the same request maps to the same job
        again = await store.create(NewJob(tenant="acme", type="demo.story", input={"n": i}, max_attempts=3), f"k{i}")
        assert again.job_id == job_id and not again.created
    queued = await redis.zcard(store.keys.queue("demo.story"))
    assert queued == 20
    await redis.aclose()
