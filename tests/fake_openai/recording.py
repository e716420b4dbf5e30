"""A ``JobContext`` that records what a handler does, for fast unit tests of handler logic.

It keeps the checkpoint in a ``Checkpoints`` box that outlives one context, so a test can run a
second attempt the way the worker would after a restart. Flows through the real worker and Redis
are in ``tests/integration/``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

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
    store: Checkpoints = field(default_factory=Checkpoints)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    outputs: list[str] = field(default_factory=list)
    progress_log: list[str] = field(default_factory=list)
    usage: dict[str, int | None] = field(default_factory=dict)
    #: raise Crash on this output call (1-based): the attempt dies mid-stream
    crash_at_output: int | None = None
    _output_added: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(self.outputs)

    async def output(self, text: str) -> None:
        if self.crash_at_output is not None and len(self.outputs) + 1 >= self.crash_at_output:
            raise Crash()
        self.outputs.append(text)
        self._output_added.set()

    async def wait_outputs(self, n: int) -> None:
        while len(self.outputs) < n:
            self._output_added.clear()
            await self._output_added.wait()

    async def progress(self, message: str, *, step: str | None = None, fraction: float | None = None) -> None:
        self.progress_log.append(message)

    async def load_checkpoint(self) -> Any | None:
        return self.store.value

    async def save_checkpoint(self, value: Any) -> None:
        self.store.value = value
        self.store.saves += 1

    async def set_usage(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None,
        cached_tokens: int | None = None,
    ) -> None:
        self.usage = {
            "input_tokens": input_tokens, "output_tokens": output_tokens, "cached_tokens": cached_tokens,
        }

    def next_attempt(self) -> RecordingContext:
        """The same job, one attempt later, sharing the checkpoint (what a restart looks like)."""
        return RecordingContext(
            input=self.input, settings=self.settings, job_id=self.job_id, job_type=self.job_type,
            attempt=self.attempt + 1, metadata=self.metadata, store=self.store,
        )
