"""A per-tenant limit on job creation: a fixed one-minute window counted in Redis.

A fixed window is the simplest limit every API process agrees on (one INCR, no clock sync beyond
the minute); at a window's edge a tenant may briefly get up to twice the rate, which is fine for
protecting the queue from a runaway client.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

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
