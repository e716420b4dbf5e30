"""The stateless Starlette app: wiring only. Routes, auth, errors and the hub live in their own modules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from shared.connection import Durability, check_durability, connect
from shared.jobs import JobStore
from shared.settings import Settings
from shared.tasks import cancel_until_done

from .backend import Backend
from .errors import exception_handlers
from .hub import Hub
from .job_types import JobTypes
from .metrics import Metrics, RequestCounter
from .operations import Operation, documented, reply
from .routes import docs, events, jobs, openai_responses, openai_webhooks, ops, resources, stats, traces, workers
from .stream_slots import StreamSlots
from .workers import LiveWorkers

log = logging.getLogger("backlane.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: how long a hub reader blocks in XREAD; the pool's socket timeout is set above it
HUB_BLOCK_MS = 1000
STARTUP_CHECK_S = 3.0


async def _durability(redis: Redis) -> Durability | None:
    """Logs plainly when accepted jobs could be lost; the API still starts when Redis is down."""
    try:
        await asyncio.wait_for(redis.ping(), STARTUP_CHECK_S)
        return await asyncio.wait_for(check_durability(redis), STARTUP_CHECK_S)
    except Exception as exc:
        log.warning("Redis is unreachable at start-up (%s): requests get 503 until it answers", exc)
        return None


@documented(get=Operation("The browser UI", "reference", replies={307: reply("to /ui/", Location="/ui/")},
                          security="none"))
async def _home(request: Request) -> RedirectResponse:
    return RedirectResponse("/ui/")


def create_app(settings: Settings, *, redis: Redis | None = None) -> Starlette:
    """The API. Without ``redis``, the app opens (and closes) its own bounded pool."""
    if redis is None and not settings.redis_url:
        raise ValueError("create_app needs settings.redis_url or a Redis client")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert redis is not None or settings.redis_url
        client = redis or connect(
            settings.redis_url or "", settings.redis_max_connections,
            block_s=HUB_BLOCK_MS / 1000, name="backlane-api",
        )
        store = JobStore(client, settings)
        hub = Hub(
            client, store.keys, queue_size=settings.sse_client_queue, keys_per_reader=settings.hub_keys_per_reader,
            block_ms=HUB_BLOCK_MS,
        )
        metrics.watch_hub(hub)
        app.state.backend = Backend(settings, client, store, hub, metrics, store.keys, JobTypes(store),
                                    StreamSlots(settings.sse_max_per_tenant), LiveWorkers(store))
        app.state.backend.durability = await _durability(client)
        if app.state.backend.durability is not None:  # Redis answered: check the shards now
            await store.agree_on_shards()
        hub_gauges = asyncio.create_task(metrics.copy_hub(hub), name="hub-gauges") if metrics.shared_dir else None
        try:
            yield
        finally:
            if hub_gauges is not None:
                await cancel_until_done([hub_gauges])
            await hub.stop()
            if redis is None:
                await client.aclose()

    routes: list[BaseRoute] = [
        *jobs.routes, *stats.routes, *traces.routes, *events.routes, *ops.routes, *workers.routes, *resources.routes,
        *openai_responses.routes, *openai_webhooks.routes, *docs.routes, Route("/", _home),
    ]
    if STATIC_DIR.is_dir():
        routes.append(Mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui"))
    else:  # an install without the source tree: the API works, the UI would only 404
        log.warning("the browser UI is not served: %s does not exist (install from the source tree)", STATIC_DIR)
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestCounter, metrics=metrics)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """For ``uvicorn api.app:app_from_env --factory``: settings from ``BACKLANE_*``."""
    return create_app(Settings.from_env())
