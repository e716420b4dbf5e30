"""A cap on the event streams one tenant holds open on one API process (api/stream_slots.py)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import httpx
import pytest
from http_server import AUTH_ACME, AUTH_GLOBEX, serve_in_thread

from api.app import create_app
from shared.settings import Settings

pytestmark = pytest.mark.anyio


async def events_url(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    """The events link of a new job that nobody runs: its stream stays open, waiting."""
    response = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "caps"}}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["links"]["events"])


async def test_a_tenant_over_its_stream_cap_gets_429_and_a_slot_again_once_one_closes(settings: Settings) -> None:
    with serve_in_thread(create_app(replace(settings, sse_max_per_tenant=2))) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client, \
                contextlib.AsyncExitStack() as streams:
            urls = [await events_url(client, AUTH_ACME) for _ in range(3)]
            for url in urls[:2]:
                opened = await streams.enter_async_context(client.stream("GET", url))
                assert opened.status_code == 200
            refused = await client.get(urls[2])
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
            assert "BACKLANE_SSE_MAX_PER_TENANT" in refused.json()["error"]["message"]
            # another tenant has slots of its own
            async with client.stream("GET", await events_url(client, AUTH_GLOBEX)) as other:
                assert other.status_code == 200
            # the first stream closes: its slot comes back once the server has seen the client go
            await streams.aclose()
            for _ in range(100):
                async with client.stream("GET", urls[2]) as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.05)
            assert again.status_code == 200
