"""How fast the store's atomic scripts run against a real redis-server.

    python3 bench/bench_store.py [--jobs 2000] [--events 20000]

Starts a private redis-server (or uses BACKLANE_REDIS_URL), prints one line a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.serialization import members, now_ms, rfc3339
from shared.settings import Settings


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({n} in {seconds:.2f} s)"


async def run(url: str, jobs: int, events: int) -> None:
    redis = connect(url, 16)
    store = JobStore(redis, Settings(redis_url=url))
    await redis.flushall()

    new = NewJob(tenant="bench", type="demo.story", input={"topic": "x"}, max_attempts=3)
    t = time.perf_counter()
    for _ in range(jobs):
        await store.create(new)
    print(f"create, one at a time:          {rate(jobs, time.perf_counter() - t)}")

    t = time.perf_counter()
    await asyncio.gather(*(store.create(new) for _ in range(jobs)))
    print(f"create, 16 connections:         {rate(jobs, time.perf_counter() - t)}")

    k = store.keys.shard(0)  # one Redis: one shard
    t = time.perf_counter()
    started = []
    for _ in range(jobs):
        job_id, _ = await store.scripts.run("claim", [k.leases, k.queue("demo.story")], [now_ms(), 10_000])
        now = now_ms()
        reply = await store.scripts.run(
            "start", store.job_keys(job_id, "demo.story"), [job_id, "bench", now, rfc3339(now), 10_000, 60_000]
        )
        started.append((job_id, int(reply[1])))
    print(f"claim + start:                  {rate(jobs, time.perf_counter() - t)}")

    job_id, token = started[0]
    keys = store.append_keys(job_id)
    body = members({"text": "token "})
    t = time.perf_counter()
    for i in range(events):
        await store.scripts.run("append", keys, [token, i, "output", body])
    print(f"append, one event per call:     {rate(events, time.perf_counter() - t)}")

    job_id, token = started[1]
    keys = store.append_keys(job_id)
    t = time.perf_counter()
    for i in range(0, events, 50):
        batch = [x for _ in range(50) for x in ("output", body)]
        await store.scripts.run("append", keys, [token, i, *batch])
    print(f"append, 50 events per call:     {rate(events, time.perf_counter() - t)}")

    t = time.perf_counter()
    n = 0
    cursor = None
    while rows := await store.read_events(job_id, cursor, count=1000):
        n += len(rows)
        cursor = rows[-1][0]
    print(f"replay (XRANGE pages of 1000):  {rate(n, time.perf_counter() - t)}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    url = os.environ.get("BACKLANE_REDIS_URL")
    server = None if url else RedisServer().start()
    try:
        asyncio.run(run(url or server.url, args.jobs, args.events))  # type: ignore[union-attr]
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
