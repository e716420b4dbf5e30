"""Following a job over SSE like EventSource, and running a worker and a supervisor, for the tests
that take Redis away (test_outages.py, test_failover.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from http_server import Event, SSEParser

from compute.registry import BUILTIN_MODULES, load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.connection import connect
from shared.jobs import JobStore
from shared.serialization import loads
from shared.settings import Settings

TERMINAL = {"completed", "failed", "canceled", "expired"}


@dataclass
class Followed:
    """What one SSE client saw over all its connections."""

    events: list[Event] = field(default_factory=list)
    #: the status of every refused (re)connection
    refused: list[int] = field(default_factory=list)
    retry_after: list[str] = field(default_factory=list)
    connections: int = 0

    def text(self) -> str:
        data = [loads(e.data) for e in self.events]
        newest = max(d["attempt"] for d in data)
        return "".join(d["text"] for d in data if d["type"] == "output" and d["attempt"] == newest)

    def seqs(self) -> list[int]:
        return [loads(e.data)["seq"] for e in self.events]


async def follow(http: httpx.AsyncClient, job_id: str, seen: Followed, *, drop: asyncio.Event | None = None
                 ) -> None:
    """Follows the job's events to the end like EventSource: reconnects with Last-Event-ID after any
    drop or refusal (waiting out Retry-After, shortened for the test). ``drop``: once set, the client
    hangs up by itself (once) at the next chunk, a keep-alive included."""
    while True:
        headers = {"Last-Event-ID": seen.events[-1].id or ""} if seen.events else {}
        try:
            async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
                if response.status_code == 204:
                    return
                if response.status_code != 200:
                    seen.refused.append(response.status_code)
                    seen.retry_after.append(response.headers.get("retry-after", ""))
                    await response.aread()
                    await asyncio.sleep(0.2)
                    continue
                seen.connections += 1
                parser = SSEParser()
                async for chunk in response.aiter_raw():
                    for event in parser.feed(chunk):
                        seen.events.append(event)
                        if event.event == "status" and loads(event.data)["status"] in TERMINAL:
                            return
                    if drop is not None and drop.is_set():
                        drop = None
                        break
        except httpx.TransportError:
            await asyncio.sleep(0.2)


@asynccontextmanager
async def running(settings: Settings, *, workers: int = 1, worker_url: str | None = None
                  ) -> AsyncIterator[tuple[JobStore, list[Worker]]]:
    """A supervisor and ``workers`` workers (the first on ``worker_url`` when given) on real Redis."""
    assert settings.redis_url
    redis = connect(settings.redis_url, 16)
    own = connect(worker_url, 16) if worker_url else redis
    store = JobStore(redis, settings)
    ws = [Worker(settings, own if i == 0 else redis, load(BUILTIN_MODULES), worker_id=f"w{i}")
          for i in range(workers)]
    supervisor = Supervisor(settings, redis, webhooks=False)
    tasks = [asyncio.create_task(w.run()) for w in ws] + [asyncio.create_task(supervisor.run())]
    try:
        yield store, ws
    finally:
        for w in ws:
            w.drain()
        supervisor.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await redis.aclose()
        if own is not redis:
            await own.aclose()


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := await check():
                return value
        except Exception:  # Redis may be coming back
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def events_of(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
