"""/v1/resources: the named resources (BACKLANE_RESOURCES), their limits and their use now."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..operations import AUTHED, Operation, documented, reply
from ..responses import JSONResponse

_INT = {"type": "integer"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
RESOURCE = {
    "type": "object",
    "required": ["name", "limits", "in_use", "waiting", "paused_until", "breaker", "totals"],
    "properties": {
        "name": {"type": "string"},
        "limits": {"type": "object", "properties": {
            "concurrency": _INT_OR_NULL, "requests": _INT_OR_NULL, "tokens": _INT_OR_NULL,
            "window_s": {"type": "number"}, "breaker_failures": _INT, "breaker_open_s": {"type": "number"}}},
        "in_use": {"type": "object", "properties": {"running": _INT, "requests": _INT, "tokens": _INT}},
        "waiting": _INT,
        "paused_until": _TIME,
        "breaker": {"type": "object", "properties": {
            "state": {"enum": ["closed", "open", "half_open"]}, "failures": _INT, "open_until": _TIME}},
        "totals": {"type": "object"},
    },
}
RESOURCES = Operation(
    "List named resources", "operations",
    "Each resource of BACKLANE_RESOURCES: its limits, its use now (running jobs, requests and tokens in the "
    "window), the jobs waiting for it, a pause and its breaker. Resources are shared by every tenant.",
    replies={200: reply("the resources", {"type": "object", "required": ["resources"], "properties": {
        "resources": {"type": "array", "items": RESOURCE}}})},
    errors=AUTHED,
)


@documented(get=RESOURCES)
async def list_resources(request: Request) -> JSONResponse:
    """Each resource's limits, its use now (running jobs, requests and tokens in the window), the jobs
    waiting for it, a pause and its breaker; resources are shared by every tenant."""
    b = backend(request)
    tenant(request, b.settings)
    return JSONResponse({"resources": await b.store.limiter.views(b.settings.resources)})


routes = [Route("/v1/resources", list_resources, methods=["GET"], name="resources")]
