"""Resource limits across real worker processes: three ``backlane worker`` processes against one Redis
(or Cluster), every call logged with the handler's own clock (``tests/capacity_jobs.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capacity_jobs import CALLS_LOG, ENDS_LOG, STARTS_LOG, calls

from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, concurrency: int) -> None:
        for _ in range(n):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "backlane", "worker", "--import", "capacity_jobs"],
                env={**self.env, "BACKLANE_WORKER_CONCURRENCY": str(concurrency)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def worker_env(redis_url: str, resources: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_LOG_LEVEL": "WARNING",
                "BACKLANE_HEARTBEAT_S": "0.5", "BACKLANE_LEASE_S": "3",
                "BACKLANE_RESOURCES": json.dumps(resources),
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    return env


@pytest.fixture
def workers() -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for w in started:
        w.stop()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    redis = connect(redis_url, 8)
    yield redis
    await redis.aclose()


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Polls state that other processes change."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def parse(rows: list[str]) -> list[tuple[float, str, int, int]]:
    out = []
    for row in rows:
        ms, job, attempt, pid = row.split()
        out.append((float(ms), job, int(attempt), int(pid)))
    return sorted(out)


async def submit(store: JobStore, n: int, job_type: str, tenant: str = "acme", **input: Any) -> list[str]:
    ids = []
    for _ in range(n):
        created = await store.create(NewJob(tenant=tenant, type=job_type, input=input, max_attempts=1))
        ids.append(created.job_id)
    return ids


async def all_ended(store: JobStore, ids: list[str]) -> dict[str, dict[str, str]]:
    raws = {job_id: await store.load(job_id) or {} for job_id in ids}
    return raws if all(r.get("status") in ("completed", "failed") for r in raws.values()) else {}


async def test_one_retry_after_pauses_every_worker_and_spends_no_attempt(
    redis_url: str, client: Any, workers: list[Workers]
) -> None:
    settings = Settings(redis_url=redis_url)
    store = JobStore(client, settings)
    await store.register_types([calls.policy])
    w = Workers(worker_env(redis_url, {"api": {"requests": 1000, "window_s": 1}}))
    workers.append(w)
    w.start(3, concurrency=3)
    steady = await submit(store, 6, "capacity.calls", calls=60, pause_ms=100)

    async def steady_calling() -> bool:
        pids = {row[3] for row in parse(await client.lrange(CALLS_LOG, 0, -1))}
        return len(pids) >= 2  # calls from more than one worker process
    await wait_for(steady_calling, 30, "the steady jobs to call from several workers")
    trigger = await submit(store, 1, "capacity.calls", calls=3, retry_after_s=3)
    ended = await wait_for(lambda: all_ended(store, steady + trigger), 60, "every job to end")

    assert {r["status"] for r in ended.values()} == {"completed"}  # max_attempts 1: no attempt was spent
    raw = ended[trigger[0]]
    assert (raw["attempt"], raw["released"]) == ("2", "1")
    log = parse(await client.lrange(CALLS_LOG, 0, -1))
    paused_at = next(ms for ms, job, attempt, _ in log if job == trigger[0] and attempt == 1)
    after = [(ms, pid) for ms, job, _, pid in log if ms > paused_at + 50]
    resumed = after[0][0] - paused_at
    # nothing called between the 429 and its Retry-After, in any worker; then calls went on at once
    assert 2.9 <= resumed / 1000 <= 3.6, resumed
    before = {pid for ms, _, _, pid in log if paused_at - 1000 < ms <= paused_at + 50}
    assert len(before) >= 2, "the pause must be seen by workers other than the one that met it"
    print(f"calls resumed {resumed / 1000:.2f} s after a Retry-After of 3 s")


#: a call is logged a moment after its admission (the handler's own clock): two logs may sit this much
#: closer than their admissions did. On a loaded 2-core CI machine a handler waits for the CPU for
#: a good part of that (50 ms was once too little: 7 logs fell within 950 ms); a limiter admitting 6
#: calls within 750 ms still fails the check
LOG_SLACK_MS = 250


async def test_five_requests_a_second_and_two_at_once_are_never_exceeded_across_three_workers(
    redis_url: str, client: Any, workers: list[Workers]
) -> None:
    store = JobStore(client, Settings(redis_url=redis_url))
    await store.register_types([calls.policy])
    w = Workers(worker_env(redis_url, {"api": {"requests": 5, "window_s": 1, "concurrency": 2}}))
    workers.append(w)
    w.start(3, concurrency=4)
    started = time.monotonic()
    ids = await submit(store, 10, "capacity.calls", calls=3, hold_ms=100)
    ended = await wait_for(lambda: all_ended(store, ids), 60, "every job to end")
    took = time.monotonic() - started  # worker start-up included
    assert {r["status"] for r in ended.values()} == {"completed"}
    assert {r["attempt"] for r in ended.values()} == {"1"}

    log = parse(await client.lrange(CALLS_LOG, 0, -1))
    assert len(log) == 30 and len({pid for *_, pid in log}) >= 2
    times = [ms for ms, *_ in log]
    busiest = max(sum(1 for u in times if t <= u < t + 1000 - LOG_SLACK_MS) for t in times)
    assert busiest <= 5, f"{busiest} calls within one second"
    # every job's handler, from its start to its end: never more than two at once
    edges = sorted([(ms, 1) for ms, *_ in parse(await client.lrange(STARTS_LOG, 0, -1))]
                   + [(ms, -1) for ms, *_ in parse(await client.lrange(ENDS_LOG, 0, -1))], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2
    api = (await limits(redis_url))["api"]

    async def places_back() -> dict[str, Any] | None:
        view = (await store.limiter.views({"api": api}))[0]
        return view if view["in_use"]["running"] == 0 else None
    # each place goes back just after its job's end is written
    view = await wait_for(places_back, 5, "the places to come back")
    assert view["totals"]["admitted"] == 30
    assert (times[-1] - times[0]) / 1000 >= (30 - 5) / 5 - 0.1  # 30 calls at 5/s: the limit held the pace
    print(f"30 calls over {(times[-1] - times[0]) / 1000:.1f} s ({took:.1f} s with start-up), "
          f"at most {busiest} per second and {peak} jobs at once")


async def limits(redis_url: str) -> dict[str, Any]:
    env = worker_env(redis_url, {"api": {"requests": 5, "window_s": 1, "concurrency": 2}})
    return Settings.from_env(env).resources
