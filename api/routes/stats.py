"""The dashboard's charts: ``GET /v1/stats`` (shared/stats.py reads the counters the scripts keep)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from shared.schemas import Stats
from shared.serialization import now_ms
from shared.stats import MINUTE_SLOTS, tenant_stats

from ..auth import tenant
from ..backend import backend
from ..operations import Operation, documented, reply
from ..responses import JSONResponse
from ..validation import QueryParam, parse_query

STATS_QUERY = (
    QueryParam("minutes", {"type": "integer", "minimum": 1, "maximum": MINUTE_SLOTS, "default": 30},
               f"how many minutes of per_minute, the current one last (at most {MINUTE_SLOTS})"),
)
STATS = Operation(
    "Chart the jobs", "jobs",
    "The tenant's jobs that completed and failed per minute (`per_minute`), its jobs now queued and running "
    "per type (`queue_by_type`), and each type's run-time p50 and p95 (`run_time_by_type`, from the "
    "run-time histogram of /metrics: every tenant's finished jobs of the type, interpolated within its "
    "buckets). A few reads of counters the scripts keep, however many jobs there are.",
    parameters=tuple(p.openapi() for p in STATS_QUERY),
    replies={200: reply("the figures", Stats)},
    errors={401: "", 422: "minutes not a whole number from 1 to 60", 503: ""},
)


@documented(get=STATS)
async def stats(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
    minutes = parse_query(request.query_params, STATS_QUERY)["minutes"]
    return JSONResponse(await tenant_stats(b.store, owner, minutes, now_ms()))


routes = [Route("/v1/stats", stats, methods=["GET"], name="stats")]
