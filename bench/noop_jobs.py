"""No-op jobs for bench/bench_jobs.py, one per system, and the settings of their workers.

    backlane worker --import bench.noop_jobs     (BACKLANE_REDIS_URL; --concurrency N)
    python3 -m saq bench.noop_jobs.saq_settings  (BENCH_REDIS_URL, BENCH_CONCURRENCY)
    python3 -m arq bench.noop_jobs.ArqSettings   (BENCH_REDIS_URL, BENCH_CONCURRENCY)
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func
from saq import Queue

from compute import JobContext, job_type

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))


@job_type("bench.noop", max_attempts=1)
async def noop(ctx: JobContext) -> dict[str, Any]:
    """Does nothing (bench/bench_jobs.py)."""
    return {}


async def saq_noop(ctx: Any) -> None:
    return None


async def arq_noop(ctx: Any) -> None:
    return None


def saq_settings() -> dict[str, Any]:
    return {"queue": Queue.from_url(REDIS_URL), "functions": [("noop", saq_noop)], "concurrency": CONCURRENCY}


class ArqSettings:
    functions = [func(arq_noop, name="noop")]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = CONCURRENCY
