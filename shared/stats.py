"""What the dashboard's charts draw (GET /v1/stats), read from the counters the scripts keep in each shard's
counts hash, so a read costs a few HMGETs however many jobs there are:

    minute|TENANT|STATUS|SLOT     a ring of MINUTE_SLOTS minutes (count_minute() in lua/lib.lua): the value
                                  is minute * MINUTE_STAMP + jobs; a slot stamped with another minute is 0
    tenant|TENANT|TYPE|STATUS     the tenant's jobs now queued / running (JobStore.tenant_counts)
    run_ms_bucket|TYPE|LE         the run-time histogram of every tenant's finished jobs (as /metrics)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .jobs import JobStore
from .schemas import MinuteCount, RunTime, Stats
from .serialization import rfc3339

MINUTE_MS = 60_000
#: the ring's length and stamp: MINUTE_SLOTS and MINUTE_STAMP of shared/lua/lib.lua
MINUTE_SLOTS = 60
MINUTE_STAMP = 1_000_000
#: the run-time histogram's upper bounds (ms): RUN_MS_BUCKETS of shared/lua/lib.lua and api/metrics.py
RUN_MS_BUCKETS = (100, 500, 1000, 5000, 15000, 60000, 300000, 900000, 3600000)
ENDED = ("completed", "failed")


def minute_counts(tenant: str, minutes: int, now_ms: int, shards: list[dict[str, Any]]) -> list[MinuteCount]:
    """The last ``minutes`` minutes (the current one last) from each shard's HMGET of ``minute_fields``."""
    current = now_ms // MINUTE_MS
    out: list[MinuteCount] = []
    for minute in range(current - minutes + 1, current + 1):
        counts = {status: 0 for status in ENDED}
        for values in shards:
            for status in ENDED:
                raw = values.get(f"minute|{tenant}|{status}|{minute % MINUTE_SLOTS}")
                if raw is not None and int(raw) // MINUTE_STAMP == minute:
                    counts[status] += int(raw) % MINUTE_STAMP
        out.append({"minute": rfc3339(minute * MINUTE_MS) or "", "completed": counts["completed"],
                    "failed": counts["failed"]})
    return out


def quantile(cumulative: list[tuple[float, int]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram [(upper bound, runs up to it)], interpolated linearly
    within its bucket, as Prometheus's histogram_quantile does; the largest finite bound when it lies in
    the open bucket beyond it; None without runs."""
    total = cumulative[-1][1] if cumulative else 0
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for bound, runs in cumulative:
        if runs >= rank:
            if bound == float("inf"):
                return lower
            inside = runs - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, runs
    return lower


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


def run_time(values: Iterable[dict[str, Any]], job_type: str) -> RunTime:
    """p50 and p95 of the type's histogram summed over the shards' HMGETs of ``run_fields``: buckets
    counted once (``run_ms_bucket``) made cumulative, plus the cumulative counts kept before them
    (``run_ms``), as /metrics adds them up."""
    bounds = [*map(str, RUN_MS_BUCKETS), "+Inf"]
    own = dict.fromkeys(bounds, 0)
    kept = dict.fromkeys(bounds, 0)
    for shard in values:
        for le in bounds:
            own[le] += int(shard.get(f"run_ms_bucket|{job_type}|{le}") or 0)
            kept[le] += int(shard.get(f"run_ms|{job_type}|{le}") or 0)
    cumulative, runs = [], 0
    for le in bounds:
        runs += own[le]
        cumulative.append((float("inf") if le == "+Inf" else float(le), runs + kept[le]))
    return {"runs": cumulative[-1][1], "p50_ms": _rounded(quantile(cumulative, 0.5)),
            "p95_ms": _rounded(quantile(cumulative, 0.95))}


def minute_fields(tenant: str) -> list[str]:
    return [f"minute|{tenant}|{status}|{slot}" for slot in range(MINUTE_SLOTS) for status in ENDED]


def run_fields(job_type: str) -> list[str]:
    bounds = [*map(str, RUN_MS_BUCKETS), "+Inf"]
    return [f"{kind}|{job_type}|{le}" for kind in ("run_ms_bucket", "run_ms") for le in bounds]


async def tenant_stats(store: JobStore, tenant: str, minutes: int, now_ms: int) -> Stats:
    """The tenant's charts: jobs ended per minute, its queue per type, run-time percentiles per type."""
    types = sorted(await store.job_types())
    fields = minute_fields(tenant) + [f for t in types for f in run_fields(t)]
    pipe = store.redis.pipeline(transaction=False)
    for shard in store.keys.all_shards:
        pipe.hmget(shard.counts, fields)
    shards = [dict(zip(fields, reply, strict=True)) for reply in await pipe.execute()]
    by_type = await store.tenant_counts(tenant)
    return {
        "per_minute": minute_counts(tenant, minutes, now_ms, shards),
        "queue_by_type": {t: {"queued": c.get("queued", 0), "running": c.get("running", 0)}
                          for t, c in by_type.items()},
        "run_time_by_type": {t: run_time(shards, t) for t in types},
    }
