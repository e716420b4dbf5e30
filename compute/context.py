"""``JobContext``: a handler's only handle on the world.

Writes are fenced with the attempt's lease token. Output and progress are coalesced: while one
append is in flight, later events wait in a buffer and go together in the next call (one round
trip for many events, each still its own event with its own seq, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from shared.job import Job
from shared.settings import Settings

from .leases import Attempts, LeaseLost, Started

MAX_BATCH = 500  # events in one append call
MAX_PENDING = 2000  # a handler that outruns Redis waits here instead of growing the buffer


def apply_key(job: Job) -> str:
    """The apply step's idempotency key for the system it changes: the same on every try of one
    approval (``<job id>:<action_hash>``)."""
    return f"{job.id}:{job.action_hash or ''}"


class JobContext:
    def __init__(self, attempts: Attempts, started: Started, settings: Settings) -> None:
        job = started.job
        self.job_id: str = started.job_id
        self.job_type: str = job.type
        self.attempt: int = started.attempt
        self.input: Any = job.input
        self.metadata: dict[str, Any] | None = job.metadata
        self.settings = settings
        #: set when this job is ending for good: a cancel was requested, or the type's timeout passed with
        #: no retry to follow. Stop soon (the task is cancelled too) and release upstream work.
        self.cancelled = asyncio.Event()
        #: the job as this attempt's start left it
        self.job = job
        #: the attempt runs the apply step of an approved job, not its handler
        self.apply_phase = job.phase == "apply"
        #: the apply step's key for the system it changes: the same on every try of this approval
        self.idempotency_key: str | None = apply_key(job) if self.apply_phase else None
        self.usage: dict[str, int | None] = {"input_tokens": None, "output_tokens": None, "cached_tokens": None}
        self._attempts = attempts
        self._token = started.token
        self._emitted = 0
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def token(self) -> int:
        return self._token

    async def output(self, text: str) -> None:
        if text:
            await self._emit("output", {"text": text})

    async def progress(self, message: str, *, step: str | None = None, fraction: float | None = None) -> None:
        body: dict[str, Any] = {"message": message}
        if step is not None:
            body["step"] = step
        if fraction is not None:
            body["fraction"] = round(min(1.0, max(0.0, fraction)), 4)
        await self._emit("progress", body)

    async def load_checkpoint(self) -> Any | None:
        return await self._attempts.store.checkpoint(self.job_id)

    async def save_checkpoint(self, value: Any) -> None:
        await self.flush()
        await self._attempts.save_checkpoint(self.job_id, self._token, value)

    async def index_upstream(self, object_id: str) -> None:
        """Points ``Keys.openai_object(object_id)`` at this job for the retention: the API then finds
        the job of an incoming OpenAI webhook without asking the upstream (a hint; the checkpoint decides)."""
        store = self._attempts.store
        await store.redis.set(store.keys.openai_object(object_id), self.job_id, px=store.retention_ms)

    async def set_usage(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None, cached_tokens: int | None = None
    ) -> None:
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                            ("cached_tokens", cached_tokens)):
            if value is not None:
                self.usage[name] = value

    async def flush(self) -> None:
        """Waits until every event emitted so far is in Redis; raises LeaseLost when it never will be."""
        while True:
            self._raise_if_failed()
            if self._flusher is not None and not self._flusher.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flusher)
                continue
            if not self._pending:
                self._raise_if_failed()
                return
            self._flusher = asyncio.create_task(self._flush_loop())

    def discard(self) -> None:
        """Drops what is not written yet (the attempt is over and may not write any more)."""
        self._pending.clear()
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _emit(self, event_type: str, body: dict[str, Any]) -> None:
        self._raise_if_failed()
        self._pending.append((event_type, body))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        if len(self._pending) >= MAX_PENDING:
            await self.flush()

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                self._emitted = await self._attempts.append(self.job_id, self._token, self._emitted, batch)
                del self._pending[: len(batch)]
        except LeaseLost as exc:
            self._error = exc
            self._pending.clear()
        except Exception as exc:  # Redis gone past the client's retries: the attempt cannot go on
            self._error = exc


__all__ = ["JobContext", "LeaseLost"]
