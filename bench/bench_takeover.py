"""How soon a dead worker's job runs again, and that a stalled one keeps its job: real processes,
default timings (heartbeat 1 s, lease 4 s, supervisor every 1 s).

    python3 bench/bench_takeover.py [--reps 3] [--stall-s 2]

On a private redis-server, with one `backlane supervisor` and two `backlane worker` processes running:

1. kill -9: a demo.story job runs on one worker; that worker is SIGKILLed while it streams; the time
   from the kill until the job is `running` again (attempt 2, on the other worker) is the takeover.
   The killed worker is started again for the next repetition.
2. stall: a job runs; its worker is SIGSTOPped for ``--stall-s`` seconds (its event loop, beats
   included, stands still) and then SIGCONTed; it must keep its job: attempt 1 completes, no lease
   expiry.

Prints each repetition, then the median takeover and how many stalls lost their job (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: about 5 s of streaming at the demo's pace: long enough to outlive a kill and a takeover
SPEC = {"topic": "takeover", "steps": 3, "tokens_per_step": 40, "delay_ms": 40}


def start(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": url, "BACKLANE_LOG_LEVEL": "WARNING"})
    return subprocess.Popen([sys.executable, "-m", "backlane", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def until(check: Any, limit_s: float, what: str) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.01)
    raise RuntimeError(f"timed out after {limit_s} s waiting for {what}")


class Bench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = Redis.from_url(url, decode_responses=True)
        self.store = JobStore(self.redis, Settings(redis_url=url))

    async def running(self, job_id: str, attempt: int) -> dict[str, str]:
        """The job's hash once ``attempt`` runs (and has written something)."""
        async def check() -> dict[str, str] | None:
            raw = await self.store.load(job_id) or {}
            ok = raw.get("status") == "running" and raw.get("attempt") == str(attempt) and int(raw["last_seq"]) > 3
            return raw if ok else None
        return await until(check, 30, f"attempt {attempt} to run")  # type: ignore[no-any-return]

    async def new_job(self) -> str:
        return (await self.store.create(NewJob(tenant="bench", type="demo.story", input=SPEC, max_attempts=5))).job_id

    async def finished(self, job_id: str) -> dict[str, str]:
        async def ended() -> dict[str, str] | None:
            raw = await self.store.load(job_id) or {}
            return raw if raw.get("status") in ("completed", "failed", "canceled") else None
        return await until(ended, 60, "the job to end")  # type: ignore[no-any-return]


async def run(args: argparse.Namespace, url: str) -> None:
    bench = Bench(url)
    supervisor = start(url, "supervisor")
    workers = {name: start(url, "worker", "--concurrency", "1") for name in ("a", "b")}
    try:
        takeovers: list[float] = []
        for rep in range(1, args.reps + 1):
            job_id = await bench.new_job()
            raw = await bench.running(job_id, 1)
            # the worker id is host:pid:…: the pid says which process to kill
            pid = int(raw["lease_owner"].split(":")[1])
            name = next(n for n, p in workers.items() if p.pid == pid)
            workers[name].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await bench.running(job_id, 2)
            takeovers.append(time.monotonic() - killed)
            workers[name].wait(5)
            workers[name] = start(url, "worker", "--concurrency", "1")
            end = await bench.finished(job_id)
            print(f"kill -9 {rep}: running again after {takeovers[-1]:.2f} s; ended {end['status']} "
                  f"at attempt {end['attempt']}", flush=True)
        lost = 0
        for rep in range(1, args.reps + 1):
            before = int(await bench.redis.hget(bench.store.keys.shard(0).stats, "lease_expiries") or 0)
            job_id = await bench.new_job()
            raw = await bench.running(job_id, 1)
            pid = int(raw["lease_owner"].split(":")[1])
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(args.stall_s)
            os.kill(pid, signal.SIGCONT)
            end = await bench.finished(job_id)
            after = int(await bench.redis.hget(bench.store.keys.shard(0).stats, "lease_expiries") or 0)
            kept = end["status"] == "completed" and end["attempt"] == "1" and after == before
            lost += not kept
            print(f"stall {rep} ({args.stall_s:g} s): {'kept its job' if kept else 'LOST its job'} "
                  f"(ended {end['status']} at attempt {end['attempt']})", flush=True)
        print(f"\ntakeover after kill -9, median of {len(takeovers)}: {statistics.median(takeovers):.2f} s "
              f"(min {min(takeovers):.2f}, max {max(takeovers):.2f}); "
              f"stalls of {args.stall_s:g} s that lost their job: {lost} of {args.reps}")
    finally:
        for proc in [supervisor, *workers.values()]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        await bench.redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stall-s", type=float, default=2.0)
    args = parser.parse_args()
    if args.reps < 1 or args.stall_s <= 0:
        parser.error("--reps must be at least 1 and --stall-s positive")
    server = RedisServer().start()
    try:
        asyncio.run(run(args, server.url))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
