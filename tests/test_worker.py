"""A real worker in burst mode against a real redis-server: what happened, asserted afterwards."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from compute.context import JobContext
from compute.errors import TransientError, parse_retry_after
from compute.registry import BUILTIN_MODULES, JobType, job_type, load
from compute.types.demo import full_text, story_words
from compute.worker import Worker
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio


def types(*extra: JobType) -> dict[str, JobType]:
    found = load(BUILTIN_MODULES)
    found.update({jt.name: jt for jt in extra})
    return found


async def submit(store: JobStore, job_type: str = "demo.story", **input: Any) -> str:
    policy = (await store.job_types()).get(job_type)
    new = NewJob(tenant="acme", type=job_type, input=input, max_attempts=policy.max_attempts if policy else 3,
                 review_required=bool(policy and policy.draw_review()))
    return (await store.create(new)).job_id


async def events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [loads(d) for _, _, d in await store.read_events(job_id, None, count=100_000)]


def output_of_newest_attempt(evs: list[dict[str, Any]]) -> str:
    newest = max(e["attempt"] for e in evs)
    return "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == newest)


async def test_demo_story_completes_with_its_whole_text_and_consecutive_seq(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, topic="tides", steps=3, tokens_per_step=25, delay_ms=0)
    await Worker(settings, redis, types()).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    evs = await events(store, job_id)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert output_of_newest_attempt(evs) == full_text(story_words("tides", 3, 25))
    assert [e["status"] for e in evs if e["type"] == "status"] == ["queued", "running", "completed"]
    assert [e["step"] for e in evs if e["type"] == "progress"] == ["research", "outline", "write", "done"]
    assert loads(raw["result"]) == {"title": "tides: a short story", "words": 75,
                                    "steps": ["research", "outline", "write"]}
    assert await store.checkpoint(job_id) is None  # finished jobs drop their checkpoint


async def test_a_worker_with_three_free_slots_takes_three_ready_jobs_in_one_call(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One take claims and starts as many ready jobs as the worker has free slots (one round trip)."""
    running: set[str] = set()
    all_running = asyncio.Event()

    @job_type("test.hold")
    async def hold(ctx: JobContext) -> None:
        running.add(ctx.job_id)
        if len(running) == 3:
            all_running.set()
        await all_running.wait()

    store = JobStore(redis, settings)
    # one shard (on a Cluster, the one the idempotency keys pick), so one take can reach all three
    shard = store.keys.idempotency_shard("acme", "k0").shard
    keys = (f"k{i}" for i in itertools.count())
    ids = [(await store.create(NewJob(tenant="acme", type="test.hold", input={}, max_attempts=1), key)).job_id
           for key in itertools.islice((k for k in keys if store.keys.idempotency_shard("acme", k).shard == shard), 3)]
    worker = Worker(settings, redis, types(hold), concurrency=3)
    takes: list[list[str]] = []
    real_take = worker.attempts.take

    async def take(*args: Any, **kw: Any) -> Any:
        taken, next_ready = await real_take(*args, **kw)
        if taken:
            takes.append(sorted(started.job_id for started in taken))
        return taken, next_ready

    monkeypatch.setattr(worker.attempts, "take", take)
    await asyncio.wait_for(worker.run(burst=True), 10)
    assert takes == [sorted(ids)]
    assert [(await store.load(job_id) or {}).get("status") for job_id in ids] == ["completed"] * 3


async def test_a_job_taken_again_while_its_older_attempt_still_runs_here_runs_once_more(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled attempt whose lease passed (the supervisor queued the job again) may be taken again by
    its own worker: the old attempt is stopped as lost (its token is stale) and the new one runs once
    it has ended, under the newer token."""
    from compute.supervisor import Supervisor

    seen: list[int] = []

    @job_type("test.stall", max_attempts=3)
    async def stall(ctx: JobContext) -> str:
        seen.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.Event().wait()  # stalls until stopped
        return "done"

    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="test.stall", input={}, max_attempts=3))).job_id
    worker = Worker(settings, redis, types(stall), concurrency=2)
    async def no_beat(lease_ms: int) -> list[str]:
        return []

    monkeypatch.setattr(worker.attempts, "beat", no_beat)  # the worker seems dead once its take's lease passes
    run = asyncio.create_task(worker.run(burst=True))
    supervisor = Supervisor(settings, redis, webhooks=False)
    for _ in range(300):
        if (await supervisor.tick()).get("restarted"):
            break
        await asyncio.sleep(0.02)
    await asyncio.wait_for(run, 10)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "2" and seen == [1, 2]
    assert (await store.stats()).get("stale_writes", 0) == 0  # the stopped attempt wrote nothing


async def test_concurrency_limit_is_respected(redis: Redis, settings: Settings) -> None:
    peak, now = {"v": 0}, {"v": 0}

    @job_type("test.count")
    async def count(ctx: JobContext) -> None:
        now["v"] += 1
        peak["v"] = max(peak["v"], now["v"])
        await asyncio.sleep(0.05)
        now["v"] -= 1

    store = JobStore(redis, settings)
    for _ in range(9):
        await submit(store, "test.count")
    await Worker(settings, redis, types(count), concurrency=3).run(burst=True)
    assert peak["v"] == 3
    assert (await store.stats()).get("stale_writes", 0) == 0


async def test_output_coalescing_keeps_every_event_in_order(redis: Redis, settings: Settings) -> None:
    @job_type("test.burst")
    async def burst(ctx: JobContext) -> int:
        for i in range(5000):
            await ctx.output(f"{i},")
        return 5000

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.burst")
    started = time.perf_counter()
    await Worker(settings, redis, types(burst)).run(burst=True)
    elapsed = time.perf_counter() - started
    evs = await events(store, job_id)
    outputs = [e["text"] for e in evs if e["type"] == "output"]
    assert outputs == [f"{i}," for i in range(5000)]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    print(f"5000 output events in {elapsed:.2f} s ({5000 / elapsed:,.0f} events/s)")


async def test_cancel_of_a_running_job_stops_the_handler_promptly(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, topic="long", steps=1, tokens_per_step=10_000, delay_ms=5)
    worker = Worker(settings, redis, types())
    run = asyncio.create_task(worker.run(burst=True))
    while (raw := await store.load(job_id)) and raw["status"] != "running":
        await asyncio.sleep(0.01)
    while int((await store.load(job_id) or {}).get("last_seq", 0)) < 5:
        await asyncio.sleep(0.01)
    asked = time.perf_counter()
    assert (await store.cancel(job_id, "demo.story")).outcome == "requested"
    while (raw := await store.load(job_id)) and raw["status"] == "running":
        await asyncio.sleep(0.005)
    latency = time.perf_counter() - asked
    await run
    assert raw is not None and raw["status"] == "canceled"
    assert latency < 0.5, latency  # pub/sub, not the 0.2 s heartbeat here nor 2 s by default
    print(f"cancel latency {latency * 1000:.0f} ms")


@pytest.mark.parametrize("error_class", ["input", "policy", "internal", "deadline"])
async def test_classes_that_cannot_be_retried_fail_at_once(redis: Redis, settings: Settings, error_class: str) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, topic="x", delay_ms=0, fail={"class": error_class, "times": 5, "message": "nope"})
    await Worker(settings, redis, types()).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and raw["attempt"] == "1"
    assert loads(raw["error"]) == {"class": error_class, "message": "nope", "retryable": False, "attempt": 1}


async def test_transient_failures_retry_with_backoff_then_succeed(redis: Redis, settings: Settings) -> None:
    calls: list[float] = []

    @job_type("test.flaky", retry_base_s=0.2, retry_cap_s=10, max_attempts=4)
    async def flaky(ctx: JobContext) -> str:
        calls.append(time.monotonic())
        if ctx.attempt < 3:
            raise TransientError("upstream 503")
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.flaky")
    await Worker(settings, redis, types(flaky)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "3"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert 0.15 <= gaps[0] <= 0.35 and 0.3 <= gaps[1] <= 0.6, gaps  # 0.2 s, then 0.4 s, each ±25 %
    retries = [e for e in await events(store, job_id) if e.get("reason") == "retry"]
    assert [e["error"]["class"] for e in retries] == ["transient", "transient"]
    assert 150 <= retries[0]["retry_in_ms"] <= 250 and 300 <= retries[1]["retry_in_ms"] <= 500
    history = [loads(raw[f"attempt:{n}:end"])["status"] for n in (1, 2, 3)]
    assert history == ["queued", "queued", "completed"]


async def test_retry_after_wins_over_the_backoff(redis: Redis, settings: Settings) -> None:
    @job_type("test.ratelimited", retry_base_s=30)
    async def limited(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise TransientError("429", retry_after=0.1)
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.ratelimited")
    started = time.monotonic()
    await Worker(settings, redis, types(limited)).run(burst=True)
    assert (await store.load(job_id) or {})["status"] == "completed"
    assert time.monotonic() - started < 5
    retry = next(e for e in await events(store, job_id) if e.get("reason") == "retry")
    assert retry["retry_in_ms"] == 100 and "note" not in retry  # exactly the Retry-After: no jitter, no clamp


async def test_timeout_fails_with_class_deadline(redis: Redis, settings: Settings) -> None:
    @job_type("test.slow", timeout_s=0.1)
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(5)

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.slow")
    await Worker(settings, redis, types(slow)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and loads(raw["error"])["class"] == "deadline"


async def test_a_timeout_with_no_retry_tells_the_handler_it_is_ending(redis: Redis, settings: Settings) -> None:
    """Bug: the type's timeout cancelled the handler exactly as a drain does, so a handler could not
    tell "ending for good" from "handed back": an upstream OpenAI response was left running and billed.
    Cause: asyncio.timeout alone. Fix: when no retry follows, ctx.cancelled is set in the same loop turn
    as the timeout's cancellation; with retry_on_deadline it is not (the next attempt resumes)."""
    seen: dict[str, bool] = {}

    @job_type("test.ends", timeout_s=0.1)
    async def ends(ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen["ends"] = ctx.cancelled.is_set()
            raise

    @job_type("test.resumes", timeout_s=0.1, retry_on_deadline=True, retry_base_s=0.01, max_attempts=2)
    async def resumes(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen["resumes"] = ctx.cancelled.is_set()
                raise
        return "ok"

    @job_type("test.last_try", timeout_s=0.1, retry_on_deadline=True, max_attempts=1)
    async def last_try(ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen["last_try"] = ctx.cancelled.is_set()  # retry_on_deadline, but no attempt is left
            raise

    store = JobStore(redis, settings)
    ended, resumed = await submit(store, "test.ends"), await submit(store, "test.resumes")
    last = await submit(store, "test.last_try")
    await Worker(settings, redis, types(ends, resumes, last_try)).run(burst=True)
    assert seen == {"ends": True, "resumes": False, "last_try": True}
    assert (await store.load(last) or {})["status"] == "failed"
    raw = await store.load(ended)
    assert raw is not None and raw["status"] == "failed" and loads(raw["error"])["class"] == "deadline"
    assert (await store.load(resumed) or {})["status"] == "completed"


async def test_a_handler_that_swallows_the_timeout_still_fails_with_deadline(redis: Redis, settings: Settings) -> None:
    """Bug: a handler that caught the timeout's CancelledError and returned completed the job past its
    limit. Cause: asyncio.timeout raises TimeoutError only when the cancellation propagates. Fix: an
    expired timeout is a deadline however the code returned."""

    @job_type("test.stubborn", timeout_s=0.1)
    async def stubborn(ctx: JobContext) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        return "finished anyway"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.stubborn")
    await Worker(settings, redis, types(stubborn)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and loads(raw["error"])["class"] == "deadline"
    assert raw.get("result") in (None, "")


async def test_review_then_approve_applies_exactly_once(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = await submit(store, "demo.review", action="refund order 42", delay_ms=0)
    await Worker(settings, redis, types()).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "needs_review" and raw["review_state"] == "pending"
    decisions = await asyncio.gather(*(
        store.decide(job_id, "demo.review", approve=True, by=f"r{i}", note=None,
                     action_hash=raw["action_hash"], has_apply=True) for i in range(10)))
    assert sorted(d.outcome for d in decisions) == ["invalid"] * 9 + ["ok"]
    await Worker(settings, redis, types()).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    applied = loads(raw["applied"])
    assert applied["what"]["action"] == "refund order 42" and applied["by"] in {f"r{i}" for i in range(10)}
    statuses = [e["status"] for e in await events(store, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "needs_review", "queued", "running", "completed"]
    assert (await store.cancel(job_id, "demo.review")).outcome == "invalid"


async def test_a_handler_s_own_timeout_is_transient_not_a_deadline(redis: Redis, settings: Settings) -> None:
    """Bug: a TimeoutError raised by the handler's own code (its asyncio.wait_for) failed the job as a
    non-retryable `deadline`. Cause: the worker turned every TimeoutError into DeadlineError. Fix:
    only the type's timeout_s firing is a deadline; anything else goes through classify (transient)."""

    @job_type("test.own_timeout", timeout_s=30, retry_base_s=0.01, max_attempts=3)
    async def own_timeout(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            await asyncio.wait_for(asyncio.Event().wait(), 0.01)
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.own_timeout")
    await Worker(settings, redis, types(own_timeout)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "2"
    first = loads(raw["attempt:1:end"])
    assert first["reason"] == "retry" and first["error"]["class"] == "transient"


async def test_the_apply_step_is_bounded_by_the_type_s_timeout(redis: Redis, settings: Settings) -> None:
    """Bug: timeout_s bounded the handler but not the apply step, which could hang for ever.
    Fix: the apply step runs under the same limit; past it the job fails (class deadline; the step
    is not idempotent, so it is not run again)."""

    async def hang(ctx: JobContext, proposed: Any) -> None:
        await asyncio.Event().wait()

    @job_type("test.hanging_apply", authority="external_side_effect", apply=hang, timeout_s=0.2)
    async def propose(ctx: JobContext) -> str:
        return "proposal"

    store = JobStore(redis, settings)
    new = NewJob(tenant="acme", type="test.hanging_apply", input={}, max_attempts=3, review_required=True)
    job_id = (await store.create(new)).job_id
    await Worker(settings, redis, types(propose)).run(burst=True)
    assert (await store.decide(job_id, "test.hanging_apply", approve=True, by="r", note=None, action_hash=None,
                               has_apply=True)).outcome == "ok"
    started = time.monotonic()
    await Worker(settings, redis, types(propose)).run(burst=True)
    assert time.monotonic() - started < 3
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed"
    error = loads(raw["error"])
    assert error["class"] == "deadline" and "apply step ran longer" in error["message"]
    assert error["retryable"] is False


async def test_a_retry_after_far_in_the_future_is_clamped(redis: Redis, settings: Settings) -> None:
    """Bug: a Retry-After as an HTTP date in 2099 parked the job for decades. Cause: backoff_s took
    any Retry-After as it came. Fix: BACKLANE_MAX_RETRY_AFTER_S (default 3600) caps it, and the
    status event says it was clamped."""
    settings = replace(settings, max_retry_after_s=0.2)

    @job_type("test.far_future", retry_base_s=30)
    async def far_future(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise TransientError("429", retry_after=parse_retry_after("Thu, 01 Jan 2099 00:00:00 GMT"))
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.far_future")
    started = time.monotonic()
    await Worker(settings, redis, types(far_future)).run(burst=True)
    assert time.monotonic() - started < 3
    assert (await store.load(job_id) or {})["status"] == "completed"
    retry = next(e for e in await events(store, job_id) if e.get("reason") == "retry")
    assert retry["retry_in_ms"] == 200
    assert "clamped" in retry["note"] and "BACKLANE_MAX_RETRY_AFTER_S" in retry["note"]


async def test_retry_on_deadline_retries_a_timed_out_attempt(redis: Redis, settings: Settings) -> None:
    @job_type("test.deadline_retry", timeout_s=0.05, retry_on_deadline=True, retry_base_s=0.01, max_attempts=2)
    async def sometimes_slow(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return "ok"

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.deadline_retry")
    await Worker(settings, redis, types(sometimes_slow)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "2"
    first = loads(raw["attempt:1:end"])
    assert first["reason"] == "retry" and first["error"]["class"] == "deadline" and first["error"]["retryable"]


async def test_transient_failures_that_run_out_of_attempts_fail(redis: Redis, settings: Settings) -> None:
    @job_type("test.always_down", retry_base_s=0.01, max_attempts=3)
    async def always_down(ctx: JobContext) -> None:
        raise TransientError(f"still 503 on attempt {ctx.attempt}")

    store = JobStore(redis, settings)
    job_id = await submit(store, "test.always_down")
    await Worker(settings, redis, types(always_down)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "failed" and raw["attempt"] == "3"
    # transient: a manual retry later may well help, so it says so
    assert loads(raw["error"]) == {"class": "transient", "message": "still 503 on attempt 3", "retryable": True,
                                   "attempt": 3}
    statuses = [e["status"] for e in await events(store, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "queued", "running", "failed"]
