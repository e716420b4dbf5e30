"""SSE fan-out: many clients following live jobs through one `backlane api` process.

    python3 bench/bench_sse.py [--clients 500] [--jobs 10] [--events 200] [--interval-ms 5]

Starts a private redis-server and an API process, connects the clients, writes events to each job
the way a worker does (fenced appends), and prints delivery latency (write → client), throughput,
and the API's Redis connections (CLIENT LIST) while everyone is connected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer, free_port
from compute.leases import Attempts
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

KEY = "bench-key"


async def follow(client: httpx.AsyncClient, url: str, expected: int, latencies: list[float]) -> int:
    got = 0
    async with client.stream("GET", url, headers={"Authorization": f"Bearer {KEY}"}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"output"' in line:
                sent = float(loads(line[6:])["text"])
                latencies.append(time.time() - sent)
                got += 1
                if got == expected:
                    return got
    return got


async def run(args: argparse.Namespace, redis_url: str, base: str) -> None:
    redis = connect(redis_url, 16)
    store = JobStore(redis, Settings(redis_url=redis_url))
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=args.clients + 10)) as client:
            for _ in range(200):
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            jobs = [(await store.create(NewJob(tenant="bench", type="demo.story", input={}, max_attempts=1))).job_id
                    for _ in range(args.jobs)]
            attempts = Attempts(store, "bench-writer")
            started = {}
            while len(started) < len(jobs):
                taken, _ = await attempts.take(["demo.story"], len(jobs) - len(started), 600_000)
                assert taken
                started.update((s.job_id, s) for s in taken)
            latencies: list[float] = []
            followers = [asyncio.create_task(follow(client, f"{base}/v1/jobs/{jobs[i % len(jobs)]}/events",
                                                    args.events, latencies)) for i in range(args.clients)]
            await asyncio.sleep(2.0)  # let every client connect and finish its replay
            clients = [c for c in (await redis.client_list()) if c.get("name") == "backlane-api"]

            async def write(job_id: str) -> None:
                s = started[job_id]
                assert s is not None
                for i in range(args.events):
                    await attempts.append(job_id, s.token, i, [("output", {"text": repr(time.time())})])
                    await asyncio.sleep(args.interval_ms / 1000)

            t0 = time.perf_counter()
            await asyncio.gather(*(write(j) for j in jobs))
            got = await asyncio.gather(*followers)
            elapsed = time.perf_counter() - t0
        lat = sorted(latencies)
        delivered = sum(got)
        print(f"clients {args.clients} on {args.jobs} jobs, {args.events} events per job every {args.interval_ms} ms")
        print(f"delivered {delivered} / {args.clients * args.events} events in {elapsed:.2f} s "
              f"({delivered / elapsed:,.0f} events/s to clients)")
        print(f"latency write → client: p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        print(f"API Redis connections while all clients were connected: {len(clients) or 'unnamed'} "
              f"(all clients of the server: {len(await redis.client_list())})")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=5)
    args = parser.parse_args()
    server = RedisServer().start()
    port = free_port()
    env = {**os.environ, "BACKLANE_REDIS_URL": server.url, "BACKLANE_PORT": str(port),
           "BACKLANE_API_KEYS": f"bench:{KEY}", "BACKLANE_LOG_LEVEL": "WARNING"}
    api = subprocess.Popen([sys.executable, "-m", "backlane", "api"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(run(args, server.url, f"http://127.0.0.1:{port}"))
    finally:
        api.terminate()
        api.wait(10)
        server.cleanup()


if __name__ == "__main__":
    main()
