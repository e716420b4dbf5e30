"""Backlane on a real local three-master Redis Cluster, in every run (not only BACKLANE_TEST_REDIS=cluster):
the client is detected from the server, jobs spread evenly over the masters, and a job goes from
create to completed through a worker whose wake readers cover every shard."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
import redis as sync_redis
from redis.crc import key_slot
from redis_cluster import LocalCluster

from compute.registry import BUILTIN_MODULES, load
from compute.worker import Worker
from shared.connection import ShardsMismatch, connect, is_cluster
from shared.jobs import JobStore, NewJob
from shared.settings import Settings
from shared.shards import CLUSTER_SHARDS, shard_tags

pytestmark = pytest.mark.anyio


def master_of_slot(cluster: LocalCluster) -> dict[int, int]:
    """slot → the port of the master that serves it, as the cluster itself says."""
    client = sync_redis.Redis(port=cluster.ports[0])
    try:
        owners = {}
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            for slot in range(start, end + 1):
                owners[slot] = int(primary[1])
        return owners
    finally:
        client.close()


@pytest.fixture
def cluster_settings(redis_cluster: LocalCluster, settings: Settings) -> Settings:
    redis_cluster.flushall()
    return dataclasses.replace(settings, redis_url=redis_cluster.url, shards=None)


def test_the_shard_tags_land_evenly_on_the_masters(redis_cluster: LocalCluster) -> None:
    owners = master_of_slot(redis_cluster)
    per_master = Counter(owners[key_slot(tag.strip("{}").encode())] for tag in shard_tags(CLUSTER_SHARDS))
    assert sorted(per_master.values()) == [CLUSTER_SHARDS // 3] * 3


async def test_jobs_spread_evenly_over_the_masters(redis_cluster: LocalCluster, cluster_settings: Settings) -> None:
    redis = connect(cluster_settings.redis_url or "", 8)
    try:
        assert is_cluster(redis)
        store = JobStore(redis, cluster_settings)
        assert store.keys.shards == CLUSTER_SHARDS
        n = 300
        ids = [(await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=1))).job_id
               for _ in range(n)]
        # where each job hash really is: asked of every master
        held = {}
        for port in redis_cluster.ports:
            node = sync_redis.Redis(port=port, decode_responses=True)
            held[port] = sum(1 for _ in node.scan_iter(match="bl:*:job:*", _type="hash", count=1000))
            node.close()
        assert sum(held.values()) == n
        assert max(held.values()) <= 1.5 * n / len(held), held
        listed = await store.list_jobs("acme", status=None, job_type=None, cursor=None, limit=n)
        assert sorted(j.id for j in listed.jobs) == sorted(ids)
        assert (await store.tenant_counts("acme"))["demo.story"]["queued"] == n
    finally:
        await redis.aclose()


async def test_a_job_runs_to_completion_on_the_cluster(cluster_settings: Settings) -> None:
    redis = connect(cluster_settings.redis_url or "", 16)
    try:
        store = JobStore(redis, cluster_settings)
        worker = Worker(cluster_settings, redis, load(BUILTIN_MODULES), concurrency=4)
        run = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)  # the worker now blocks on every shard's wake lists
        quick = {"steps": 1, "tokens_per_step": 3, "delay_ms": 0}
        ids = [(await store.create(NewJob(tenant="acme", type="demo.story", input={"topic": f"t{i}", **quick},
                                          max_attempts=1))).job_id for i in range(24)]
        for _ in range(200):
            jobs = [await store.job(i) for i in ids]
            if all(j is not None and j.status == "completed" for j in jobs):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"not completed: {[j.status for j in jobs if j]}")
        assert len({store.keys.of_job(i).shard for i in ids}) == CLUSTER_SHARDS  # every shard had one
        worker.drain()
        await asyncio.wait_for(run, 10)
    finally:
        await redis.aclose()


async def test_a_process_with_another_number_of_shards_refuses_to_start(cluster_settings: Settings) -> None:
    redis = connect(cluster_settings.redis_url or "", 4)
    try:
        await JobStore(redis, cluster_settings).agree_on_shards()
        with pytest.raises(ShardsMismatch, match=f"BACKLANE_SHARDS={CLUSTER_SHARDS}"):
            await JobStore(redis, dataclasses.replace(cluster_settings, shards=4)).agree_on_shards()
    finally:
        await redis.aclose()
