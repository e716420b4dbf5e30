"""Redis Sentinel failover under load: a master, two replicas and three sentinels (real processes), the
API, a worker and a supervisor on ``redis+sentinel://``, ``BACKLANE_REDIS_MIN_REPLICAS=1``; the master
is SIGKILLed while jobs are being created and run. Every job answered 201 exists after the failover
and completes, and an SSE client following a job across it reads its text exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from following import Followed, follow, running, wait_until
from http_server import AUTH_ACME, serve_in_thread
from redis_sentinel import LocalSentinel

from api.app import create_app
from compute.types.demo import full_text, story_words
from shared.serialization import loads
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.single_redis]

SHORT = {"steps": 1, "tokens_per_step": 15, "delay_ms": 20}
LONG = {"topic": "failover", "steps": 2, "tokens_per_step": 60, "delay_ms": 30}


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    local = LocalSentinel(down_after_ms=1000).start()
    yield local
    local.cleanup()


def sentinel_settings(url: str) -> Settings:
    base = Settings.from_env({"BACKLANE_REDIS_URL": url, "BACKLANE_API_KEYS": "acme:key-acme",
                              "BACKLANE_TOKEN_SECRET": "test-secret", "BACKLANE_REDIS_MIN_REPLICAS": "1"})
    return dataclasses.replace(base, heartbeat_s=0.2, lease_s=2.0, supervisor_interval_s=0.1, keepalive_s=0.3,
                               worker_concurrency=8)


async def create_until_answered(http: httpx.AsyncClient, body: dict[str, Any], answers: list[int]) -> str:
    """POSTs with one Idempotency-Key until a 201 or 200 (a 503 or a dropped connection is tried again,
    as a client should); the job's id."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            answers.append(0)
            await asyncio.sleep(0.1)
            continue
        answers.append(response.status_code)
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1, response.text
        await asyncio.sleep(0.1)
    raise AssertionError("the create was never answered")


async def test_every_acknowledged_job_survives_a_master_failover_and_completes(sentinel: LocalSentinel) -> None:
    settings = sentinel_settings(sentinel.url)
    started = time.monotonic()
    with serve_in_thread(create_app(settings)) as served:
        async with (running(settings) as (store, _),
                    httpx.AsyncClient(base_url=served.url, headers=AUTH_ACME, timeout=30) as http):
            answers: list[int] = []
            long_id = await create_until_answered(http, {"type": "demo.story", "input": LONG}, answers)
            seen = Followed()
            follower = asyncio.create_task(follow(http, long_id, seen))
            created: list[tuple[str, str]] = []
            stop = asyncio.Event()

            async def creator() -> None:
                n = 0
                while not stop.is_set():
                    topic = f"job {n}"
                    body = {"type": "demo.story", "input": {"topic": topic, **SHORT}, "max_attempts": 5}
                    created.append((await create_until_answered(http, body, answers), topic))
                    n += 1
                    await asyncio.sleep(0.05)

            creating = asyncio.create_task(creator())

            async def some_created_and_streaming() -> bool:
                job = await store.load(long_id) or {}
                return len(created) >= 10 and int(job.get("last_seq", 0)) >= 20

            await wait_until(some_created_and_streaming, 20, "jobs to be created and the long one to stream")
            acknowledged_before = len(created)
            old_master = sentinel.kill_master()

            async def failed_over() -> bool:
                master = sentinel.master()
                return master is not None and master[1] != old_master

            await wait_until(failed_over, 20, "the sentinels to promote the replica")
            await asyncio.sleep(1.0)  # creates go on against the new master for a while
            stop.set()
            await creating

            async def all_completed() -> bool:
                for job_id, _ in [(long_id, ""), *created]:
                    if (await store.load(job_id) or {}).get("status") != "completed":
                        return False
                return True

            await wait_until(all_completed, 40, "every acknowledged job to complete")
            await asyncio.wait_for(follower, 20)
            texts = {}
            for job_id, topic in created:
                evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
                newest = max(e["attempt"] for e in evs)
                texts[job_id] = (topic, "".join(e["text"] for e in evs if e["type"] == "output"
                                                and e["attempt"] == newest))
    assert acknowledged_before >= 10 and len(created) > acknowledged_before
    assert 201 in answers
    for job_id, (topic, text) in texts.items():
        assert text == full_text(story_words(topic, 1, 15)), job_id
    seqs = seen.seqs()
    assert seqs == sorted(set(seqs)), "the follower got an event twice or out of order"
    assert seen.text() == full_text(story_words("failover", 2, 60))
    assert time.monotonic() - started < 60
