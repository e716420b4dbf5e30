"""A ``JobContext`` that records what a handler does, for fast unit tests of handler logic.

It keeps the checkpoint in a ``Checkpoints`` box that outlives one context, so a test can run a
second attempt the way the worker would after a restart. Flows through the real worker and Redis
are in ``tests/integration/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from compute.limits import Call
from shared.job import Job
from shared.settings import Settings


@dataclass
class Checkpoints:
    value: Any = None
    saves: int = 0


class Crash(BaseException):
    """Stands for the worker process dying: no handler code gets to react to it."""


@dataclass
class RecordingContext:
    input: Any
    settings: Settings
    job_id: str = "job-1"
    job_type: str = "openai.responses"
    attempt: int = 1
    metadata: dict[str, Any] | None = None
    #: the job as the worker loaded it (``tenant``, …)
    job: Job = field(default_factory=lambda: Job.from_hash({"id": "job-1", "type": "openai.responses",
                                                            "status": "running"}))
    store: Checkpoints = field(default_factory=Checkpoints)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    outputs: list[str] = field(default_factory=list)
    progress_log: list[str] = field(default_factory=list)
    fractions: list[float | None] = field(default_factory=list)
    usage: dict[str, int | None] = field(default_factory=dict)
    #: the model of each recorded call
    models: list[str] = field(default_factory=list)
    #: upstream object ids the handler indexed to this job (``index_upstream``), in order
    indexed: list[str] = field(default_factory=list)
    #: raise Crash on the n-th call (1-based) of a method, e.g. {"output": 9}: the attempt dies there
    crash_on: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    limits: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(self.outputs)

    def _count(self, method: str) -> None:
        self.calls[method] = n = self.calls.get(method, 0) + 1
        self._changed.set()
        if self.crash_on.get(method) == n:
            raise Crash()

    async def wait_calls(self, method: str, n: int) -> None:
        """Until the handler has called ``method`` n times."""
        while self.calls.get(method, 0) < n:
            self._changed.clear()
            await self._changed.wait()

    async def output(self, text: str) -> None:
        self._count("output")
        self.outputs.append(text)

    async def progress(self, message: str, *, step: str | None = None, fraction: float | None = None) -> None:
        self._count("progress")
        self.progress_log.append(message)
        self.fractions.append(fraction)

    async def load_checkpoint(self) -> Any | None:
        return json.loads(json.dumps(self.store.value))  # a copy, as if read back from Redis

    async def save_checkpoint(self, value: Any) -> None:
        self._count("save_checkpoint")
        self.store.value = json.loads(json.dumps(value))
        self.store.saves += 1

    async def index_upstream(self, object_id: str) -> None:
        self._count("index_upstream")
        self.indexed.append(object_id)

    async def set_usage(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None,
        cached_tokens: int | None = None,
    ) -> None:
        self.usage = {
            "input_tokens": input_tokens, "output_tokens": output_tokens, "cached_tokens": cached_tokens,
        }

    async def record_usage(self, *, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0,
                           **_: Any) -> None:
        """Sums the calls' tokens (as the job's usage does); ``models`` lists them."""
        self.models.append(model)
        for name, n in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                        ("cached_tokens", cached_tokens)):
            self.usage[name] = (self.usage.get(name) or 0) + n

    @contextlib.asynccontextmanager
    async def limit(self, resource: str, *, tokens: int = 0) -> AsyncIterator[Call]:
        """No limits here (they are tested with the real worker in tests/test_limits.py); ``limits``
        lists the resources asked for."""
        self.limits.append(resource)
        yield Call(resource)

    async def step(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs the step (the worker's replay of completed steps is tested in tests/test_steps.py)."""
        self._count("step")
        kwargs.pop("retry", None)
        kwargs.pop("timeout_s", None)
        return await fn(*args, **kwargs)

    def next_attempt(self) -> RecordingContext:
        """The same job, one attempt later, sharing the checkpoint (what a restart looks like)."""
        return RecordingContext(
            input=self.input, settings=self.settings, job_id=self.job_id, job_type=self.job_type,
            attempt=self.attempt + 1, metadata=self.metadata, job=self.job, store=self.store,
        )
