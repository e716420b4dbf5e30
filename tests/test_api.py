"""The API's answers to bad requests: every error code of section 4, always as JSON; and the ops routes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from http_server import AUTH_GLOBEX, SimWorker, asgi_client
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import free_port

from api.app import create_app
from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy
from shared.schemas import JobRecord
from shared.settings import Settings

pytestmark = pytest.mark.anyio

STORY = {"type": "demo.story", "input": {"topic": "tides"}}


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> str:
    """The error code, after checking the status and that the body is the one error shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def create(client: httpx.AsyncClient, body: Any = None, **kw: Any) -> httpx.Response:
    return await client.post("/v1/jobs", json=STORY if body is None else body, **kw)


# ---- 201 and the record ------------------------------------------------------------------


async def test_create_answers_201_with_every_record_field(client: httpx.AsyncClient) -> None:
    response = await create(client, {**STORY, "metadata": {"k": 1}, "deadline_s": 60})
    assert response.status_code == 201
    job = response.json()
    # no worker runs here, and the answer says so (tests/integration/test_workers_registry.py)
    assert job.pop("warnings") == [
        "no live worker serves job type 'demo.story': the job waits queued until one that does starts"]
    assert set(job) == set(JobRecord.__annotations__)
    assert job["status"] == "queued" and job["type"] == "demo.story" and job["input"] == {"topic": "tides"}
    assert job["metadata"] == {"k": 1} and job["max_attempts"] == 3 and job["attempt"] == 0
    assert job["deadline_at"] is not None and job["last_seq"] == 1 and job["retry_of"] is None
    assert set(job["review"]) == {"required", "state", "by", "at", "note", "action_hash"}
    assert {"input_tokens", "output_tokens", "cached_tokens", "cost_usd"} <= set(job["usage"])
    assert set(job["timing"]) == {"queue_ms", "run_ms"}
    assert job["links"]["events"].startswith(f"http://testserver/v1/jobs/{job['id']}/events?token=")
    assert response.headers["location"] == f"http://testserver/v1/jobs/{job['id']}"


# ---- 400 ---------------------------------------------------------------------------------


async def test_bad_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b'{"type": ', headers={"Content-Type": "application/json"}
    )
    assert error_of(response, 400) == "bad_request"


async def test_bad_list_cursor_is_400(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/v1/jobs", params={"cursor": "nope"}), 400) == "bad_request"


async def test_bad_events_cursor_is_400_before_streaming(client: httpx.AsyncClient) -> None:
    job_id = (await create(client)).json()["id"]
    assert (
        error_of(await client.get(f"/v1/jobs/{job_id}/events", params={"after": "x-1"}), 400) == "bad_request"
    )
    response = await client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "12"})
    assert error_of(response, 400) == "bad_request"


# ---- 401 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic a2V5LWFjbWU="}]
)
async def test_missing_or_bad_credentials_are_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client.headers.pop("Authorization")
    for response in [
        await create(client, headers=headers),
        await client.get("/v1/jobs", headers=headers),
        await client.get("/v1/job-types", headers=headers),
        await client.get(f"/v1/jobs/{'a' * 32}/events", headers=headers),
    ]:
        assert error_of(response, 401) == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_events_token_of_another_job_or_forged_is_401(client: httpx.AsyncClient) -> None:
    first, second = (await create(client)).json(), (await create(client)).json()
    token = first["links"]["events"].partition("token=")[2]
    client.headers.pop("Authorization")
    assert error_of(await client.get(f"/v1/jobs/{second['id']}/events", params={"token": token}), 401)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert error_of(await client.get(f"/v1/jobs/{first['id']}/events", params={"token": forged}), 401)


# ---- 404 / 405 ---------------------------------------------------------------------------


async def test_unknown_job_is_404_whatever_the_id_looks_like(client: httpx.AsyncClient) -> None:
    for job_id in ["0" * 32, "not-an-id", "A" * 32]:
        assert error_of(await client.get(f"/v1/jobs/{job_id}"), 404) == "not_found"
        assert error_of(await client.post(f"/v1/jobs/{job_id}/cancel"), 404) == "not_found"
        assert error_of(await client.get(f"/v1/jobs/{job_id}/events"), 404) == "not_found"


async def test_another_tenants_job_is_404_everywhere(client: httpx.AsyncClient) -> None:
    job = (await create(client)).json()
    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("POST", f"/v1/jobs/{job['id']}/approve"),
        ("POST", f"/v1/jobs/{job['id']}/reject"),
        ("POST", f"/v1/jobs/{job['id']}/retry"),
    ]:
        response = await client.request(method, path, headers=AUTH_GLOBEX)
        assert error_of(response, 404) == "not_found", path
    assert (await client.get("/v1/jobs", headers=AUTH_GLOBEX)).json() == {"jobs": [], "next_cursor": None}
    # and the owner's job was not touched by the attempts
    assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "queued"


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/v1/nothing-here"), 404) == "not_found"
    assert error_of(await client.get("/v2/jobs"), 404) == "not_found"
    response = await client.delete("/v1/jobs")
    assert error_of(response, 405) == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert error_of(await client.put(f"/v1/jobs/{'a' * 32}/cancel"), 405) == "method_not_allowed"


# ---- 409 ---------------------------------------------------------------------------------


async def test_invalid_transitions_are_409_and_change_nothing(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = (await create(client)).json()
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    before = await store.read_events(job["id"], None)
    response = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert error_of(response, 409) == "conflict" and "canceled" in response.json()["error"]["message"]
    assert error_of(await client.post(f"/v1/jobs/{job['id']}/approve"), 409) == "conflict"
    queued = (await create(client)).json()
    assert error_of(await client.post(f"/v1/jobs/{queued['id']}/reject"), 409) == "conflict"
    assert error_of(await client.post(f"/v1/jobs/{queued['id']}/retry"), 409) == "conflict"
    assert await store.read_events(job["id"], None) == before


async def test_idempotency_key_reused_with_another_body_is_409(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-7"}
    assert (await create(client, headers=headers)).status_code == 201
    other = {"type": "demo.story", "input": {"topic": "other"}}
    assert error_of(await create(client, other, headers=headers), 409) == "conflict"
    assert len((await client.get("/v1/jobs")).json()["jobs"]) == 1


# ---- 413 / 415 ---------------------------------------------------------------------------


async def test_body_over_the_limit_is_413_by_header_and_by_counting(settings: Settings, redis: Redis) -> None:
    small = dataclasses.replace(settings, max_body_bytes=100)
    big = {"type": "demo.story", "input": {"topic": "x" * 200}}
    async with asgi_client(create_app(small, redis=redis)) as client:
        assert error_of(await create(client, big), 413) == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only counting catches it
            yield b'{"type": "demo.story", "input": {"topic": "'
            for _ in range(10):
                yield b"x" * 20
            yield b'"}}'

        response = await client.post(
            "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert error_of(response, 413) == "payload_too_large"
        assert (await client.get("/v1/jobs")).json()["jobs"] == []


async def test_not_json_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b"type=demo.story", headers={"Content-Type": "text/plain"}
    )
    assert error_of(response, 415) == "unsupported_media_type"
    response = await client.post("/v1/jobs", content=b"{}")  # no Content-Type at all
    assert error_of(response, 415) == "unsupported_media_type"


# ---- 422 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"type": "no.such.type", "input": {}}, "unknown job type"),
        ({"type": "demo.story", "input": {}}, "topic"),  # the type's input_schema
        ({"type": "demo.story", "input": {"topic": "x", "steps": 0}}, "input.steps"),
        ({**STORY, "max_attempts": 0}, "max_attempts"),
        ({**STORY, "max_attempts": 101}, "max_attempts"),
        ({**STORY, "max_attempts": True}, "max_attempts"),
        ({**STORY, "deadline_s": -5}, "deadline_s"),
        ({**STORY, "deadline_s": 0}, "deadline_s"),
        ({**STORY, "metadata": [1, 2]}, "metadata"),
        ({**STORY, "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({**STORY, "webhook_url": "not a url"}, "webhook_url"),
        ({**STORY, "colour": "blue"}, "unknown fields"),
        ({"input": {"topic": "x"}}, "type"),
        ({"type": "demo.story"}, "input"),
        ([1, 2, 3], "object"),
    ],
)
async def test_invalid_fields_are_422(client: httpx.AsyncClient, body: Any, mentions: str) -> None:
    response = await create(client, body)
    assert error_of(response, 422) == "invalid_fields"
    assert mentions in response.json()["error"]["message"]
    assert (await client.get("/v1/jobs")).json()["jobs"] == []


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"status": "done"}])
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    assert error_of(await client.get("/v1/jobs", params=params), 422) == "invalid_fields"


# ---- 429 ---------------------------------------------------------------------------------


async def test_over_the_creation_rate_is_429_with_retry_after(settings: Settings, redis: Redis) -> None:
    limited = dataclasses.replace(settings, create_rate_per_min=3)
    async with asgi_client(create_app(limited, redis=redis)) as client:
        for _ in range(3):
            assert (await create(client)).status_code == 201
        response = await create(client)
        assert error_of(response, 429) == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # per tenant: another tenant is not limited by acme's use
        assert (await create(client, headers=AUTH_GLOBEX)).status_code == 201
        assert len((await client.get("/v1/jobs")).json()["jobs"]) == 3


async def test_idempotent_replays_are_not_charged_against_the_creation_rate(settings: Settings, redis: Redis) -> None:
    """Bug: a client retrying POST /v1/jobs with the same Idempotency-Key (what the key is for) used
    up the tenant's creation rate and could get 429 for a job that already existed.
    Cause: the rate limit was charged before the key was looked up.
    Fix: a request whose key already names a job is not charged; every other request is, so new
    keys cannot get past the limit."""
    limited = dataclasses.replace(settings, create_rate_per_min=2)
    async with asgi_client(create_app(limited, redis=redis)) as client:
        first = await create(client, headers={"Idempotency-Key": "order-1"})
        assert first.status_code == 201
        for _ in range(5):
            again = await create(client, headers={"Idempotency-Key": "order-1"})
            assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other_body = await create(client, {"type": "demo.story", "input": {"topic": "other"}},
                                  headers={"Idempotency-Key": "order-1"})
        assert error_of(other_body, 409) == "conflict"
        assert (await create(client, headers={"Idempotency-Key": "order-2"})).status_code == 201
        assert error_of(await create(client, headers={"Idempotency-Key": "order-3"}), 429) == "rate_limited"
        assert error_of(await create(client), 429) == "rate_limited"
        assert len((await client.get("/v1/jobs")).json()["jobs"]) == 2


async def test_idempotent_replays_of_the_compatible_api_are_free_too(settings: Settings, redis: Redis) -> None:
    """Bug: POST /v1/responses still charged a replayed Idempotency-Key (the fix above reached only
    /v1/jobs). Fix: both routes create through one rate-aware helper."""
    limited = dataclasses.replace(settings, create_rate_per_min=1)
    body = {"model": "gpt-test", "input": "hello", "background": True}
    async with asgi_client(create_app(limited, redis=redis)) as client:
        first = await client.post("/v1/responses", json=body, headers={"Idempotency-Key": "r-1"})
        assert first.status_code == 200, first.text
        for _ in range(3):
            again = await client.post("/v1/responses", json=body, headers={"Idempotency-Key": "r-1"})
            assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        over = await client.post("/v1/responses", json=body, headers={"Idempotency-Key": "r-2"})
        assert over.status_code == 429 and over.headers.get("retry-after")


# ---- 503 ---------------------------------------------------------------------------------


async def test_redis_down_is_503_with_retry_after_and_liveness_stays_up(settings: Settings) -> None:
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=0.5,
    )
    async with asgi_client(create_app(settings, redis=dead)) as client:
        for response in [
            await create(client),
            await client.get(f"/v1/jobs/{'a' * 32}"),
            await client.get("/v1/jobs"),
            await client.get("/readyz"),
        ]:
            assert error_of(response, 503) == "unavailable"
            assert int(response.headers["retry-after"]) >= 1
        assert (await client.get("/healthz")).json() == {"ok": True}
    await dead.aclose()


# ---- the ops routes ----------------------------------------------------------------------


async def test_job_types_lists_builtin_and_registered(client: httpx.AsyncClient, store: JobStore) -> None:
    await store.register_types([JobTypePolicy(name="reports.weekly", authority="draft", max_attempts=5)])
    types = {t["name"]: t for t in (await client.get("/v1/job-types")).json()}
    assert types["demo.story"]["builtin"] is True and types["demo.story"]["input_schema"]["required"] == [
        "topic"
    ]
    assert types["reports.weekly"]["review"] == "required" and types["reports.weekly"]["max_attempts"] == 5
    # registered types are accepted, with their policy's defaults
    job = (await create(client, {"type": "reports.weekly", "input": {}})).json()
    assert job["max_attempts"] == 5 and job["review"]["required"] is True


async def test_default_max_attempts_applies_to_types_that_set_none(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """Bug: BACKLANE_DEFAULT_MAX_ATTEMPTS was parsed but never read: every type without its own
    max_attempts got 3.
    Cause: the policy's dataclass default (3) was registered as is.
    Fix: a type declared without max_attempts is registered with the setting; types that set one,
    built-in ones included, keep theirs."""
    from compute.registry import BUILTIN_MODULES, job_type, load

    env = {"BACKLANE_REDIS_URL": str(settings.redis_url), "BACKLANE_DEFAULT_MAX_ATTEMPTS": "7"}
    worker_settings = Settings.from_env(env)

    async def handler(ctx: Any) -> None:
        return None

    declared = [job_type("plain.kind")(handler), job_type("own.kind", max_attempts=2)(handler)]
    found = {**load(BUILTIN_MODULES), **{jt.name: jt for jt in declared}}
    await JobStore(redis, worker_settings).register_types([jt.policy for jt in found.values()])
    types = {t["name"]: t for t in (await client.get("/v1/job-types")).json()}
    assert types["plain.kind"]["max_attempts"] == 7 and types["own.kind"]["max_attempts"] == 2
    assert types["demo.story"]["max_attempts"] == 3 and types["openai.responses"]["max_attempts"] == 5
    assert "max_attempts_default" not in types["plain.kind"]
    job = (await create(client, {"type": "plain.kind", "input": {}})).json()
    assert job["max_attempts"] == 7


async def test_readyz_and_healthz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"ok": True}
    ready = (await client.get("/readyz")).json()
    # the test server keeps nothing on disk, and readiness says so
    assert ready["ok"] is True and any("persists nothing" in w for w in ready["warnings"])


async def test_metrics_has_requests_sse_hub_and_redis_stats(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = (await create(client)).json()
    token = await SimWorker(store).start(job["id"])
    await store.redis.hset(store.keys.shard(0).stats, "lease_expiries", 2)  # type: ignore[misc]
    with pytest.raises(Exception, match="STALE"):
        await SimWorker(store).output(job["id"], token + 1, "zombie")
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'backlane_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1.0' in text
    assert "backlane_stale_writes_total 1.0" in text and "backlane_lease_expiries_total 2.0" in text
    assert "backlane_sse_clients 0.0" in text and "backlane_hub_streams_watched 0.0" in text


async def test_home_redirects_to_the_ui(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code in (302, 307) and response.headers["location"] == "/ui/"
