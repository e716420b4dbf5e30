"""``POST /v1/webhooks/openai`` over a real socket, with deliveries signed exactly as OpenAI signs
them and the upstream objects (their ``metadata.job_id``) held by the fake upstream."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from fake_openai import FakeOpenAI, HttpFault
from fake_openai import webhooks as wh
from http_server import Served, SimWorker, serve_in_thread

from api.app import create_app
from shared.jobs import JobStore, NewJob
from shared.serialization import dumps, now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio
TYPE = "openai.responses"
SECRET = wh.new_secret()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def served(settings: Settings, fake: FakeOpenAI) -> Iterator[Served]:
    configured = dataclasses.replace(
        settings, openai_webhook_secret=SECRET, openai_base_url=fake.base_url, openai_api_key="test",
    )
    with serve_in_thread(create_app(configured)) as served:
        yield served


@pytest.fixture
async def upstream(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client:
        yield client


class Job:
    def __init__(self, store: JobStore, job_id: str, token: int | None) -> None:
        self.store, self.id, self.token = store, job_id, token

    async def status(self) -> str:
        raw = await self.store.load(self.id)
        assert raw is not None
        return raw["status"]


async def running_job(
    store: JobStore, upstream: openai.AsyncOpenAI, *, current: bool = True, indexed: bool = False,
) -> tuple[Job, str]:
    """A running openai.responses job whose checkpoint names its upstream response; ``indexed``:
    the response id is in the worker's index too (the worker's ``ctx.index_upstream``)."""
    created = await store.create(NewJob(tenant="acme", type=TYPE, input={"model": "m", "input": "x"}, max_attempts=3))
    response = await upstream.responses.create(
        model="m", input="x", background=True, metadata={"job_id": created.job_id},
    )
    token = await SimWorker(store).start(created.job_id, TYPE)
    k = store.keys
    checkpoint = {"mode": "background", "response_id": response.id if current else "resp_older"}
    await store.scripts.run(
        "checkpoint", [k.job(created.job_id), k.checkpoint(created.job_id),
                                         k.of_job(created.job_id).stats], [token, dumps(checkpoint)],
    )
    if indexed:
        await store.redis.set(k.openai_object(response.id), created.job_id, px=store.retention_ms)
    return Job(store, created.job_id, token), response.id


async def post(served: Served, delivery: wh.Delivery) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{served.url}/v1/webhooks/openai", content=delivery.body, headers=delivery.headers)


async def stored(store: JobStore, unmatched: bool = False) -> int:
    k = store.keys
    return int(await store.redis.xlen(k.openai_webhooks_unmatched if unmatched else k.openai_webhooks))


async def test_a_signed_event_for_a_running_job_is_stored_and_left_to_its_worker(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    job, response_id = await running_job(store, upstream)
    answer = await post(served, wh.build(SECRET, "response.completed", response_id))
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "recorded" and answer.json()["job_id"] == job.id
    assert await job.status() == "running" and await stored(store) == 1
    (_, row), = await store.redis.xrange(store.keys.openai_webhooks)
    assert (row["type"], row["object_id"], row["job_id"]) == ("response.completed", response_id, job.id)


async def test_tampered_stale_unsigned_and_wrongly_keyed_deliveries_are_400_and_store_nothing(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    _, response_id = await running_job(store, upstream)
    good = wh.build(SECRET, "response.cancelled", response_id)
    tampered = wh.Delivery(good.headers, good.body.replace(b"response.cancelled", b"response.completed"))
    # a margin past the 300 s tolerance: the verifier reads the clock a moment later, and a second
    # boundary in between made a +301 s timestamp valid (a flaky accept)
    stale = wh.build(SECRET, "response.cancelled", response_id, timestamp=int(time.time()) - 330)
    future = wh.build(SECRET, "response.cancelled", response_id, timestamp=int(time.time()) + 330)
    unsigned = wh.Delivery({k: v for k, v in good.headers.items() if k != "webhook-signature"}, good.body)
    other_key = wh.build(wh.new_secret(), "response.cancelled", response_id)
    for delivery in (tampered, stale, future, unsigned, other_key):
        answer = await post(served, delivery)
        assert answer.status_code == 400, answer.text
    assert await stored(store) == 0
    assert await store.redis.keys(store.keys.openai_webhook_seen("*")) == []


async def test_a_duplicate_delivery_is_recognised_by_its_webhook_id(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    _, response_id = await running_job(store, upstream)
    delivery = wh.build(SECRET, "response.completed", response_id)
    assert (await post(served, delivery)).json()["outcome"] == "recorded"
    again = wh.build(SECRET, "response.completed", response_id, webhook_id=delivery.webhook_id)
    assert (await post(served, again)).json()["outcome"] == "duplicate"
    assert await stored(store) == 1


async def test_cancelled_upstream_cancels_the_job_through_the_status_table(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    job, response_id = await running_job(store, upstream)
    answer = await post(served, wh.build(SECRET, "response.cancelled", response_id))
    assert answer.json()["outcome"] == "requested"  # running: its worker is told and stops
    assert await store.redis.hget(store.keys.job(job.id), "cancel_requested") == "1"
    # a queued job (waiting out a back-off) is canceled at once
    queued, queued_response = await running_job(store, upstream)
    await store.transition(queued.id, TYPE, "queued", token=queued.token, ready_at_ms=now_ms() + 60_000)
    answer = await post(served, wh.build(SECRET, "response.cancelled", queued_response))
    assert answer.json()["outcome"] == "canceled" and await queued.status() == "canceled"


async def test_an_event_for_a_finished_job_is_recorded_and_changes_nothing(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    job, response_id = await running_job(store, upstream)
    await store.transition(job.id, TYPE, "completed", token=job.token, fields={"result": dumps({"ok": 1})})
    before = await store.read_events(job.id, None)
    answer = await post(served, wh.build(SECRET, "response.cancelled", response_id))
    assert answer.json()["outcome"] == "recorded" and "already completed" in answer.json()["detail"]
    assert await job.status() == "completed" and await store.read_events(job.id, None) == before
    assert await stored(store) == 1


async def test_a_queued_job_waiting_out_a_back_off_is_made_ready(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    job, response_id = await running_job(store, upstream)
    await store.transition(job.id, TYPE, "queued", token=job.token, ready_at_ms=now_ms() + 60_000)
    queue = store.keys.of_job(job.id).queue(TYPE)
    assert (await store.redis.zscore(queue, job.id) or 0) > now_ms() + 50_000
    answer = await post(served, wh.build(SECRET, "response.completed", response_id))
    assert answer.json()["outcome"] == "nudged" and await job.status() == "queued"
    assert (await store.redis.zscore(queue, job.id) or 0) <= now_ms()


async def test_unmatched_and_replaced_objects_are_kept_apart(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI,
) -> None:
    stray = await upstream.responses.create(model="m", input="x", background=True)  # no job_id metadata
    assert (await post(served, wh.build(SECRET, "response.completed", stray.id))).json()["outcome"] == "unmatched"
    unknown = wh.build(SECRET, "response.failed", "resp_unknown")
    assert (await post(served, unknown)).json()["outcome"] == "unmatched"
    assert await stored(store, unmatched=True) == 2
    job, replaced = await running_job(store, upstream, current=False)  # the job moved on to another response
    answer = await post(served, wh.build(SECRET, "response.cancelled", replaced))
    assert answer.json()["outcome"] == "not_current" and await job.status() == "running"
    assert await stored(store) == 3 and await stored(store, unmatched=True) == 2


async def test_the_fake_upstream_delivers_and_a_batch_event_correlates(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI, fake: FakeOpenAI,
) -> None:
    fake.controls.webhook_url, fake.controls.webhook_secret = f"{served.url}/v1/webhooks/openai", SECRET
    created = await store.create(NewJob(tenant="acme", type="openai.batch", input={"requests": []}, max_attempts=3))
    token = await SimWorker(store).start(created.job_id, "openai.batch")
    upload = await upstream.files.create(file=("in.jsonl", b'{"custom_id":"a","body":{"input":"x"}}\n'),
                                         purpose="batch")
    batch = await upstream.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h",
        metadata={"job_id": created.job_id},
    )
    k = store.keys
    await store.scripts.run("checkpoint", [k.job(created.job_id), k.checkpoint(created.job_id),
                                         k.of_job(created.job_id).stats],
                            [token, dumps({"file_id": upload.id, "batch_id": batch.id})])
    # blocks until the fake's delivery has been handled and stored
    ((_, ((_, row),)),) = await store.redis.xread({k.openai_webhooks: "0-0"}, block=4000)
    assert (row["type"], row["job_id"], row["outcome"]) == ("batch.completed", created.job_id, "recorded")


async def test_without_a_secret_deliveries_get_503_so_openai_retries(settings: Settings) -> None:
    with serve_in_thread(create_app(settings)) as served:
        answer = await post(served, wh.build(SECRET, "response.completed", "resp_1"))
    assert answer.status_code == 503 and "Retry-After" in answer.headers


async def test_the_workers_index_finds_the_job_without_asking_the_upstream(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI, fake: FakeOpenAI,
) -> None:
    job, response_id = await running_job(store, upstream, indexed=True)
    fake.controls.retrieve_faults = [HttpFault(500)]  # would fail a metadata lookup
    answer = await post(served, wh.build(SECRET, "response.completed", response_id))
    assert (answer.json()["outcome"], answer.json()["job_id"]) == ("recorded", job.id)
    assert fake.retrieve_calls == 0


async def test_a_failed_upstream_lookup_is_a_503_and_the_redelivery_is_handled(
    served: Served, store: JobStore, upstream: openai.AsyncOpenAI, fake: FakeOpenAI,
) -> None:
    """Bug: when the upstream lookup of an event's job failed (5xx, timeout) the event was filed
    as unmatched with its webhook-id kept, so OpenAI's redeliveries were dropped as duplicates.
    Cause: the lookup error was an "unmatched" answer (200) and the dedupe key stayed set. Fix:
    the worker's index is read first; a failed metadata lookup raises 503 and forgets the
    webhook-id, so the redelivery is handled."""
    job, response_id = await running_job(store, upstream)  # not indexed: the metadata fallback
    fake.controls.retrieve_faults = [HttpFault(502, message="bad gateway")]
    delivery = wh.build(SECRET, "response.completed", response_id)
    answer = await post(served, delivery)
    assert answer.status_code == 503 and "bad gateway" in answer.json()["error"]["message"]
    assert "Retry-After" in answer.headers
    assert await stored(store) == 0 and await stored(store, unmatched=True) == 0
    assert await store.redis.get(store.keys.openai_webhook_seen(delivery.webhook_id)) is None
    again = await post(served, delivery)  # OpenAI's redelivery: same webhook-id, same body
    assert (again.status_code, again.json()["outcome"], again.json()["job_id"]) == (200, "recorded", job.id)
