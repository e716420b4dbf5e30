"""Job flows through the API: idempotency, tenant isolation, cancel, review, retry, listing, events links."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx
import pytest
from http_server import AUTH_GLOBEX, SimWorker, asgi_client
from redis.asyncio import Redis

from api.app import create_app
from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy
from shared.serialization import loads
from shared.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


async def create(client: httpx.AsyncClient, topic: str = "tides", json_extra: dict[str, Any] | None = None,
                 **kw: Any) -> dict[str, Any]:
    body = {"type": "demo.story", "input": {"topic": topic}, **(json_extra or {})}
    response = await client.post("/v1/jobs", json=body, **kw)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_idempotent_replay_is_200_with_the_same_job_created_once(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    headers = {"Idempotency-Key": "abc-1"}
    body = {"type": "demo.story", "input": {"topic": "tides"}, "metadata": {"n": 1}}
    first = await client.post("/v1/jobs", json=body, headers=headers)
    again = await client.post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    conflict = await client.post("/v1/jobs", json={**body, "metadata": {"n": 2}}, headers=headers)
    assert conflict.status_code == 409
    # one job in the index, one queue entry, one status event
    assert (await client.get("/v1/jobs")).json()["next_cursor"] is None
    assert [j["id"] for j in (await client.get("/v1/jobs")).json()["jobs"]] == [first.json()["id"]]
    assert await store.index_size(lambda s: s.queue("demo.story")) == 1
    assert len(await store.read_events(first.json()["id"], None)) == 1
    # keys belong to a tenant: globex's same key is a new job
    other = await client.post("/v1/jobs", json=body, headers={**headers, **AUTH_GLOBEX})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


async def test_tenants_see_only_their_own_jobs(client: httpx.AsyncClient) -> None:
    mine = await create(client)
    theirs = await create(client, headers=AUTH_GLOBEX)
    assert [j["id"] for j in (await client.get("/v1/jobs")).json()["jobs"]] == [mine["id"]]
    listed = (await client.get("/v1/jobs", headers=AUTH_GLOBEX)).json()["jobs"]
    assert [j["id"] for j in listed] == [theirs["id"]]
    assert (await client.get(f"/v1/jobs/{theirs['id']}")).status_code == 404
    assert (await client.post(f"/v1/jobs/{theirs['id']}/cancel")).status_code == 404
    assert (await client.get(f"/v1/jobs/{theirs['id']}/events")).status_code == 404
    # a token issued for globex's job does not open acme's, and the reverse
    token = theirs["links"]["events"].partition("token=")[2]
    client.headers.pop("Authorization")
    assert (await client.get(f"/v1/jobs/{mine['id']}/events", params={"token": token})).status_code == 401


async def test_cancel_of_a_queued_job_is_200_and_final(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await create(client)
    response = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    record = response.json()
    assert record["status"] == "canceled" and record["finished_at"] is not None
    assert await store.index_size(lambda s: s.queue("demo.story")) == 0
    last = loads((await store.read_events(job["id"], None))[-1][2])
    assert (last["type"], last["status"], last["seq"]) == ("status", "canceled", 2)


async def test_cancel_of_a_running_job_is_202_and_the_worker_is_told(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await create(client)
    await SimWorker(store).start(job["id"])
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys.cancel_channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    response = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["data"] == job["id"]
    await pubsub.aclose()


@pytest.fixture
async def signing_client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an API whose tenant acme has a webhook secret."""
    signed = replace(settings, webhook_secrets={"acme": "whsec_" + base64.b64encode(b"k" * 32).decode()})
    async with asgi_client(create_app(signed, redis=redis)) as c:
        yield c


async def test_a_webhook_url_without_a_signing_secret_is_refused(
    client: httpx.AsyncClient, signing_client: httpx.AsyncClient
) -> None:
    """Bug: with no secret configured, webhooks went out unsigned (the deliverer only logged a
    warning), so a receiver could not tell them from forgeries. Fix: every delivery is signed, and a
    job naming a webhook_url for a tenant without a secret is a 422 that names the setting."""
    body = {"type": "demo.story", "input": {"topic": "t"}, "webhook_url": "https://example.com/hook"}
    refused = await client.post("/v1/jobs", json=body)
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert "webhook_url" in message and "BACKLANE_WEBHOOK_SECRETS" in message and "'acme'" in message
    assert (await signing_client.post("/v1/jobs", json=body)).status_code == 201
    assert (await client.post("/v1/jobs", json={**body, "webhook_url": None})).status_code == 201


async def test_retry_creates_a_linked_job_with_the_same_request(signing_client: httpx.AsyncClient) -> None:
    client = signing_client
    body = {
        "type": "demo.story",
        "input": {"topic": "tides", "steps": 2},
        "metadata": {"user": "u1"},
        "webhook_url": "https://example.com/hook",
        "max_attempts": 4,
        "deadline_s": 600,
        "priority": "high",
    }
    original = (await client.post("/v1/jobs", json=body)).json()
    assert (await client.post(f"/v1/jobs/{original['id']}/retry")).status_code == 409  # still queued
    await client.post(f"/v1/jobs/{original['id']}/cancel")
    response = await client.post(f"/v1/jobs/{original['id']}/retry")
    assert response.status_code == 201
    retry = response.json()
    assert (
        retry["id"] != original["id"] and retry["retry_of"] == original["id"] and retry["status"] == "queued"
    )
    for field in ("type", "input", "metadata", "webhook_url", "max_attempts", "priority"):
        assert retry[field] == original[field], field
    assert retry["priority"] == "high"
    # the same time to start, counted from the retry's creation
    def start_window_s(job: dict[str, Any]) -> float:
        return (datetime.fromisoformat(job["deadline_at"]) - datetime.fromisoformat(job["created_at"])).total_seconds()
    assert start_window_s(retry) == start_window_s(original) == 600
    # the original is untouched
    assert (await client.get(f"/v1/jobs/{original['id']}")).json()["status"] == "canceled"


async def test_priority_is_as_asked_else_the_types_and_a_bad_one_is_a_422(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    assert (await create(client))["priority"] == "normal"
    assert (await create(client, json_extra={"priority": "low"}))["priority"] == "low"
    await store.register_types([JobTypePolicy(name="reports.nightly", priority="low")])
    typed = await client.post("/v1/jobs", json={"type": "reports.nightly", "input": {}})
    assert typed.status_code == 201 and typed.json()["priority"] == "low"
    asked = await client.post("/v1/jobs", json={"type": "reports.nightly", "input": {}, "priority": "high"})
    assert asked.json()["priority"] == "high"
    types = {t["name"]: t for t in (await client.get("/v1/job-types")).json()}
    assert types["reports.nightly"]["priority"] == "low"
    for bad in ("urgent", 1, "HIGH"):
        refused = await client.post("/v1/jobs", json={"type": "demo.story", "input": {}, "priority": bad})
        assert refused.status_code == 422, bad
        assert "priority" in refused.json()["error"]["message"] and "high" in refused.json()["error"]["message"]
    assert len((await client.get("/v1/jobs")).json()["jobs"]) == 4  # the refused ones made nothing


async def review_job(client: httpx.AsyncClient, store: JobStore) -> str:
    """A job of a review-required type, run by a simulated worker up to needs_review."""
    await store.register_types([JobTypePolicy(name="drafts.email", authority="draft")])
    response = await client.post("/v1/jobs", json={"type": "drafts.email", "input": {"to": "x"}})
    job = response.json()
    assert job["review"]["required"] is True
    worker = SimWorker(store)
    token = await worker.start(job["id"], "drafts.email")
    await worker.output(job["id"], token, "Dear x")
    await worker.finish(job["id"], token, "needs_review", result={"draft": "Dear x"}, job_type="drafts.email")
    return str(job["id"])


async def test_approve_completes_and_records_who_and_when(client: httpx.AsyncClient, store: JobStore) -> None:
    job_id = await review_job(client, store)
    response = await client.post(f"/v1/jobs/{job_id}/approve", json={"note": "looks fine"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed" and job["result"] == {"draft": "Dear x"}
    review = job["review"]
    assert (review["required"], review["state"], review["by"], review["note"]) == (
        True,
        "approved",
        "acme",
        "looks fine",
    )
    assert review["at"].endswith("Z")
    last = loads((await store.read_events(job_id, None))[-1][2])
    assert last["status"] == "completed" and last["result"] == {"draft": "Dear x"}
    assert (await client.post(f"/v1/jobs/{job_id}/reject")).status_code == 409


async def test_reject_cancels_without_a_body(client: httpx.AsyncClient, store: JobStore) -> None:
    job_id = await review_job(client, store)
    response = await client.post(f"/v1/jobs/{job_id}/reject")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled" and response.json()["review"]["state"] == "rejected"
    bad = await client.post(f"/v1/jobs/{job_id}/approve", json={"note": 5})
    assert bad.status_code == 422


async def test_list_is_newest_first_with_paging_and_filters(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    ids = []
    for i in range(7):
        ids.append((await create(client, topic=f"t{i}"))["id"])
        await asyncio.sleep(0.002)  # jobs created in the same ms are listed by id, not in creation order
    await store.register_types([JobTypePolicy(name="other.kind")])
    await asyncio.sleep(0.002)
    other = (await client.post("/v1/jobs", json={"type": "other.kind", "input": {}})).json()["id"]
    await client.post(f"/v1/jobs/{ids[1]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", "type": "demo.story", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/jobs", params=params)).json()
        assert len(page["jobs"]) <= 3
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    canceled = (await client.get("/v1/jobs", params={"status": "canceled"})).json()
    assert [j["id"] for j in canceled["jobs"]] == [ids[1]]
    everything = (await client.get("/v1/jobs")).json()
    assert everything["jobs"][0]["id"] == other and len(everything["jobs"]) == 8
    assert all(j["links"]["events"].count("token=") == 1 for j in everything["jobs"])


async def test_the_events_link_works_with_only_its_token(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await create(client)
    worker = SimWorker(store)
    token = await worker.start(job["id"])
    await worker.output(job["id"], token, "Hel", "lo")
    await worker.finish(job["id"], token, result={"text": "Hello"})
    client.headers.pop("Authorization")
    link = job["links"]["events"]
    response = await client.get(link)  # a finished job: the stream ends, so this transport can read it
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    blocks = [b for b in response.text.split("\n\n") if b.strip() and not b.startswith(":")]
    events = [dict(line.split(": ", 1) for line in b.splitlines()) for b in blocks]
    assert [e["event"] for e in events] == ["status", "status", "output", "output", "status"]
    assert [loads(e["data"])["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert "".join(loads(e["data"]).get("text", "") for e in events) == "Hello"
    # resuming at the terminal event (header or ?after=) gets 204: EventSource stops there
    last_id = events[-1]["id"]
    assert (await client.get(link, headers={"Last-Event-ID": last_id})).status_code == 204
    assert (await client.get(f"{link}&after={last_id}")).status_code == 204
    # resuming before it replays exactly the rest
    rest = await client.get(f"{link}&after={events[2]['id']}")
    assert [line for line in rest.text.splitlines() if line.startswith("id: ")] == [
        f"id: {e['id']}" for e in events[3:]
    ]


async def test_a_cursor_past_a_finished_job_s_newest_event_is_a_400_not_a_204(
    client: httpx.AsyncClient, store: JobStore,
) -> None:
    """Bug: a cursor past the end of a finished job's stream, or beyond Redis's 64-bit stream ids
    (``18446744073709551616-0``), got 204 instead of the 400 the README promises for a malformed
    cursor or one past the newest event. Cause: the terminal check ran before the bounds check, and
    the cursor pattern allowed 20 digits whatever their value. Fix: a part above 2^64 - 1 is
    malformed, and the past-the-newest check runs before the terminal one."""
    job = await create(client)
    worker = SimWorker(store)
    token = await worker.start(job["id"])
    await worker.finish(job["id"], token, result={"text": ""})
    last_id = (await store.read_events(job["id"], None))[-1][0]
    ms, _, n = last_id.partition("-")
    link = f"/v1/jobs/{job['id']}/events"
    for cursor in (f"{int(ms) + 1}-0", f"{ms}-{int(n) + 1}", "18446744073709551616-0", "1-18446744073709551616"):
        by_header = await client.get(link, headers={"Last-Event-ID": cursor})
        by_query = await client.get(link, params={"after": cursor})
        assert (by_header.status_code, by_query.status_code) == (400, 400), cursor
        assert by_header.json()["error"]["code"] == "bad_request"
    assert (await client.get(link, headers={"Last-Event-ID": last_id})).status_code == 204


async def test_counts_per_status_and_type_are_exact_and_per_tenant(client: httpx.AsyncClient, store: JobStore) -> None:
    async def counts(**kw: Any) -> dict[str, Any]:
        response = await client.get("/v1/jobs/counts", **kw)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    empty = await counts()
    assert empty["total"] == 0 and set(empty["counts"]) == {
        "queued", "running", "needs_review", "completed", "failed", "canceled", "expired"}
    ids = [(await create(client, topic=f"t{i}"))["id"] for i in range(4)]
    await client.post(f"/v1/jobs/{ids[0]}/cancel")
    worker = SimWorker(store)
    token = await worker.start(ids[1])
    await worker.finish(ids[1], token)
    await SimWorker(store).start(ids[2])
    review = await review_job(client, store)  # drafts.email, in needs_review
    await create(client, headers=AUTH_GLOBEX)
    await create(client, headers=AUTH_GLOBEX)

    mine = await counts()
    assert mine["counts"] == {"queued": 1, "running": 1, "needs_review": 1, "completed": 1, "failed": 0,
                              "canceled": 1, "expired": 0}
    assert mine["total"] == 5
    assert mine["by_type"]["demo.story"] == {**mine["counts"], "needs_review": 0}
    assert mine["by_type"]["drafts.email"]["needs_review"] == 1
    # the same numbers the list gives, status by status
    for status, n in mine["counts"].items():
        listed = (await client.get("/v1/jobs", params={"status": status})).json()["jobs"]
        assert len(listed) == n, status
    # another tenant's jobs are not counted, and its own counts hold only them
    theirs = await counts(headers=AUTH_GLOBEX)
    assert theirs["counts"]["queued"] == 2 and theirs["total"] == 2
    assert (await client.post(f"/v1/jobs/{review}/reject")).status_code == 200
    after = await counts()
    assert (after["counts"]["needs_review"], after["counts"]["canceled"]) == (0, 2)
    client.headers.pop("Authorization")
    assert (await client.get("/v1/jobs/counts")).status_code == 401


async def test_a_running_jobs_heartbeat_is_its_workers_last_beat_in_the_record_and_the_list(
    client: httpx.AsyncClient, store: JobStore, settings: Settings
) -> None:
    """Per-worker liveness (shared/liveness.py): the record's last_heartbeat_at and lease_expires_at are
    the beat of the worker holding the job, as GET and the list (one read for the page) both say."""
    from compute.leases import Attempts
    from shared.serialization import rfc3339

    job = await create(client)
    attempts = Attempts(store, "beating")
    while not (await attempts.take(["demo.story"], 1, settings.lease_ms))[0]:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await attempts.beat(settings.lease_ms)
    until = await store.redis.zscore(store.keys.of_job(job["id"]).workers, "beating")
    assert until is not None
    beat = {"last_heartbeat_at": rfc3339(int(until) - settings.lease_ms), "lease_expires_at": rfc3339(int(until))}
    record = (await client.get(f"/v1/jobs/{job['id']}")).json()
    listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert record["status"] == "running" and {k: record[k] for k in beat} == beat
    assert [{k: j[k] for k in beat} for j in listed if j["id"] == job["id"]] == [beat]


async def test_a_tenant_over_its_queued_cap_gets_a_429_with_retry_after(settings: Settings, redis: Redis) -> None:
    async with asgi_client(create_app(replace(settings, max_queued_per_tenant=2, shards=1), redis=redis)) as client:
        await create(client)
        await create(client)
        refused = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "x"}})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
        assert "BACKLANE_MAX_QUEUED_PER_TENANT" in refused.json()["error"]["message"]
        assert len((await client.get("/v1/jobs")).json()["jobs"]) == 2
        other = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "x"}},
                                  headers={"Authorization": AUTH_GLOBEX["Authorization"]})
        assert other.status_code == 201  # the cap is each tenant's


async def test_search_by_id_prefix_and_metadata(client: httpx.AsyncClient) -> None:
    made = []
    for i in range(6):
        body = {"type": "demo.story", "input": {"topic": f"t{i}"},
                "metadata": {"customer": "acme" if i % 2 else "globex", "n": i}}
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        made.append(response.json())
    target = made[3]["id"]
    for prefix in (target[:6], target[:6].upper(), target):
        found = (await client.get("/v1/jobs", params={"id_prefix": prefix})).json()
        assert target in [j["id"] for j in found["jobs"]]
        assert all(j["id"].startswith(prefix.lower()) for j in found["jobs"])
    acme = (await client.get("/v1/jobs", params={"metadata.customer": "acme"})).json()["jobs"]
    assert sorted(j["id"] for j in acme) == sorted(made[i]["id"] for i in (1, 3, 5))
    # a number is compared as its JSON text; every term must match
    both = (await client.get("/v1/jobs", params={"metadata.customer": "acme", "metadata.n": "3"})).json()
    assert [j["id"] for j in both["jobs"]] == [target]
    assert (await client.get("/v1/jobs", params={"metadata.customer": "nobody"})).json() == {
        "jobs": [], "next_cursor": None}
    # a search pages like the plain list
    first = (await client.get("/v1/jobs", params={"metadata.customer": "acme", "limit": "2"})).json()
    rest = (await client.get("/v1/jobs", params={"metadata.customer": "acme", "limit": "2",
                                                 "cursor": first["next_cursor"]})).json()
    assert [j["id"] for j in first["jobs"] + rest["jobs"]] == [made[i]["id"] for i in (5, 3, 1)]
    # another tenant's jobs are never found
    theirs = (await client.get("/v1/jobs", params={"id_prefix": target[:8]}, headers=AUTH_GLOBEX)).json()
    assert theirs["jobs"] == []


@pytest.mark.parametrize("params, named", [
    ({"id_prefix": "xyz"}, "id_prefix"),
    ({"id_prefix": "a" * 33}, "id_prefix"),
    ({"metadata.": "x"}, "metadata."),
    ({"metadata." + "k" * 101: "x"}, "metadata key"),
    ({"metadata.k": "v" * 501}, "metadata.k"),
    ({f"metadata.k{i}": "v" for i in range(5)}, "at most 4"),
])
async def test_bad_search_parameters_are_422_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], named: str,
) -> None:
    response = await client.get("/v1/jobs", params=params)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


async def test_a_metadata_key_given_twice_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/jobs?metadata.k=a&metadata.k=b")
    assert response.status_code == 422 and "twice" in response.json()["error"]["message"]
