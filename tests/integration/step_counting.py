"""A job type for tests/integration/test_steps_restart.py: four durable steps, each counting its real
calls in Redis (the worker process has its own memory), each streaming its words slowly."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from compute import JobContext, job_type
from shared.connection import connect

STEPS = 4
WORDS = 12


def step_text(i: int) -> str:
    return "".join(f"s{i}w{j} " for j in range(WORDS))


def full_text() -> str:
    return "".join(step_text(i) for i in range(1, STEPS + 1))


@job_type("test.counted_steps", max_attempts=3)
async def counted_steps(ctx: JobContext) -> Any:
    redis = connect(os.environ["BACKLANE_REDIS_URL"], 2)  # a Cluster too, as the tests may run on one
    delay = float(ctx.input.get("delay_ms", 100)) / 1000

    async def step(i: int) -> int:
        await redis.incr(f"test:calls:{ctx.job_id}:{i}")
        # the model call first (paid as soon as it is made), then its words
        await ctx.record_usage(model="gpt-4o-mini", input_tokens=1000, cached_tokens=200, output_tokens=100)
        for j in range(WORDS):
            await ctx.output(f"s{i}w{j} ")
            await asyncio.sleep(delay)
        return i

    try:
        done = [await ctx.step("part", step, i) for i in range(1, STEPS + 1)]
    finally:
        await redis.aclose()
    return {"parts": done}
