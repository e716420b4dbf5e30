"""The apply step after approval: at most once unless the type declares it idempotent, with one
idempotency key across tries; a worker lost mid-apply fails the job instead of re-running it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from compute.context import JobContext
from compute.errors import TransientError
from compute.leases import Attempts
from compute.registry import BUILTIN_MODULES, JobType, job_type, load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio


async def draft(ctx: JobContext) -> dict[str, Any]:
    return {"refund": ctx.input["order"]}


def types(*extra: JobType) -> dict[str, JobType]:
    found = load(BUILTIN_MODULES)
    found.update({jt.name: jt for jt in extra})
    return found


async def approved(store: JobStore, settings: Settings, jt: JobType) -> tuple[str, str]:
    """A job of ``jt`` run to needs_review and approved: (job id, action hash)."""
    new = NewJob(tenant="acme", type=jt.name, input={"order": 42}, max_attempts=jt.policy.max_attempts,
                 review_required=True)
    job_id = (await store.create(new)).job_id
    await Worker(settings, store.redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "needs_review"
    decision = await store.decide(job_id, jt.name, approve=True, by="maria", note=None, action_hash=None,
                                  has_apply=True)
    assert decision.outcome == "ok"
    return job_id, raw["action_hash"]


async def statuses(store: JobStore, job_id: str) -> list[str]:
    return [loads(d)["status"] for _, t, d in await store.read_events(job_id, None) if t == "status"]


async def test_a_transient_failure_inside_apply_fails_the_job_and_apply_ran_once(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: a transient error raised by apply re-queued the job with phase=apply, so the side effect
    ran again. Cause: apply failures went through the handler's retry policy. Fix: an apply step that
    is not declared idempotent runs at most once; any failure ends the job failed, not retryable."""
    keys: list[str | None] = []

    async def apply(ctx: JobContext, proposed: Any) -> None:
        keys.append(ctx.idempotency_key)
        raise TransientError("payment provider 503")

    jt = job_type("test.refund", authority="external_side_effect", apply=apply, max_attempts=5,
                  retry_base_s=0.01)(draft)
    job_id, digest = await approved(store, settings, jt)
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and "applied" not in raw
    assert keys == [f"{job_id}:{digest}"]  # called once, with the key of this approval
    error = loads(raw["error"])
    assert error["class"] == "transient" and error["retryable"] is False
    assert "may have taken effect" in error["message"] and f"{job_id}:{digest}" in error["message"]
    assert await statuses(store, job_id) == ["queued", "running", "needs_review", "queued", "running", "failed"]


async def test_an_idempotent_apply_step_is_retried_with_the_same_key(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: an apply step had no stable key to hand to the system it changes, so even a retry that
    is safe in principle could not be made safe. Fix: ctx.idempotency_key is job id + action hash,
    the same on every try, and apply_idempotent=True gives the step the normal transient retries."""
    keys: list[str | None] = []

    async def apply(ctx: JobContext, proposed: Any) -> dict[str, Any]:
        keys.append(ctx.idempotency_key)
        if len(keys) < 3:
            raise TransientError("timeout talking to the ledger")
        return {"refunded": proposed["refund"]}

    jt = job_type("test.refund_idem", authority="external_side_effect", apply=apply, apply_idempotent=True,
                  max_attempts=5, retry_base_s=0.01)(draft)
    assert jt.policy.apply_idempotent and jt.policy.to_json()["apply_idempotent"] is True
    job_id, digest = await approved(store, settings, jt)
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    assert keys == [f"{job_id}:{digest}"] * 3
    assert loads(raw["applied"])["what"] == {"refunded": 42}
    assert await statuses(store, job_id) == [
        "queued", "running", "needs_review", "queued", "running", "queued", "running", "queued", "running",
        "completed"]


async def lose_worker_mid_apply(store: JobStore, settings: Settings, job_type_name: str) -> str:
    """Starts the apply attempt under a worker that then goes silent; waits for the supervisor."""
    attempts = Attempts(store, "dies-mid-apply")
    taken, _ = await attempts.take([job_type_name], 1, settings.lease_ms)
    assert len(taken) == 1
    supervisor = Supervisor(settings, store.redis, webhooks=False)
    for _ in range(300):
        done = await supervisor.tick()
        if done.get("apply_interrupted") or done.get("restarted"):
            return next(k for k in ("apply_interrupted", "restarted") if done.get(k))
        await asyncio.sleep(0.02)
    raise AssertionError("the lease never expired")


async def test_a_worker_lost_mid_apply_fails_the_job_instead_of_running_apply_again(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: expire_lease.lua restarted a job whose worker died during the apply step, so the side
    effect could run twice. Fix: a lost apply step that is not idempotent ends the job failed
    (worker_lost, not retryable), whatever attempts are left."""
    async def apply(ctx: JobContext, proposed: Any) -> None:
        raise AssertionError("never runs: the worker is gone")

    jt = job_type("test.refund_lost", authority="external_side_effect", apply=apply, max_attempts=5)(draft)
    job_id, digest = await approved(store, settings, jt)
    assert await lose_worker_mid_apply(store, settings, jt.name) == "apply_interrupted"
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    error = loads(raw["error"])
    assert error["class"] == "worker_lost" and error["retryable"] is False
    assert "may have taken effect" in error["message"] and f"{job_id}:{digest}" in error["message"]
    assert await redis.zscore(store.keys.of_job(job_id).queue(jt.name), job_id) is None


async def test_a_worker_lost_mid_apply_of_an_idempotent_step_is_restarted(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """The counterpart: a type that declares its apply step idempotent gets the worker_lost restart."""
    keys: list[str | None] = []

    async def apply(ctx: JobContext, proposed: Any) -> str:
        keys.append(ctx.idempotency_key)
        return "done"

    jt = job_type("test.refund_lost_idem", authority="external_side_effect", apply=apply,
                  apply_idempotent=True, max_attempts=5)(draft)
    job_id, digest = await approved(store, settings, jt)
    assert await lose_worker_mid_apply(store, settings, jt.name) == "restarted"
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and keys == [f"{job_id}:{digest}"]


async def test_a_drain_that_cuts_an_apply_step_short_fails_the_job_instead_of_handing_it_back(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: a draining worker handed an unfinished apply step back to the queue, so the next worker
    ran the side effect again. Fix: an apply step cut off by the drain ends the job failed."""
    running = asyncio.Event()

    async def apply(ctx: JobContext, proposed: Any) -> None:
        running.set()
        await asyncio.Event().wait()  # outlasts the grace period

    jt = job_type("test.refund_drained", authority="external_side_effect", apply=apply)(draft)
    job_id, _ = await approved(store, settings, jt)
    worker = Worker(replace(settings, drain_grace_s=0.05), redis, types(jt))
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(running.wait(), 5)
    worker.drain()
    await asyncio.wait_for(run, 5)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and raw.get("released", "0") == "0"
    error = loads(raw["error"])
    assert error["retryable"] is False and "shut down during the apply step" in error["message"]


async def test_a_cancel_that_came_as_the_handler_finished_does_not_stop_the_apply_step(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: a cancel requested just as the handler returned left ``cancel_requested`` set through
    needs_review; after approval, the apply step's first heartbeat answered 'cancel' and the job ended
    canceled half-way through its side effect. Cause: the flag was never cleared. Fix: entering
    needs_review clears it (a person decides from there; reject still cancels)."""
    applied: list[int] = []

    async def late_cancel_draft(ctx: JobContext) -> dict[str, Any]:
        # the cancel lands as the handler returns: flagged, too late for the worker to act on it
        await ctx.flush()
        await redis.hset(store.keys.job(ctx.job_id), "cancel_requested", "1")
        return {"refund": ctx.input["order"]}

    async def slow_apply(ctx: JobContext, result: Any) -> dict[str, Any]:
        await asyncio.sleep(4 * settings.heartbeat_s)  # outlives several heartbeats
        applied.append(ctx.attempt)
        return {"what": result}

    jt = job_type("test.late_cancel", authority="external_side_effect", apply=slow_apply)(late_cancel_draft)
    job_id, _ = await approved(store, settings, jt)
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed", await statuses(store, job_id)
    assert len(applied) == 1 and raw.get("applied")


async def test_an_apply_step_that_returns_past_its_timeout_is_recorded_as_applied(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """Bug: an apply step that caught the timeout's cancellation and still finished was recorded as
    "may have taken effect" (apply_interrupted). Cause: a late return counted as a deadline. Fix: an
    apply step that returned did take effect: its value is recorded as applied."""

    async def stubborn_apply(ctx: JobContext, result: Any) -> dict[str, Any]:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # finishes the side effect it had started
        return {"what": result}

    jt = job_type("test.stubborn_apply", authority="external_side_effect", apply=stubborn_apply,
                  timeout_s=0.1)(draft)
    job_id, _ = await approved(store, settings, jt)
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed", await statuses(store, job_id)
    assert loads(raw["applied"])["what"] == {"what": {"refund": 42}}
