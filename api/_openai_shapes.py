"""A Backlane job of type ``openai.responses`` in OpenAI's shapes: the Response object, and its
stream of events with ``sequence_number``s.

The event stream is a pure fold over the job's own event stream, so the same job events always
give the same OpenAI events with the same numbers: a client resuming with ``starting_after=N``
gets exactly the events after N, whichever API process answers. Attempts are folded away: a
restarted attempt re-emits the text it kept, which the fold recognises as already sent, so the
client sees one gap-free text whatever happened to workers.

Without background mode upstream a restarted attempt calls again and may answer another text.
Deltas cannot take back what was sent, so the stream says so once, with an ``error`` event
(code ``response_restarted``), sends no more deltas of that attempt, and ends as usual: the
``response.output_text.done`` and final events carry the whole new text.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.job import Job
from shared.schemas import Event
from shared.status import TERMINAL, Status

JOB_STATUS = {
    "queued": "queued", "running": "in_progress", "needs_review": "in_progress", "completed": "completed",
    "failed": "failed", "canceled": "cancelled", "expired": "failed",
}
#: the ``error`` event's code when a restarted attempt's text is not the one streamed so far
RESTARTED = "response_restarted"
#: Backlane failure classes → the codes the OpenAI SDK accepts in ``Response.error.code``
ERROR_CODE = {"input": "invalid_prompt", "policy": "invalid_prompt"}
PREFIX = "resp_"


#: the JSON Schema of ``snapshot``'s answer (OpenAI's Response object, the fields Backlane fills)
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string", "description": "resp_<job id>"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "completed_at": {"type": ["integer", "null"]},
        "status": {"enum": sorted({*JOB_STATUS.values(), "incomplete"})},
        "background": {"type": "boolean"},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "error": {"type": ["object", "null"]},
        "incomplete_details": {"type": ["object", "null"]},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "usage": {"type": ["object", "null"]},
    },
}


def response_id(job_id: str) -> str:
    return PREFIX + job_id


def job_id_of(response_id: str) -> str:
    return response_id.removeprefix(PREFIX)


def message(job_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "open" else []
    return {
        "id": f"msg_{job_id}", "type": "message", "role": "assistant",
        "status": "in_progress" if status == "open" else status, "content": content,
    }


def usage(job: Job) -> dict[str, Any] | None:
    u: dict[str, Any] = dict(job.usage or {})
    if u.get("input_tokens") is None or u.get("output_tokens") is None:
        return None
    return {
        "input_tokens": u["input_tokens"],
        "input_tokens_details": {"cached_tokens": u.get("cached_tokens") or 0, "cache_write_tokens": 0},
        "output_tokens": u["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u["input_tokens"] + u["output_tokens"],
    }


def snapshot(job: Job, *, status: str | None = None) -> dict[str, Any]:
    """The Response object for the job (``status`` overrides, for the opening events)."""
    job_input = job.input if isinstance(job.input, dict) else {}
    result = job.result if job.status == "completed" else None
    error: dict[str, Any] | None = dict(job.error) if job.error and job.status in ("failed", "expired") else None
    current = status or JOB_STATUS.get(job.status, "queued")
    incomplete = None
    if current == "completed" and isinstance(result, dict) and result.get("status") == "incomplete":
        current = "incomplete"
        incomplete = {"reason": result.get("incomplete_reason") or "max_output_tokens"}
    output = []
    if current in ("completed", "incomplete") and isinstance(result, dict):
        output = [message(job.id, str(result.get("output_text") or ""), "completed")]
    failure = None
    if current == "failed":
        klass = (error or {}).get("class") or ("deadline" if job.status == "expired" else "internal")
        failure = {
            "code": ERROR_CODE.get(klass, "server_error"), "message": (error or {}).get("message") or klass,
            "param": None, "type": klass,
        }
    metadata = {k: v for k, v in (job_input.get("metadata") or {}).items() if isinstance(v, str)}
    created_ms = job.created_at or 0
    finished_ms = job.finished_at or 0
    return {
        "id": response_id(job.id), "object": "response", "created_at": created_ms // 1000,
        "completed_at": finished_ms // 1000 if current == "completed" and finished_ms else None,
        "status": current, "background": True, "model": job_input.get("model") or "",
        "instructions": job_input.get("instructions"), "max_output_tokens": job_input.get("max_output_tokens"),
        "prompt_cache_key": job_input.get("prompt_cache_key"),
        "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "error": failure, "incomplete_details": incomplete, "metadata": metadata, "store": True,
        "usage": usage(job) if current in ("completed", "incomplete", "failed") else None,
    }


class Translator:
    """Folds the job's events (in order) into OpenAI stream events, numbering them from 0."""

    def __init__(self, job: Job) -> None:
        #: the job when the stream began: its immutable fields fill the opening snapshots
        self.job = job
        self.job_id = job.id
        self.seq = 0
        #: the text the client has been sent; how much the attempt now writing has written, and
        #: whether that attempt wrote something other than what was sent (then it sends nothing)
        self.sent = ""
        self.attempt: int | None = None
        self.attempt_len = 0
        self.diverged = False
        self.opened = self.running = self.item_open = self.finished = False

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self.job_id}", "output_index": 0, "content_index": 0}

    def _open_item(self) -> list[dict[str, Any]]:
        if self.item_open:
            return []
        self.item_open = True
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event("response.output_item.added", output_index=0, item=message(self.job_id, "", "open")),
            self._event("response.content_part.added", **self._where(), part=part),
        ]

    def _delta(self, text: str) -> list[dict[str, Any]]:
        events = self._open_item()
        events.append(self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[]))
        self.sent += text
        return events

    def feed(self, event: Event, final: Job | None = None) -> list[dict[str, Any]]:
        """The OpenAI events for one job event; a terminal status needs the job as it ended."""
        events: list[dict[str, Any]] = []
        if not self.opened:
            self.opened = True
            events.append(self._event("response.created", response=snapshot(self.job, status="queued")))
            events.append(self._event("response.queued", response=snapshot(self.job, status="queued")))
        if self.finished:
            return events
        if event["type"] == "output":
            events += self._output(event["attempt"], event["text"])
        elif event["type"] == "status":
            status = event["status"]
            if status == "running" and not self.running:
                self.running = True
                events.append(self._event("response.in_progress", response=snapshot(self.job, status="in_progress")))
            elif status in TERMINAL:
                events += self._finish(final or replace(self.job, status=Status(status)))
        return events

    def _output(self, attempt: Any, text: str) -> list[dict[str, Any]]:
        """Only text past what was sent goes out: a restarted attempt's re-emitted prefix is skipped.
        Compares just the new piece with the sent text at the same place (no rescans)."""
        if attempt != self.attempt:  # a new attempt writes its text from the start again
            self.attempt, self.attempt_len, self.diverged = attempt, 0, False
        at, self.attempt_len = self.attempt_len, self.attempt_len + len(text)
        if self.diverged:
            return []
        overlap = self.sent[at:at + len(text)]
        if not text.startswith(overlap) or at > len(self.sent):
            # another text than the one sent (an upstream without background mode answered anew):
            # nothing of it can join the sent text; the final event carries the whole answer
            self.diverged = True
            message = (f"the upstream call was restarted (attempt {attempt}) without background mode and "
                       "answered anew: no more deltas follow; the final response carries the whole new text")
            return [self._event("error", code=RESTARTED, message=message, param=None)]
        fresh = text[len(overlap):]
        return self._delta(fresh) if fresh else []

    def _finish(self, final: Job) -> list[dict[str, Any]]:
        self.finished = True
        response = snapshot(final)
        if response["status"] == "cancelled":
            return []  # as upstream: no stream event for a cancel, the stream just ends
        if response["status"] == "failed":
            return [self._event("response.failed", response=response)]
        text = response["output"][0]["content"][0]["text"] if response["output"] else self.sent
        events: list[dict[str, Any]] = []
        if text.startswith(self.sent) and len(text) > len(self.sent):
            events += self._delta(text[len(self.sent):])
        events += self._open_item()
        part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        events += [
            self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=part),
            self._event("response.output_item.done", output_index=0, item=message(self.job_id, text, "completed")),
            self._event(f"response.{response['status']}", response=response),
        ]
        return events
