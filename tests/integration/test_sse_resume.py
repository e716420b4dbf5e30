"""Resume over a real socket: a client cut off at random points, many times, while the job runs,
gets every event exactly once; then 204 at the end. Also: full history, bad cursors, keep-alives."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from http_server import AUTH_ACME, Event, Served, SimWorker, SSEParser, metric, serve_in_thread

from api.app import create_app
from shared.jobs import JobStore
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio

OUTPUTS = 300


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with serve_in_thread(create_app(dataclasses.replace(settings, keepalive_s=0.2))) as served:
        yield served


async def create_job(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "resume"}})
    assert response.status_code == 201
    job: dict[str, Any] = response.json()
    return job


async def run_job(store: JobStore, job_id: str, rng: random.Random) -> None:
    """The worker: ~300 outputs and some progress with small random pauses, then completed."""
    worker = SimWorker(store)
    token = await worker.start(job_id)
    for i in range(OUTPUTS):
        if i % 50 == 0:
            await worker.emit(
                job_id, token, ("progress", {"message": f"step {i // 50}", "fraction": i / OUTPUTS})
            )
        await worker.output(job_id, token, f"w{i} ")
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() * 0.004)
    await worker.finish(job_id, token, result={"words": OUTPUTS})


async def read_some(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], rng: random.Random
) -> tuple[int, list[Event]]:
    """One connection: reads until a random byte budget is spent (cutting mid-event on purpose),
    or to the end of the stream. Returns the status and the complete events received."""
    budget = rng.randint(20, 1500)
    parser, events, received = SSEParser(), [], 0
    async with http.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, []
        assert response.headers["content-type"] == "text/event-stream"
        async for chunk in response.aiter_raw():
            take = chunk[: budget - received]
            received += len(take)
            events += parser.feed(take)
            if received >= budget:
                break  # leaving the block closes the connection: the server sees a disconnect
    return 200, events


async def test_random_disconnects_resume_exactly(served: Served, store: JobStore) -> None:
    rng = random.Random(20240611)
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)
        url = f"/v1/jobs/{job['id']}/events"
        worker = asyncio.create_task(run_job(store, job["id"], rng))
        got: list[Event] = []
        connections = live = 0
        while not got or loads(got[-1].data).get("status") != "completed":
            cursor = got[-1].id if got else None
            headers, target = {}, url
            if cursor and connections % 2 == 0:
                headers["Last-Event-ID"] = cursor
            elif cursor:
                target = f"{url}?after={cursor}"
            status, events = await read_some(http, target, headers, rng)
            assert status == 200
            got += events
            connections += 1
            live += not worker.done()
            assert connections < 2000, "no progress"
        await worker
        # after the terminal event: 204, by header and by ?after=
        assert (await http.get(url, headers={"Last-Event-ID": got[-1].id or ""})).status_code == 204
        assert (await http.get(f"{url}?after={got[-1].id}")).status_code == 204
        # the whole history without a cursor, in one go
        full: list[Event] = []
        async with http.stream("GET", url) as response:
            parser = SSEParser()
            async for chunk in response.aiter_raw():
                full += parser.feed(chunk)
    assert connections >= 20 and live >= 10, (connections, live)  # many cuts, most while the job ran
    data = [loads(e.data) for e in got]
    assert [d["seq"] for d in data] == list(range(1, len(data) + 1))
    assert len({e.id for e in got}) == len(got)
    assert [e.id for e in got] == [e.id for e in full]
    text = "".join(d["text"] for d in data if d["type"] == "output")
    assert (
        text
        == "".join(loads(e.data).get("text", "") for e in full)
        == "".join(f"w{i} " for i in range(OUTPUTS))
    )
    assert sum(d["type"] == "progress" for d in data) == OUTPUTS // 50


async def test_no_cursor_is_the_whole_history_and_bad_cursors_are_400(
    served: Served, store: JobStore
) -> None:
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)
        worker = SimWorker(store)
        token = await worker.start(job["id"])
        await worker.output(job["id"], token, *(f"t{i}" for i in range(1200)))  # more than one replay page
        await worker.finish(job["id"], token)
        url = f"/v1/jobs/{job['id']}/events"
        parser, events = SSEParser(), []
        # compact=false: more than a page of history would otherwise come as a snapshot (test_sse_snapshot.py)
        async with http.stream("GET", url, params={"compact": "false"}) as response:
            async for chunk in response.aiter_raw():
                events += parser.feed(chunk)
        assert [loads(e.data)["seq"] for e in events] == list(
            range(1, 1204)
        )  # queued, running, 1200 outputs, completed
        for bad in [
            {"headers": {"Last-Event-ID": "abc"}},
            {"params": {"after": "1-2-3"}},
            {"params": {"after": "-1"}},
        ]:
            response = await http.get(url, **bad)  # type: ignore[arg-type]
            assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


async def test_keepalive_comment_arrives_while_idle(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)  # queued, nobody runs it: the stream is idle after the first event
        parser = SSEParser()
        events: list[Event] = []
        async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            async with asyncio.timeout(5):
                async for chunk in response.aiter_raw():
                    events += parser.feed(chunk)
                    if parser.comments >= 2:
                        break
        assert parser.comments >= 2 and [e.event for e in events] == ["status"]


async def test_a_client_that_leaves_an_idle_stream_frees_its_place_at_once(settings: Settings) -> None:
    """Nothing is written to an idle stream until its next keep-alive: the server must notice the
    client leaving by itself, and give back the hub subscription and the stream's slot."""
    with serve_in_thread(create_app(dataclasses.replace(settings, keepalive_s=60))) as served:
        await leave_idle_streams(served)


async def leave_idle_streams(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)  # queued, nobody runs it: the stream stays idle
        for _ in range(3):
            async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
                async for chunk in response.aiter_raw():
                    assert b"event: status" in chunk
                    assert await metric(http, "backlane_sse_clients") == 1
                    assert await metric(http, "backlane_hub_streams_watched") == 1
                    break
            async with asyncio.timeout(2):  # well before a keep-alive would have found it gone
                while await metric(http, "backlane_sse_clients") or await metric(
                        http, "backlane_hub_streams_watched"):
                    await asyncio.sleep(0.02)


async def test_a_cursor_past_the_stream_end_is_400_and_other_viewers_get_every_event(
    served: Served, store: JobStore
) -> None:
    """Bug: a well-formed cursor beyond the stream's end (``?after=99999999999999-0``) made the hub
    start its shared watch of the job there, so every other viewer on that API process stopped
    getting live events, and the client with that cursor never saw the terminal event either.
    Cause: the first subscriber's cursor became the watch's XREAD cursor unchecked.
    Fix: such a cursor is refused with 400 (checked against the stream's newest entry), and the hub
    moves a new watch's cursor back to the stream's tail before its first read."""
    future = "99999999999999-0"
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)
        url = f"/v1/jobs/{job['id']}/events"
        worker = SimWorker(store)
        token = await worker.start(job["id"])
        await worker.output(job["id"], token, "a ", "b ")
        # first, while nobody watches the job: the case that used to start the shared watch in the future
        async with asyncio.timeout(5):  # before the fix: a 200 stream that never ends
            response = await http.get(url, params={"after": future})
        assert response.status_code == 400 and "past the newest event" in response.json()["error"]["message"]

        got: list[Event] = []
        live = asyncio.Event()

        async def watch() -> None:
            parser = SSEParser()
            async with http.stream("GET", url) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    got.extend(parser.feed(chunk))
                    if len(got) >= 4:  # queued, running, a, b: from here on it is live
                        live.set()

        viewer = asyncio.create_task(watch())
        async with asyncio.timeout(5):
            await live.wait()
        async with asyncio.timeout(5):
            response = await http.get(url, headers={"Last-Event-ID": future})  # while another client watches
        assert response.status_code == 400
        await worker.output(job["id"], token, *(f"w{i} " for i in range(20)))
        await worker.finish(job["id"], token)
        async with asyncio.timeout(5):
            await viewer
    data = [loads(e.data) for e in got]
    assert [d["seq"] for d in data] == list(range(1, 26))  # queued, running, 22 outputs, completed
    assert data[-1]["status"] == "completed"


async def test_a_finished_jobs_stream_is_answered_whole_with_the_live_streams_headers(
    served: Served, store: JobStore
) -> None:
    """A job that has ended, whose remaining events fit in the first replay page, is answered in one
    chunk without sse-starlette's live machinery (``api/sse.py`` whole_stream_response): the same
    status and headers as a live stream, chunked, every event after the cursor, then the end."""
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=10) as http:
        job = await create_job(http)
        url = f"/v1/jobs/{job['id']}/events"
        async with http.stream("GET", url) as live:  # queued: a live stream
            live_headers = {k: v for k, v in live.headers.items() if k != "date"}
        worker = SimWorker(store)
        token = await worker.start(job["id"])
        await worker.output(job["id"], token, "a ", "b ")
        await worker.finish(job["id"], token)
        for cursor in ({}, {"after": "0-0"}):
            async with asyncio.timeout(5):
                response = await http.get(url, params=cursor)
            assert response.status_code == 200
            assert {k: v for k, v in response.headers.items() if k != "date"} == live_headers
            assert live_headers["transfer-encoding"] == "chunked"
            events = SSEParser().feed(response.content)
            assert [(e.event, loads(e.data)["seq"]) for e in events] == [
                ("status", 1), ("status", 2), ("output", 3), ("output", 4), ("status", 5)]
        rest = await http.get(url, headers={"Last-Event-ID": events[2].id or ""})
        assert [loads(e.data)["seq"] for e in SSEParser().feed(rest.content)] == [4, 5]
        assert (await http.head(url)).headers.get("content-type") == "text/event-stream"
