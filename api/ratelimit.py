"""Per-tenant limits on job creation: a fixed one-minute window counted in Redis, and a cap on the
jobs of one type a tenant may have queued (BACKLANE_MAX_QUEUED_PER_TENANT, checked in the create
script against the tenant's queued count in the job's shard: on a Cluster each shard holds its share
of the cap, so a tenant may be refused a little below it).

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
from shared.priority import FAIR_STEP_MS

from .errors import RateLimited

WINDOW_S = 60
#: when a tenant at its cap of queued jobs may try again: one turn (shared/priority.py), the spacing
#: of its queued jobs, so about when one of them has started
FULL_RETRY_AFTER_S = FAIR_STEP_MS // 1000


async def create_within_rate(store: JobStore, new: NewJob, idempotency_key: str | None, per_window: int) -> Created:
    """Creates the job (or finds it, for a repeated Idempotency-Key); 429 with the seconds until the
    window ends when the tenant is over its limit, or with ``FULL_RETRY_AFTER_S`` when it has as many
    jobs of the type queued as ``max_queued`` (BACKLANE_MAX_QUEUED_PER_TENANT) allows."""
    now = time.time()
    window = int(now // WINDOW_S)
    rate = CreateRate(store.keys.home(new.tenant).create_rate(new.tenant, window), per_window, WINDOW_S * 2 * 1000)
    created = await store.create(new, idempotency_key, rate)
    if created.limited:
        retry_after = math.ceil((window + 1) * WINDOW_S - now)
        raise RateLimited(f"over the limit of {per_window} job creations per minute", retry_after)
    if created.full:
        raise RateLimited(f"over the limit of {store.settings.max_queued_per_tenant} queued jobs of type "
                          f"{new.type!r} per tenant (BACKLANE_MAX_QUEUED_PER_TENANT): retry once some have started",
                          FULL_RETRY_AFTER_S)
    return created
