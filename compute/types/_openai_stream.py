"""Following one upstream response: its events become the job's output and progress, and the
cursor (last ``sequence_number``) with the text so far becomes the checkpoint.

A stream that breaks or ends without a final event is resumed with
``responses.retrieve(id, stream=True, starting_after=cursor)``, so nothing is read twice and
nothing is paid twice; when resuming stops making progress, polling ``retrieve(id)`` takes over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import openai

from compute.errors import JobError, TransientError

from ._openai_errors import from_api_error, from_code

if TYPE_CHECKING:
    from compute.context import JobContext

TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
FINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
#: save the checkpoint after this many deltas (and whenever the id or the status changes)
CHECKPOINT_EVERY = 5
#: resumes in a row that bring no new event before polling takes over
MAX_IDLE_RESUMES = 3
MAX_RESUMES = 100
#: a Retry-After on reopening longer than this is not waited out inside the attempt: the attempt
#: fails as transient with it, and the job's back-off (which honours it) frees the worker meanwhile
MAX_INLINE_WAIT_S = 30.0


class StuckQueued(Exception):
    """The response stayed ``queued`` past ``openai_queued_timeout_s``."""


class ResponseGone(Exception):
    """The upstream no longer knows the response (deleted, or past its retention)."""


@dataclass
class RunState:
    """The checkpoint of an ``openai.responses`` job."""

    #: "background": resumable upstream; "plain": a restart calls again
    mode: Literal["background", "plain"] = "background"
    response_id: str | None = None
    #: sequence_number of the last event whose effect ``text`` holds; -1 before the first
    cursor: int = -1
    #: the output emitted so far: a restarted attempt emits it again before resuming
    text: str = ""
    #: when the upstream response was created (ms since the epoch): the queued limit spans restarts
    created_ms: int = 0
    status: str | None = None
    #: responses this job stopped following (stuck in queued, or gone upstream), oldest first: a
    #: webhook about one of them is recognised as old news, not as news about the job
    replaced: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> RunState | None:
        if not isinstance(raw, dict) or raw.get("mode") not in ("background", "plain"):
            return None
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in known})


class Follower:
    def __init__(
        self, ctx: JobContext, client: openai.AsyncOpenAI, state: RunState, *,
        queued_timeout_s: float, poll_s: float = 1.0,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.state = state
        self.queued_timeout_s = queued_timeout_s
        self.poll_s = poll_s
        self.unsaved = 0
        #: an ``error`` event seen in the stream: the reason if no final event follows
        self.stream_error: JobError | None = None

    @property
    def durable(self) -> bool:
        return self.state.mode == "background"

    async def save(self) -> None:
        self.unsaved = 0
        if self.durable:
            await self.ctx.save_checkpoint(self.state.to_json())

    async def set_status(self, status: str | None) -> bool:
        if status is None or status == self.state.status:
            return False
        self.state.status = status
        await self.ctx.progress(f"OpenAI response {status}", step="upstream")
        return True

    # ---- reading events -----------------------------------------------------------------

    def queued_left(self) -> float | None:
        """Seconds until a queued response counts as stuck; None when it is not queued."""
        if self.state.status != "queued" or not self.durable:
            return None
        return self.state.created_ms / 1000 + self.queued_timeout_s - time.time()

    async def next_event(self, stream: openai.AsyncStream[Any]) -> Any:
        left = self.queued_left()
        if left is None:
            return await stream.__anext__()
        if left <= 0:
            raise StuckQueued()
        try:
            return await asyncio.wait_for(stream.__anext__(), left)
        except TimeoutError:
            raise StuckQueued() from None

    async def apply(self, event: Any) -> Any | None:
        """Takes one event into the job; returns the final Response when the event is final."""
        seq = getattr(event, "sequence_number", None)
        if isinstance(seq, int) and seq <= self.state.cursor:
            return None  # already taken (a resume never overlaps, but a replay from 0 would)
        due = False
        response = getattr(event, "response", None)
        if event.type == "response.output_text.delta":
            await self.ctx.output(event.delta)
            self.state.text += event.delta
            self.unsaved += 1
            due = self.unsaved >= CHECKPOINT_EVERY
        elif response is not None:
            if self.state.response_id is None:
                self.state.response_id = response.id
                due = True  # the id first: from here on a restart resumes instead of paying again
                if self.durable:  # before the checkpoint names it: a webhook about it finds the job
                    await self.ctx.index_upstream(response.id)
            due = await self.set_status(response.status) or due
        elif event.type == "error":
            self.stream_error = from_code(event.code or "", f"OpenAI stream error: {event.message}")
        if isinstance(seq, int):
            self.state.cursor = seq
        if due:
            await self.save()
        return response if event.type in FINAL_EVENTS else None

    async def consume(self, stream: openai.AsyncStream[Any]) -> Any | None:
        """Reads until the final event (returns its Response) or the end of the stream (None)."""
        try:
            while True:
                try:
                    event = await self.next_event(stream)
                except StopAsyncIteration:
                    return None
                final = await self.apply(event)
                if final is not None:
                    return final
        finally:
            await stream.close()

    # ---- resuming and polling -----------------------------------------------------------

    async def open_resume(self) -> openai.AsyncStream[Any]:
        assert self.state.response_id is not None
        extra: dict[str, Any] = {} if self.state.cursor < 0 else {"starting_after": self.state.cursor}
        try:
            stream: openai.AsyncStream[Any] = await self.client.responses.retrieve(
                self.state.response_id, stream=True, **extra
            )
        except openai.NotFoundError:
            raise ResponseGone() from None
        return stream

    async def retrieve(self) -> Any:
        assert self.state.response_id is not None
        try:
            return await self.client.with_options(max_retries=3).responses.retrieve(self.state.response_id)
        except openai.NotFoundError:
            raise ResponseGone() from None

    async def follow(self, stream: openai.AsyncStream[Any] | None) -> Any:
        """Reads the response to its end across cuts; returns the final Response."""
        idle = resumes = 0
        while True:
            before, cut, wait = self.state.cursor, "ended", 0.0
            try:
                if stream is None:
                    stream = await self.open_resume()
                final = await self.consume(stream)
                if final is not None:
                    return final
            except openai.APIConnectionError:
                cut = "was cut"
            except openai.APIStatusError as exc:
                job_error = from_api_error(exc)
                if not isinstance(job_error, TransientError):
                    raise job_error from exc
                wait = job_error.retry_after or 0.0  # a 429 or 503 on reopening says how long to wait
                if wait > MAX_INLINE_WAIT_S:
                    raise job_error from exc
                cut = f"could not be reopened ({exc.status_code})"
            stream = None
            if self.stream_error is not None:
                snapshot = await self.retrieve()
                if snapshot.status in TERMINAL:
                    return snapshot
                raise self.stream_error
            idle = 0 if self.state.cursor > before else idle + 1
            resumes += 1
            if idle > MAX_IDLE_RESUMES or resumes > MAX_RESUMES:
                return await self.poll()
            await self.ctx.progress(
                f"upstream stream {cut} after event {self.state.cursor}; resuming", step="upstream"
            )
            if idle or wait:
                await asyncio.sleep(max(wait, min(0.1 * 2**idle, 5.0) if idle else 0.0))

    async def poll(self) -> Any:
        """Polls ``retrieve(id)`` until the response is final (the stream gave up on us)."""
        delay = self.poll_s
        while True:
            snapshot = await self.retrieve()
            await self.set_status(snapshot.status)
            if snapshot.status in TERMINAL:
                return snapshot
            left = self.queued_left()
            if left is not None and left <= 0:
                raise StuckQueued()
            await asyncio.sleep(delay if left is None else min(delay, max(left, 0.01)))
            delay = min(delay * 1.5, 10.0)
