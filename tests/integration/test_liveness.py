"""Liveness per worker (shared/liveness.py): one beat keeps all of a worker's leases; the jobs of a
worker whose beats stop are taken over together, and a worker that was only frozen hears of it."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from compute.leases import Attempts, Started
from compute.registry import BUILTIN_MODULES, load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.serialization import loads, now_ms
from shared.settings import Settings
from shared.tasks import cancel_until_done

pytestmark = pytest.mark.anyio


async def new_jobs(store: JobStore, n: int, delay_ms: int = 0) -> list[str]:
    new = NewJob(tenant="acme", type="demo.story", max_attempts=3,
                 input={"topic": "beats", "steps": 3, "tokens_per_step": 20, "delay_ms": delay_ms})
    return [(await store.create(new)).job_id for _ in range(n)]


async def take_all(attempts: Attempts, n: int, lease_ms: int) -> list[Started]:
    taken: list[Started] = []
    while len(taken) < n:
        more, _ = await attempts.take(["demo.story"], n - len(taken), lease_ms)
        assert more, "no job was ready"
        taken += more
    return taken


async def kill(worker: Worker, run: asyncio.Task[None]) -> None:
    """Stops a worker as SIGKILL would, in-process: no drain, no hand-back, no leave, no more beats."""
    # cancel until done: redis-py's own wait_for may swallow a cancel (shared/tasks.py)
    await cancel_until_done([run, *(r.task for r in worker.running.values())])


async def test_one_beat_keeps_every_lease_of_a_worker_however_many_jobs_it_runs(
    redis: Redis, settings: Settings
) -> None:
    store = JobStore(redis, settings)
    await new_jobs(store, 5)
    attempts = Attempts(store, "busy")
    taken = await take_all(attempts, 5, settings.lease_ms)
    supervisor = Supervisor(settings, redis, webhooks=False)
    await redis.config_resetstat()
    for _ in range(int(3 * settings.lease_s / settings.heartbeat_s)):  # three lease lengths
        assert await attempts.beat(settings.lease_ms) == []
        assert "restarted" not in await supervisor.tick()
        await asyncio.sleep(settings.heartbeat_s)
    for started in taken:
        job = await store.job(started.job_id)
        assert job is not None and job.status == "running" and job.attempt == 1
    # the beats did not touch the jobs: one script per shard and beat, whatever the number of jobs
    stats = await redis.info("commandstats")
    assert "cmdstat_hset" not in stats and "cmdstat_hmget" not in stats


async def test_a_dead_workers_jobs_are_all_taken_over_and_a_live_one_keeps_its_own(
    redis: Redis, settings: Settings
) -> None:
    store = JobStore(redis, settings)
    await new_jobs(store, 3)
    dead, alive = Attempts(store, "dead"), Attempts(store, "alive")
    lost = await take_all(dead, 2, settings.lease_ms)
    kept = await take_all(alive, 1, settings.lease_ms)
    supervisor = Supervisor(settings, redis, webhooks=False)
    outcomes: dict[str, int] = {}
    deadline = asyncio.get_running_loop().time() + 5 * settings.lease_s
    while outcomes.get("restarted", 0) < 2:
        assert asyncio.get_running_loop().time() < deadline, outcomes
        await alive.beat(settings.lease_ms)
        for outcome, n in (await supervisor.tick()).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        await asyncio.sleep(settings.heartbeat_s / 2)
    assert outcomes == {"restarted": 2}
    for started in lost:
        job = await store.job(started.job_id)
        assert job is not None and job.status == "queued" and job.lease_owner is None
        raw = await store.load(started.job_id)
        assert raw is not None and loads(raw["last_error"])["class"] == "worker_lost"
    job = await store.job(kept[0].job_id)
    assert job is not None and job.status == "running" and job.lease_owner == "alive"
    workers = await store.workers.dead(now_ms() + 10 * settings.lease_ms)
    assert {w for ids in workers.values() for w in ids} == {"alive"}  # the dead one was forgotten
    # were it only frozen, its next beat tells it which attempts are no longer its own
    notices = await dead.beat(settings.lease_ms)
    assert sorted(notices) == sorted(f"lost {s.job_id} {s.token}" for s in lost)
    assert await dead.beat(settings.lease_ms) == []  # each notice once


async def test_a_worker_that_beats_again_before_the_supervisor_acts_keeps_its_jobs(
    redis: Redis, settings: Settings
) -> None:
    """A stall longer than the lease, ended by a beat before the supervisor looked: nothing is taken."""
    store = JobStore(redis, settings)
    (job_id,) = await new_jobs(store, 1)
    attempts = Attempts(store, "stalled")
    (started,) = await take_all(attempts, 1, 1)  # alive for 1 ms only
    await asyncio.sleep(0.05)
    assert await attempts.beat(settings.lease_ms) == []
    assert "restarted" not in await Supervisor(settings, redis, webhooks=False).tick()
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "running" and raw["lease_token"] == str(started.token)


async def test_a_cancel_missed_on_pub_sub_reaches_the_worker_at_its_next_beat(
    redis: Redis, settings: Settings
) -> None:
    store = JobStore(redis, settings)
    (job_id,) = await new_jobs(store, 1)
    attempts = Attempts(store, "deaf")
    await take_all(attempts, 1, settings.lease_ms)
    assert (await store.cancel(job_id, "demo.story")).outcome == "requested"
    assert await attempts.beat(settings.lease_ms) == [f"cancel {job_id}"]


async def test_a_killed_worker_process_is_taken_over_by_another_within_the_lease(
    redis: Redis, settings: Settings
) -> None:
    """A worker whose beats stop (its process killed: here its tasks are cancelled without a drain)
    loses its running job to another worker about one lease after its last beat, not later."""
    store = JobStore(redis, settings)
    (job_id,) = await new_jobs(store, 1, delay_ms=1000)  # runs well past the test
    types = load(BUILTIN_MODULES)
    first = Worker(settings, redis, types, worker_id="first")
    run = asyncio.create_task(first.run())
    while (job := await store.job(job_id)) is None or job.status != "running":
        await asyncio.sleep(0.01)
    await kill(first, run)
    killed = asyncio.get_running_loop().time()

    supervisor = asyncio.create_task(Supervisor(settings, redis, webhooks=False).run())
    second = Worker(settings, redis, types, worker_id="second")
    second_run = asyncio.create_task(second.run())
    try:
        while (job := await store.job(job_id)) is None or job.lease_owner != "second":
            assert asyncio.get_running_loop().time() - killed < 4 * settings.lease_s
            await asyncio.sleep(0.02)
        taken_after = asyncio.get_running_loop().time() - killed
        assert taken_after <= settings.lease_s + 2 * settings.supervisor_interval_s + 0.5, taken_after
        assert job.attempt == 2
    finally:
        await kill(second, second_run)
        await cancel_until_done([supervisor])
