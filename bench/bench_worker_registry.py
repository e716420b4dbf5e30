"""What the workers registry (GET /v1/workers) costs Redis, per worker, counted by the server.

    python3 bench/bench_worker_registry.py [--seconds 15] [--shards 1]

Starts a private redis-server and runs one worker (default timings: a beat a second) for ``--seconds``,
twice each: idle, then busy (a feeder keeps it running 20 jobs a second of 100 ms each, so the jobs it
runs change between every two beats); once with the worker publishing its info, once with that
turned off. Prints Redis commands per second of each run (commands inside the scripts included:
INFO commandstats), and how often the info was written: each write is an HSET and a PEXPIRE inside a
beat the worker sends anyway (no round trip of its own). Idle, the difference of the two runs is the
registry's cost exactly; busy, the jobs' own commands vary by more than it from run to run, so the
count of writes tells it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from compute.context import JobContext
from compute.registry import job_type
from compute.worker import Worker
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

JOBS_PER_S = 20


@job_type("bench.nap", max_attempts=1)
async def nap(ctx: JobContext) -> None:
    await asyncio.sleep(0.1)


async def calls(redis: Any) -> dict[str, int]:
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in info.items()}


async def feed(store: JobStore, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await store.create(NewJob(tenant="bench", type=nap.name, input={}, max_attempts=1))
        await asyncio.sleep(1 / JOBS_PER_S)


async def one_run(url: str, shards: int, seconds: float, busy: bool, publish: bool) -> tuple[float, float]:
    """(Redis commands per second while one worker ran ``seconds`` (the feeder's creates included), info
    writes per second)."""
    redis = connect(url, 16)
    settings = Settings(redis_url=url, shards=shards)
    store = JobStore(redis, settings)
    await redis.flushall()
    await store.register_types([nap.policy])
    worker = Worker(settings, redis, {nap.name: nap}, concurrency=8)
    writes = []
    if publish:
        written = worker.presence.written
        worker.presence.written = lambda info, now: (writes.append(now), written(info, now))  # type: ignore
    else:
        worker.presence.next = lambda now: None  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.5)  # start-up (the first beat, the first write) is not what is measured
    await redis.config_resetstat()
    writes.clear()
    started = time.monotonic()
    if busy:
        await feed(store, seconds)
    else:
        await asyncio.sleep(seconds)
    counted = await calls(redis)
    elapsed = time.monotonic() - started
    worker.drain()
    await task
    await redis.aclose()
    total = sum(n for name, n in counted.items() if name not in ("config|resetstat", "info"))
    return total / elapsed, len(writes) / elapsed


async def main(seconds: float, shards: int) -> None:
    server = RedisServer().start()
    try:
        for busy in (False, True):
            off, _ = await one_run(server.url, shards, seconds, busy, publish=False)
            on, writes = await one_run(server.url, shards, seconds, busy, publish=True)
            label = f"{'busy' if busy else 'idle'} worker, {shards} shard{'s' if shards > 1 else ''}"
            print(f"{label}: {off:.2f} commands/s without the registry, {on:.2f} with it (difference "
                  f"{on - off:+.2f}/s); info written {writes:.2f} times/s = {2 * writes:.2f} commands/s "
                  "(HSET + PEXPIRE inside a beat)")
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.shards))
