"""``GET /v1/jobs/{id}/trace``: the job's spans (job → attempt → step → model call, and the apply
step), with tokens and cost (``api/traces.py``)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..operations import Operation, documented, reply
from ..records import load_owned
from ..responses import JSONResponse
from ..traces import build_trace

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
SPAN = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "parent_id": {"type": ["string", "null"]},
        "kind": {"enum": ["job", "attempt", "step", "llm", "apply"]}, "name": {"type": "string"},
        "status": {"enum": ["ok", "error", "replayed", "running"]}, "attempt": {"type": ["integer", "null"]},
        "start": _TIME, "end": _TIME, "attributes": {"type": "object"},
        "usage": {"type": ["object", "null"]}, "cost_usd": _NUMBER_OR_NULL,
    },
    "required": ["id", "parent_id", "kind", "name", "status"],
}
TRACE = Operation(
    "Read a job's trace", "jobs",
    "The job's spans: job → attempt → step → model call (and the apply step), with tokens and cost.",
    replies={200: reply("the spans", {"type": "object", "required": ["job_id", "spans"], "properties": {
        "job_id": {"type": "string"}, "spans": {"type": "array", "items": SPAN}}})},
    errors=(401, 404, 503),
)


@documented(get=TRACE)
async def job_trace(request: Request) -> JSONResponse:
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    stored = cast(dict[str, str], await b.store.redis.hgetall(b.store.keys.trace(job.id)))
    return JSONResponse(build_trace(job, stored))


routes = [Route("/v1/jobs/{job_id}/trace", job_trace, methods=["GET"], name="job_trace")]
