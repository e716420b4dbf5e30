"""A per-tenant limit on job creation: a fixed one-minute window counted in Redis.

A fixed window is the simplest limit every API process agrees on (one INCR, no clock sync beyond
the minute); at a window's edge a tenant may briefly get up to twice the rate, which is fine for
protecting the queue from a runaway client.
"""

from __future__ import annotations

import contextlib
import math
import time

from redis.asyncio import Redis

from shared.jobs import Created, JobStore, NewJob
from shared.keys import Keys

from .errors import RateLimited

WINDOW_S = 60


async def check_create_rate(redis: Redis, keys: Keys, tenant: str, per_window: int) -> None:
    """Counts one creation; 429 with the seconds until the window ends when over the limit."""
    now = time.time()
    window = int(now // WINDOW_S)
    key = keys.create_rate(tenant, window)
    pipe = redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, WINDOW_S * 2)
    count, _ = await pipe.execute()
    if int(count) > per_window:
        retry_after = math.ceil((window + 1) * WINDOW_S - now)
        raise RateLimited(f"over the limit of {per_window} job creations per minute", retry_after)


async def create_within_rate(store: JobStore, new: NewJob, idempotency_key: str | None, per_window: int) -> Created:
    """Creates the job (or finds it, for a repeated Idempotency-Key), charging the tenant's creation
    rate for what is new: a replay of a key that already names a job creates nothing, so it is free."""
    redis, keys = store.redis, store.keys
    replay = idempotency_key is not None and bool(await redis.exists(keys.idempotency(new.tenant, idempotency_key)))
    if not replay:
        await check_create_rate(redis, keys, new.tenant, per_window)
    created = await store.create(new, idempotency_key)
    if replay and created.created:  # the key expired just now: the job is made, so it counts after all
        with contextlib.suppress(RateLimited):
            await check_create_rate(redis, keys, new.tenant, per_window)
    return created
