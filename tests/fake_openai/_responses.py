"""One upstream response: its JSON snapshot, its event log and the task that runs it.

The run is a task on the server's loop, independent of any client connection (background mode):
it appends events to ``events`` and wakes readers, so any number of streams can replay and follow.
The JSON shapes are the ones of ``shared/reference/openai-responses.md`` §1.5, strict enough for the
SDK's ``_strict_response_validation=True``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from ._controls import Controls, Outcome, tokens

TERMINAL = ("completed", "failed", "cancelled", "incomplete")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class FakeResponse:
    def __init__(self, body: dict[str, Any], controls: Controls, *, background: bool, stream: bool) -> None:
        self.id = new_id("resp")
        self.body = body
        self.background = background
        self.streamed = stream
        self.created_at = int(time.time())
        self.completed_at: int | None = None
        self.status = "queued"
        self.text = controls.reply(body)
        self.outcome: Outcome = controls.next_outcome()
        self.events: list[dict[str, Any]] = []
        self.output: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self._controls = controls
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # ---- JSON ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        b = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "background": self.background,
            "model": b.get("model", "gpt-fake"),
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "prompt_cache_key": b.get("prompt_cache_key"),
            "output": [dict(item) for item in self.output],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "metadata": b.get("metadata") or {},
            "store": b.get("store", True),
            "usage": self.usage,
        }

    def _usage(self, output_tokens: int) -> dict[str, Any]:
        c = self._controls
        return {
            "input_tokens": c.input_tokens,
            "input_tokens_details": {"cached_tokens": c.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": c.input_tokens + output_tokens,
        }

    # ---- the event log ------------------------------------------------------------------

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.append({"type": type_, "sequence_number": len(self.events), **fields})
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self) -> None:
        await self._changed.wait()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    # ---- running ------------------------------------------------------------------------

    def start(self) -> None:
        self.emit("response.created", response=self.snapshot())
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"fake-run-{self.id}")

    def cancel(self) -> None:
        """Background cancel: the run stops, the status is final, open streams end (no stream event)."""
        if self.finished:
            return
        if self.task is not None:
            self.task.cancel()
        self.status = "cancelled"
        self._wake()

    async def _run(self) -> None:
        c, outcome = self._controls, self.outcome
        self.emit("response.queued", response=self.snapshot())
        if outcome.kind == "stuck_queued":
            await asyncio.Event().wait()  # until cancelled
        if c.queued_delay_s:
            await asyncio.sleep(c.queued_delay_s)
        self.status = "in_progress"
        self.emit("response.in_progress", response=self.snapshot())
        item_id = new_id("msg")
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self.emit("response.output_item.added", output_index=0, item=dict(item))
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        refusal = outcome.kind == "refusal"
        part: dict[str, Any] = (
            {"type": "refusal", "refusal": ""} if refusal
            else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        )
        self.emit("response.content_part.added", **where, part=dict(part))
        pieces = tokens("I can't help with that." if refusal else self.text)
        stops_early = outcome.kind in ("content_filter", "max_output_tokens")
        if stops_early:
            pieces = pieces[: outcome.stop_after]
        if outcome.kind in ("failed", "stream_error"):
            pieces = pieces[:2]
        sent = ""
        for piece in pieces:
            if c.token_delay_s:
                await asyncio.sleep(c.token_delay_s)
            sent += piece
            if refusal:
                self.emit("response.refusal.delta", **where, delta=piece)
            else:
                self.emit("response.output_text.delta", **where, delta=piece, logprobs=[])
        if outcome.kind == "failed":
            code = outcome.error_code
            self._finish("failed", error={"code": code, "message": f"simulated {code}"})
            return
        if outcome.kind == "stream_error":  # the flat shape the SDK yields as ResponseErrorEvent
            code = outcome.error_code
            self.emit("error", code=code, message=f"simulated {code}", param=None)
            self.status, self.error = "failed", {"code": code, "message": f"simulated {code}"}
            self._wake()
            return
        if refusal:
            part = {"type": "refusal", "refusal": sent}
            self.emit("response.refusal.done", **where, refusal=sent)
        else:
            part = {"type": "output_text", "text": sent, "annotations": [], "logprobs": []}
            self.emit("response.output_text.done", **where, text=sent, logprobs=[])
        self.emit("response.content_part.done", **where, part=dict(part))
        item_status = "incomplete" if stops_early else "completed"
        item = {**item, "status": item_status, "content": [part]}
        self.output = [item]
        self.emit("response.output_item.done", output_index=0, item=dict(item))
        self.usage = self._usage(len(pieces))
        if stops_early:
            self._finish("incomplete", incomplete={"reason": outcome.kind})
        else:
            self._finish("completed")

    def _finish(self, status: str, *, error: dict[str, Any] | None = None,
                incomplete: dict[str, Any] | None = None) -> None:
        self.status, self.error, self.incomplete_details = status, error, incomplete
        self.completed_at = int(time.time()) if status == "completed" else None
        self.emit(f"response.{status}", response=self.snapshot())

    async def wait_finished(self) -> None:
        while not self.finished:
            await self.wait_change()
