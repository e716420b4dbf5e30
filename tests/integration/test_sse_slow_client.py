"""A client that stops reading must not stall anyone, must not grow the server's memory, and must
still get every event exactly once when it reads again."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from http_server import AUTH_ACME, Event, Served, SimWorker, SSEParser, metric, serve_in_thread

from api.app import create_app
from shared.jobs import JobStore
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio

QUEUE = 32
#: enough bytes to fill the slow client's socket buffers and the server's, so the server's writes block
OUTPUTS, TEXT = 6000, "x" * 1000


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with serve_in_thread(create_app(dataclasses.replace(settings, sse_client_queue=QUEUE))) as served:
        yield served


async def read_all(response: httpx.Response) -> list[Event]:
    parser, events = SSEParser(), []
    async for chunk in response.aiter_raw():
        events += parser.feed(chunk)
    return events


def check_exact(events: list[Event]) -> None:
    data = [loads(e.data) for e in events]
    assert [d["seq"] for d in data] == list(range(1, OUTPUTS + 4))  # queued, running, outputs, completed
    assert sum(len(d.get("text", "")) for d in data) == OUTPUTS * len(TEXT)
    assert data[-1]["status"] == "completed"


async def test_a_stalled_client_stalls_nobody_stays_bounded_and_catches_up_exactly(
    served: Served, store: JobStore
) -> None:
    # a small receive buffer (64 KiB), so the stalled client's socket fills early; smaller ones make
    # loopback TCP crawl once it reads again (delayed ACKs on a tiny window)
    small = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
    async with (
        httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http,
        httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30, transport=small) as slow_http,
    ):
        job = (await http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "slow"}})).json()
        url = f"/v1/jobs/{job['id']}/events"
        async with slow_http.stream("GET", url) as slow:  # headers read, then nothing for a while
            fast = asyncio.create_task(read_all(await http.send(http.build_request("GET", url), stream=True)))
            for _ in range(500):  # both subscribed (the server is another thread: poll, with a limit)
                if await metric(http, "backlane_sse_clients") == 2:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the two clients did not connect")

            worker, deepest = SimWorker(store), 0.0
            token = await worker.start(job["id"])
            for i in range(0, OUTPUTS, 100):
                await worker.output(job["id"], token, *([TEXT] * 100))
                if i % 1000 == 0:
                    deepest = max(deepest, await metric(http, "backlane_sse_deepest_queue"))
            await worker.finish(job["id"], token)
            finished = time.monotonic()

            # the reader kept serving the fast client while the slow one was stuck
            fast_events = await asyncio.wait_for(fast, 20)
            fast_lag = time.monotonic() - finished
            check_exact(fast_events)
            assert fast_lag < 5, fast_lag
            # the stalled client's queue was dropped, not grown
            assert await metric(http, "backlane_sse_lagged_total") >= 1
            deepest = max(deepest, await metric(http, "backlane_sse_deepest_queue"))
            assert deepest <= QUEUE + 1

            # reading again: what its socket held, then a catch-up from its own last id
            check_exact(await asyncio.wait_for(read_all(slow), 30))
        assert await metric(http, "backlane_sse_clients") == 0
