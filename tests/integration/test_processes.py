"""Real `backlane worker` / `backlane supervisor` processes: SIGKILL and SIGTERM, default timings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from compute.registry import BUILTIN_MODULES, load
from compute.types.demo import full_text, story_words
from compute.worker import Worker
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class Procs:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "backlane", *args], env={**self.env, **extra_env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def procs(redis_url: str) -> Iterator[Procs]:
    # default timings: heartbeat 1 s, lease 4 s, supervisor every 1 s
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_LOG_LEVEL": "WARNING"})
    p = Procs(env)
    yield p
    p.stop_all()


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_a_killed_worker_s_job_runs_again_within_15_s_and_completes(procs: Procs, redis_url: str) -> None:
    redis = connect(redis_url, 4)
    store = JobStore(redis, Settings(redis_url=redis_url))
    spec = {"topic": "kill -9", "steps": 3, "tokens_per_step": 40, "delay_ms": 50}  # about 6 s of work
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=3))).job_id
    victim = procs.start("worker")

    async def some_output() -> bool:
        return int((await store.load(job_id) or {}).get("last_seq", 0)) > 20

    await wait_for(some_output, 20, "the first worker to stream")
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    procs.start("supervisor")
    procs.start("worker")

    async def second_attempt_running() -> bool:
        raw = await store.load(job_id) or {}
        return raw.get("status") == "running" and raw.get("attempt") == "2"

    await wait_for(second_attempt_running, 15, "attempt 2 to run within 15 s of the kill")
    restart_s = time.monotonic() - killed_at

    async def done() -> bool:
        return (await store.load(job_id) or {}).get("status") == "completed"

    await wait_for(done, 30, "the job to complete")
    evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
    statuses = [(e["status"], e["attempt"], e.get("reason")) for e in evs if e["type"] == "status"]
    assert statuses == [("queued", 0, None), ("running", 1, None), ("queued", 1, "worker_lost"),
                        ("running", 2, None), ("completed", 2, None)]
    newest = "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == 2)
    assert newest == full_text(story_words("kill -9", 3, 40))
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    print(f"running again {restart_s:.1f} s after SIGKILL")
    await redis.aclose()


async def test_a_worker_whose_event_loop_stalls_for_2_s_keeps_its_job(procs: Procs, redis_url: str) -> None:
    """SIGSTOP for 2 s (no beat meanwhile), then SIGCONT, with a supervisor watching: shorter than the
    lease after a beat, so the job is not taken over; attempt 1 completes."""
    redis = connect(redis_url, 4)
    store = JobStore(redis, Settings(redis_url=redis_url))
    spec = {"topic": "stall", "steps": 2, "tokens_per_step": 40, "delay_ms": 40}  # about 3 s of work
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=3))).job_id
    procs.start("supervisor")
    worker = procs.start("worker")

    async def streaming() -> bool:
        return int((await store.load(job_id) or {}).get("last_seq", 0)) > 5

    await wait_for(streaming, 20, "the worker to stream")
    worker.send_signal(signal.SIGSTOP)
    await asyncio.sleep(2)
    worker.send_signal(signal.SIGCONT)

    async def ended() -> bool:
        return (await store.load(job_id) or {}).get("status") in ("completed", "failed")

    await wait_for(ended, 30, "the job to end")
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "1"
    assert "lease_expiries" not in await store.stats()
    await redis.aclose()


async def test_sigterm_drains_and_hands_back_without_counting_an_attempt(
    procs: Procs, redis_url: str, redis: Redis, settings: Settings
) -> None:
    store = JobStore(redis, settings)
    spec = {"topic": "drain", "steps": 1, "tokens_per_step": 150, "delay_ms": 20}  # 3 s: longer than the grace
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=1))).job_id
    worker = procs.start("worker", BACKLANE_DRAIN_GRACE_S="0.5")

    async def streaming() -> bool:
        return int((await store.load(job_id) or {}).get("last_seq", 0)) > 10

    await wait_for(streaming, 20, "the worker to stream")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "queued" and raw["released"] == "1" and raw["attempt"] == "1"
    last_status = [loads(d) for _, t, d in await store.read_events(job_id, None, count=10_000) if t == "status"][-1]
    assert last_status["reason"] == "worker_shutdown"

    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "2"  # max_attempts=1 still ran


async def test_sigterm_lets_a_job_that_ends_within_the_grace_period_complete(
    procs: Procs, redis: Redis, settings: Settings
) -> None:
    """SIGTERM mid-job with a grace period longer than the rest of the job: the worker stops
    claiming, the attempt finishes (attempt 1, completed, nothing handed back), then it exits 0."""
    store = JobStore(redis, settings)
    spec = {"topic": "grace", "steps": 1, "tokens_per_step": 60, "delay_ms": 20}  # about 1.2 s of work
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=1))).job_id
    worker = procs.start("worker", BACKLANE_DRAIN_GRACE_S="20", BACKLANE_WORKER_CONCURRENCY="1")

    async def streaming() -> bool:
        return int((await store.load(job_id) or {}).get("last_seq", 0)) > 10

    await wait_for(streaming, 20, "the worker to stream")
    waiting = (await store.create(NewJob(tenant="acme", type="demo.story", input=spec, max_attempts=1))).job_id
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 20) == 0
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and raw["attempt"] == "1" and raw["released"] == "0"
    statuses = [loads(d)["status"] for _, t, d in await store.read_events(job_id, None, count=10_000) if t == "status"]
    assert statuses == ["queued", "running", "completed"]
    evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
    assert "".join(e["text"] for e in evs if e["type"] == "output") == full_text(story_words("grace", 1, 60))
    # a draining worker claims nothing new
    assert (await store.load(waiting) or {}).get("status") == "queued"
