"""How many Redis commands one job costs, counted by the server (INFO commandstats).

    python3 bench/bench_commands.py [--jobs 200] [--outputs 0]

Starts a private redis-server (or uses BACKLANE_REDIS_URL, whose counters it resets), creates
``--jobs`` no-op jobs one at a time, then runs a burst worker over them (claim, start, completed).
With ``--outputs N`` each job writes N output events and one progress event first (the append path).
Prints the commands per job of each part, the commands inside the scripts included, by command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
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


@job_type("bench.noop", max_attempts=1)
async def noop(ctx: JobContext) -> None:
    for i in range(int(ctx.input.get("outputs", 0))):
        if i == 0:
            await ctx.progress("writing")
        await ctx.output(f"token{i} ")


async def calls(redis: Any) -> dict[str, int]:
    """Calls so far of each command (``cmdstat_hset`` → ``hset``)."""
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in info.items()}


def report(part: str, counted: dict[str, int], jobs: int) -> float:
    per_job = sum(counted.values()) / jobs
    rows = sorted(((n / jobs, name) for name, n in counted.items() if n), reverse=True)
    print(f"{part + ':':<8} {per_job:5.1f} commands per job  " + ", ".join(f"{name} {n:g}" for n, name in rows))
    return per_job


async def run(url: str, jobs: int, outputs: int) -> None:
    redis = connect(url, 16)
    settings = Settings(redis_url=url)
    store = JobStore(redis, settings)
    await redis.flushall()
    await store.register_types([noop.policy])
    worker = Worker(settings, redis, {noop.name: noop}, concurrency=8)
    await redis.config_resetstat()
    for _ in range(jobs):
        await store.create(NewJob(tenant="bench", type=noop.name, input={"outputs": outputs}, max_attempts=1))
    created = await calls(redis)
    await worker.run(burst=True)
    after = await calls(redis)
    ran = {name: n - created.get(name, 0) for name, n in after.items()}
    for own in ("info", "config|resetstat"):  # the counting's own commands
        created.pop(own, None)
        ran.pop(own, None)
    total = report("create", created, jobs) + report("worker", ran, jobs)
    print(f"total:   {total:5.1f} commands per job ({jobs} jobs; the worker's one-off commands are spread over them)")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--outputs", type=int, default=0, help="output events each job writes")
    args = parser.parse_args()
    url = os.environ.get("BACKLANE_REDIS_URL")
    server = None if url else RedisServer().start()
    try:
        asyncio.run(run(url or server.url, args.jobs, args.outputs))  # type: ignore[union-attr]
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
