"""The live workers: ``GET /v1/workers`` (api/workers.py reads them)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..auth import tenant
from ..backend import backend
from ..operations import AUTHED, Operation, documented, reply
from ..responses import JSONResponse
from ..workers import worker_record

WORKER = {
    "type": "object",
    "properties": {
        # host to concurrency: null until the worker's first facts arrive
        "id": {"type": "string"}, "host": {"type": ["string", "null"]}, "pid": {"type": ["integer", "null"]},
        "version": {"type": ["string", "null"]}, "job_types": {"type": "array", "items": {"type": "string"}},
        "concurrency": {"type": ["integer", "null"]}, "draining": {"type": "boolean"},
        "running": {"type": "object", "properties": {
            "count": {"type": "integer"},
            "jobs": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "type": {"type": "string"}}}}}},
        "started_at": {"type": ["string", "null"]}, "last_seen_at": {"type": ["string", "null"]},
        "alive_until": {"type": ["string", "null"]},
    },
    "required": ["id", "job_types", "running"],
}
WORKERS = Operation(
    "List live workers", "operations",
    "Every live worker (its beats keep it alive) with what it serves and runs (`running.jobs` names only "
    "the caller's jobs), and the known job types no live worker serves.",
    replies={200: reply("the workers", {"type": "object", "required": ["workers", "unserved_types"], "properties": {
        "workers": {"type": "array", "items": WORKER},
        "unserved_types": {"type": "array", "items": {"type": "string"}}}})},
    errors=AUTHED,
)


@documented(get=WORKERS)
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
