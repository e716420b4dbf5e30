"""Job priority in the queue (shared/priority.py, queue_score() and ready_of() in lib.lua, take.lua),
against a real redis-server: higher goes first, a job is ready by its own time, and a low job's wait
behind later normal work is bounded (ageing)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import compute.leases
import shared.jobs
from compute.leases import Attempts
from shared.jobs import JobStore, NewJob
from shared.jobtypes import JobTypePolicy
from shared.priority import FAIR_STEP_MS, HIGH_AHEAD_MS, LOW_BEHIND_MS, check_priority
from shared.serialization import now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio

TYPE = "demo.story"


class Clock:
    """The ms the store and the takes see, moved by the test (real Redis, made-up time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ms = now_ms()
        for module in (shared.jobs, compute.leases):
            monkeypatch.setattr(module, "now_ms", lambda: self.ms)


@pytest.fixture
def one_shard(redis: Any, settings: Settings) -> JobStore:
    # one queue per type: the order under test is a queue's (a Cluster's shards each have their own)
    return JobStore(redis, replace(settings, shards=1))


async def submit(store: JobStore, priority: str = "normal") -> str:
    new = NewJob(tenant="acme", type=TYPE, input={"topic": "x"}, max_attempts=2, priority=priority)  # type: ignore[arg-type]
    return (await store.create(new)).job_id


async def take(attempts: Attempts, n: int = 1) -> tuple[list[str], int | None]:
    started, next_ready = await attempts.take([TYPE], n, 60_000)
    return [s.job_id for s in started], next_ready


async def test_high_goes_before_normal_and_low_after(one_shard: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    low = await submit(one_shard, "low")
    normal = []
    for _ in range(3):
        clock.ms += 1  # jobs queued in one ms are in the order of their ids
        normal.append(await submit(one_shard))
    high = await submit(one_shard, "high")
    taken, _ = await take(Attempts(one_shard, "w1"), 5)
    assert taken == [high, *normal, low]
    jobs = {job_id: await one_shard.load(job_id) for job_id in taken}
    assert jobs[high] is not None and jobs[high]["priority"] == "high"
    # a normal job stores no field: its queue score is its ready time, as before priorities
    assert jobs[normal[0]] is not None and "priority" not in jobs[normal[0]]


async def test_a_low_job_alone_starts_at_once_and_a_high_one_not_before_its_time(
    one_shard: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    low = await submit(one_shard, "low")
    assert (await take(attempts))[0] == [low]  # placed later, but ready now

    high = await submit(one_shard, "high")
    assert (await take(attempts))[0] == [high]
    # the high job's attempt fails and backs off 10 s: it does not start before then, nor hide ready work
    back_at = clock.ms + 10_000
    await one_shard.transition(high, TYPE, "queued", ready_at_ms=back_at)
    normal = await submit(one_shard)
    assert (await take(attempts))[0] == [normal]
    raw = await one_shard.load(high)
    assert raw is not None and raw["ready_at"] == str(back_at)
    assert await take(attempts) == ([], back_at)  # "ask again" is the high job's own ready time
    clock.ms = back_at
    assert (await take(attempts))[0] == [high]


async def test_make_ready_keeps_the_jobs_priority(one_shard: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    low = await submit(one_shard, "low")
    assert (await take(attempts))[0] == [low]
    await one_shard.transition(low, TYPE, "queued", ready_at_ms=clock.ms + 60_000)
    assert await one_shard.scripts.run("make_ready", one_shard.job_keys(low, TYPE), [low, clock.ms]) == "ready"
    normal = await submit(one_shard)
    queue = one_shard.keys.shard(0).queue(TYPE)
    # ready now, still placed LOW_BEHIND_MS later than the normal job queued with it
    assert await one_shard.redis.zscore(queue, low) == clock.ms + LOW_BEHIND_MS + 0.5
    assert (await take(attempts, 2))[0] == [normal, low]


async def test_a_low_job_behind_a_steady_stream_starts_within_its_ageing_bound(
    one_shard: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker slot, one normal job arriving per second and one taken per second, ten queued ahead:
    the low job goes after every normal job that arrived before LOW_BEHIND_MS had passed, and before
    any that came later."""
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    arrived: dict[str, int] = {}
    for _ in range(10):
        arrived[await submit(one_shard)] = clock.ms
    queued_at = clock.ms
    low = await submit(one_shard, "low")
    started_at = None
    for _ in range(LOW_BEHIND_MS // 1000 + 60):
        clock.ms += 1000
        arrived[await submit(one_shard)] = clock.ms
        (taken,), _ = await take(attempts)
        if taken == low:
            started_at = clock.ms
            break
        assert arrived[taken] <= queued_at + LOW_BEHIND_MS  # only work placed before the low job went first
    assert started_at is not None, "the low job never started"
    waited = started_at - queued_at
    # the ten ahead of it and those that arrived within its bound went first, then it
    assert LOW_BEHIND_MS <= waited <= LOW_BEHIND_MS + 12_000, waited


async def test_a_high_job_goes_before_normal_work_ready_less_than_its_head_start(
    one_shard: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    old = await submit(one_shard)
    clock.ms += HIGH_AHEAD_MS + 1000
    recent = await submit(one_shard)
    high = await submit(one_shard, "high")
    taken, _ = await take(attempts, 3)
    assert taken == [old, high, recent]  # normal work waiting longer than the head start keeps its place


def test_priority_values_are_checked() -> None:
    assert check_priority("low", "here") == "low"
    with pytest.raises(ValueError, match="priority must be one of high, normal, low; got 'urgent'"):
        check_priority("urgent", "here")
    with pytest.raises(ValueError, match="job type 'xy'"):
        JobTypePolicy(name="xy", priority="urgent")  # type: ignore[arg-type]
    assert JobTypePolicy(name="xy", priority="low").to_json()["priority"] == "low"


async def submit_for(store: JobStore, tenant: str, priority: str = "normal") -> str:
    new = NewJob(tenant=tenant, type=TYPE, input={}, max_attempts=1, priority=priority)  # type: ignore[arg-type]
    return (await store.create(new)).job_id


async def test_tenants_take_turns_so_a_long_queue_does_not_hold_back_another_tenants_first_jobs(
    one_shard: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    a = []
    for _ in range(300):
        clock.ms += 1
        a.append(await submit_for(one_shard, "a"))
    clock.ms += 1000
    b = [await submit_for(one_shard, "b") for _ in range(5)]
    order = []
    for _ in range(12):
        clock.ms += 100
        order += (await take(attempts))[0]
    # one of tenant a's first, then the tenants in turn
    assert order == [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3], a[4], b[4], a[5], a[6]]


async def test_jobs_placed_behind_their_tenants_are_ready_at_once(
    one_shard: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    attempts = Attempts(one_shard, "w1")
    ids = []
    for priority in ("normal", "normal", "low", "normal"):
        clock.ms += 1
        ids.append(await submit_for(one_shard, "a", priority))
    queue = one_shard.keys.shard(0).queue(TYPE)
    scores = [await one_shard.redis.zscore(queue, job_id) for job_id in ids]
    assert scores[1] == clock.ms - 2 + FAIR_STEP_MS + 0.125
    assert scores[2] == clock.ms - 1 + 2 * FAIR_STEP_MS + LOW_BEHIND_MS + 0.625
    taken, next_ready = await take(attempts, 4)
    assert taken == [ids[0], ids[1], ids[3], ids[2]] and next_ready is None  # placed later, all ready now


async def test_a_tenant_at_its_cap_of_queued_jobs_of_a_type_gets_no_more_until_one_starts(
    redis: Any, settings: Settings
) -> None:
    store = JobStore(redis, replace(settings, shards=1, max_queued_per_tenant=3))
    attempts = Attempts(store, "w1")
    first = [await submit_for(store, "a") for _ in range(3)]
    refused = await store.create(NewJob(tenant="a", type=TYPE, input={}, max_attempts=1))
    assert refused.full and not refused.created and not refused.job_id
    assert await store.create(NewJob(tenant="b", type=TYPE, input={}, max_attempts=1))  # another tenant
    other = await store.create(NewJob(tenant="a", type="demo.review", input={}, max_attempts=1))
    assert other.created  # another type
    counts = await store.redis.hget(store.keys.shard(0).counts, f"tenant|a|{TYPE}|queued")
    assert counts == "3"  # the refused one left no trace
    assert (await take(attempts))[0] == [first[0]]
    assert (await store.create(NewJob(tenant="a", type=TYPE, input={}, max_attempts=1))).created
