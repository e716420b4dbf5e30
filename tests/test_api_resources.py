"""GET /v1/resources and the resource gauges of /metrics, from the limiter's state in Redis."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from http_server import asgi_client
from redis.asyncio import Redis

from api.app import create_app
from shared.jobs import JobStore
from shared.resources import ResourceLimit
from shared.serialization import now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio


async def test_resources_show_limits_use_pause_and_breaker(settings: Settings, redis: Redis) -> None:
    limit = ResourceLimit("openai:gpt-4.1-mini", concurrency=20, requests=500, tokens=200_000, window_s=60)
    settings = replace(settings, resources={limit.name: limit, "db": ResourceLimit("db", concurrency=2)})
    store = JobStore(redis, settings)
    call = await store.limiter.admit(limit, "c1", tokens=1000, job_id="j1")
    await store.limiter.settle(limit, call.member, tokens=1200, outcome="pause", pause_until_ms=now_ms() + 60_000)
    assert not (await store.limiter.admit(limit, "c2", job_id="j2")).admitted
    async with asgi_client(create_app(settings, redis=redis)) as client:
        body = (await client.get("/v1/resources")).json()
        assert [r["name"] for r in body["resources"]] == ["db", "openai:gpt-4.1-mini"]
        db, model = body["resources"]
        assert db["limits"]["concurrency"] == 2 and db["limits"]["requests"] is None
        assert model["limits"] == {"concurrency": 20, "requests": 500, "tokens": 200_000, "window_s": 60.0,
                                   "breaker_failures": 5, "breaker_open_s": 30.0}
        assert model["in_use"] == {"running": 0, "requests": 1, "tokens": 1200}
        assert model["waiting"] == 1 and model["paused_until"] is not None
        assert model["breaker"] == {"state": "closed", "failures": 0, "open_until": None}
        assert model["totals"]["waits"]["paused"] == 1 and model["totals"]["pauses"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'backlane_resource_requests_in_window{resource="openai:gpt-4.1-mini"} 1.0' in metrics
        assert 'backlane_resource_tokens_in_window{resource="openai:gpt-4.1-mini"} 1200.0' in metrics
        assert 'backlane_resource_paused{resource="openai:gpt-4.1-mini"} 1.0' in metrics
        assert 'backlane_resource_waits_total{reason="paused",resource="openai:gpt-4.1-mini"} 1.0' in metrics
        assert 'backlane_resource_breaker{resource="db",state="closed"} 1.0' in metrics
        assert (await client.get("/v1/resources", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_no_resources_configured_is_an_empty_list(settings: Settings, redis: Redis) -> None:
    async with asgi_client(create_app(settings, redis=redis)) as client:
        response: httpx.Response = await client.get("/v1/resources")
        assert response.status_code == 200 and response.json() == {"resources": []}
