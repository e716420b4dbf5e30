"""Durable steps (``ctx.step``), through a real worker in burst mode against a real redis-server."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from test_worker import events, output_of_newest_attempt, submit, types

from compute.context import JobContext
from compute.errors import InputError, TransientError
from compute.registry import job_type
from compute.steps import Retry
from compute.types.demo_agent import agent_text
from compute.worker import Worker
from shared.jobs import JobStore
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio


def steps_of(evs: list[dict[str, Any]]) -> list[tuple[int, str, int, str]]:
    return [(e["attempt"], e["name"], e["occurrence"], e["state"]) for e in evs if e["type"] == "step"]


async def test_a_later_attempt_gets_completed_steps_back_without_calling_them(redis: Redis, settings: Settings) -> None:
    calls: dict[str, int] = {}

    async def work(name: str, n: int) -> dict[str, Any]:
        calls[name] = calls.get(name, 0) + 1
        return {"name": name, "n": n}

    def sync_work(word: str) -> str:  # a sync function runs too (in a thread)
        calls["sync"] = calls.get("sync", 0) + 1
        return word.upper()

    @job_type("test.steps", max_attempts=3, retry_base_s=0.01)
    async def handler(ctx: JobContext) -> Any:
        first = await ctx.step("fetch", work, "fetch", 1)
        await ctx.output("between ")
        loud = await ctx.step("shout", sync_work, "hey")
        again = [await ctx.step("item", work, "item", i) for i in range(2)]  # one name, two occurrences
        if ctx.attempt == 1:
            raise TransientError("the network blinked after the steps")
        return {"first": first, "loud": loud, "again": again}

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.steps")
    await Worker(settings, redis, types(handler)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    assert calls == {"fetch": 1, "sync": 1, "item": 2}  # attempt 2 called none of them
    assert loads(raw["result"]) == {"first": {"name": "fetch", "n": 1}, "loud": "HEY",
                                    "again": [{"name": "item", "n": 0}, {"name": "item", "n": 1}]}
    evs = await events(store, job_id)
    assert steps_of(evs) == [
        (1, "fetch", 1, "started"), (1, "fetch", 1, "completed"), (1, "shout", 1, "started"),
        (1, "shout", 1, "completed"), (1, "item", 1, "started"), (1, "item", 1, "completed"),
        (1, "item", 2, "started"), (1, "item", 2, "completed"),
        (2, "fetch", 1, "replayed"), (2, "shout", 1, "replayed"), (2, "item", 1, "replayed"),
        (2, "item", 2, "replayed"),
    ]
    assert all("duration_ms" in e for e in evs if e["type"] == "step" and e["state"] != "started")
    assert output_of_newest_attempt(evs) == "between "
    assert await redis.exists(store.keys.steps(job_id)) == 0  # a finished job drops its stored steps


async def test_the_output_of_a_replayed_step_is_emitted_again(redis: Redis, settings: Settings) -> None:
    async def write(ctx: JobContext, text: str) -> int:
        for word in text.split():
            await ctx.output(word + " ")
        return len(text)

    @job_type("test.replay_output", max_attempts=2, retry_base_s=0.01)
    async def handler(ctx: JobContext) -> Any:
        await ctx.step("intro", write, ctx, "once upon a time")
        await ctx.step("body", write, ctx, "there was a worker")
        if ctx.attempt == 1:
            raise TransientError("lost after two steps")
        await ctx.step("end", write, ctx, "the end")
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.replay_output")
    await Worker(settings, redis, types(handler)).run(burst=True)
    evs = await events(store, job_id)
    assert output_of_newest_attempt(evs) == "once upon a time there was a worker the end "


async def test_a_transient_failure_retries_only_that_step(redis: Redis, settings: Settings) -> None:
    calls: list[str] = []

    async def ok(name: str) -> str:
        calls.append(name)
        return name

    async def flaky() -> str:
        calls.append("flaky")
        if calls.count("flaky") < 3:
            raise TransientError("503 from the provider")
        return "finally"

    @job_type("test.flaky_step", max_attempts=1)
    async def handler(ctx: JobContext) -> Any:
        await ctx.step("a", ok, "a")
        value = await ctx.step("b", flaky, retry=Retry(tries=3, backoff_s=0.01))
        await ctx.step("c", ok, "c")
        return value

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.flaky_step")
    await Worker(settings, redis, types(handler)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "1"
    assert calls == ["a", "flaky", "flaky", "flaky", "c"]
    states = [(e["name"], e["state"]) for e in await events(store, job_id) if e["type"] == "step"]
    assert states == [("a", "started"), ("a", "completed"), ("b", "started"), ("b", "retrying"),
                      ("b", "retrying"), ("b", "completed"), ("c", "started"), ("c", "completed")]


async def test_a_step_out_of_tries_fails_the_job_by_its_class(redis: Redis, settings: Settings) -> None:
    async def refuse() -> None:
        raise InputError("the document is empty")

    @job_type("test.refused_step", max_attempts=3)
    async def handler(ctx: JobContext) -> Any:
        return await ctx.step("parse", refuse, retry=3)

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.refused_step")
    await Worker(settings, redis, types(handler)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    assert loads(raw["error"])["class"] == "input"  # not retried: an input failure is not transient
    states = [e["state"] for e in await events(store, job_id) if e["type"] == "step"]
    assert states == ["started", "failed"]


async def test_a_step_past_its_timeout_is_a_transient_failure(redis: Redis, settings: Settings) -> None:
    import asyncio

    async def slow() -> None:
        await asyncio.sleep(5)

    @job_type("test.slow_step", max_attempts=1)
    async def handler(ctx: JobContext) -> Any:
        return await ctx.step("slow", slow, timeout_s=0.05, retry=Retry(tries=2, backoff_s=0))

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.slow_step")
    await Worker(settings, redis, types(handler)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    error = loads(raw["error"])
    assert error["class"] == "transient" and "step 'slow' ran longer than its timeout of 0.05 s" in error["message"]
    first = [e["state"] for e in await events(store, job_id) if e["type"] == "step" and e["attempt"] == 1]
    assert first == ["started", "retrying", "failed"]


async def test_a_step_result_that_is_not_json_fails_the_attempt_naming_the_step(
        redis: Redis, settings: Settings) -> None:
    async def when() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    @job_type("test.not_json", max_attempts=3)
    async def handler(ctx: JobContext) -> Any:
        return await ctx.step("clock", when)

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.not_json")
    await Worker(settings, redis, types(handler)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    error = loads(raw["error"])
    assert error["class"] == "internal" and "step 'clock' returned a value that is not JSON" in error["message"]


async def test_demo_agent_retries_a_failing_section_inside_the_attempt(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, "demo.agent", topic="tides", sections=2, tokens_per_step=5, delay_ms=0,
                          fail={"step": "section#2", "times": 2, "class": "transient"})
    await Worker(settings, redis, types()).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "1"
    evs = await events(store, job_id)
    assert output_of_newest_attempt(evs) == agent_text("tides", 2, 5)
    states = [(e["name"], e["occurrence"], e["state"]) for e in evs if e["type"] == "step"
              and e["state"] != "started"]
    assert states == [("research", 1, "completed"), ("outline", 1, "completed"), ("section", 1, "completed"),
                      ("section", 2, "retrying"), ("section", 2, "retrying"), ("section", 2, "completed")]
