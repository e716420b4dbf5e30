"""Queue order with a real ``backlane worker`` process (``tests/capacity_jobs.py``): a high job queued
behind twenty normal ones starts next; a tenant's five jobs queued behind another's 300 go in turn."""

from __future__ import annotations

import time
from typing import Any

import pytest
from capacity_jobs import STARTS_LOG, work
from test_capacity import Workers, client, parse, wait_for, worker_env, workers  # noqa: F401

from shared.jobs import JobStore, NewJob
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def submit(store: JobStore, ms: int, priority: str = "normal") -> str:
    new = NewJob(tenant="acme", type="capacity.work", input={"ms": ms}, max_attempts=1, priority=priority)  # type: ignore[arg-type]
    return (await store.create(new)).job_id


async def test_a_high_job_starts_before_twenty_normal_ones_queued_first(
    redis_url: str, client: Any, workers: list[Workers]  # noqa: F811
) -> None:
    # one shard, so one queue: priority orders a shard's queue (on a Cluster each shard has its own)
    store = JobStore(client, Settings(redis_url=redis_url, shards=1))
    await store.register_types([work.policy])
    w = Workers({**worker_env(redis_url, {}), "BACKLANE_SHARDS": "1"})
    workers.append(w)
    w.start(1, concurrency=1)
    busy = await submit(store, 1500)

    async def started() -> list[str]:
        return [job for _, job, _, _ in parse(await client.lrange(STARTS_LOG, 0, -1))]
    await wait_for(lambda: started(), 30, "the worker to start the first job")
    normal = [await submit(store, 20) for _ in range(20)]
    high = await submit(store, 20, "high")
    assert (await store.load(busy) or {}).get("status") == "running"  # all were queued while it ran

    async def all_started() -> list[str]:
        order = await started()
        return order if len(order) == 22 else []
    order = await wait_for(all_started, 60, "every job to start")
    assert order[:2] == [busy, high]
    assert sorted(order[2:]) == sorted(normal)  # then the normal ones (those queued in one ms by id)


async def test_a_tenant_with_300_jobs_queued_does_not_hold_back_another_tenants_five(
    redis_url: str, client: Any, workers: list[Workers]  # noqa: F811
) -> None:
    store = JobStore(client, Settings(redis_url=redis_url, shards=1))
    await store.register_types([work.policy])
    w = Workers({**worker_env(redis_url, {}), "BACKLANE_SHARDS": "1"})
    workers.append(w)
    w.start(1, concurrency=2)
    duration_ms = 100

    async def submit_for(tenant: str) -> str:
        new = NewJob(tenant=tenant, type="capacity.work", input={"ms": duration_ms}, max_attempts=1)
        return (await store.create(new)).job_id
    warm = await submit_for("warm-up")

    async def up() -> bool:
        return warm in {job for _, job, _, _ in parse(await client.lrange(STARTS_LOG, 0, -1))}
    await wait_for(up, 30, "the worker to start")  # its start-up is not the wait measured
    a = [await submit_for("a") for _ in range(300)]
    b_queued_ms = time.time() * 1000
    b = [await submit_for("b") for _ in range(5)]

    async def b_started() -> list[tuple[float, str, int, int]]:
        starts = parse(await client.lrange(STARTS_LOG, 0, -1))
        return starts if {job for _, job, _, _ in starts} >= set(b) else []
    starts = await wait_for(b_started, 60, "tenant b's jobs to start")
    b_starts = [ms for ms, job, _, _ in starts if job in b]
    waited = (max(b_starts) - b_queued_ms) / duration_ms
    # two slots: b's five go in turn with a's, about five rounds (a's 300 take 150)
    assert waited < 10, f"b's last job started {waited:.1f} job-durations after b queued"
    a_before = sum(1 for ms, job, _, _ in starts if job in a and ms < max(b_starts))
    assert a_before < 20, a_before
    print(f"b's five started within {waited:.1f} job-durations, after {a_before} of a's 300")
