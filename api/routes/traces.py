"""``GET /v1/jobs/{id}/trace``: the job's spans (job → attempt → step → model call, and the apply
step), with tokens and cost (``api/traces.py``)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..records import load_owned
from ..responses import JSONResponse
from ..traces import build_trace


async def job_trace(request: Request) -> JSONResponse:
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    stored = cast(dict[str, str], await b.store.redis.hgetall(b.store.keys.trace(job.id)))
    return JSONResponse(build_trace(job, stored))


routes = [Route("/v1/jobs/{job_id}/trace", job_trace, methods=["GET"], name="job_trace")]
