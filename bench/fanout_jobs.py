"""The job of bench/bench_fanout.py's single-job throughput: outputs as fast as the worker writes them.

    backlane worker --import bench.fanout_jobs --concurrency 1     (BACKLANE_REDIS_URL)
"""

from __future__ import annotations

from typing import Any

from compute import JobContext, job_type


def text_of(i: int) -> str:
    """The text of output number ``i`` (the benchmark rebuilds the job's text from them and compares)."""
    return f"{i},"


@job_type("bench.firehose", max_attempts=1, timeout_s=600)
async def firehose(ctx: JobContext) -> dict[str, Any]:
    """Emits input ``n`` outputs with no pause (bench/bench_fanout.py)."""
    n = int(ctx.input["n"])
    for i in range(n):
        await ctx.output(text_of(i))
    return {"n": n}
