"""Delivers each job's status changes to its webhook URL, from the outbox in Redis.

Runs inside ``backlane supervisor`` (and ``backlane dev``): never in a worker, so a slow or dead
receiver cannot slow a job. Per job, events go out in order from a cursor kept on the job; a
failure schedules the next try (BACKLANE_WEBHOOK_SCHEDULE_S) and nothing later is sent before it.
At least once: a receiver de-duplicates on ``webhook-id`` (``<job id>.<seq>``), the same on every try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import httpx
from redis.asyncio import Redis

from shared import webhooks
from shared.jobs import JobStore
from shared.serialization import dumps, loads, now_ms, rfc3339
from shared.settings import Settings

log = logging.getLogger("backlane.webhooks")

IN_FLIGHT_MS = 120_000  # a claimed job is someone else's again after this (its deliverer died)
LOG_LENGTH = 50


class WebhookDeliverer:
    def __init__(self, settings: Settings, redis: Redis, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.store = JobStore(redis, settings)
        self.redis = redis
        self.keys = self.store.keys
        self._client = client
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        owns_client = self._client is None
        client = self._client or httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.webhook_timeout_s, connect=5.0), follow_redirects=False
        )
        try:
            while not self._stop.is_set():
                try:
                    delivered = await self.deliver_due(client)
                except Exception:  # Redis down, or a bug: log it, keep the loop alive
                    log.exception("webhook delivery pass failed")
                    delivered = 0
                if not delivered:
                    await self._sleep_until_due()
        finally:
            if owns_client:
                await client.aclose()

    async def _sleep_until_due(self) -> None:
        first = cast(list[tuple[str, float]], await self.redis.zrange(self.keys.webhook_outbox, 0, 0, withscores=True))
        wait = 1.0 if not first else min(1.0, max(0.01, (first[0][1] - now_ms()) / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), wait)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One pass: claims the jobs whose deliveries are due and delivers them concurrently."""
        ids: list[str] = await self.store.scripts.run(
            "webhook_claim", [self.keys.webhook_outbox], [now_ms(), IN_FLIGHT_MS, self.settings.webhook_concurrency]
        )
        if ids:
            await asyncio.gather(*(self.deliver_job(client, job_id) for job_id in ids))
        return len(ids)

    async def deliver_job(self, client: httpx.AsyncClient, job_id: str) -> str:
        """Sends the job's undelivered status events in order; stops at the first failure."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        if not raw or not raw.get("webhook_url"):
            return await self._done(job_id, "", "", "")
        cursor = raw.get("webhook_cursor") or None
        failures = int(raw.get("webhook_failures") or 0)
        delivered = ""
        while True:
            rows = await self.store.read_events(job_id, cursor, count=100)
            if not rows:
                break
            for entry_id, event_type, data in rows:
                cursor = entry_id
                if event_type != "status":
                    continue
                ok, note = await self._send(client, raw, loads(data))
                if ok:
                    delivered, failures = entry_id, 0
                    continue
                failures += 1
                delay = webhooks.retry_delay_s(failures, self.settings.webhook_schedule_s)
                if delay is None:  # given up on this event: record it and move on to the next
                    await self.redis.hincrby(self.keys.stats, "webhook_given_up", 1)
                    log.warning("webhook %s.%s given up after %d tries: %s",
                                job_id, loads(data)["seq"], failures - 1, note)
                    delivered, failures = entry_id, 0
                    continue
                return await self._done(job_id, delivered, str(now_ms() + int(delay * 1000)), str(failures))
        return await self._done(job_id, delivered, "", "0")

    async def _done(self, job_id: str, delivered: str, next_due: str, failures: str) -> str:
        result: str = await self.store.scripts.run(
            "webhook_done", [self.keys.job(job_id), self.keys.webhook_outbox],
            [job_id, delivered, now_ms(), next_due, failures],
        )
        return result

    async def _send(self, client: httpx.AsyncClient, job: dict[str, str], event: dict[str, Any]) -> tuple[bool, str]:
        body = webhooks.payload(job, event)
        webhook_id = f"{job['id']}.{event['seq']}"
        timestamp = int(time.time())
        secret = self.settings.webhook_secret(job["tenant"])
        started = time.perf_counter()
        entry: dict[str, Any] = {"webhook_id": webhook_id, "seq": event["seq"], "status": event["status"],
                                 "at": rfc3339(now_ms())}
        if secret is None:
            # never unsigned: the API refuses such jobs, but the secret may have been removed since
            ok, note = False, (f"not sent: no webhook secret for tenant {job['tenant']!r} "
                               "(set BACKLANE_WEBHOOK_SECRETS or BACKLANE_WEBHOOK_SECRET)")
            entry["error"] = note
            log.warning("webhook %s %s", webhook_id, note)
        else:
            try:
                response = await client.post(job["webhook_url"], content=body,
                                             headers=webhooks.headers(secret, webhook_id, timestamp, body))
                ok = 200 <= response.status_code < 300
                entry["http_status"] = response.status_code
                note = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, note = False, f"{type(exc).__name__}: {exc}"
                entry["error"] = note
        entry["ok"], entry["ms"] = ok, round((time.perf_counter() - started) * 1000)
        pipe = self.redis.pipeline(transaction=False)
        log_key = self.keys.deliveries(job["id"])
        pipe.lpush(log_key, dumps(entry))
        pipe.ltrim(log_key, 0, LOG_LENGTH - 1)
        pipe.pexpire(log_key, self.store.retention_ms)
        pipe.hincrby(self.keys.stats, "webhook_deliveries" if ok else "webhook_failures", 1)
        await pipe.execute()
        return ok, note
