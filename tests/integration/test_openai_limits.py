"""The OpenAI lane through ``ctx.openai`` with its model configured as a resource (``openai:<model>``):
every call is admitted by the limiter, its tokens settled from the usage, and a 429 with Retry-After
pauses the model for every worker without using up an attempt."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI, HttpFault
from redis.asyncio import Redis

from compute.registry import load
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.resources import ResourceLimit
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio

TYPES = load(["compute.types.openai_responses"])
MODEL = ResourceLimit("openai:gpt-fake", requests=100, tokens=100_000, window_s=60)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def store(redis: Redis, settings: Settings, fake: FakeOpenAI) -> JobStore:
    lane = dataclasses.replace(settings, openai_base_url=fake.base_url, openai_api_key="test",
                               resources={MODEL.name: MODEL})
    return JobStore(redis, lane)


async def run(store: JobStore, max_attempts: int) -> tuple[dict[str, str], list[dict[str, Any]]]:
    new = NewJob(tenant="acme", type="openai.responses", input={"model": "gpt-fake", "input": "hello"},
                 max_attempts=max_attempts)
    job_id = (await store.create(new)).job_id
    await Worker(store.settings, store.redis, TYPES).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None
    return raw, [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]


async def test_each_model_call_is_admitted_and_settled_with_its_real_tokens(store: JobStore) -> None:
    raw, _ = await run(store, 3)
    assert raw["status"] == "completed"
    view = (await store.limiter.views(store.settings.resources))[0]
    assert view["totals"]["admitted"] == 1
    assert view["in_use"] == {"running": 0, "requests": 1, "tokens": 2048 + 15}  # the usage, not the estimate


async def test_a_429_with_retry_after_pauses_the_model_and_spends_no_attempt(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.create_faults = [HttpFault(429, code="rate_limit_exceeded", retry_after="1", type="requests")]
    raw, evs = await run(store, 1)
    # max_attempts 1 and yet attempt 2 completed: the wait was not an attempt
    assert (raw["status"], raw["attempt"], raw["released"]) == ("completed", "2", "1")
    waiting = next(e for e in evs if e["type"] == "status" and e.get("reason") == "waiting_for_resource")
    assert waiting["waiting_for"]["resource"] == "openai:gpt-fake" and waiting["waiting_for"]["reason"] == "paused"
    assert 900 <= waiting["retry_in_ms"] <= 1000
    view = (await store.limiter.views(store.settings.resources))[0]
    assert view["totals"]["pauses"] == 1 and fake.create_calls == 2
