"""The SSE server a team writes first: every client runs its own XREAD BLOCK loop on the job's stream.

    client ── GET /v1/jobs/{id}/events ──▶ handler ── XREAD BLOCK from its cursor ──▶ Redis
       ▲                                     │        (one pool connection per client)
       └──── EventSourceResponse ◀── one ServerSentEvent per entry

A resume is the same loop from the client's cursor (Last-Event-ID, ?after=, else the start); the
response ends after the terminal status event. Redis connections grow with the clients: the pool is
sized for them (redis-py's async pool would refuse the 101st otherwise). A throwaway baseline for
bench/bench_fanout.py, not part of Backlane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from bench.baselines._serve import (
    HEADERS,
    KEEPALIVE_S,
    app_with,
    cursor_of,
    events_key_of,
    is_terminal,
    redis_client,
    serve,
)

BLOCK_MS = 1000
COUNT = 500
MAX_CONNECTIONS = 20_000


def create_app(url: str) -> Starlette:
    redis = redis_client(url, "bench-naive", MAX_CONNECTIONS, BLOCK_MS / 1000)
    events_key = events_key_of(redis, url)

    async def job_events(request: Request) -> EventSourceResponse:
        key = events_key(request.path_params["job_id"])
        cursor = cursor_of(request) or "0-0"

        async def entries(cursor: str) -> AsyncIterator[ServerSentEvent]:
            while True:
                reply = await redis.xread({key: cursor}, count=COUNT, block=BLOCK_MS)
                for _, rows in reply or ():
                    for entry_id, fields in rows:
                        cursor = entry_id
                        yield ServerSentEvent(id=entry_id, event=fields["t"], data=fields["d"], sep="\n")
                        if is_terminal(fields["t"], fields["d"]):
                            return

        return EventSourceResponse(entries(cursor), headers=HEADERS, ping=KEEPALIVE_S, sep="\n")

    return Starlette(routes=app_with(Route("/v1/jobs/{job_id}/events", job_events)))


if __name__ == "__main__":
    serve(create_app, __doc__ or "")
