"""Job types the capacity tests run in real ``backlane worker --import capacity_jobs`` processes.

Each call a handler makes through ``ctx.limit`` is logged, with the handler's own clock, on the Redis
list ``test:calls`` (``"<ms> <job id> <attempt> <pid>"``), so a test can check what every worker did.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from compute.context import JobContext
from compute.errors import TransientError
from compute.registry import job_type

CALLS_LOG = "test:calls"
STARTS_LOG = "test:starts"
ENDS_LOG = "test:ends"


async def log(ctx: JobContext, key: str) -> None:
    await ctx.store.redis.rpush(key, f"{time.time() * 1000:.1f} {ctx.job_id} {ctx.attempt} {os.getpid()}")


@job_type("capacity.calls", uses=["api"], max_attempts=1, retry_base_s=0.2)
async def calls(ctx: JobContext) -> dict[str, Any]:
    """``{calls, pause_ms?, retry_after_s?}``: ``calls`` calls to resource ``api`` with ``pause_ms``
    between them; with ``retry_after_s``, the first call of the first attempt answers a Retry-After."""
    spec = ctx.input
    await log(ctx, STARTS_LOG)
    for i in range(int(spec["calls"])):
        async with ctx.limit("api"):
            await log(ctx, CALLS_LOG)
            if i == 0 and ctx.attempt == 1 and spec.get("retry_after_s"):
                raise TransientError("429 Too Many Requests", retry_after=float(spec["retry_after_s"]))
            await asyncio.sleep(float(spec.get("hold_ms", 0)) / 1000)
        await asyncio.sleep(float(spec.get("pause_ms", 0)) / 1000)
    await log(ctx, ENDS_LOG)
    return {"calls": spec["calls"]}


@job_type("capacity.work", max_attempts=1)
async def work(ctx: JobContext) -> None:
    """``{ms}``: works for ``ms`` ms and logs its start (fairness and priority tests)."""
    await log(ctx, STARTS_LOG)
    await asyncio.sleep(float(ctx.input.get("ms", 100)) / 1000)
