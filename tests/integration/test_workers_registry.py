"""GET /v1/workers against real `backlane worker` processes: what a worker publishes, and how it leaves
the list (SIGTERM: at once, after its drain; SIGKILL: once its last beat's lease has passed); the
warnings of a submit and of /readyz when no live worker serves a type."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from http_server import AUTH_GLOBEX, asgi_client
from redis.asyncio import Redis

from api.app import create_app
from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy
from shared.settings import Settings
from shared.worker_info import package_version

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SLOW_STORY = {"type": "demo.story", "input": {"topic": "registry", "steps": 1, "tokens_per_step": 400,
                                              "delay_ms": 25}}  # about 10 s: it runs while the test looks


class Workers:
    """`backlane worker` processes with the test's timings (heartbeat 0.2 s, lease 1 s)."""

    def __init__(self, settings: Settings) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
        env.update({"BACKLANE_REDIS_URL": settings.redis_url or "", "BACKLANE_LOG_LEVEL": "WARNING",
                    "BACKLANE_HEARTBEAT_S": str(settings.heartbeat_s), "BACKLANE_LEASE_S": str(settings.lease_s),
                    "BACKLANE_DRAIN_GRACE_S": "0.3"})
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "backlane", "worker", *args], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    w = Workers(settings)
    yield w
    w.stop_all()


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def listed(client: httpx.AsyncClient, pid: int, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    response = await client.get("/v1/workers", headers=headers)
    assert response.status_code == 200, response.text
    return next((w for w in response.json()["workers"] if w["pid"] == pid), None)


def ms(at: str) -> float:
    return datetime.fromisoformat(at).timestamp() * 1000


async def test_a_worker_publishes_itself_and_its_running_jobs_and_leaves_on_sigterm(
    workers: Workers, client: httpx.AsyncClient
) -> None:
    proc = workers.start("--concurrency", "3")

    async def appears() -> dict[str, Any] | None:
        return await listed(client, proc.pid)

    seen = await wait_for(appears, 20, "the worker to be listed")
    assert seen["host"] == socket.gethostname() and seen["version"] == package_version()
    assert seen["id"].startswith(f"{socket.gethostname()}:{proc.pid}:")
    assert "demo.story" in seen["job_types"] and seen["concurrency"] == 3 and seen["draining"] is False
    assert seen["running"] == {"count": 0, "jobs": []}
    now = time.time() * 1000
    assert now - 20_000 < ms(seen["started_at"]) <= now
    assert now - 1_000 <= ms(seen["last_seen_at"]) <= now + 100  # beats every 0.2 s
    assert ms(seen["alive_until"]) == ms(seen["last_seen_at"]) + 1000  # its lease

    job = (await client.post("/v1/jobs", json=SLOW_STORY)).json()
    assert "warnings" not in job  # a live worker serves the type

    async def runs_it() -> dict[str, Any] | None:
        found = await listed(client, proc.pid)
        return found if found and found["running"]["count"] == 1 else None

    seen = await wait_for(runs_it, 10, "the worker to list its running job")
    assert seen["running"]["jobs"] == [{"id": job["id"], "type": "demo.story"}]
    # another tenant sees that the worker is busy, not with what
    other = await listed(client, proc.pid, AUTH_GLOBEX)
    assert other is not None and other["running"] == {"count": 1, "jobs": []}

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    # it left: at once, not a lease later
    assert await listed(client, proc.pid) is None


async def test_a_killed_worker_leaves_the_list_once_its_beats_expire(
    workers: Workers, client: httpx.AsyncClient, store: JobStore
) -> None:
    proc = workers.start()

    async def appears() -> dict[str, Any] | None:
        return await listed(client, proc.pid)

    seen = await wait_for(appears, 20, "the worker to be listed")
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    killed_at = time.time() * 1000
    last = await listed(client, proc.pid)
    assert last is not None, "a killed worker stays listed until its lease passes"

    async def gone() -> bool:
        return await listed(client, proc.pid) is None

    await wait_for(gone, 5, "the killed worker to leave the list")
    gone_at = time.time() * 1000
    # it left when its last beat's lease ran out (no supervisor runs here: the list judges by the beats)
    assert gone_at >= ms(last["alive_until"]) and gone_at - killed_at <= 1000 + 500
    home = store.keys.worker_home(seen["id"])
    assert await store.redis.exists(home.worker_info(seen["id"])), "its info waits out its own expiry"


async def test_a_submit_of_a_type_no_live_worker_serves_carries_a_warning(
    workers: Workers, client: httpx.AsyncClient, store: JobStore
) -> None:
    await store.register_types([JobTypePolicy(name="reports.monthly")])
    # no worker at all
    job = (await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"}})).json()
    assert job["warnings"] == [
        "no live worker serves job type 'demo.story': the job waits queued until one that does starts"]
    ready = (await client.get("/readyz")).json()
    assert ready["ok"] is True
    assert ("no live worker serves job types: demo.agent, demo.review, demo.story, openai.batch, "
            "openai.responses, reports.monthly") in ready["warnings"]

    proc = workers.start()

    async def appears() -> dict[str, Any] | None:
        return await listed(client, proc.pid)

    await wait_for(appears, 20, "the worker to be listed")  # a full read refreshes the API's view
    served = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"}})
    assert served.status_code == 201 and "warnings" not in served.json()
    unserved = await client.post("/v1/jobs", json={"type": "reports.monthly", "input": {}})
    assert unserved.status_code == 201
    assert unserved.json()["warnings"] == [
        "no live worker serves job type 'reports.monthly': the job waits queued until one that does starts"]
    # a replay of an Idempotency-Key creates nothing: no warning either way
    key = {"Idempotency-Key": "k1"}
    first = await client.post("/v1/jobs", json={"type": "reports.monthly", "input": {}}, headers=key)
    again = await client.post("/v1/jobs", json={"type": "reports.monthly", "input": {}}, headers=key)
    assert first.status_code == 201 and "warnings" in first.json()
    assert again.status_code == 200 and "warnings" not in again.json()
    answer = (await client.get("/v1/workers")).json()
    assert answer["unserved_types"] == ["reports.monthly"]
    ready = (await client.get("/readyz")).json()
    assert "no live worker serves job types: reports.monthly" in ready["warnings"]


async def test_workers_needs_an_api_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
