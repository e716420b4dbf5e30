"""What the two throwaway SSE servers of bench/bench_fanout.py share: their Redis client, the key of a
job's stream, the encoding of an event, and running under uvicorn as ``backlane api`` does.

    python3 -m bench.baselines.naive_sse --port 8001     (BENCH_REDIS_URL)
    python3 -m bench.baselines.shared_sse --port 8002

They read the streams Backlane writes (``shared.keys.Keys`` names them; entry fields ``t``, the event
type, and ``d``, its JSON) and send ``id:``/``event:``/``data:`` lines as Backlane does. No auth, no
limits, no lag handling: baselines, not products.
"""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import Callable

import orjson
import uvicorn
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shared.jobs import JobStore
from shared.settings import Settings
from shared.status import TERMINAL

#: as api/sse.py sends them (Starlette would otherwise append "; charset=utf-8")
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_S = 15
_TERMINAL = frozenset(s.value for s in TERMINAL)


def redis_client(url: str, name: str, max_connections: int, block_s: float) -> Redis:
    """hiredis parses the replies when installed (it is); RESP2 as Backlane, so XREAD answers a list;
    the socket timeout sits above the longest XREAD BLOCK; a pool that waits for a free connection
    when all are busy instead of failing (pitfalls.md), as Backlane's."""
    pool = BlockingConnectionPool.from_url(url, decode_responses=True, protocol=2, client_name=name,
                                           max_connections=max_connections, timeout=10, socket_timeout=block_s + 5)
    return Redis.from_pool(pool)


def events_key_of(redis: Redis, url: str) -> Callable[[str], str]:
    """The Redis key of a job's event stream, named as Backlane names it."""
    return JobStore(redis, Settings(redis_url=url)).keys.events


def cursor_of(request: Request) -> str | None:
    """Last-Event-ID, else ?after=, else None (from the start)."""
    return request.headers.get("last-event-id") or request.query_params.get("after") or None


def is_terminal(event_type: str, data: str) -> bool:
    return event_type == "status" and orjson.loads(data).get("status") in _TERMINAL


def encode(entry_id: str, event_type: str, data: str) -> bytes:
    return f"id: {entry_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def serve(make_app: Callable[[str], Starlette], description: str) -> None:
    """Runs the app under uvicorn with uvloop and httptools, at WARNING, after moving the start-up
    objects out of the collector's view: as ``backlane api`` runs (backlane/cli.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools",
                timeout_graceful_shutdown=5)


def app_with(events_route: Route) -> list[Route]:
    return [events_route, Route("/healthz", healthz)]
