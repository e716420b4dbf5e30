"""Compacted resume over a real socket: a client far behind gets one snapshot, then every event after it,
and ends with the same text as a full replay, with httpx-sse and with curl; ``?compact=false`` gets
every event; a client a few events behind gets them as they are."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from http_server import AUTH_ACME, Served, SimWorker, SSEParser, serve_in_thread
from httpx_sse import aconnect_sse

from api.app import create_app
from api.event_feed import PAGE
from shared.jobs import JobStore, NewJob
from shared.serialization import dumps, loads, now_ms, rfc3339
from shared.settings import Settings

pytestmark = pytest.mark.anyio

TYPE = "demo.story"
#: output events of each attempt: several replay pages each
PER_ATTEMPT = 1500


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with serve_in_thread(create_app(dataclasses.replace(settings, keepalive_s=0.2))) as served:
        yield served


def words(attempt: int, start: int, stop: int) -> list[str]:
    """Tokens that need escaping now and then, as real output does."""
    return [f'a{attempt}w{i}{chr(10) if i % 97 == 0 else ""}{chr(34) if i % 89 == 0 else ""} '
            for i in range(start, stop)]


async def lose_worker(store: JobStore, job_id: str) -> None:
    """The supervisor's verdict on attempt 1 once its lease passed: restarted (worker_lost)."""
    job = await store.job(job_id)
    assert job is not None
    now = now_ms() + 60_000
    error = dumps({"class": "worker_lost", "message": "lease expired", "retryable": True, "attempt": job.attempt})
    reply = await store.scripts.run("expire_lease", store.job_keys(job_id, TYPE),
                                    [job_id, now, rfc3339(now), store.retention_ms, job.attempt, error, error, error])
    assert reply == "restarted"


async def write(sim: SimWorker, job_id: str, token: int, tokens: list[str], pause: float = 0.0) -> None:
    for i in range(0, len(tokens), 50):
        if i % 500 == 0:
            await sim.emit(job_id, token, ("progress", {"message": f"at {i}", "fraction": i / len(tokens)}))
        await sim.output(job_id, token, *tokens[i:i + 50])
        if pause:
            await asyncio.sleep(pause)


async def long_job(store: JobStore, *, finish: bool = True) -> tuple[str, SimWorker, int]:
    """Attempt 1 writes PER_ATTEMPT outputs and is lost; attempt 2 writes PER_ATTEMPT outputs (and, with
    ``finish``, completes). Returns the job id, the worker and attempt 2's token."""
    job_id = (await store.create(NewJob(tenant="acme", type=TYPE, input={"topic": "long"}, max_attempts=3))).job_id
    sim = SimWorker(store)
    token = await sim.start(job_id)
    await write(sim, job_id, token, words(1, 0, PER_ATTEMPT))
    await lose_worker(store, job_id)
    token = await sim.start(job_id)
    await write(sim, job_id, token, words(2, 0, PER_ATTEMPT))
    if finish:
        await sim.finish(job_id, token, result={"words": PER_ATTEMPT})
    return job_id, sim, token


@dataclasses.dataclass
class Received:
    """What an SSE client got: (id, event type, data) in order."""

    events: list[tuple[str | None, str, dict[str, Any]]]

    @property
    def text(self) -> str:
        """What a client shows: the newest attempt's output. A snapshot stands for every event up to it."""
        text, attempt = "", 0
        for _, kind, data in self.events:
            if data["attempt"] > attempt:
                text, attempt = "", data["attempt"]
            if kind == "snapshot":
                text = data.get("draft", "") + data["text"]
            elif kind == "output":
                text += data["text"]
        return text

    @property
    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.events]


async def read_all(http: httpx.AsyncClient, url: str, started: asyncio.Event | None = None, **kw: Any) -> Received:
    """Every event of one response, with httpx-sse (the server ends it after the terminal event);
    ``started`` is set once the first one is in."""
    events = []
    async with aconnect_sse(http, "GET", url, **kw) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:  # httpx-sse hands a keep-alive after an id over as an empty event
                events.append((sse.id or None, sse.event, loads(sse.data)))
                if started is not None:
                    started.set()
    return Received(events)


def expected_text(full: Received) -> str:
    newest = max(d["attempt"] for _, _, d in full.events)
    return "".join(d["text"] for _, kind, d in full.events if kind == "output" and d["attempt"] == newest)


async def test_a_resume_from_the_start_of_a_long_job_is_one_snapshot(served: Served, store: JobStore) -> None:
    job_id, _, _ = await long_job(store)
    url = f"/v1/jobs/{job_id}/events"
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        full = await read_all(http, url, params={"compact": "false"})
        compact = await read_all(http, url)
        assert (await http.get(url, headers={"Last-Event-ID": compact.events[0][0] or ""})).status_code == 204
    # compact=false: every event, exactly
    assert [d["seq"] for _, _, d in full.events] == list(range(1, len(full.events) + 1))
    assert full.kinds.count("output") == 2 * PER_ATTEMPT and "snapshot" not in full.kinds
    # the job has ended: the snapshot covers its terminal event, and nothing follows
    assert compact.kinds == ["snapshot"]
    snapshot_id, _, snapshot = compact.events[0]
    last_id, _, last = full.events[-1]
    assert snapshot_id == snapshot["cursor"] == last_id
    assert (snapshot["seq"], snapshot["attempt"], snapshot["status"]) == (last["seq"], 2, "completed")
    assert snapshot["status_event"] == last  # the terminal event itself, result included
    progress = [d for _, kind, d in full.events if kind == "progress"]
    assert snapshot["progress"] == progress[-1]
    assert "draft" not in snapshot
    assert compact.text == full.text == expected_text(full) == "".join(words(2, 0, PER_ATTEMPT))


async def test_a_cursor_in_an_older_attempt_gets_a_snapshot_and_a_near_one_the_events(
    served: Served, store: JobStore
) -> None:
    job_id, sim, token = await long_job(store, finish=False)
    url = f"/v1/jobs/{job_id}/events"
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        # the job runs (a read would not end): the store tells the ids
        ids = [(entry_id, loads(data)) for entry_id, _, data in await store.read_events(job_id, None, 100_000)]
        in_attempt_1 = ids[100][0]
        near = ids[-10][0]
        await sim.finish(job_id, token)  # from here on each read ends

        full = await read_all(http, url, params={"compact": "false"})
        older = await read_all(http, url, headers={"Last-Event-ID": in_attempt_1})
        close = await read_all(http, f"{url}?after={near}")
    assert older.kinds == ["snapshot"] and older.events[0][2]["attempt"] == 2
    assert older.text == full.text
    # ten events behind (9 outputs and the terminal event): no snapshot, the events as they are
    assert [(i, d) for i, _, d in close.events] == [(i, d) for i, _, d in full.events[-10:]]


async def test_a_live_job_resumed_from_the_start_gets_a_snapshot_then_every_event_after_it(
    served: Served, store: JobStore
) -> None:
    job_id, sim, token = await long_job(store, finish=False)
    url = f"/v1/jobs/{job_id}/events"
    more = words(2, PER_ATTEMPT, PER_ATTEMPT + 600)

    async def go_on() -> None:
        await write(sim, job_id, token, more, pause=0.005)
        await sim.finish(job_id, token)

    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        started = [asyncio.Event() for _ in range(4)]
        readers = [asyncio.create_task(read_all(http, url, started[i])) for i in range(3)]
        in_attempt_1 = (await store.read_events(job_id, None, 10))[5][0]
        readers.append(asyncio.create_task(read_all(http, url, started[3], params={"after": in_attempt_1})))
        async with asyncio.timeout(10):
            for event in started:
                await event.wait()  # each has its snapshot: what follows is live
        writer = asyncio.create_task(go_on())
        got = await asyncio.gather(*readers)
        await writer
        full = await read_all(http, url, params={"compact": "false"})
    expected = "".join(words(2, 0, PER_ATTEMPT + 600))
    assert expected_text(full) == expected
    for received in got:
        assert received.kinds[0] == "snapshot" and received.kinds.count("snapshot") == 1
        assert received.events[0][2]["status"] == "running" and len(received.events) > 600
        assert received.text == expected
        # after the snapshot: the events after its cursor, exactly as a full replay has them
        after = [e for e in full.events if e[2]["seq"] > received.events[0][2]["seq"]]
        assert [(i, d) for i, _, d in received.events[1:]] == [(i, d) for i, _, d in after]
        assert received.events[-1][2]["status"] == "completed"


async def test_a_resume_after_the_snapshot_goes_on_from_its_cursor(served: Served, store: JobStore) -> None:
    job_id, sim, token = await long_job(store, finish=False)
    url = f"/v1/jobs/{job_id}/events"
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        parser, first = SSEParser(), []
        async with http.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                first += parser.feed(chunk)
                if first:
                    break  # cut off right after the snapshot
        assert first[0].event == "snapshot" and first[0].id == loads(first[0].data)["cursor"]
        await sim.output(job_id, token, "tail")
        await sim.finish(job_id, token)
        rest = await read_all(http, url, headers={"Last-Event-ID": first[0].id or ""})
    assert [d.get("text") for _, _, d in rest.events] == ["tail", None]
    assert rest.events[0][2]["seq"] == loads(first[0].data)["seq"] + 1


async def test_a_bad_compact_value_is_400_and_changes_nothing(served: Served, store: JobStore) -> None:
    job_id, _, _ = await long_job(store)
    url = f"/v1/jobs/{job_id}/events"
    before = await store.load(job_id)
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        for query in ("compact=yes", "compact=1", "compact=TRUE", "compact=", "compact=true&compact=false"):
            response = await http.get(f"{url}?{query}")
            assert response.status_code == 400, query
            error = response.json()["error"]
            assert error["code"] == "bad_request" and "compact" in error["message"], (query, error)
        metrics = (await http.get("/metrics")).text
    assert "backlane_sse_snapshots_total 0.0" in metrics
    assert await store.load(job_id) == before


def curl(url: str, *headers: str) -> Received:
    """The stream as curl gets it (-N: no buffering), parsed afterwards."""
    args = ["curl", "-sS", "-N", "--max-time", "30", "-H", f"Authorization: {AUTH_ACME['Authorization']}"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run([*args, url], capture_output=True, check=True, timeout=40)
    return Received([(e.id, e.event, loads(e.data)) for e in SSEParser().feed(done.stdout)])


async def test_curl_ends_with_the_same_text(served: Served, store: JobStore) -> None:
    job_id, sim, token = await long_job(store, finish=False)
    url = f"{served.url}/v1/jobs/{job_id}/events"
    cursor = (await store.read_events(job_id, None, 10))[3][0]
    await sim.output(job_id, token, "last words")
    await sim.finish(job_id, token)
    from_start = await asyncio.to_thread(curl, url)
    from_cursor = await asyncio.to_thread(curl, url, f"Last-Event-ID: {cursor}")
    full = await asyncio.to_thread(curl, f"{url}?compact=false")
    assert from_start.kinds == from_cursor.kinds == ["snapshot"]
    assert "snapshot" not in full.kinds and len(full.events) > 2 * PER_ATTEMPT
    assert from_start.text == from_cursor.text == full.text == expected_text(full)
    assert full.text.endswith("last words")


async def test_a_job_within_one_page_is_sent_as_it_is(served: Served, store: JobStore) -> None:
    job_id = (await store.create(NewJob(tenant="acme", type=TYPE, input={}, max_attempts=1))).job_id
    sim = SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, *(f"w{i} " for i in range(PAGE - 3)))  # queued, running, the outputs
    await sim.finish(job_id, token)
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http:
        got = await read_all(http, f"/v1/jobs/{job_id}/events")
    assert "snapshot" not in got.kinds and len(got.events) == PAGE
