"""A worker keeps its attempt through a Redis outage (``shared/ride_through.py``), the supervisor takes
no lease over for it (``compute/supervisor/contact.py``), the API answers 503 with Retry-After
meanwhile and SSE clients resume after it: against a real redis-server stopped or killed and started
again from its AOF on the same port."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from following import Followed, events_of, follow, running, wait_until
from http_server import AUTH_ACME, serve_in_thread
from redis_server import RedisServer
from tcp_proxy import CuttableProxy

from api.app import create_app
from compute.registry import BUILTIN_MODULES, load
from compute.types.demo import full_text, story_words
from compute.worker import Worker
from shared.jobs import NewJob
from shared.settings import Settings

# each test runs its own AOF redis-server and stops it: a cluster run has nothing to add
pytestmark = [pytest.mark.anyio, pytest.mark.single_redis]

SPEC = {"topic": "outage", "steps": 2, "tokens_per_step": 60, "delay_ms": 25}  # about 3 s of work


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    yield server
    server.cleanup()


def settings_for(url: str, **more: Any) -> Settings:
    base = Settings.from_env({"BACKLANE_REDIS_URL": url, "BACKLANE_API_KEYS": "acme:key-acme",
                              "BACKLANE_TOKEN_SECRET": "test-secret"})
    return dataclasses.replace(base, heartbeat_s=0.2, lease_s=2.0, supervisor_interval_s=0.1, keepalive_s=0.3,
                               **more)


@pytest.mark.parametrize("outage", ["restart", "sigstop"])
async def test_a_running_job_rides_through_a_5_s_redis_outage_in_the_same_attempt(
        aof_server: RedisServer, outage: str) -> None:
    settings = settings_for(aof_server.url)
    expected = full_text(story_words("outage", 2, 60))
    with serve_in_thread(create_app(settings)) as served:
        async with (running(settings) as (store, _),
                    httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http):
            created = await http.post("/v1/jobs", json={"type": "demo.story", "input": SPEC, "max_attempts": 5})
            assert created.status_code == 201
            job_id = created.json()["id"]
            steady, dropped, drop = Followed(), Followed(), asyncio.Event()
            readers = [asyncio.create_task(follow(http, job_id, steady)),
                       asyncio.create_task(follow(http, job_id, dropped, drop=drop))]

            async def streaming() -> bool:
                return int((await store.load(job_id) or {}).get("last_seq", 0)) >= 20

            await wait_until(streaming, 20, "the worker to stream")
            before = int((await store.load(job_id) or {})["last_seq"])
            went = time.monotonic()
            if outage == "restart":
                aof_server.kill()  # SIGKILL: only the AOF is left
            else:
                assert aof_server.proc is not None
                os.kill(aof_server.proc.pid, signal.SIGSTOP)
            drop.set()  # one client hangs up during the outage and comes back
            try:
                if outage == "restart":
                    # the API says so plainly meanwhile, with a Retry-After
                    answer = await http.get(f"/v1/jobs/{job_id}")
                    assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1
                    assert answer.json()["error"]["code"] == "unavailable"
                await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - went)))
            finally:
                if outage == "restart":
                    aof_server.start()  # same port, same data directory
                else:
                    assert aof_server.proc is not None
                    os.kill(aof_server.proc.pid, signal.SIGCONT)
            await asyncio.wait_for(asyncio.gather(*readers), 40)
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            evs = await events_of(store, job_id)
    assert job["status"] == "completed" and job["attempt"] == 1, job
    assert {e["attempt"] for e in evs} == {0, 1}  # 0: the creation's `queued`
    assert not [e for e in evs if e["type"] == "status" and e.get("reason") in ("retry", "worker_lost")]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))  # no gap, no repeat
    assert "".join(e["text"] for e in evs if e["type"] == "output") == expected
    assert before < len(evs)  # the outage fell in the middle of the run
    for seen in (steady, dropped):
        assert seen.seqs() == list(range(1, len(evs) + 1)) and seen.text() == expected
    assert dropped.connections >= 2
    if outage == "restart":
        # the client that reconnected while Redis was down was refused with 503 and a Retry-After
        assert dropped.refused and set(dropped.refused) == {503} and all(int(r) >= 1 for r in dropped.retry_after)


async def test_an_outage_longer_than_the_setting_fails_the_attempt_as_transient(aof_server: RedisServer) -> None:
    settings = settings_for(aof_server.url, redis_outage_s=2.0)
    async with running(settings) as (store, _):
        job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=SPEC, max_attempts=5))).job_id

        async def streaming() -> bool:
            return int((await store.load(job_id) or {}).get("last_seq", 0)) >= 20

        await wait_until(streaming, 20, "the worker to stream")
        aof_server.kill()
        await asyncio.sleep(5)
        aof_server.start()

        async def completed() -> bool:
            return (await store.load(job_id) or {}).get("status") == "completed"

        await wait_until(completed, 40, "the job to complete in a later attempt")
        evs = await events_of(store, job_id)
    retries = [e for e in evs if e["type"] == "status" and e.get("reason") == "retry"]
    assert len(retries) == 1 and retries[0]["attempt"] == 1
    assert retries[0]["error"]["class"] == "transient" and "BACKLANE_REDIS_OUTAGE_S" in retries[0]["error"]["message"]
    assert max(e["attempt"] for e in evs) == 2
    text = "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == 2)
    assert text == full_text(story_words("outage", 2, 60))
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))


async def test_a_worker_cut_off_while_the_supervisor_reaches_redis_loses_its_lease_and_writes_nothing_more(
        aof_server: RedisServer) -> None:
    """Only the worker loses Redis (a partition, not an outage): the supervisor sees its beats stop and
    takes the job over; when the worker reaches Redis again, its buffered writes are refused (STALE) and
    its attempt stops, while another worker finishes the job."""
    proxy = await CuttableProxy(aof_server.port).start()
    settings = settings_for(aof_server.url)
    try:
        async with running(settings, worker_url=proxy.url) as (store, (cut_off,)):
            job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=SPEC,
                                                max_attempts=5))).job_id

            async def streaming() -> bool:
                return int((await store.load(job_id) or {}).get("last_seq", 0)) >= 20

            await wait_until(streaming, 20, "the first worker to stream")
            proxy.sever()
            helper = Worker(settings, store.redis, load(BUILTIN_MODULES), worker_id="helper")
            helping = asyncio.create_task(helper.run())
            try:
                async def taken_over() -> bool:
                    return int((await store.load(job_id) or {}).get("attempt", 0)) >= 2

                await wait_until(taken_over, 15, "the supervisor to take the job over")
                assert job_id in cut_off.running  # the cut-off attempt still runs, riding through
                proxy.mend()

                async def zombie_stopped() -> bool:
                    return job_id not in cut_off.running

                await wait_until(zombie_stopped, 15, "the cut-off attempt to stop")

                async def completed() -> bool:
                    return (await store.load(job_id) or {}).get("status") == "completed"

                await wait_until(completed, 30, "the job to complete")
            finally:
                helper.drain()
                await asyncio.wait_for(helping, 30)
            evs = await events_of(store, job_id)
            stats = await store.stats()
    finally:
        await proxy.close()
    lost = next(e for e in evs if e["type"] == "status" and e.get("reason") == "worker_lost")
    assert not [e for e in evs if e["attempt"] == 1 and e["seq"] > lost["seq"]]  # the zombie wrote nothing after
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    newest = max(e["attempt"] for e in evs)
    text = "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == newest)
    assert text == full_text(story_words("outage", 2, 60))
    assert stats.get("stale_writes", 0) >= 1  # the cut-off attempt did try, and was refused
