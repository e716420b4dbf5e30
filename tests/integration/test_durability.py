"""An accepted job survives a Redis crash when Redis runs with AOF."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer

from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

# each test runs its own AOF redis-server and kills it: a cluster run has nothing to add
pytestmark = [pytest.mark.anyio, pytest.mark.single_redis]


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
    queued = await store.index_size(lambda s: s.queue("demo.story"))
    assert queued == 20
    await redis.aclose()


async def test_a_running_job_survives_a_redis_crash_and_restart(aof_server: RedisServer) -> None:
    """Redis is SIGKILLed under a live worker and supervisor and comes back from its AOF: the job
    still completes, with the whole story as its newest attempt's output."""
    import asyncio
    from dataclasses import replace

    from compute.registry import BUILTIN_MODULES, load
    from compute.supervisor import Supervisor
    from compute.types.demo import full_text, story_words
    from compute.worker import Worker
    from shared.serialization import loads

    settings = replace(Settings(redis_url=aof_server.url), heartbeat_s=0.2, lease_s=1.0, supervisor_interval_s=0.1)
    redis = connect(aof_server.url, 8)
    store = JobStore(redis, settings)
    spec = {"topic": "outage", "steps": 2, "tokens_per_step": 30, "delay_ms": 20}
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=5))).job_id
    worker = Worker(settings, redis, load(BUILTIN_MODULES))
    supervisor = Supervisor(settings, redis, webhooks=False)
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(supervisor.run())]
    try:
        while int((await store.load(job_id) or {}).get("last_seq", 0)) < 10:
            await asyncio.sleep(0.02)
        aof_server.kill()
        await asyncio.sleep(0.5)
        aof_server.start()
        for _ in range(600):
            raw = await store.load(job_id)
            if raw and raw["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the job did not complete after the Redis restart: {raw}")
    finally:
        worker.drain()
        supervisor.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
    newest = max(e["attempt"] for e in evs)
    text = "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == newest)
    assert text == full_text(story_words("outage", 2, 30))
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    await redis.aclose()
