"""What one API process holds while it runs: settings, the Redis client, the job store, the hub."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from starlette.requests import Request

from shared.connection import Durability
from shared.jobs import JobStore
from shared.keys import Keys
from shared.settings import Settings

from .events_tokens import shared_secret
from .hub import Hub
from .job_types import JobTypes
from .metrics import Metrics
from .stream_slots import StreamSlots
from .workers import LiveWorkers


@dataclass
class Backend:
    settings: Settings
    redis: Redis
    store: JobStore
    hub: Hub
    metrics: Metrics
    keys: Keys
    types: JobTypes
    streams: StreamSlots
    workers: LiveWorkers
    #: None until Redis has answered once
    durability: Durability | None = None
    _secret: bytes | None = None

    async def secret(self) -> bytes:
        """The events-token secret, fetched on first use so the API can start while Redis is down."""
        if self._secret is None:
            self._secret = await shared_secret(self.redis, self.keys, self.settings.token_secret)
        return self._secret


def backend(request: Request) -> Backend:
    found: Backend = request.app.state.backend
    return found
