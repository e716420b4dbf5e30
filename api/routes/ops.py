"""Job types and the operator routes: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.connection import check_durability

from ..auth import tenant
from ..backend import backend
from ..errors import Unavailable
from ..metrics import CONTENT_TYPE

READY_TIMEOUT_S = 2.0


async def job_types(request: Request) -> JSONResponse:
    """Built-in and registered types, each with its policy and input schema."""
    b = backend(request)
    tenant(request, b.settings)
    types = await b.types.all()
    return JSONResponse([types[name].to_json() for name in sorted(types)])


async def healthz(request: Request) -> JSONResponse:
    # liveness only: a Redis outage must not get the API process restarted
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> JSONResponse:
    b = backend(request)
    try:
        await asyncio.wait_for(b.redis.ping(), READY_TIMEOUT_S)
        if b.durability is None:  # not known yet: Redis was down at start-up
            b.durability = await asyncio.wait_for(check_durability(b.redis), READY_TIMEOUT_S)
    except TimeoutError:
        raise Unavailable("Redis did not answer in time") from None
    return JSONResponse({"ok": True, "redis": "ok", "warnings": b.durability.warnings()})


async def metrics(request: Request) -> Response:
    b = backend(request)
    stats = await b.store.stats()
    b.metrics.redis_stats.update(stats)
    b.metrics.job_counts.update(await b.store.counts(), stats)
    if b.settings.resources:
        b.metrics.resources.update(await b.store.limiter.views(b.settings.resources))
    return Response(b.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


routes = [
    Route("/v1/job-types", job_types, methods=["GET"], name="job_types"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/readyz", readyz, methods=["GET"], name="readyz"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
]
