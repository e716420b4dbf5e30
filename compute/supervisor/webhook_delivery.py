"""Delivers each job's status changes to its webhook URL, from the outbox in Redis.

Runs inside ``backlane supervisor`` (and ``backlane dev``): never in a worker, so a slow or dead
receiver cannot slow a job. Per job, events go out in order from a cursor kept on the job; a
failure schedules the next try (BACKLANE_WEBHOOK_SCHEDULE_S) and nothing later is sent before it.
At least once: a receiver de-duplicates on ``webhook-id`` (``<job id>.<seq>``), the same on every try.
Each try resolves the host again, checks every address (shared/webhook_targets.py) and connects to
the address it checked; a refused target is a failed try. Redirects are not followed: a 3xx fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from shared.job import Job
from shared.jobs import Delivery, JobStore
from shared.logs import job_event, log_event
from shared.schemas import StatusEvent
from shared.serialization import dumps, loads, now_ms, rfc3339
from shared.settings import Settings
from shared.tasks import cancel_until_done
from shared.webhook_signing import SCHEDULE_S, headers
from shared.webhook_targets import RefusedTarget, checked_addresses

log = logging.getLogger("backlane.webhooks")

IN_FLIGHT_MS = 120_000  # a claimed job is someone else's again after this (its deliverer died)
LOG_LENGTH = 50
CONNECT_S = 5.0


def payload(job: Job, event: StatusEvent) -> bytes:
    """The body for one status event: the event itself plus enough of the job to act on it."""
    return dumps({
        "type": f"job.{event['status']}",
        "job_id": job.id,
        "job_type": job.type,
        "seq": event["seq"],
        "attempt": event["attempt"],
        "status": event["status"],
        "at": event["at"],
        "reason": event.get("reason"),
        "error": event.get("error"),
        "result": event.get("result"),
        "metadata": job.metadata,
    }).encode()


def retry_delay_s(
    failures: int, schedule: tuple[float, ...] = SCHEDULE_S, rng: random.Random | None = None
) -> float | None:
    """Delay before the next try after ``failures`` failed ones (±10 % jitter); None = give up."""
    if failures < 1 or failures > len(schedule):
        return None
    base = schedule[failures - 1]
    return base * (1 + ((rng or random).random() * 0.2 - 0.1))


def pinned(url: str, address: str | None) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """URL, headers and extensions of a request for ``url`` sent to ``address`` (None: wherever the name
    resolves). The name stays in the Host header and in TLS (SNI and the certificate check), so the
    receiver sees no difference, and no second lookup, which DNS rebinding could answer differently,
    decides where the request goes."""
    target = httpx.URL(url)
    if address is None or target.host == address:
        return target, {}, {}
    return (target.copy_with(host=address), {"Host": target.netloc.decode("ascii")},
            {"sni_hostname": target.raw_host.decode("ascii")})


def _forget(in_flight: dict[str, asyncio.Task[None]], job_id: str, _: asyncio.Task[None]) -> None:
    in_flight.pop(job_id, None)


class WebhookDeliverer:
    """A pool of delivery runs, one per job: up to BACKLANE_WEBHOOK_CONCURRENCY jobs in flight, each
    started as soon as a slot is free, so a slow receiver holds up its own job and no other."""

    def __init__(self, settings: Settings, redis: Redis, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.store = JobStore(redis, settings)
        self.keys = self.store.keys
        self._client = client
        self._stop = asyncio.Event()
        #: the longest one request may take (httpx's timeouts are per phase: a receiver that drips
        #: its answer byte by byte could otherwise hold a request for ever)
        self.send_limit_s = settings.webhook_timeout_s + CONNECT_S
        #: a claim outlives any one request by far; it is renewed before each request of a run,
        #: so a long run (many events, slow answers) keeps its job from other supervisors
        self.in_flight_ms = max(IN_FLIGHT_MS, int(self.send_limit_s * 3000))

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        owns_client = self._client is None
        client = self._client or httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.webhook_timeout_s, connect=CONNECT_S), follow_redirects=False
        )
        in_flight: dict[str, asyncio.Task[None]] = {}
        stopped = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                free = self.settings.webhook_concurrency - len(in_flight)
                wait: float | None = None  # None: until a slot frees up
                if free > 0:
                    try:
                        for job_id in await self._claim(free):
                            if job_id not in in_flight:  # else our own claim ran out mid-run: it goes on
                                task = asyncio.create_task(self._run_job(client, job_id))
                                task.add_done_callback(functools.partial(_forget, in_flight, job_id))
                                in_flight[job_id] = task
                        if len(in_flight) < self.settings.webhook_concurrency:
                            wait = await self._until_due()
                    except Exception:  # Redis down, or a bug: log it, keep the loop alive
                        log.exception("webhook claim failed")
                        wait = 1.0
                await asyncio.wait([stopped, *in_flight.values()], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await self._abandon(in_flight)
            if owns_client:
                await client.aclose()

    async def _claim(self, n: int) -> list[str]:
        return await self.store.claim_webhooks(n, self.in_flight_ms)

    async def _until_due(self) -> float:
        """Seconds until the outbox's next entry is due, at most 1 (new entries are not announced)."""
        due = await self.store.next_due_ms(lambda s: s.webhook_outbox)
        return 1.0 if due is None else min(1.0, max(0.01, (due - now_ms()) / 1000))

    async def _run_job(self, client: httpx.AsyncClient, job_id: str) -> None:
        try:
            await self.deliver_job(client, job_id)
        except Exception:  # its claim runs out and it is tried again
            log.exception("webhook delivery of job %s failed", job_id)

    async def _abandon(self, in_flight: dict[str, asyncio.Task[None]]) -> None:
        """On stop: cut the runs still going and hand their jobs back at once (not after the claim
        runs out). A cut request may have reached the receiver: it de-duplicates on webhook-id."""
        tasks = {job_id: task for job_id, task in in_flight.items() if not task.done()}  # done: already settled
        await cancel_until_done(tasks.values())
        if tasks:
            with contextlib.suppress(Exception):
                await self.store.hold_webhooks(list(tasks), now_ms())

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One pass, for tests and tools: claims the due jobs and delivers them, waiting for all."""
        ids = await self._claim(self.settings.webhook_concurrency)
        if ids:
            await asyncio.gather(*(self.deliver_job(client, job_id) for job_id in ids))
        return len(ids)

    async def deliver_job(self, client: httpx.AsyncClient, job_id: str) -> Delivery:
        """Sends the job's undelivered status events in order; stops at the first failure."""
        job = await self.store.job(job_id)
        if job is None or not job.webhook_url:
            return await self._done(job_id, "", "", "")
        cursor = job.webhook_cursor
        failures = job.webhook_failures
        delivered = ""
        while True:
            rows = await self.store.read_events(job_id, cursor, count=100)
            if not rows:
                break
            for entry_id, event_type, data in rows:
                cursor = entry_id
                if event_type != "status":
                    continue
                await self.store.hold_webhooks([job_id], now_ms() + self.in_flight_ms)
                event: StatusEvent = loads(data)
                ok, note = await self._send(client, job, job.webhook_url, event)
                if ok:
                    delivered, failures = entry_id, 0
                    continue
                failures += 1
                delay = retry_delay_s(failures, self.settings.webhook_schedule_s)
                if delay is None:  # given up on this event: record it and move on to the next
                    await self.store.count("webhook_given_up")
                    job_event(log, "webhook.given_up", f"webhook given up after {failures - 1} tries: {note}",
                              level=logging.WARNING, job_id=job_id, job_type=job.type, tenant=job.tenant,
                              attempt=event.get("attempt"), seq=event["seq"], status=event.get("status"))
                    delivered, failures = entry_id, 0
                    continue
                return await self._done(job_id, delivered, str(now_ms() + int(delay * 1000)), str(failures))
        return await self._done(job_id, delivered, "", "0")

    async def _done(self, job_id: str, delivered: str, next_due: str, failures: str) -> Delivery:
        result = await self.store.settle_webhooks(job_id, delivered, next_due, failures)
        if result == Delivery.GONE:  # its retention ran out with events still undelivered: say so, once
            await self.store.count("webhook_given_up")
            log_event(log, logging.WARNING, "webhook.given_up",
                      f"webhook events of job {job_id} dropped undelivered: the job expired (retention)", job_id=job_id)
        return result

    async def _post(self, client: httpx.AsyncClient, url: str, body: bytes, signed: dict[str, str]) -> httpx.Response:
        """POSTs once, to an address just checked (any address when private targets are allowed)."""
        address = None if self.settings.webhook_allow_private else str((await checked_addresses(url))[0])
        target, host, extensions = pinned(url, address)
        async with asyncio.timeout(self.send_limit_s):
            return await client.post(target, content=body, headers={**signed, **host}, extensions=extensions,
                                     follow_redirects=False)

    async def _send(self, client: httpx.AsyncClient, job: Job, url: str, event: StatusEvent) -> tuple[bool, str]:
        body = payload(job, event)
        webhook_id = f"{job.id}.{event['seq']}"
        timestamp = int(time.time())
        secret = self.settings.webhook_secret(job.tenant)
        started = time.perf_counter()
        entry: dict[str, Any] = {"webhook_id": webhook_id, "seq": event["seq"], "status": event["status"],
                                 "at": rfc3339(now_ms())}
        if secret is None:
            # never unsigned: the API refuses such jobs, but the secret may have been removed since
            ok, note = False, (f"not sent: no webhook secret for tenant {job.tenant!r} "
                               "(set BACKLANE_WEBHOOK_SECRETS or BACKLANE_WEBHOOK_SECRET)")
            entry["error"] = note
            log.warning("webhook %s %s", webhook_id, note)
        else:
            try:
                response = await self._post(client, url, body, headers(secret, webhook_id, timestamp, body))
                ok = 200 <= response.status_code < 300
                entry["http_status"] = response.status_code
                note = f"HTTP {response.status_code}"
                if response.is_redirect:
                    note = entry["error"] = f"{note}: redirects are not followed (to {response.headers['location']})"
            except RefusedTarget as exc:
                ok, note = False, f"not sent: {exc}"
                entry["error"] = note
            except (httpx.HTTPError, TimeoutError) as exc:
                ok, note = False, f"{type(exc).__name__}: {str(exc) or f'no answer within {self.send_limit_s:g} s'}"
                entry["error"] = note
        entry["ok"], entry["ms"] = ok, round((time.perf_counter() - started) * 1000)
        await self.store.log_delivery(job.id, entry, ok, LOG_LENGTH)
        return ok, note
