"""Traces, usage and cost: a real worker in burst mode, the API's GET /v1/jobs/{id}/trace and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fake_openai import FakeOpenAI
from http_server import AUTH_GLOBEX, asgi_client
from redis.asyncio import Redis
from test_worker import submit, types

from api.app import create_app
from compute.context import JobContext
from compute.errors import TransientError
from compute.registry import job_type
from compute.worker import Worker
from shared.job import Job
from shared.jobs import JobStore
from shared.settings import Settings

pytestmark = pytest.mark.anyio

#: gpt-4o-mini: 0.15 input, 0.075 cached input, 0.6 output USD per 1M tokens (shared/data/prices.json)
CALL_NUSD = round((800 * 0.15 + 200 * 0.075 + 100 * 0.6) * 1000)


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@job_type("test.paid_steps", max_attempts=2, retry_base_s=0.01)
async def paid_steps(ctx: JobContext) -> Any:
    async def part(i: int) -> int:
        # the call is paid first; attempt 1 then fails inside part 3, so attempt 2 pays for it again
        await ctx.record_usage(model="gpt-4o-mini", input_tokens=1000, cached_tokens=200, output_tokens=100,
                               latency_ms=40, request_id=f"req-{ctx.attempt}-{i}")
        if i == 3 and ctx.attempt == 1:
            raise TransientError("the provider dropped the stream")
        return i

    return [await ctx.step("part", part, i) for i in range(1, 5)]


async def test_usage_and_cost_sum_over_attempts_and_the_trace_shows_what_was_replayed(
        redis: Redis, settings: Settings, client: httpx.AsyncClient) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, "test.paid_steps")
    await Worker(settings, redis, types(paid_steps)).run(burst=True)
    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "completed" and job["attempt"] == 2
    usage = job["usage"]
    # attempt 1 paid parts 1-3, attempt 2 paid part 3 again and part 4; replayed parts 1-2 cost nothing
    assert (usage["calls"], usage["input_tokens"], usage["cached_tokens"], usage["output_tokens"]) == (
        5, 5000, 1000, 500)
    assert usage["cost_usd"] == pytest.approx(5 * CALL_NUSD / 1e9)
    first, second = usage["attempts"]
    assert (first["attempt"], first["calls"], first["repaid"]) == (1, 3, None)
    assert (second["attempt"], second["calls"]) == (2, 2)
    assert second["repaid"] == {"calls": 1, "tokens": 1100, "cost_usd": pytest.approx(CALL_NUSD / 1e9)}

    trace = (await client.get(f"/v1/jobs/{job_id}/trace")).json()
    assert trace["job_id"] == job_id
    spans = {s["id"]: s for s in trace["spans"]}
    assert spans["job"]["kind"] == "job" and spans["job"]["status"] == "ok"
    assert spans["job"]["cost_usd"] == pytest.approx(usage["cost_usd"])
    assert (spans["attempt:1"]["status"], spans["attempt:2"]["status"]) == ("error", "ok")
    assert {s["status"] for s in trace["spans"] if s["kind"] == "step" and s["attempt"] == 2} == {"replayed", "ok"}
    assert [spans[f"2:step:part#{i}"]["status"] for i in range(1, 5)] == ["replayed", "replayed", "ok", "ok"]
    assert spans["2:step:part#1"]["cost_usd"] == 0 and spans["2:step:part#1"]["usage"] is None
    assert spans["1:step:part#3"]["status"] == "error"
    calls = [s for s in trace["spans"] if s["kind"] == "llm"]
    assert len(calls) == 5 and all(s["name"] == "gpt-4o-mini" for s in calls)
    call = next(s for s in calls if s["parent_id"] == "2:step:part#4")
    assert call["usage"] == {"input_tokens": 1000, "cached_tokens": 200, "output_tokens": 100}
    assert call["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert call["attributes"]["request_id"] == "req-2-4" and call["attributes"]["latency_ms"] == 40
    assert call["cost_usd"] == pytest.approx(CALL_NUSD / 1e9)
    for span in trace["spans"]:
        assert set(span) == {"id", "parent_id", "kind", "name", "status", "attempt", "start", "end",
                             "attributes", "usage", "cost_usd"}
        assert span["parent_id"] is None or span["parent_id"] in spans

    metrics = (await client.get("/metrics")).text
    assert 'backlane_model_calls_total{model="gpt-4o-mini",type="test.paid_steps"} 5.0' in metrics
    tokens = 'backlane_model_tokens_total{kind="input_tokens",model="gpt-4o-mini",type="test.paid_steps"} 5000.0'
    assert tokens in metrics
    cost_line = next(line for line in metrics.splitlines() if line.startswith("backlane_cost_usd_total{"))
    assert float(cost_line.split()[-1]) == pytest.approx(5 * CALL_NUSD / 1e9)


async def test_another_tenant_s_trace_is_not_found(redis: Redis, settings: Settings,
                                                   client: httpx.AsyncClient) -> None:
    job_id = await submit(JobStore(redis, settings), "demo.agent", topic="x")
    assert (await client.get(f"/v1/jobs/{job_id}/trace")).status_code == 200
    other = await client.get(f"/v1/jobs/{job_id}/trace", headers=AUTH_GLOBEX)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


async def test_calls_through_ctx_openai_are_recorded_streaming_included(
        redis: Redis, settings: Settings, fake: FakeOpenAI, client: httpx.AsyncClient) -> None:
    fake.controls.cached_tokens = 1024
    lane = Settings.from_env({"BACKLANE_REDIS_URL": settings.redis_url or "", "BACKLANE_HEARTBEAT_S": "0.2",
                              "BACKLANE_LEASE_S": "1", "BACKLANE_OPENAI_BASE_URL": fake.base_url,
                              "BACKLANE_OPENAI_API_KEY": "test"})

    @job_type("test.uses_openai", max_attempts=1)
    async def uses_openai(ctx: JobContext) -> Any:
        async def streamed() -> str:
            text = ""
            stream = await ctx.openai.responses.create(model="gpt-fake", input="hello", stream=True)
            async for event in stream:
                if event.type == "response.output_text.delta":
                    text += event.delta
                    await ctx.output(event.delta)
            return text

        async def plain() -> str:
            response = await ctx.openai.responses.create(model="gpt-fake", input="again")
            return response.output_text

        return [await ctx.step("streamed", streamed), await ctx.step("plain", plain)]

    store = JobStore(redis, lane)
    job_id = await submit(store, "test.uses_openai")
    await Worker(lane, redis, types(uses_openai)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed", raw
    usage = Job.from_hash(raw).usage
    assert usage is not None and usage["calls"] == 2 and usage["cached_tokens"] == 2 * 1024
    assert usage["cost_usd"] is None and usage["unpriced_models"] == ["gpt-fake"]  # no price: never guessed
    trace = (await client.get(f"/v1/jobs/{job_id}/trace")).json()
    calls = {s["parent_id"]: s for s in trace["spans"] if s["kind"] == "llm"}
    assert set(calls) == {"1:step:streamed#1", "1:step:plain#1"}
    for call in calls.values():
        assert call["name"] == "gpt-fake" and call["usage"]["input_tokens"] > 0
        assert call["attributes"]["request_id"] and call["attributes"]["priced"] is False
        assert call["cost_usd"] is None


def test_spans_that_started_in_the_same_millisecond_keep_their_occurrence_order() -> None:
    """Replayed steps are recorded within one millisecond: the trace orders them by occurrence, as
    numbers (#2 before #10), whatever order Redis hands the hash back in."""
    from api.traces import _natural

    ids = ["2:step:part#10", "2:step:part#2", "2:step:part#1"]
    assert sorted(ids, key=_natural) == ["2:step:part#1", "2:step:part#2", "2:step:part#10"]
