"""Job types and the operator routes: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.connection import check_durability
from shared.jobtypes import JobTypePolicy, ReviewPolicy
from shared.json_schema import SchemaSet

from ..auth import tenant
from ..backend import backend
from ..errors import Unavailable
from ..metrics import CONTENT_TYPE
from ..operations import AUTHED, Derived, Operation, documented, reply
from ..workers import unserved_types_warning

READY_TIMEOUT_S = 2.0


def _policy_schema(schemas: SchemaSet) -> dict[str, Any]:
    """``JobTypePolicy.to_json``: the dataclass less its internal flag, with the review policy resolved."""
    policy = schemas.dataclass(JobTypePolicy, leave_out=frozenset({"max_attempts_default"}),
                               override={"review": schemas.of(ReviewPolicy)})
    return {"type": "array", "items": policy}


JOB_TYPES = Operation(
    "List job types", "job types",
    "Built-in types, and every type a worker has registered (registrations persist), by name.",
    replies={200: reply("each type's policy and input schema", Derived(_policy_schema))}, errors=AUTHED,
)
OK: dict[str, Any] = {"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"]}
READY = {**OK, "properties": {**OK["properties"], "redis": {"const": "ok"},
                              "warnings": {"type": "array", "items": {"type": "string"}}}}
HEALTHZ = Operation("Liveness", "operations", "Answers while the process runs, whether or not Redis does.",
                    replies={200: reply("alive", OK)}, security="none")
READYZ = Operation("Readiness", "operations", "Redis answers; warnings say where accepted jobs could be lost.",
                   replies={200: reply("ready", READY)}, errors={503: "Redis is unreachable or too slow"},
                   security="none")
METRICS = Operation("Prometheus metrics", "operations",
                    replies={200: reply("the Prometheus text format", {"type": "string"}, "text/plain")},
                    errors=(503,), security="none")


@documented(get=JOB_TYPES)
async def job_types(request: Request) -> JSONResponse:
    """Built-in and registered types, each with its policy and input schema."""
    b = backend(request)
    tenant(request, b.settings)
    types = await b.types.all()
    return JSONResponse([types[name].to_json() for name in sorted(types)])


@documented(get=HEALTHZ)
async def healthz(request: Request) -> JSONResponse:
    # liveness only: a Redis outage must not get the API process restarted
    return JSONResponse({"ok": True})


@documented(get=READYZ)
async def readyz(request: Request) -> JSONResponse:
    b = backend(request)
    try:
        await asyncio.wait_for(b.redis.ping(), READY_TIMEOUT_S)
        if b.durability is None:  # not known yet: Redis was down at start-up
            b.durability = await asyncio.wait_for(check_durability(b.redis), READY_TIMEOUT_S)
    except TimeoutError:
        raise Unavailable("Redis did not answer in time") from None
    warnings = b.durability.warnings()
    if unserved := await b.workers.unserved(await b.types.all()):
        warnings = [*warnings, unserved_types_warning(unserved)]
    return JSONResponse({"ok": True, "redis": "ok", "warnings": warnings})


@documented(get=METRICS)
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
