"""A per-tenant limit on job creation: a fixed one-minute window counted in Redis.

A fixed window is the simplest limit every API process agrees on (one INCR, no clock sync beyond
the minute); at a window's edge a tenant may briefly get up to twice the rate, which is fine for
protecting the queue from a runaway client. On one Redis the count is taken in the create script
itself, so a create costs one round trip; on a Cluster the tenant's counter lives in its own shard and
is counted just before (``JobStore.create``). Either way a replay of an Idempotency-Key, which creates
nothing, is free.
"""

from __future__ import annotations

import math
import time

from shared.jobs import Created, CreateRate, JobStore, NewJob

from .errors import RateLimited

WINDOW_S = 60


async def create_within_rate(store: JobStore, new: NewJob, idempotency_key: str | None, per_window: int) -> Created:
    """Creates the job (or finds it, for a repeated Idempotency-Key); 429 with the seconds until the
    window ends when the tenant is over its limit."""
    now = time.time()
    window = int(now // WINDOW_S)
    rate = CreateRate(store.keys.home(new.tenant).create_rate(new.tenant, window), per_window, WINDOW_S * 2 * 1000)
    created = await store.create(new, idempotency_key, rate)
    if created.limited:
        retry_after = math.ceil((window + 1) * WINDOW_S - now)
        raise RateLimited(f"over the limit of {per_window} job creations per minute", retry_after)
    return created
