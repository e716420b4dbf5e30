"""GET /v1/stats and shared/stats.py: jobs ended per minute from count_minute()'s ring, the tenant's queue
per type, run-time percentiles from the histogram; a bad ``minutes`` is a 422."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from http_server import AUTH_GLOBEX, SimWorker, asgi_client
from redis.asyncio import Redis

from api.app import create_app
from shared.jobs import JobStore
from shared.serialization import now_ms
from shared.settings import Settings
from shared.stats import MINUTE_MS, MINUTE_SLOTS, MINUTE_STAMP, minute_counts, quantile

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


async def _run(client: httpx.AsyncClient, worker: SimWorker, status: str | None) -> str:
    response = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "x"}})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    if status is not None:
        token = await worker.start(job_id)
        if status != "running":
            await worker.finish(job_id, token, status=status)
    return job_id


async def test_stats_count_the_tenants_jobs_per_minute_queue_and_run_time(
    client: httpx.AsyncClient, store: JobStore,
) -> None:
    worker = SimWorker(store)
    for status in ("completed", "completed", "completed", "failed", "running", None, None):
        await _run(client, worker, status)
    stats = (await client.get("/v1/stats", params={"minutes": "5"})).json()
    assert len(stats["per_minute"]) == 5
    # the minutes run oldest first up to the current one, whole minutes apart
    stamps = [m["minute"] for m in stats["per_minute"]]
    assert stamps == sorted(stamps) and stamps[-1].endswith(":00.000Z")
    ended = {k: sum(m[k] for m in stats["per_minute"]) for k in ("completed", "failed")}
    assert ended == {"completed": 3, "failed": 1}
    assert stats["queue_by_type"]["demo.story"] == {"queued": 2, "running": 1}
    run_time = stats["run_time_by_type"]["demo.story"]
    assert run_time["runs"] == 4  # each finished job that ran, counted once
    assert 0 <= run_time["p50_ms"] <= run_time["p95_ms"] <= 100  # all in the first bucket (up to 100 ms)
    # another tenant's jobs are not in its minutes nor its queue
    theirs = (await client.get("/v1/stats", headers=AUTH_GLOBEX)).json()
    assert len(theirs["per_minute"]) == 30
    assert sum(m["completed"] + m["failed"] for m in theirs["per_minute"]) == 0
    assert theirs["queue_by_type"]["demo.story"] == {"queued": 0, "running": 0}


async def test_a_minute_slot_from_an_earlier_lap_starts_over(store: JobStore) -> None:
    """The ring reuses a slot MINUTE_SLOTS minutes later: the first job of the new minute resets it."""
    worker = SimWorker(store)
    async with asgi_client(create_app(store.settings, redis=store.redis)) as client:
        job_id = await _run(client, worker, None)
        minute = now_ms() // MINUTE_MS
        field = f"minute|acme|completed|{minute % MINUTE_SLOTS}"
        for shard in store.keys.all_shards:  # as if 40 jobs had completed an hour ago
            await store.redis.hset(shard.counts, field, (minute - MINUTE_SLOTS) * MINUTE_STAMP + 40)
        token = await worker.start(job_id)
        await worker.finish(job_id, token)
        stats = (await client.get("/v1/stats", params={"minutes": "2"})).json()
    assert sum(m["completed"] for m in stats["per_minute"]) == 1


def test_minutes_read_only_slots_stamped_with_their_minute() -> None:
    now = 1_000 * MINUTE_MS + 5
    shard = {"minute|t|completed|40": 1000 * MINUTE_STAMP + 3,  # this minute (1000 % 60 == 40)
             "minute|t|failed|39": 999 * MINUTE_STAMP + 2,  # the one before
             "minute|t|completed|38": 938 * MINUTE_STAMP + 9}  # a lap ago: not 998's
    rows = minute_counts("t", 3, now, [shard, {"minute|t|completed|40": 1000 * MINUTE_STAMP + 1}])
    assert [(r["completed"], r["failed"]) for r in rows] == [(0, 0), (0, 2), (4, 0)]


def test_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    inf = float("inf")
    assert quantile([(100.0, 0), (500.0, 0), (inf, 0)], 0.5) is None
    assert quantile([(100.0, 10), (500.0, 10), (inf, 10)], 0.5) == 50.0
    assert quantile([(100.0, 0), (500.0, 4), (inf, 4)], 0.5) == 300.0
    assert quantile([(100.0, 1), (500.0, 1), (inf, 20)], 0.95) == 500.0  # beyond the last bound


@pytest.mark.parametrize("minutes", ["0", "61", "ten", "1.5", "-3"])
async def test_a_bad_minutes_is_422(client: httpx.AsyncClient, minutes: str) -> None:
    response = await client.get("/v1/stats", params={"minutes": minutes})
    assert response.status_code == 422, response.text
    assert "minutes" in response.json()["error"]["message"]


async def test_stats_need_a_key(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")
    assert (await client.get("/v1/stats")).status_code == 401
