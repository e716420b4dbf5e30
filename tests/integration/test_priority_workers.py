"""Priority with a real ``backlane worker`` process (``tests/capacity_jobs.py``): a high job queued
behind twenty normal ones starts next."""

from __future__ import annotations

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
