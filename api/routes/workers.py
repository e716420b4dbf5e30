"""The live workers: ``GET /v1/workers`` (api/workers.py reads them)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..responses import JSONResponse
from ..workers import worker_record


async def list_workers(request: Request) -> JSONResponse:
    """Every live worker with what it serves and runs, and the known job types none of them serves."""
    b = backend(request)
    owner = tenant(request, b.settings)
    workers = await b.workers.read()
    served = {t for w in workers for t in w.job_types}
    known = await b.types.all()
    return JSONResponse({
        "workers": [worker_record(w, owner, b.settings.lease_ms) for w in workers],
        "unserved_types": sorted(set(known) - served),
    })


routes = [Route("/v1/workers", list_workers, methods=["GET"], name="workers")]
