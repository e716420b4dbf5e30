"""The OpenAI lane run by the real worker against a real redis-server and the fake upstream:
streamed tokens, usage, resume after a cut stream and after SIGKILL of a worker process (no
second create), Retry-After, cancel, the batch lane."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest
from fake_openai import FakeOpenAI, HttpFault, Outcome
from fake_openai import webhooks as wh
from http_server import serve_in_thread
from redis.asyncio import Redis

from api.app import create_app
from compute.registry import load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.job import Job
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio
TYPES = load(["compute.types.openai_responses", "compute.types.openai_batch"])
PROMPT = {"model": "gpt-fake", "input": "hello"}
EXPECTED = "Reply to hello: " + " ".join(f"w{i}" for i in range(12))


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def lane(settings: Settings, fake: FakeOpenAI) -> Settings:
    return dataclasses.replace(settings, openai_base_url=fake.base_url, openai_api_key="test")


@pytest.fixture
async def store(redis: Redis, lane: Settings) -> AsyncIterator[JobStore]:
    yield JobStore(redis, lane)


async def create(store: JobStore, spec: dict[str, Any], job_type: str = "openai.responses") -> str:
    new = NewJob(tenant="acme", type=job_type, input=spec, max_attempts=3)
    return (await store.create(new)).job_id


async def burst(store: JobStore) -> None:
    await Worker(store.settings, store.redis, TYPES).run(burst=True)


async def events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]


def parse_at(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def output(evs: list[dict[str, Any]], attempt: int) -> str:
    return "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == attempt)


async def wait_for(check: Any, limit_s: float, what: str) -> Any:
    """Polls state another process changes (a subprocess, the fake's thread)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


async def test_tokens_stream_and_usage_with_cached_tokens_is_recorded(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.cached_tokens = 1920
    job_id = await create(store, PROMPT)
    await burst(store)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    evs = await events(store, job_id)
    assert output(evs, 1) == EXPECTED and sum(e["type"] == "output" for e in evs) == 15
    usage = Job.from_hash(raw).usage
    assert usage is not None and usage["calls"] == 1
    assert (usage["input_tokens"], usage["output_tokens"], usage["cached_tokens"]) == (2048, 15, 1920)
    assert usage["unpriced_models"] == ["gpt-fake"] and usage["cost_usd"] is None  # no price: never guessed
    result = loads(raw["result"])
    assert result == {"response_id": fake.only_response().id, "output_text": EXPECTED, "model": "gpt-fake",
                      "status": "completed"}
    assert any(e["type"] == "progress" and e["message"] == "OpenAI response in_progress" for e in evs)
    assert fake.create_bodies[0]["metadata"] == {"job_id": job_id}
    assert fake.create_bodies[0]["prompt_cache_key"] == "backlane:openai.responses:acme"
    # the index an incoming webhook finds the job by, kept for the retention
    index = store.keys.openai_object(fake.only_response().id)
    assert await store.redis.get(index) == job_id
    assert 0 < await store.redis.pttl(index) <= store.retention_ms


async def test_a_dropped_upstream_stream_is_resumed_with_starting_after(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.drops = [8, 4]
    job_id = await create(store, PROMPT)
    await burst(store)
    evs = await events(store, job_id)
    assert output(evs, 1) == EXPECTED and (await store.load(job_id) or {})["attempt"] == "1"
    assert fake.create_calls == 1 and fake.resume_after == [7, 11]


async def test_rate_limit_retries_after_the_providers_retry_after(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.create_faults = [HttpFault(429, code="rate_limit_exceeded", retry_after="1", type="requests")]
    job_id = await create(store, PROMPT)
    await burst(store)
    raw = await store.load(job_id)
    assert raw is not None and (raw["status"], raw["attempt"]) == ("completed", "2")
    statuses = [e for e in await events(store, job_id) if e["type"] == "status"]
    retry = next(e for e in statuses if e["status"] == "queued" and e["attempt"] == 1)
    assert retry["error"]["class"] == "transient" and "429" in retry["error"]["message"]
    again = next(e for e in statuses if e["status"] == "running" and e["attempt"] == 2)
    waited = (parse_at(again["at"]) - parse_at(retry["at"])).total_seconds()
    assert 0.9 <= waited < 1.45, waited  # Retry-After (1 s) wins over the type's back-off (2 s ± 25 %)
    assert fake.create_calls == 2
    assert output(await events(store, job_id), 2) == EXPECTED


async def test_cancelling_the_job_cancels_the_upstream_response(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.token_delay_s = 0.05
    job_id = await create(store, PROMPT)
    worker = asyncio.create_task(burst(store))

    async def streaming() -> bool:
        return sum(e["type"] == "output" for e in await events(store, job_id)) >= 3

    await wait_for(streaming, 10, "the job to stream")
    assert (await store.cancel(job_id, "openai.responses")).outcome == "requested"
    await worker
    assert (await store.load(job_id) or {})["status"] == "canceled"
    upstream = fake.only_response()
    assert fake.cancel_calls == [upstream.id] and upstream.status == "cancelled"


def start_worker(lane: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({
        "BACKLANE_REDIS_URL": lane.redis_url or "", "BACKLANE_OPENAI_BASE_URL": lane.openai_base_url or "",
        "BACKLANE_OPENAI_API_KEY": "test", "BACKLANE_HEARTBEAT_S": "0.2", "BACKLANE_LEASE_S": "1",
        "BACKLANE_LOG_LEVEL": "WARNING",
    })
    return subprocess.Popen([sys.executable, "-m", "backlane", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def kill_mid_stream(store: JobStore, job_id: str, lane: Settings, outputs: int) -> dict[str, Any]:
    """A worker process streams the job until ``outputs`` outputs are in, then gets SIGKILL; the
    supervisor restarts the job after its lease expires. Returns the checkpoint at the kill."""
    victim = start_worker(lane)
    try:
        async def streamed() -> bool:
            evs = await events(store, job_id)
            return sum(e["type"] == "output" for e in evs) >= outputs and bool(await store.checkpoint(job_id))

        await wait_for(streamed, 20, "the worker process to stream")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    checkpoint: dict[str, Any] = await store.checkpoint(job_id)
    supervisor = Supervisor(store.settings, store.redis, webhooks=False)

    async def requeued() -> bool:
        await supervisor.tick()
        return (await store.load(job_id) or {}).get("status") == "queued"

    await wait_for(requeued, 10, "the supervisor to requeue the job")
    return checkpoint


async def test_sigkill_mid_stream_resumes_with_no_second_create(
    store: JobStore, fake: FakeOpenAI, lane: Settings,
) -> None:
    fake.controls.token_delay_s = 0.02
    job_id = await create(store, {**PROMPT, "max_output_tokens": 120})
    checkpoint = await kill_mid_stream(store, job_id, lane, outputs=30)
    assert not fake.only_response().finished  # it runs on upstream while no worker reads it
    await burst(store)
    raw = await store.load(job_id)
    assert raw is not None and (raw["status"], raw["attempt"]) == ("completed", "2")
    expected = "Reply to hello: " + " ".join(f"w{i}" for i in range(120))
    evs = await events(store, job_id)
    assert output(evs, 2) == expected == loads(raw["result"])["output_text"]
    assert fake.create_calls == 1 and fake.resume_after == [checkpoint["cursor"]]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    first = output(evs, 1)
    assert expected.startswith(first) and len(first) >= len(checkpoint["text"]) > 0


async def test_the_batch_lane_runs_through_the_worker(store: JobStore, fake: FakeOpenAI) -> None:
    fake.controls.batch_request_delay_s = 0.02
    requests = [{"custom_id": cid, "body": {"model": "gpt-fake", "input": cid}} for cid in ("a", "b", "c")]
    job_id = await create(store, {"requests": requests, "poll_interval_s": 0.01}, "openai.batch")
    await burst(store)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    result = loads(raw["result"])
    assert [r["custom_id"] for r in result["results"]] == ["a", "b", "c"]
    assert all(r["output_text"].startswith(f"Reply to {r['custom_id']}") for r in result["results"])
    fractions = [e["fraction"] for e in await events(store, job_id) if e["type"] == "progress" and "fraction" in e]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    usage = Job.from_hash(raw).usage
    assert usage is not None and usage["input_tokens"] == 3 * 2048
    assert await store.redis.get(store.keys.openai_object(result["batch_id"])) == job_id


async def test_the_compatible_api_reads_one_gap_free_sequence_across_a_killed_worker(
    store: JobStore, fake: FakeOpenAI, lane: Settings,
) -> None:
    """The official SDK as the client: read part, close, resume with starting_after and keep the
    resumed stream open while the worker streaming the response is SIGKILLed and replaced."""
    fake.controls.token_delay_s = 0.02
    with serve_in_thread(create_app(lane)) as served:
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="key-acme", max_retries=0,
                                      _strict_response_validation=True) as client:
            stream = await client.responses.create(
                model="gpt-fake", input="hello", max_output_tokens=120, background=True, stream=True,
            )
            got = [await stream.__anext__() for _ in range(2)]
            await stream.close()
            response_id = got[0].response.id
            job_id = response_id.removeprefix("resp_")
            resumed = await client.responses.retrieve(response_id, stream=True, starting_after=1)

            async def read_rest() -> list[Any]:
                return [event async for event in resumed]

            reader = asyncio.create_task(read_rest())
            await kill_mid_stream(store, job_id, lane, outputs=30)
            await burst(store)
            events = got + await reader
    assert [e.sequence_number for e in events] == list(range(len(events)))
    expected = "Reply to hello: " + " ".join(f"w{i}" for i in range(120))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type == "response.completed" and text == events[-1].response.output_text == expected
    assert fake.create_calls == 1 and len(fake.resume_after) == 1
    assert (await store.load(job_id) or {})["attempt"] == "2"


async def test_three_responses_stuck_in_queued_end_completed_and_their_webhooks_are_ignored(
    store: JobStore, fake: FakeOpenAI, lane: Settings,
) -> None:
    """Bug: after 2 resubmits a job whose responses stayed stuck in queued never recovered (every
    later attempt cancelled the same response again and never created a new one), and with OpenAI
    webhooks configured the ``response.cancelled`` of Backlane's own cancel canceled the job.
    Cause: the handler cancelled the stuck response, then failed while the checkpoint still named
    it (status queued, the old created_ms). Fix: the checkpoint forgets the response and lists it
    as replaced before the cancel; past MAX_RESUBMITS in one attempt the attempt fails as transient
    and the next attempt submits afresh; the webhook route answers "replaced" for listed ids."""
    secret = wh.new_secret()
    lane = dataclasses.replace(lane, openai_queued_timeout_s=0.2, openai_webhook_secret=secret)
    fake.controls.outcomes = [Outcome("stuck_queued") for _ in range(3)]
    with serve_in_thread(create_app(lane)) as served:
        fake.controls.webhook_url, fake.controls.webhook_secret = f"{served.url}/v1/webhooks/openai", secret
        job_id = await create(store, PROMPT)
        await Worker(lane, store.redis, TYPES).run(burst=True)

        async def cancelled_webhooks() -> list[dict[str, Any]]:
            rows = await store.redis.xrange(store.keys.openai_webhooks)
            found = [row for _, row in rows if row["type"] == "response.cancelled"]
            return found if len(found) == 3 else []

        rows = await wait_for(cancelled_webhooks, 10, "the three response.cancelled webhooks")
    raw = await store.load(job_id)
    assert raw is not None and (raw["status"], raw["attempt"]) == ("completed", "2")
    stuck = [r for r in fake.responses.values() if r.status == "cancelled"]
    assert len(stuck) == 3 and fake.create_calls == 4 and sorted(fake.cancel_calls) == sorted(r.id for r in stuck)
    assert {row["object_id"] for row in rows} == {r.id for r in stuck}
    assert {(row["job_id"], row["outcome"]) for row in rows} == {(job_id, "replaced")}
    retry = next(e for e in await events(store, job_id) if e["type"] == "status" and e["status"] == "queued"
                 and e["attempt"] == 1)
    assert retry["error"]["class"] == "transient" and "stuck in queued 3 times" in retry["error"]["message"]
    assert output(await events(store, job_id), 2) == EXPECTED


async def test_metrics_report_the_cached_token_ratio_per_type(
    store: JobStore, fake: FakeOpenAI, lane: Settings,
) -> None:
    fake.controls.cached_tokens = 1920
    await create(store, PROMPT)
    await burst(store)
    fake.controls.cached_tokens = 512
    requests = [{"custom_id": cid, "body": {"model": "gpt-fake", "input": cid}} for cid in ("a", "b")]
    await create(store, {"requests": requests, "poll_interval_s": 0.01}, "openai.batch")
    await burst(store)
    with serve_in_thread(create_app(lane)) as served:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{served.url}/metrics")).text
    ratios = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("backlane_cached_token_ratio{"))
    assert {k: float(v) for k, v in ratios.items()} == {
        'backlane_cached_token_ratio{type="openai.responses"}': 1920 / 2048,
        'backlane_cached_token_ratio{type="openai.batch"}': 1024 / 4096,
    }


async def test_the_compatible_api_cancels_a_job_the_real_worker_runs(
    store: JobStore, fake: FakeOpenAI, lane: Settings,
) -> None:
    fake.controls.token_delay_s = 0.05
    with serve_in_thread(create_app(lane)) as served:
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="key-acme", max_retries=0,
                                      _strict_response_validation=True) as client:
            created = await client.responses.create(model="gpt-fake", input="hello", background=True)
            job_id = created.id.removeprefix("resp_")
            worker = asyncio.create_task(burst(store))

            async def streaming() -> bool:
                return sum(e["type"] == "output" for e in await events(store, job_id)) >= 3

            await wait_for(streaming, 10, "the job to stream")
            cancelled = await client.responses.cancel(created.id)
            await worker
            polled = await client.responses.retrieve(created.id)
    assert cancelled.status == polled.status == "cancelled"
    assert (await store.load(job_id) or {})["status"] == "canceled"
    upstream = fake.only_response()
    assert fake.cancel_calls == [upstream.id] and upstream.status == "cancelled"
