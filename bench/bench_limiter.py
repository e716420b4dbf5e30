"""What the limiter costs per admitted call: µs and Redis commands (INFO commandstats, so the commands
inside admit.lua and settle.lua count).

    python3 bench/bench_limiter.py [--calls 5000]

Starts a private redis-server (or uses BACKLANE_REDIS_URL, whose counters it resets and whose data it
flushes) and runs, one call at a time and then 64 at once, ``admit`` alone (a requests and tokens window
that always has room), and ``admit`` + ``settle`` with the real tokens (what ``ctx.openai`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from shared.connection import connect
from shared.jobs import JobStore
from shared.resources import ResourceLimit
from shared.settings import Settings

LIMIT = ResourceLimit("bench:model", requests=10**9, tokens=10**12, window_s=60)


async def commands(redis: Any) -> tuple[int, int]:
    """Commands so far (the counting's own left out), and µs Redis spent in the scripts."""
    info = await redis.info("commandstats")
    own = ("cmdstat_info", "cmdstat_config|resetstat")
    calls = sum(int(row["calls"]) for name, row in info.items() if name not in own)
    return calls, int(info.get("cmdstat_evalsha", {}).get("usec", 0))


async def measure(store: JobStore, calls: int, at_once: int, settle: bool) -> tuple[float, float, float]:
    """(µs per call seen by the caller, µs per call inside Redis, commands per call)."""
    limiter, counter = store.limiter, iter(range(10**9))

    async def one() -> None:
        admission = await limiter.admit(LIMIT, f"c{next(counter)}", tokens=1000, job_id="job")
        assert admission.admitted
        if settle:
            await limiter.settle(LIMIT, admission.member, tokens=900, outcome="")

    await store.redis.config_resetstat()
    before, _ = await commands(store.redis)
    started = time.perf_counter()
    for _ in range(calls // at_once):
        await asyncio.gather(*(one() for _ in range(at_once)))
    elapsed = time.perf_counter() - started
    done = calls // at_once * at_once
    after, in_redis = await commands(store.redis)
    return elapsed / done * 1e6, in_redis / done, (after - before) / done


async def run(url: str, calls: int) -> None:
    redis = connect(url, 16)
    await redis.flushall()
    store = JobStore(redis, Settings(redis_url=url, resources={LIMIT.name: LIMIT}))
    await measure(store, 200, 1, False)  # load the scripts, warm the connection
    for settle in (False, True):
        for at_once in (1, 64):
            await redis.delete(*(k for k in (store.keys.resource(LIMIT.name).calls,)))
            us, server_us, per = await measure(store, calls, at_once, settle)
            what = "admit + settle" if settle else "admit"
            print(f"{what:<15} {at_once:>3} at once: {us:7.1f} µs per call ({server_us:5.1f} µs in Redis), "
                  f"{per:4.1f} Redis commands per call")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    url = os.environ.get("BACKLANE_REDIS_URL")
    server = None if url else RedisServer().start()
    try:
        asyncio.run(run(url or server.url, args.calls))  # type: ignore[union-attr]
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
