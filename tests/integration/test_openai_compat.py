"""The OpenAI-compatible background API, driven by the official SDK (strict validation on) over a
real socket. Here a simulated worker writes the job's events through the real scripts, so every
shape of job stream (restarts included) can be set up exactly; ``test_openai_worker.py`` runs the
real worker against the fake upstream."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import openai
import pytest
from http_server import Served, SimWorker, serve_in_thread

from api.app import create_app
from shared.jobs import JobStore
from shared.serialization import dumps
from shared.settings import Settings

pytestmark = pytest.mark.anyio
TYPE = "openai.responses"
WORDS = [f"w{i} " for i in range(20)]
TEXT = "".join(WORDS)


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with serve_in_thread(create_app(dataclasses.replace(settings, keepalive_s=0.2))) as served:
        yield served


@pytest.fixture
async def client(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{served.url}/v1", api_key="key-acme", max_retries=0, _strict_response_validation=True,
    ) as c:
        yield c


def job_id(response_id: str) -> str:
    return response_id.removeprefix("resp_")


async def finish(store: JobStore, jid: str, token: int, text: str, *, cached: int = 0) -> None:
    result = {"response_id": "up_1", "output_text": text, "model": "gpt-fake", "status": "completed"}
    usage = {"input_tokens": 2048, "output_tokens": len(WORDS), "cached_tokens": cached}
    outcome = await store.transition(
        jid, TYPE, "completed", token=token, event={"result": result},
        fields={"result": dumps(result), "usage": dumps(usage)},
    )
    assert outcome.ok


async def restart(store: JobStore, worker: SimWorker, jid: str, token: int) -> int:
    """The attempt is lost and the job starts again (as after a worker was killed)."""
    outcome = await store.transition(jid, TYPE, "queued", token=token, event={"reason": "worker lost"})
    assert outcome.ok
    return await worker.start(jid, TYPE)


def deltas(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def test_stream_read_part_close_resume_rebuilds_the_text(client: openai.AsyncOpenAI, store: JobStore) -> None:
    stream = await client.responses.create(
        model="gpt-fake", input="hello", background=True, stream=True, metadata={"team": "a"},
    )
    first = await stream.__anext__()
    assert first.type == "response.created" and first.response.status == "queued"
    jid = job_id(first.response.id)
    raw = await store.load(jid)
    assert raw is not None and raw["type"] == TYPE and '"background"' not in raw["input"]
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    await worker.output(jid, token, *WORDS[:8])
    got = [first]
    while len(got) < 8:
        got.append(await stream.__anext__())
    await stream.close()  # the client goes away mid-response
    await worker.output(jid, token, *WORDS[8:])
    await finish(store, jid, token, TEXT, cached=1920)
    resumed = await client.responses.retrieve(first.response.id, stream=True, starting_after=got[-1].sequence_number)
    rest = [e async for e in resumed]
    events = got + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert rest[-1].type == "response.completed"
    final = rest[-1].response
    assert deltas(events) == final.output_text == TEXT
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 1920
    assert final.metadata == {"team": "a"}


async def test_a_pause_past_the_keep_alive_does_not_break_the_official_client(
    client: openai.AsyncOpenAI, store: JobStore,
) -> None:
    """Bug: a stream that paused longer than the keep-alive interval (a reasoning model thinking)
    broke the official SDK with a JSONDecodeError. Cause: the compatible stream sent ``id:`` lines;
    the SDK's SSE decoder keeps the last id, and a ``: keep-alive`` comment then makes it dispatch an
    event with empty data, which it parses as JSON. Fix: the compatible stream carries no ``id:``
    lines, as OpenAI's own streams do (resume is ``starting_after``)."""
    stream = await client.responses.create(model="gpt-fake", input="x", background=True, stream=True)
    first = await stream.__anext__()
    jid = job_id(first.response.id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    await worker.output(jid, token, *WORDS[:5])
    got = [first]
    while deltas(got) != "".join(WORDS[:5]):
        got.append(await stream.__anext__())
    await asyncio.sleep(1.0)  # five keep-alive intervals (0.2 s) with nothing to send
    await worker.output(jid, token, *WORDS[5:])
    await finish(store, jid, token, TEXT)
    got += [e async for e in stream]
    assert [e.sequence_number for e in got] == list(range(len(got)))
    assert deltas(got) == got[-1].response.output_text == TEXT


async def test_a_restarted_job_reads_as_one_gap_free_sequence(client: openai.AsyncOpenAI, store: JobStore) -> None:
    created = await client.responses.create(model="gpt-fake", input="x", background=True, stream=True)
    first = await created.__anext__()
    await created.close()
    jid = job_id(first.response.id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    await worker.output(jid, token, *WORDS[:9])
    token = await restart(store, worker, jid, token)
    # the new attempt re-emits what its checkpoint kept (6 words), then carries on from there
    await worker.output(jid, token, "".join(WORDS[:6]), *WORDS[6:])
    await finish(store, jid, token, TEXT)
    # read it all in several pieces, resuming each time after the last event seen
    events: list[Any] = []
    while not events or events[-1].type != "response.completed":
        after = events[-1].sequence_number if events else -1
        stream = await client.responses.retrieve(first.response.id, stream=True, starting_after=after)
        async for event in stream:
            events.append(event)
            if len(events) % 7 == 0:
                break
        await stream.close()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert deltas(events) == events[-1].response.output_text == TEXT
    assert sum(e.type == "response.in_progress" for e in events) == 1


async def test_polling_maps_the_job_status(client: openai.AsyncOpenAI, store: JobStore) -> None:
    created = await client.responses.create(model="gpt-fake", input="x", background=True)
    assert created.status == "queued" and created.output == []
    jid = job_id(created.id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    assert (await client.responses.retrieve(created.id)).status == "in_progress"
    await worker.output(jid, token, TEXT)
    await finish(store, jid, token, TEXT)
    done = await client.responses.retrieve(created.id)
    assert (done.status, done.output_text, done.model) == ("completed", TEXT, "gpt-fake")
    assert done.usage is not None and done.usage.output_tokens == len(WORDS)


async def test_failed_job_reads_as_a_failed_response(client: openai.AsyncOpenAI, store: JobStore) -> None:
    created = await client.responses.create(model="gpt-fake", input="x", background=True, stream=True)
    first = await created.__anext__()
    jid = job_id(first.response.id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    error = {"class": "policy", "message": "the model refused", "retryable": False, "attempt": 1}
    await store.transition(jid, TYPE, "failed", token=token, event={"error": error}, fields={"error": dumps(error)})
    rest = [e async for e in created]
    assert rest[-1].type == "response.failed"
    assert rest[-1].response.error is not None and rest[-1].response.error.code == "invalid_prompt"
    polled = await client.responses.retrieve(first.response.id)
    assert polled.status == "failed" and polled.error is not None and polled.error.message == "the model refused"


async def test_cancel_queued_and_running(client: openai.AsyncOpenAI, store: JobStore, settings: Settings) -> None:
    queued = await client.responses.create(model="gpt-fake", input="x", background=True)
    assert (await client.responses.cancel(queued.id)).status == "cancelled"
    assert (await client.responses.cancel(queued.id)).status == "cancelled"  # idempotent

    running = await client.responses.create(model="gpt-fake", input="x", background=True)
    jid = job_id(running.id)
    token = await SimWorker(store).start(jid, TYPE)

    listening = asyncio.Event()

    async def worker_obeys_cancel() -> None:  # what the real worker does when told
        async with store.redis.pubsub() as pubsub:
            await pubsub.subscribe(store.keys.cancel_channel)
            listening.set()
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == jid:
                    break
        await store.transition(jid, TYPE, "canceled", token=token, event={"reason": "canceled by request"})

    task = asyncio.create_task(worker_obeys_cancel())
    await listening.wait()
    assert (await client.responses.cancel(running.id)).status == "cancelled"
    await task


async def test_sync_client_and_errors(served: Served, store: JobStore) -> None:
    def sync_side() -> tuple[str, list[Any]]:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="key-acme", max_retries=0,
                           _strict_response_validation=True) as c:
            stream = c.responses.create(model="gpt-fake", input="x", background=True, stream=True)
            first = next(iter(stream))
            stream.close()
            with pytest.raises(openai.NotFoundError):
                c.responses.retrieve("resp_" + "0" * 32)
            return first.response.id, [first]

    response_id, events = await anyio.to_thread.run_sync(sync_side)
    jid = job_id(response_id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    await worker.output(jid, token, *WORDS)
    await finish(store, jid, token, TEXT)

    def resume() -> list[Any]:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="key-acme", max_retries=0,
                           _strict_response_validation=True) as c:
            return list(c.responses.retrieve(response_id, stream=True, starting_after=0))

    events += await anyio.to_thread.run_sync(resume)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert deltas(events) == events[-1].response.output_text == TEXT
    with pytest.raises(openai.AuthenticationError):
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0) as bad:
            await bad.responses.retrieve(response_id)
    async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="key-globex", max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):  # another tenant's response does not exist for it
            await other.responses.retrieve(response_id)


async def test_errors_come_in_openais_shape_so_the_sdk_raises_its_own_exceptions(
    client: openai.AsyncOpenAI, served: Served,
) -> None:
    """Bug: validation errors of /v1/responses were Backlane's 422 ``invalid_fields``, so the SDK
    raised UnprocessableEntityError where OpenAI's API gives BadRequestError. Cause: the compatible
    routes shared the jobs API's error body and statuses. Fix: api/errors.py answers the
    /v1/responses* routes in OpenAI's shape ({message, type, param, code}) with OpenAI's statuses."""
    with pytest.raises(openai.BadRequestError, match="Missing required parameter: 'model'") as missing:
        await client.responses.create(model=openai.NOT_GIVEN, input="x", background=True)  # type: ignore[arg-type]
    assert missing.value.status_code == 400 and missing.value.param == "model"
    assert missing.value.body == {"message": "Missing required parameter: 'model'.",
                                  "type": "invalid_request_error", "param": "model", "code": None}
    with pytest.raises(openai.BadRequestError, match="Invalid 'max_output_tokens'") as invalid:
        await client.responses.create(model="m", input="x", max_output_tokens=0, background=True)
    assert invalid.value.param == "max_output_tokens" and invalid.value.type == "invalid_request_error"
    unknown = "resp_" + "0" * 32
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{unknown}' not found.") as gone:
        await client.responses.cancel(unknown)
    assert gone.value.type == "invalid_request_error"
    async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as denied:
            await bad.responses.retrieve(unknown)
        for malformed in ("resp_nope", "nope"):  # the key is judged before the id is looked at
            with pytest.raises(openai.AuthenticationError):
                await bad.responses.retrieve(malformed)
            with pytest.raises(openai.AuthenticationError):
                await bad.responses.cancel(malformed)
    assert (denied.value.code, denied.value.type) == ("invalid_api_key", "invalid_request_error")
    async with httpx.AsyncClient(base_url=served.url, headers={"Authorization": "Bearer key-acme"}) as http:
        jobs = await http.post("/v1/jobs", json={"type": "openai.responses", "input": {"model": "m"}})
        responses = await http.post("/v1/responses", content=b"{", headers={"Content-Type": "application/json"})
    # Backlane's own API keeps its error model
    assert jobs.status_code == 422 and jobs.json()["error"]["code"] == "invalid_fields"
    assert responses.status_code == 400 and responses.json()["error"]["type"] == "invalid_request_error"


async def test_a_restart_that_answers_anew_is_named_by_an_error_event(
    client: openai.AsyncOpenAI, store: JobStore,
) -> None:
    created = await client.responses.create(model="gpt-fake", input="x", background=True)
    jid = job_id(created.id)
    worker = SimWorker(store)
    token = await worker.start(jid, TYPE)
    await worker.output(jid, token, "abc ", "def ")
    token = await restart(store, worker, jid, token)  # no background mode: the call starts over
    await worker.output(jid, token, "xyz ", *WORDS)
    await finish(store, jid, token, "xyz " + TEXT)
    events = [e async for e in await client.responses.retrieve(created.id, stream=True)]
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and errors[0].code == "response_restarted"
    assert deltas(events) == "abc def " and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "xyz " + TEXT
