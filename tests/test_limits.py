"""``ctx.limit`` in a real worker against a real Redis: waits, pauses, the breaker, waiting_for."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from compute.context import JobContext
from compute.errors import TransientError
from compute.registry import JobType, job_type
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.resources import ResourceLimit
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio


def with_resources(settings: Settings, **limits: ResourceLimit) -> Settings:
    return replace(settings, resources={limit.name: limit for limit in limits.values()})


async def submit(store: JobStore, jt: JobType, max_attempts: int = 1, **input: Any) -> str:
    await store.register_types([jt.policy])
    return (await store.create(NewJob(tenant="acme", type=jt.name, input=input, max_attempts=max_attempts))).job_id


async def events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]


async def test_a_retry_after_hands_the_job_back_uncounted_until_the_pause_ends(
    redis: Redis, settings: Settings
) -> None:
    settings = with_resources(settings, api=ResourceLimit("api", requests=100))
    seen: list[tuple[int, float]] = []

    @job_type("test.rate_limited", max_attempts=1)
    async def rate_limited(ctx: JobContext) -> str:
        async with ctx.limit("api"):
            seen.append((ctx.attempt, time.monotonic()))
            if ctx.attempt == 1:
                raise TransientError("429 from the provider", retry_after=1)
        return "done"

    store = JobStore(redis, settings)
    job_id = await submit(store, rate_limited)
    worker = Worker(settings, redis, {rate_limited.name: rate_limited})
    task = asyncio.create_task(worker.run())

    async def queued_and_waiting() -> dict[str, str]:
        while (raw := await store.load(job_id) or {}).get("attempt") != "1" or raw.get("status") != "queued":
            await asyncio.sleep(0.01)
        return raw

    raw = await asyncio.wait_for(queued_and_waiting(), 10)
    waiting = loads(raw["waiting_for"])
    assert (waiting["resource"], waiting["reason"]) == ("api", "paused") and waiting["until"]
    view = (await store.limiter.views(settings.resources))[0]
    assert view["paused_until"] is not None and view["totals"]["pauses"] == 1

    async def ended() -> dict[str, str]:
        while (raw := await store.load(job_id) or {}).get("status") not in ("completed", "failed"):
            await asyncio.sleep(0.02)
        return raw

    raw = await asyncio.wait_for(ended(), 10)
    worker.drain()
    await task
    # max_attempts 1, yet a second attempt ran: the wait for the resource did not use one up
    assert raw["status"] == "completed" and raw["attempt"] == "2" and raw["released"] == "1"
    assert "waiting_for" not in raw
    assert 0.9 <= seen[1][1] - seen[0][1] < 2.5
    statuses = [(e["status"], e.get("reason")) for e in await events(store, job_id) if e["type"] == "status"]
    assert statuses == [("queued", None), ("running", None), ("queued", "waiting_for_resource"),
                        ("running", None), ("completed", None)]


async def test_a_call_over_the_requests_limit_waits_and_the_job_says_why(redis: Redis, settings: Settings) -> None:
    settings = with_resources(settings, api=ResourceLimit("api", requests=1, window_s=1))
    admitted: list[float] = []
    noted: list[Any] = []

    @job_type("test.two_calls")
    async def two_calls(ctx: JobContext) -> None:
        for _ in range(2):
            async with ctx.limit("api"):
                admitted.append(time.monotonic())
                noted.append((await ctx.store.load(ctx.job_id) or {}).get("waiting_for"))

    store = JobStore(redis, settings)
    job_id = await submit(store, two_calls)
    await Worker(settings, redis, {two_calls.name: two_calls}).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and "waiting_for" not in raw
    assert admitted[1] - admitted[0] >= 0.95
    assert noted == [None, None]  # cleared once admitted
    notes = [e["message"] for e in await events(store, job_id) if e["type"] == "progress"]
    assert notes == ["waiting for api: its requests limit"]


async def test_failures_in_a_row_open_the_breaker_and_park_the_job_uncounted(redis: Redis, settings: Settings) -> None:
    settings = with_resources(settings, flaky=ResourceLimit("flaky", breaker_failures=2, breaker_open_s=0.5))
    tries: list[int] = []

    @job_type("test.flaky", max_attempts=3, retry_base_s=0.05)
    async def flaky(ctx: JobContext) -> None:
        async with ctx.limit("flaky"):
            tries.append(ctx.attempt)
            if len(tries) <= 2:
                raise TransientError("upstream 502")

    store = JobStore(redis, settings)
    job_id = await submit(store, flaky, max_attempts=3)
    await Worker(settings, redis, {flaky.name: flaky}).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    reasons = [e.get("reason") for e in await events(store, job_id) if e["type"] == "status"]
    # the first failure is an ordinary retry; the second opens the breaker: the job waits for it, uncounted
    assert reasons == [None, None, "retry", None, "waiting_for_resource", None, None]
    assert raw["released"] == "1" and tries == [1, 2, 3]
    view = (await store.limiter.views(settings.resources))[0]
    assert view["breaker"]["state"] == "closed" and view["totals"]["breaker_opens"] == 1


async def test_an_unconfigured_resource_has_no_limits(redis: Redis, settings: Settings) -> None:
    @job_type("test.free")
    async def free(ctx: JobContext) -> int:
        async with ctx.limit("nobody-configured-this", tokens=10**9) as call:
            call.tokens = 5
        return 1

    store = JobStore(redis, settings)
    job_id = await submit(store, free)
    await Worker(settings, redis, {free.name: free}).run(burst=True)
    assert (await store.load(job_id) or {}).get("status") == "completed"
