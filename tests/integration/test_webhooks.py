"""Webhook delivery over a real socket: signed, ordered per job, at least once, surviving a dead receiver."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from http_server import AUTH_GLOBEX, asgi_client, serve_in_thread
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.app import create_app
from compute.leases import Attempts
from compute.supervisor.webhook_delivery import WebhookDeliverer
from shared import webhook_targets
from shared.jobs import JobStore, NewJob
from shared.serialization import loads, now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"receiver-secret-0123456789abcdef").decode()


class Receiver:
    def __init__(self) -> None:
        self.up = False
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self.refused_headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            if not self.up:
                self.refused += 1
                self.refused_headers.append(dict(request.headers))
                return Response(status_code=503)
            self.received.append((dict(request.headers), body))
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    app = Starlette(routes=[Route("/hook", r.hook, methods=["POST"])])
    with serve_in_thread(app) as served:
        yield r, f"{served.url}/hook"


async def drain(deliverer: WebhookDeliverer, client: httpx.AsyncClient, store: JobStore) -> None:
    """Runs delivery passes until the outbox is empty."""
    import asyncio

    for _ in range(400):
        await deliverer.deliver_due(client)
        if await store.index_size(lambda s: s.webhook_outbox) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the outbox did not drain")


async def run_job(store: JobStore, url: str, n_jobs: int = 1) -> list[str]:
    ids = []
    for i in range(n_jobs):
        ids.append((await store.create(NewJob(tenant="acme", type="demo.story", input={"i": i}, max_attempts=3,
                                              webhook_url=url))).job_id)
    attempts = Attempts(store, "w1")
    for _ in ids:
        (started,), _ = await attempts.take(["demo.story"], 1, 5000)
        await attempts.append(started.job_id, started.token, 0, [("output", {"text": "hi"})])
        result = await store.transition(started.job_id, "demo.story", "completed", token=started.token,
                                        event={"result": {"ok": True}}, fields={"result": '{"ok":true}'})
        assert result.ok
    return ids


async def test_receiver_down_then_up_gets_every_status_once_in_order_and_signed(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_schedule_s=(0.05, 0.05, 0.1, 0.1, 0.2))
    store = JobStore(redis, settings)
    ids = await run_job(store, url, n_jobs=3)
    deliverer = WebhookDeliverer(settings, redis)
    async with httpx.AsyncClient() as client:
        for _ in range(3):  # the receiver is down: every job fails and is scheduled again
            await deliverer.deliver_due(client)
        assert rec.refused >= 3 and rec.received == []
        record = await store.load(ids[0])
        assert record and int(record["webhook_failures"]) >= 1 and record.get("webhook_next_at")
        rec.up = True
        await drain(deliverer, client, store)

    verifier = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    by_job: dict[str, list[int]] = {}
    seen_ids = set()
    for headers, body in rec.received:
        verifier.webhooks.verify_signature(body, headers)  # an independent Standard Webhooks check
        payload = loads(body)
        assert headers["webhook-id"] == f"{payload['job_id']}.{payload['seq']}"
        assert headers["webhook-id"] not in seen_ids  # once per webhook-id
        seen_ids.add(headers["webhook-id"])
        by_job.setdefault(payload["job_id"], []).append(payload["seq"])
    for job_id in ids:
        statuses = [loads(d)["seq"] for _, t, d in await store.read_events(job_id, None) if t == "status"]
        assert by_job[job_id] == statuses  # every status change, in order: queued, running, completed
        assert len(statuses) == 3
        log = [loads(x) for x in await redis.lrange(store.keys.deliveries(job_id), 0, -1)]
        assert any(not e["ok"] for e in log) and log[0]["ok"]  # the failures and the success are logged
    assert await store.index_size(lambda s: s.webhook_outbox) == 0


async def test_a_status_arriving_during_delivery_is_not_missed(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.up = True
    settings = replace(settings, webhook_secrets={"*": SECRET})
    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                        webhook_url=url))).job_id
    deliverer = WebhookDeliverer(settings, redis)
    async with httpx.AsyncClient() as client:
        await deliverer.deliver_due(client)  # delivers "queued"
        assert await store.cancel(job_id, "demo.story")  # a new status after that pass
        await drain(deliverer, client, store)
    assert [loads(b)["status"] for _, b in rec.received] == ["queued", "canceled"]


async def test_a_dead_receiver_is_given_up_after_the_schedule_and_later_events_still_go(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_schedule_s=(0.01, 0.01))
    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                        webhook_url=url))).job_id
    deliverer = WebhookDeliverer(settings, redis)
    async with httpx.AsyncClient() as client:
        await drain(deliverer, client, store)  # 1 try + 2 retries, then given up
        assert rec.refused == 3
        assert int((await store.stats())["webhook_given_up"]) == 1
        rec.up = True
        await store.cancel(job_id, "demo.story")
        await drain(deliverer, client, store)
    assert [loads(b)["status"] for _, b in rec.received] == ["canceled"]


async def test_without_a_secret_nothing_is_sent_unsigned(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    """Bug: a tenant without a webhook secret got unsigned deliveries. Fix: the deliverer never sends
    one; the attempt is logged as failed (and retried on the schedule, in case a secret is added)."""
    rec, url = receiver
    rec.up = True
    settings = replace(settings, webhook_secrets={}, webhook_schedule_s=(0.01,))
    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                        webhook_url=url))).job_id
    async with httpx.AsyncClient() as client:
        await drain(WebhookDeliverer(settings, redis), client, store)
    assert rec.received == [] and rec.refused == 0
    log = [loads(x) for x in await redis.lrange(store.keys.deliveries(job_id), 0, -1)]
    assert log and not any(e["ok"] for e in log) and "no webhook secret" in log[0]["error"]


class Timed:
    """A receiver that notes when each delivery arrived; ``hang_s`` makes it a slow one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hang_s: float = 0.0) -> None:
        self.loop, self.hang_s = loop, hang_s
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()  # belongs to the test's loop: set from the server's thread

    async def hook(self, request: Request) -> Response:
        body = loads(await request.body())
        self.arrivals.append((time.monotonic(), body))
        self.loop.call_soon_threadsafe(self.arrived.set)
        if self.hang_s:
            await asyncio.sleep(self.hang_s)  # the slow receiver itself, not the test, waits here
        return Response(status_code=204)

    async def until(self, n: int) -> None:
        while len(self.arrivals) < n:
            self.arrived.clear()
            if len(self.arrivals) < n:
                await asyncio.wait_for(self.arrived.wait(), 10)


async def test_a_slow_receiver_does_not_hold_up_other_jobs_webhooks(redis: Redis, settings: Settings) -> None:
    """Bug: deliver_due gathered every claimed job each pass, so one receiver taking 10 s held up
    every other job's webhooks for 10 s. Fix: delivery is a pool: due jobs are claimed continuously
    up to WEBHOOK_CONCURRENCY in flight and each starts as soon as a slot is free. Two deliverers
    (two supervisors) run at once: the in-flight claim keeps each job with one of them, in order."""
    loop = asyncio.get_running_loop()
    slow, fast = Timed(loop, hang_s=3.0), Timed(loop)
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_concurrency=4)
    store = JobStore(redis, settings)
    with serve_in_thread(Starlette(routes=[Route("/slow", slow.hook, methods=["POST"])])) as s1, \
            serve_in_thread(Starlette(routes=[Route("/fast", fast.hook, methods=["POST"])])) as s2:
        slow_job = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                              webhook_url=f"{s1.url}/slow"))).job_id
        deliverers = [WebhookDeliverer(settings, redis), WebhookDeliverer(settings, redis)]
        runs = [asyncio.create_task(d.run()) for d in deliverers]
        try:
            await slow.until(1)  # the slow receiver now holds its request
            claim = await redis.zscore(store.keys.of_job(slow_job).webhook_outbox, slow_job)
            assert claim is not None and claim - now_ms() > deliverers[0].send_limit_s * 1000  # outlives it
            created = time.monotonic()
            fast_jobs = [(await store.create(NewJob(tenant="acme", type="demo.story", input={"i": i},
                                                    max_attempts=3, webhook_url=f"{s2.url}/fast"))).job_id
                         for i in range(6)]
            for job_id in fast_jobs:
                assert (await store.cancel(job_id, "demo.story")).outcome == "canceled"
            await fast.until(12)  # queued and canceled of each
            latency = max(at for at, _ in fast.arrivals) - created
            assert latency < 2.5, latency  # the 1 s idle poll and some load, well below the 3 s hang
            assert len(slow.arrivals) == 1  # still hanging: the others did not wait for it
            # a run's arrivals land before it records its cursor: stopping earlier would hand a job back
            # undelivered on the record, and the other deliverer could send it again (at least once)
            for _ in range(200):
                jobs = [await store.job(job_id) for job_id in fast_jobs]
                if all(j is not None and j.webhook_cursor == j.last_status_id for j in jobs):
                    break
                await asyncio.sleep(0.02)
        finally:
            for d in deliverers:
                d.stop()
            await asyncio.gather(*runs)
    by_job: dict[str, list[str]] = {}
    for _, body in fast.arrivals:
        by_job.setdefault(body["job_id"], []).append(body["status"])
    assert by_job == {job_id: ["queued", "canceled"] for job_id in fast_jobs}  # each once, in order
    # the stopped deliverers handed the slow job back at once instead of sitting on their claim
    assert (await redis.zscore(store.keys.of_job(slow_job).webhook_outbox, slow_job) or 0) <= now_ms()


async def test_events_dropped_when_the_job_expires_are_counted_as_given_up(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Bug: a job whose retention ran out while its webhooks were still pending left the outbox
    silently (webhook_done.lua 'gone'). Fix: the drop counts in webhook_given_up and is logged."""
    _, url = receiver
    settings = replace(settings, webhook_secrets={"*": SECRET})
    store = JobStore(redis, settings)
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                        webhook_url=url))).job_id
    await redis.delete(store.keys.job(job_id), store.keys.events(job_id))  # as the retention does
    async with httpx.AsyncClient() as client:
        assert await WebhookDeliverer(settings, redis).deliver_due(client) == 1
    assert (await store.stats()).get("webhook_given_up") == 1
    assert await store.index_size(lambda s: s.webhook_outbox) == 0
    assert any("dropped undelivered" in r.getMessage() and job_id in r.getMessage() for r in caplog.records)


async def test_a_retried_event_keeps_its_webhook_id_and_the_api_shows_the_log_and_metrics(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_schedule_s=(0.01, 0.01, 0.01))
    store = JobStore(redis, settings)
    async with asgi_client(create_app(settings, redis=redis)) as api:
        created = await api.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"}, "webhook_url": url})
        assert created.status_code == 201
        job_id = created.json()["id"]
        deliverer = WebhookDeliverer(settings, redis)
        async with httpx.AsyncClient() as client:
            await deliverer.deliver_due(client)  # refused
            await deliverer.deliver_due(client)  # too early for the retry, or refused again
            rec.up = True
            await drain(deliverer, client, store)
        assert rec.refused_headers and len(rec.received) == 1
        webhook_id = f"{job_id}.1"
        assert {h["webhook-id"] for h in rec.refused_headers} == {webhook_id}
        assert rec.received[0][0]["webhook-id"] == webhook_id  # the same id on every try
        assert all(h["webhook-signature"].startswith("v1,") for h in rec.refused_headers)

        answer = await api.get(f"/v1/jobs/{job_id}/deliveries")
        assert answer.status_code == 200
        body = answer.json()
        assert body["webhook"]["url"] == url and body["webhook"]["pending"] is False
        assert body["webhook"]["failures"] == 0
        log = body["deliveries"]
        assert log[0]["ok"] and log[0]["http_status"] == 204 and log[0]["webhook_id"] == webhook_id
        assert [e["http_status"] for e in log[1:]] == [503] * rec.refused

        metrics = (await api.get("/metrics")).text
        assert "backlane_webhook_deliveries_total 1.0" in metrics
        assert f"backlane_webhook_failures_total {float(rec.refused)}" in metrics
        assert "backlane_webhook_given_up_total 0.0" in metrics
        assert 'backlane_jobs{status="queued",type="demo.story"} 1.0' in metrics
        other = await api.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_GLOBEX)
        assert other.status_code == 404  # another tenant's job: not revealed


def resolving_to(address: str) -> Any:
    async def resolve(host: str, port: int) -> list[webhook_targets.IPAddress]:
        return [ipaddress.ip_address(address)]
    return resolve


async def test_a_name_that_resolves_to_loopback_at_delivery_is_not_sent_to(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name was public when the job was created and points at loopback when the
    webhook goes out. The supervisor resolves it again, refuses, and logs a failed try."""
    rec, url = receiver
    rec.up = True
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_allow_private=False)
    rebound = str(httpx.URL(url).copy_with(host="hooks.example"))
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("93.184.216.34"))
    async with asgi_client(create_app(settings, redis=redis)) as api:
        created = await api.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"},
                                                   "webhook_url": rebound})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        monkeypatch.setattr(webhook_targets, "resolve", resolving_to("127.0.0.1"))
        async with httpx.AsyncClient() as client:
            assert await WebhookDeliverer(settings, redis).deliver_due(client) == 1
        log = (await api.get(f"/v1/jobs/{job_id}/deliveries")).json()
    assert rec.received == [] and rec.refused == 0  # nothing reached the receiver
    assert log["webhook"]["failures"] == 1 and log["webhook"]["pending"] is True
    entry = log["deliveries"][0]
    assert entry["ok"] is False and "http_status" not in entry
    assert "not sent" in entry["error"] and "'hooks.example' resolves to 127.0.0.1" in entry["error"]
    assert "loopback" in entry["error"] and "BACKLANE_WEBHOOK_ALLOW_PRIVATE" in entry["error"]


async def test_a_delivery_goes_to_the_address_it_checked_under_the_name(
    redis: Redis, settings: Settings, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is sent to the checked address, not to a second lookup of the name, and the
    receiver still sees the name in Host. (Loopback is let through here so a local receiver can answer.)"""
    rec, url = receiver
    rec.up = True
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_allow_private=False)
    named = httpx.URL(url).copy_with(host="receiver.invalid")  # resolves nowhere but through the patch
    store = JobStore(redis, settings)
    monkeypatch.setattr(webhook_targets, "resolve", resolving_to("127.0.0.1"))
    monkeypatch.setattr(webhook_targets, "refusal", lambda address: None)
    await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3, webhook_url=str(named)))
    async with httpx.AsyncClient() as client:
        await drain(WebhookDeliverer(settings, redis), client, store)
    assert [h["host"] for h, _ in rec.received] == [f"receiver.invalid:{named.port}"]


async def test_a_redirect_is_a_failed_try_and_is_not_followed(redis: Redis, settings: Settings) -> None:
    """A receiver answering 3xx could send the delivery anywhere, past the target checks: the answer
    is logged as a failed try and the Location is not requested."""
    followed: list[str] = []

    async def moved(request: Request) -> Response:
        return Response(status_code=307, headers={"Location": "/elsewhere"})

    async def elsewhere(request: Request) -> Response:
        followed.append(request.url.path)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", moved, methods=["POST"]), Route("/elsewhere", elsewhere, methods=["POST"])])
    settings = replace(settings, webhook_secrets={"*": SECRET}, webhook_schedule_s=(60.0,))
    store = JobStore(redis, settings)
    with serve_in_thread(app) as served:
        job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3,
                                            webhook_url=f"{served.url}/hook"))).job_id
        async with httpx.AsyncClient(follow_redirects=True) as client:  # the deliverer overrides its client
            assert await WebhookDeliverer(settings, redis).deliver_due(client) == 1
    assert followed == []
    job = await store.job(job_id)
    assert job is not None and job.webhook_failures == 1
    entry = loads((await redis.lrange(store.keys.deliveries(job_id), 0, 0))[0])
    assert entry["ok"] is False and entry["http_status"] == 307
    assert "redirects are not followed" in entry["error"] and "/elsewhere" in entry["error"]
