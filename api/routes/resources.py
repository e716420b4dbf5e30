"""/v1/resources: the named resources (BACKLANE_RESOURCES), their limits and their use now."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..responses import JSONResponse


async def list_resources(request: Request) -> JSONResponse:
    """Each resource's limits, its use now (running jobs, requests and tokens in the window), the jobs
    waiting for it, a pause and its breaker; resources are shared by every tenant."""
    b = backend(request)
    tenant(request, b.settings)
    return JSONResponse({"resources": await b.store.limiter.views(b.settings.resources)})


routes = [Route("/v1/resources", list_resources, methods=["GET"], name="resources")]
