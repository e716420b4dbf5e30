"""Webhook targets: public addresses only, checked at submit (422) and unless allowed by the flag."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from http_server import asgi_client
from redis.asyncio import Redis

from api.app import create_app
from shared import webhook_targets
from shared.settings import Settings
from shared.webhook_targets import IPAddress, RefusedTarget, checked_addresses, refusal

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
STORY = {"type": "demo.story", "input": {"topic": "t"}}


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12::1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "CGNAT"),
    ("::ffff:127.0.0.1", "loopback, written as IPv6"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("2002:a01:203::1", "private, written as IPv6"),  # 6to4 of 10.1.2.3
])
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def resolving_to(*addresses: str) -> object:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]
    return resolve


async def test_a_name_is_refused_when_any_of_its_addresses_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("93.184.216.34", "10.0.0.7"))
    with pytest.raises(RefusedTarget, match=r"'hooks\.example' resolves to 10\.0\.0\.7, which is private"):
        await checked_addresses("https://hooks.example/in")
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("93.184.216.34"))
    assert await checked_addresses("https://hooks.example/in") == [ipaddress.ip_address("93.184.216.34")]


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(RefusedTarget, match=r"'no-such-host\.invalid' (does not resolve|did not resolve within)"):
        await checked_addresses("https://no-such-host.invalid/hook")


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An API that signs acme's webhooks and checks their targets (the test settings allow private ones)."""
    checked = replace(settings, webhook_secrets={"acme": SECRET}, webhook_allow_private=False)
    async with asgi_client(create_app(checked, redis=redis)) as c:
        yield c


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://localhost:9/hook", "loopback"),  # a name: resolved, and one of its addresses is refused
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 as one number: the resolver reads it so too
])
async def test_a_webhook_url_that_is_not_public_is_a_422(client: httpx.AsyncClient, url: str, why: str) -> None:
    response = await client.post("/v1/jobs", json={**STORY, "webhook_url": url})
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert why in message and "webhook_url" in message and "BACKLANE_WEBHOOK_ALLOW_PRIVATE" in message
    assert httpx.URL(url).host in message


@pytest.mark.parametrize("url", ["hTTp://&I.AF]*", "http://[::1/hook", "https://[/x"])
async def test_a_webhook_url_that_cannot_be_read_is_a_422(client: httpx.AsyncClient, url: str) -> None:
    """urlsplit raises on an unclosed IPv6 bracket: a clear 422 (a fuzzed request once got a 500)."""
    response = await client.post("/v1/jobs", json={**STORY, "webhook_url": url})
    assert response.status_code == 422, response.text
    assert "webhook_url" in response.json()["error"]["message"]
    assert (await client.get("/v1/jobs")).json()["jobs"] == []  # nothing was created
    with pytest.raises(webhook_targets.RefusedTarget, match="webhook_url"):
        webhook_targets.check_literal(url)


async def test_a_public_literal_address_is_accepted_without_dns(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_dns(host: str, port: int) -> list[IPAddress]:
        raise AssertionError("a literal address needs no lookup")
    monkeypatch.setattr(webhook_targets, "resolve", no_dns)
    response = await client.post("/v1/jobs", json={**STORY, "webhook_url": "https://93.184.216.34/hook"})
    assert response.status_code == 201, response.text


async def test_a_webhook_url_that_does_not_resolve_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs", json={**STORY, "webhook_url": "https://no-such-host.invalid/hook"})
    assert response.status_code == 422
    assert "'no-such-host.invalid' d" in response.json()["error"]["message"]  # does not / did not resolve


async def test_the_flag_allows_private_targets(settings: Settings, redis: Redis) -> None:
    allowed = replace(settings, webhook_secrets={"acme": SECRET}, webhook_allow_private=True)
    async with asgi_client(create_app(allowed, redis=redis)) as c:
        response = await c.post("/v1/jobs", json={**STORY, "webhook_url": "http://127.0.0.1:8080/hook"})
    assert response.status_code == 201


async def test_retry_checks_the_target_again(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry is a new job sent to the same URL, which may resolve elsewhere by now."""
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("93.184.216.34"))
    job = (await client.post("/v1/jobs", json={**STORY, "webhook_url": "https://hooks.example/in"})).json()
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("127.0.0.1"))
    retried = await client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 422 and "loopback" in retried.json()["error"]["message"]
