"""run_ms and the run-time histogram count running, not waiting for a reviewer."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from http_server import supervisor_process, worker_process
from redis.asyncio import Redis

from api.metrics import run_time_buckets
from api.records import timing
from compute.context import JobContext
from compute.registry import BUILTIN_MODULES, JobType, job_type, load
from compute.worker import Worker
from shared.connection import connect
from shared.job import Job
from shared.jobs import JobStore, NewJob
from shared.serialization import dumps, now_ms, rfc3339
from shared.settings import Settings

pytestmark = pytest.mark.anyio
HOUR_MS = 3_600_000


@job_type("test.draft", authority="draft")
async def draft(ctx: JobContext) -> str:
    return "a draft"


def types(*extra: JobType) -> dict[str, JobType]:
    found = load(BUILTIN_MODULES)
    found.update({jt.name: jt for jt in extra})
    return found


async def decide_an_hour_later(store: JobStore, job_id: str, job_type: str, has_apply: bool) -> None:
    """Approves as the decide script would an hour from now (the reviewer took their time)."""
    later = now_ms() + HOUR_MS
    reply = await store.scripts.run("decide", store.job_keys(job_id, job_type), [
        job_id, "approve", dumps("maria"), dumps(None), "", "1" if has_apply else "0", later, rfc3339(later),
        store.retention_ms])
    assert reply[0] == "ok", reply


async def histogram(store: JobStore, job_type: str) -> tuple[int, int]:
    counts = await store.counts()
    runs = dict(run_time_buckets(counts).get(job_type, []))
    return runs.get("+Inf", 0), counts.get(f"run_ms_sum|{job_type}", 0)


async def test_time_in_needs_review_is_not_run_time(redis: Redis, settings: Settings, store: JobStore) -> None:
    """Bug: run_ms kept growing while a job sat in needs_review, and an approval an hour later put an
    hour into the run-time histogram. Cause: both measured from started_at to now / finished_at.
    Fix: transition() in lib.lua closes the run clock (run_ms) when a job leaves running."""
    job_id = (await store.create(NewJob(tenant="acme", type="test.draft", input={}, max_attempts=3,
                                        review_required=True))).job_id
    await Worker(settings, redis, types(draft)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "needs_review"
    ran = timing(Job.from_hash(raw))["run_ms"]
    assert ran is not None and ran < 5000
    assert timing(Job.from_hash(raw), now=now_ms() + HOUR_MS)["run_ms"] == ran  # the clock stopped at needs_review
    await decide_an_hour_later(store, job_id, "test.draft", has_apply=False)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and timing(Job.from_hash(raw))["run_ms"] == ran
    assert await histogram(store, "test.draft") == (1, ran)


async def test_an_applied_job_reports_the_handler_s_and_the_apply_step_s_run_time(
    redis: Redis, settings: Settings, store: JobStore
) -> None:
    """The choice for the apply phase: run_ms = the handler's run + the apply step's run; the
    review wait and the queue wait between them count for neither."""
    applied: dict[str, Any] = {}

    async def apply(ctx: JobContext, proposed: Any) -> str:
        applied["handler_run_ms"] = ctx.job.handler_run_ms
        return "sent"

    jt = job_type("test.send", authority="external_side_effect", apply=apply)(draft.handler)
    job_id = (await store.create(NewJob(tenant="acme", type=jt.name, input={}, max_attempts=3,
                                        review_required=True))).job_id
    await Worker(settings, redis, types(jt)).run(burst=True)
    await decide_an_hour_later(store, job_id, jt.name, has_apply=True)
    await redis.zadd(store.keys.of_job(job_id).queue(jt.name), {job_id: now_ms()})  # ready now, not in the hour decided
    await Worker(settings, redis, types(jt)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed"
    total = timing(Job.from_hash(raw))["run_ms"]
    assert total is not None and applied["handler_run_ms"] <= total < 5000
    assert await histogram(store, jt.name) == (1, total)


async def test_run_ms_counts_every_attempt_of_a_job_whose_worker_was_killed(redis_url: str, tmp_path: Any) -> None:
    """Bug: a job whose first attempt ran 11 s before its worker was killed reported run_ms of 2.5 s, the
    second attempt's alone. Cause: transition() in lib.lua set run_ms to the newest run when a job left
    running. Fix: it adds each run to run_ms, and keeps each attempt's own in its end (attempts[].run_ms)."""
    env = {"BACKLANE_REDIS_URL": redis_url, "BACKLANE_HEARTBEAT_S": "0.2", "BACKLANE_LEASE_S": "1",
           "BACKLANE_SUPERVISOR_INTERVAL_S": "0.1", "BACKLANE_LOG_LEVEL": "WARNING"}
    settings = Settings.from_env(env)
    redis = connect(redis_url, 4)
    store = JobStore(redis, settings)
    spec = {"topic": "killed", "steps": 2, "tokens_per_step": 15, "delay_ms": 100}  # about 3 s of work
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=3))).job_id
    try:
        with worker_process(env, tmp_path / "victim.log") as victim:
            first = await _wait(store, job_id, lambda j: j.status == "running" and j.last_seq > 12, "streaming")
            await asyncio.sleep(1.5)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed_after = now_ms() - (first.started_at or 0)
        with worker_process(env, tmp_path / "second.log"), supervisor_process(env, tmp_path / "supervisor.log"):
            done = await _wait(store, job_id, lambda j: j.status == "completed", "completion", timeout=30)
    finally:
        await redis.aclose()
    assert done.attempt == 2
    runs = [a["run_ms"] for a in done.attempts]
    assert runs[0] >= killed_after  # until the loss was noticed: the lease ran out after the kill
    assert runs[1] > 0  # the second attempt resumed from the first one's checkpoint
    total = timing(done)["run_ms"]
    assert total == sum(runs) and total > runs[1] + killed_after
    assert await histogram(store, "demo.story") == (1, total)


async def _wait(store: JobStore, job_id: str, check: Any, what: str, timeout: float = 20) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await store.job(job_id)
        if job is not None and check(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
