"""The three systems that bench/bench_jobs.py measures, behind one small interface, and the child
processes it starts (their output goes to a temporary directory, kept when the run fails).

Backlane submits through `POST /v1/jobs` to a `backlane api` process and waits on the job's SSE
stream, with a minimal keep-alive HTTP/1.1 client (bench/http_client.py); its submit is timed with
httpx too. SAQ and arq go straight to Redis with their own clients. The no-op jobs and the workers'
settings are in bench/noop_jobs.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from arq.connections import RedisSettings, create_pool
from arq.constants import default_queue_name
from arq.jobs import Job as ArqJob
from redis.asyncio import Redis
from saq import Queue
from saq.job import Status as SaqStatus

from backlane.embedded import free_port
from bench.http_client import KeepAlive
from bench.processes import terminate
from compute.registry import load
from shared.jobs import JobStore
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
LOGS = Path(tempfile.gettempdir()) / f"bench-jobs-{os.getpid()}"
PROCS: list[subprocess.Popen[bytes]] = []
KEY = "key-bench"
JOB = {"type": "bench.noop", "input": {}}
TERMINAL = {"completed", "failed", "canceled", "expired"}


def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    LOGS.mkdir(exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (every worker drains or stops on it), SIGKILL after 15 s."""
    terminate(proc, 15)
    if proc in PROCS:
        PROCS.remove(proc)


class System:
    name = ""
    poll_command = ""  # the command finished() sends: left out of the command counts

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.concurrency, self.submitted = url, concurrency, 0

    def env(self) -> dict[str, str]:
        return {"BACKLANE_REDIS_URL": self.url, "BACKLANE_LOG_LEVEL": "WARNING", "BENCH_REDIS_URL": self.url,
                "BENCH_CONCURRENCY": str(self.concurrency)}

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def worker(self) -> list[str]: raise NotImplementedError
    async def submit(self) -> Any: raise NotImplementedError
    def other_submits(self) -> dict[str, Callable[[], Awaitable[Any]]]: return {}  # timed beside submit
    async def finished(self) -> int: raise NotImplementedError  # this run's jobs that have ended
    async def round_trip(self) -> bool: raise NotImplementedError  # submit one, wait: did it complete?
    async def not_completed(self) -> Counter[str]: raise NotImplementedError  # this run's jobs, by outcome


class Backlane(System):
    name, poll_command = "Backlane", "hget"

    async def start(self) -> None:
        self.redis = Redis.from_url(self.url, decode_responses=True)
        store = JobStore(self.redis, Settings(redis_url=self.url))
        self.counts = store.keys.shard(0).counts  # one Redis: one shard
        # the API takes registered types only: register ours as a worker does when it starts
        await store.register_types([jt.policy for jt in load(["bench.noop_jobs"]).values()])
        self.base = await self._completed()
        port = free_port()
        self.api = spawn("backlane-api", [sys.executable, "-m", "backlane", "api"], {
            **self.env(), "BACKLANE_PORT": str(port), "BACKLANE_API_KEYS": f"bench:{KEY}",
            "BACKLANE_CREATE_RATE_PER_MIN": "100000000"})
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                      headers={"Authorization": f"Bearer {KEY}"})
        self.conn = KeepAlive("127.0.0.1", port, {"Authorization": f"Bearer {KEY}"})
        self.create = self.conn.prepare("POST", "/v1/jobs", orjson.dumps(JOB))
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get("/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline or self.api.poll() is not None:
                raise RuntimeError("backlane api did not answer /healthz within 30 s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.conn.close()
        await self.http.aclose()
        await asyncio.to_thread(stop, self.api)
        await self.redis.aclose()

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "backlane", "worker", "--import", "bench.noop_jobs",
                "--concurrency", str(self.concurrency)]

    async def _completed(self) -> int:
        return int(await self.redis.hget(self.counts, "jobs|bench.noop|completed") or 0)

    async def submit(self) -> str:
        response = await asyncio.wait_for(self.conn.request(self.create), 30)
        if response.status != 201:
            raise RuntimeError(f"POST /v1/jobs answered {response.status}: {response.body[:200]!r}")
        self.submitted += 1
        return str(orjson.loads(response.body)["id"])

    async def submit_httpx(self) -> str:
        response = await self.http.post("/v1/jobs", json=JOB)
        response.raise_for_status()
        self.submitted += 1
        return str(response.json()["id"])

    def other_submits(self) -> dict[str, Callable[[], Awaitable[Any]]]:
        return {"with httpx": self.submit_httpx}

    async def finished(self) -> int:
        return await self._completed() - self.base

    async def round_trip(self) -> bool:
        job_id = await self.submit()
        last = await self.conn.follow(self.conn.prepare("GET", f"/v1/jobs/{job_id}/events"), _terminal)
        return last is not None and orjson.loads(last[1])["status"] == "completed"

    async def not_completed(self) -> Counter[str]:
        missing = self.submitted - await self.finished()
        return Counter({"not completed": missing} if missing else {})


def _terminal(event: str, data: str) -> bool:
    return event == "status" and orjson.loads(data)["status"] in TERMINAL


class Saq(System):
    name, poll_command = "SAQ", "zcard"

    async def start(self) -> None:
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()
        self.keys: list[str] = []

    async def close(self) -> None:
        await self.queue.disconnect()

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "saq", "bench.noop_jobs.saq_settings"]

    async def submit(self) -> Any:
        job = await self.queue.enqueue("noop")
        assert job is not None
        self.submitted += 1
        self.keys.append(job.key)
        return job

    async def finished(self) -> int:
        return self.submitted - await self.queue.count("incomplete")

    async def round_trip(self) -> bool:
        job = await self.submit()
        while not job.completed:
            # a notice published before refresh's subscription is missed: look again after a second
            with contextlib.suppress(TimeoutError):
                await job.refresh(until_complete=1)
        return bool(job.status == SaqStatus.COMPLETE)

    async def not_completed(self) -> Counter[str]:
        jobs = [j for i in range(0, len(self.keys), 500) for j in await self.queue.jobs(self.keys[i:i + 500])]
        return Counter("gone" if j is None else f"{j.status.value}, error {j.error!r}"
                       for j in jobs if j is None or j.status != SaqStatus.COMPLETE)


class Arq(System):
    name, poll_command = "arq", "zcard"

    async def start(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))
        self.ids: list[str] = []

    async def close(self) -> None:
        await self.pool.aclose()

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "arq", "bench.noop_jobs.ArqSettings"]

    async def submit(self) -> ArqJob:
        job = await self.pool.enqueue_job("noop")
        assert job is not None
        self.submitted += 1
        self.ids.append(job.job_id)
        return job

    async def finished(self) -> int:
        return self.submitted - int(await self.pool.zcard(default_queue_name))

    async def round_trip(self) -> bool:
        job = await self.submit()
        await job.result(timeout=30, poll_delay=0.01)  # raises when the job failed
        return True

    async def not_completed(self) -> Counter[str]:
        infos = []
        for i in range(0, len(self.ids), 100):
            infos += await asyncio.gather(*(ArqJob(j, self.pool).result_info() for j in self.ids[i:i + 100]))
        return Counter("no result" if info is None else f"failed: {info.result!r}"
                       for info in infos if info is None or not info.success)
