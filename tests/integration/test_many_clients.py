"""1,000 SSE clients on one API process: its Redis connections stay at a small fixed number, and
every client gets every event of its job, in order.

The API runs as its own process (``uvicorn api.app:app_from_env --factory``), as in production;
the clients are plain asyncio sockets speaking HTTP/1.1, which cost far less than 1,000 httpx
clients on a two-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from http_server import AUTH_ACME, SimWorker, SSEParser, metric, serve_in_process
from redis.asyncio import Redis

from shared.connection import is_cluster
from shared.jobs import JobStore
from shared.serialization import loads
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS, JOBS, OUTPUTS = 1000, 4, 100
API_NAME = "backlane-api"


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    assert settings.redis_url
    env = {
        "BACKLANE_REDIS_URL": settings.redis_url,
        "BACKLANE_API_KEYS": "acme:key-acme",
        "BACKLANE_TOKEN_SECRET": "test-secret",
        "BACKLANE_REDIS_MAX_CONNECTIONS": str(settings.redis_max_connections),
        "BACKLANE_SSE_MAX_PER_TENANT": str(CLIENTS),  # one tenant's clients, all of them
    }
    with serve_in_process(env, extra_args=("--backlog", "4096")) as url:
        yield url


async def sse_client(url: str, path: str, connected: list[int], all_connected: asyncio.Event) -> list[int]:
    """GET the stream over a bare socket (chunked HTTP/1.1); returns the seq of every event received."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer key-acme\r\n\r\n"
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    parser, seqs = SSEParser(), []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            break
        for event in parser.feed((await reader.readexactly(size + 2))[:-2]):
            seqs.append(loads(event.data)["seq"])
            if len(seqs) == 1:
                connected[0] += 1
                if connected[0] == CLIENTS:
                    all_connected.set()
    writer.close()
    return seqs


async def api_connections(redis: Redis) -> int:
    return sum(1 for c in await redis.client_list() if c.get("name") == API_NAME)


async def run_job(store: JobStore, job_id: str) -> None:
    worker = SimWorker(store, worker_id=f"w-{job_id[:6]}")
    token = await worker.start(job_id)
    for i in range(OUTPUTS):
        await worker.output(job_id, token, f"t{i} ")
        await asyncio.sleep(0.01)
    await worker.finish(job_id, token)


async def test_a_thousand_clients_use_a_fixed_number_of_redis_connections(
    api_url: str, store: JobStore, settings: Settings
) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api_url, headers=AUTH_ACME, timeout=30) as http:
        jobs: list[dict[str, Any]] = []
        for i in range(JOBS):
            response = await http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": f"t{i}"}})
            jobs.append(response.json())
        connected, all_connected = [0], asyncio.Event()
        clients = []
        for n in range(CLIENTS):
            path = f"/v1/jobs/{jobs[n % JOBS]['id']}/events"
            clients.append(asyncio.create_task(sse_client(api_url, path, connected, all_connected)))
            if n % 100 == 99:
                await asyncio.sleep(0)  # let the batch connect
        # a bound on liveness, not a speed target (the connect time is printed): room for a busy machine
        await asyncio.wait_for(all_connected.wait(), 120)
        connect_s = time.monotonic() - started

        readers = int(await metric(http, "backlane_hub_readers"))
        assert await metric(http, "backlane_sse_clients") == CLIENTS
        assert await metric(http, "backlane_hub_streams_watched") == JOBS
        counts = [await api_connections(store.redis)]
        workers = asyncio.gather(*(run_job(store, job["id"]) for job in jobs))
        while not workers.done():  # sample while every client is connected and events flow
            counts.append(await api_connections(store.redis))
            await asyncio.sleep(0.05)
        await workers
        results = await asyncio.wait_for(asyncio.gather(*clients), 120)
    elapsed = time.monotonic() - started

    # a hub reader on a Cluster is a Cluster client of its own: one connection to the node it starts
    # from (the slot map) and one to its shard's node, which may be another; and a Cluster client's
    # pipelines (a reader's wake) are not held to the limit of its commands
    bound = settings.redis_max_connections + readers * (3 if is_cluster(store.redis) else 1) + 2
    print(
        f"\n{CLIENTS} clients: connected in {connect_s:.1f}s, all done in {elapsed:.1f}s; "
        f"API Redis connections max {max(counts)} (hub readers {readers}, bound {bound})"
    )
    # the hub's readers are per shard (on a Cluster, the shards of the watched jobs); Redis connections
    # are counted on one server (on a Cluster, the node the client asks first)
    assert 1 <= readers <= 4 * store.keys.shards and max(counts) <= bound
    expected = list(range(1, OUTPUTS + 4))  # queued, running, outputs, completed
    assert all(seqs == expected for seqs in results)
