"""Leases, zombies and the supervisor, in one process against a real redis-server (lease 1 s)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from compute.context import JobContext
from compute.leases import Attempts, LeaseLost
from compute.outcomes import Outcomes
from compute.registry import BUILTIN_MODULES, load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.jobtypes import DEMO_STORY
from shared.serialization import loads, now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio


async def start_without_heartbeats(store: JobStore, settings: Settings, worker_id: str) -> JobContext:
    """An attempt whose worker then goes silent, as if frozen or killed."""
    attempts = Attempts(store, worker_id)
    (started,), _ = await attempts.take(["demo.story"], 1, settings.lease_ms)
    return JobContext(attempts, started, settings)


async def until_lease_expires(supervisor: Supervisor, outcome: str) -> dict[str, int]:
    for _ in range(300):
        done = await supervisor.tick()
        if done.get(outcome):
            return done
        await asyncio.sleep(0.02)
    raise AssertionError(f"supervisor never reported {outcome}")


async def new_job(store: JobStore, max_attempts: int = 3) -> str:
    new = NewJob(tenant="acme", type="demo.story", max_attempts=max_attempts,
                 input={"topic": "zombies", "steps": 1, "tokens_per_step": 20, "delay_ms": 0})
    return (await store.create(new)).job_id


async def test_a_zombie_cannot_write_after_its_job_was_restarted(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backlane")
    store = JobStore(redis, settings)
    job_id = await new_job(store)
    zombie = await start_without_heartbeats(store, settings, "frozen")
    await zombie.output("written while alive ")
    await zombie.flush()
    await until_lease_expires(Supervisor(settings, redis, webhooks=False), "restarted")
    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)
    before = await store.read_events(job_id, None)

    await zombie.output("zombie text")  # the frozen worker wakes up and carries on
    with pytest.raises(LeaseLost):
        await zombie.flush()
    with pytest.raises(LeaseLost):
        await zombie.save_checkpoint({"evil": True})
    stale = await store.transition(job_id, "demo.story", "failed", token=zombie.token)
    assert stale.outcome == "stale"
    # the zombie's worker ending the attempt: refused, and logged as such
    assert (await Outcomes(store, "frozen").finished(zombie, "late", DEMO_STORY)).outcome == "stale"
    refused = [r for r in caplog.records if getattr(r, "event", None) == "job.stale_write"]
    assert len(refused) == 1 and refused[0].levelname == "WARNING" and refused[0].name == "backlane.worker"
    assert refused[0].fields == {"job_id": job_id, "type": "demo.story", "tenant": "acme", "attempt": 1,  # type: ignore[attr-defined]
                                 "worker": "frozen", "status": "completed"}
    lost = [r for r in caplog.records if getattr(r, "event", None) == "job.worker_lost"]
    assert len(lost) == 1 and lost[0].fields["worker"] == "frozen"  # type: ignore[attr-defined]
    assert lost[0].fields["outcome"] == "restarted" and lost[0].fields["attempt"] == 1  # type: ignore[attr-defined]

    assert await store.read_events(job_id, None) == before  # not one event added
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "2"
    assert await store.checkpoint(job_id) is None  # the zombie's checkpoint never landed either
    assert (await store.stats())["stale_writes"] >= 2  # the append and the transition, refused in Redis
    statuses = [loads(d) for _, t, d in before if t == "status"]
    assert [(s["status"], s["attempt"]) for s in statuses] == [
        ("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("completed", 2)]
    assert statuses[2]["reason"] == "worker_lost" and statuses[2]["error"]["class"] == "worker_lost"


async def test_cancel_reaches_a_job_whose_worker_died(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await new_job(store)
    await start_without_heartbeats(store, settings, "dead")
    assert (await store.cancel(job_id, "demo.story")).outcome == "requested"
    await until_lease_expires(Supervisor(settings, redis, webhooks=False), "canceled")
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "canceled" and raw["attempt"] == "1"  # not restarted


async def test_a_job_whose_workers_keep_dying_fails_with_worker_lost(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await new_job(store, max_attempts=2)
    supervisor = Supervisor(settings, redis, webhooks=False)
    await start_without_heartbeats(store, settings, "dies-1")
    await until_lease_expires(supervisor, "restarted")
    await start_without_heartbeats(store, settings, "dies-2")
    await until_lease_expires(supervisor, "failed")
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    assert loads(raw["error"]) == {"class": "worker_lost", "retryable": False, "attempt": 2,
                                   "message": "the worker stopped heartbeating and its lease expired"}


async def test_two_supervisors_act_once(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await new_job(store)
    await start_without_heartbeats(store, settings, "dead")
    a, b = Supervisor(settings, redis, webhooks=False), Supervisor(settings, redis, webhooks=False)
    outcomes: dict[str, int] = {}
    for _ in range(300):
        for done in await asyncio.gather(a.tick(), b.tick()):
            for k, v in done.items():
                outcomes[k] = outcomes.get(k, 0) + v
        if outcomes.get("restarted"):
            break
        await asyncio.sleep(0.02)
    assert outcomes.get("restarted") == 1
    statuses = [loads(d)["status"] for _, t, d in await store.read_events(job_id, None) if t == "status"]
    assert statuses == ["queued", "running", "queued"]


async def test_a_worker_dying_between_claim_and_start_loses_nothing(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await new_job(store)
    # claim.lua (the two-step path of a worker that starts later: claim, then start) leaves the job
    # queued under a provisional lease; this worker dies before its start
    k = store.keys.of_job(job_id)
    claimed, _ = await store.scripts.run("claim", [k.leases, k.queue("demo.story")], [now_ms(), settings.lease_ms])
    assert claimed == job_id and await redis.zcard(k.queue("demo.story")) == 0
    await until_lease_expires(Supervisor(settings, redis, webhooks=False), "requeued")
    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)
    assert (await store.load(job_id) or {})["status"] == "completed"


async def test_start_deadline_expires_a_job_that_never_started(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    new = NewJob(tenant="acme", type="demo.story", input={"topic": "late"}, max_attempts=3, deadline_s=0.05)
    job_id = (await store.create(new)).job_id
    await asyncio.sleep(0.1)
    done = await Supervisor(settings, redis, webhooks=False).tick()
    assert done.get("deadline_expired") == 1
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "expired" and loads(raw["error"])["class"] == "deadline"
    assert await redis.zcard(store.keys.of_job(job_id).queue("demo.story")) == 0


async def test_review_window_expires_an_undecided_job(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    new = NewJob(tenant="acme", type="demo.review", input={"action": "email", "delay_ms": 0}, max_attempts=3,
                 review_required=True, review_window_s=0.1)
    job_id = (await store.create(new)).job_id
    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)
    assert (await store.load(job_id) or {})["status"] == "needs_review"
    await asyncio.sleep(0.15)
    await Supervisor(settings, redis, webhooks=False).tick()
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "expired" and raw["review_state"] == "expired"


async def test_tenant_indexes_drop_jobs_older_than_the_retention(redis: Redis, settings: Settings) -> None:
    from compute.supervisor.upkeep import Upkeep

    store = JobStore(redis, settings)
    kept = await new_job(store)
    old_but_alive = await new_job(store)
    index = store.keys.of_job(kept).tenant_jobs("acme")
    await redis.zadd(index, {"f" * 32: 1_000})  # an entry whose job expired long ago
    # Bug: the trim dropped every entry created before the retention, also a job still running (a
    # batch can run for days) or finished lately, so it vanished from the list. Fix: only entries
    # whose job keys are gone are dropped.
    await redis.zadd(index, {old_but_alive: 2_000})
    assert await Upkeep(store).trim_tenant_indexes() == 1
    assert set(await redis.zrange(index, 0, -1)) == {kept, old_but_alive}


async def test_a_finished_job_leaves_its_tenant_s_counts_when_its_keys_expire(redis: Redis, settings: Settings) -> None:
    """Bug: GET /v1/jobs/counts kept counting finished jobs after their keys expired with the retention,
    so the counts drifted above what the list showed. Cause: nothing noticed the expiry. Fix: a finished
    job is put in `retiring` at its expiry time; the supervisor's retire script takes it out of the
    tenant's counts once, however many supervisors run it."""
    from compute.supervisor.upkeep import Upkeep

    store = JobStore(redis, settings)
    job_id = await new_job(store)
    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)
    assert (await store.tenant_counts("acme"))["demo.story"]["completed"] == 1
    raw = await store.load(job_id)
    assert raw is not None
    expires_at = int(raw["finished_at"]) + store.retention_ms  # when Redis drops the job's keys
    assert await redis.pttl(store.keys.job(job_id)) > 0
    upkeeps = [Upkeep(store), Upkeep(JobStore(redis, settings))]
    assert await upkeeps[0].retire(now=expires_at - 1) == 0  # not expired yet: still listed, still counted

    retired = await asyncio.gather(*(u.retire(now=expires_at) for u in upkeeps))
    assert sorted(retired) == [0, 1]
    counts = await store.tenant_counts("acme")
    assert counts["demo.story"]["completed"] == 0 and sum(counts["demo.story"].values()) == 0
    assert await store.index_size(lambda s: s.retiring) == 0


async def test_heartbeats_keep_a_healthy_job_alive_well_past_its_lease(redis: Redis, settings: Settings) -> None:
    """A job that runs more than three lease lengths, under a supervisor checking every 0.1 s,
    completes in its first attempt: the heartbeats renew the lease, so it is never taken as lost."""
    from compute.registry import job_type

    run_s = 3 * settings.lease_s + 0.3

    @job_type("test.long")
    async def long(ctx: JobContext) -> str:
        await ctx.output("started ")
        await asyncio.sleep(run_s)  # the work; the worker heartbeats meanwhile, 0.2 s apart
        await ctx.output("done")
        return "ok"

    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="test.long", input={}, max_attempts=3))).job_id
    supervisor = Supervisor(settings, redis, webhooks=False)
    watching = asyncio.create_task(supervisor.run())
    try:
        await Worker(settings, redis, {long.name: long}).run(burst=True)
    finally:
        supervisor.stop()
        await watching
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "1"
    assert int(raw["finished_at"]) - int(raw["started_at"]) >= run_s * 1000
    statuses = [loads(d) for _, t, d in await store.read_events(job_id, None) if t == "status"]
    assert [s["status"] for s in statuses] == ["queued", "running", "completed"]
    assert not any(s.get("reason") == "worker_lost" for s in statuses)
    assert "lease_expiries" not in await store.stats()
