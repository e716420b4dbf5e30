"""What a test can make the fake upstream do. Plain data: the test thread writes it, the server
thread reads it when a request arrives (single attribute reads and list pops are atomic under the GIL).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

#: how a response run ends
OutcomeKind = Literal[
    "completed", "failed", "content_filter", "refusal", "max_output_tokens", "stuck_queued", "stream_error",
]
DropMode = Literal["abort", "eof"]


@dataclass
class HttpFault:
    """One error answer instead of the real one."""

    status: int
    code: str | None = None
    message: str = "simulated upstream error"
    retry_after: str | None = None
    #: OpenAI's own header, in milliseconds (sent next to or instead of ``retry-after``)
    retry_after_ms: str | None = None
    type: str = "server_error"


@dataclass
class Outcome:
    kind: OutcomeKind = "completed"
    #: response.error.code for kind="failed", and the error event's code for kind="stream_error"
    #: (after two deltas a flat ``{"type": "error", ...}`` event, then the stream ends and the
    #: response reads as failed with that code: no ``response.failed`` event)
    error_code: str = "server_error"
    #: content_filter / max_output_tokens stop after this many deltas
    stop_after: int = 3


def default_reply(body: dict[str, Any]) -> str:
    """A deterministic reply: the input echoed, then numbered words (count from max_output_tokens)."""
    words = body.get("max_output_tokens") or 12
    prompt = body.get("input")
    head = prompt if isinstance(prompt, str) else "messages"
    return f"Reply to {head[:40]}: " + " ".join(f"w{i}" for i in range(int(words)))


def tokens(text: str) -> list[str]:
    """Split into word-sized deltas that concatenate back to the text exactly."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


@dataclass
class Controls:
    #: the text a response produces, from the create body
    reply: Callable[[dict[str, Any]], str] = default_reply
    #: pause before each delta (the response runs on the server's clock)
    token_delay_s: float = 0.0
    #: time a background response spends queued before it starts
    queued_delay_s: float = 0.0
    #: outcomes of the next responses, first one first; empty → completed
    outcomes: list[Outcome] = field(default_factory=list)
    #: usage reported on completion: input tokens and how many of them were cached
    input_tokens: int = 2048
    cached_tokens: int = 0
    #: inputs longer than this many characters get 400 context_length_exceeded
    context_window_chars: int = 100_000
    #: a server without background mode answers background=true with 400
    supports_background: bool = True
    #: the next create calls get these errors instead, first one first
    create_faults: list[HttpFault] = field(default_factory=list)
    #: the next retrieve calls (poll or resume) get these errors
    retrieve_faults: list[HttpFault] = field(default_factory=list)
    #: the next stream connections (create or resume) are cut after k events each (k may be 0)
    drops: list[int] = field(default_factory=list)
    #: abort = connection reset mid-body (client sees a transport error); eof = a clean early end
    drop_mode: DropMode = "abort"
    #: if set, requests must carry "Authorization: Bearer <api_key>"
    api_key: str | None = None
    #: batches: pause before each request of a batch is processed
    batch_request_delay_s: float = 0.0
    #: batches: when set, the next batch fails validation with this message
    batch_invalid: str | None = None
    #: batches: custom_ids whose requests fail (land in the error file)
    batch_failures: set[str] = field(default_factory=set)
    #: when set, every finished response or batch is announced there, signed with webhook_secret
    webhook_url: str | None = None
    webhook_secret: str | None = None

    def next_outcome(self) -> Outcome:
        return self.outcomes.pop(0) if self.outcomes else Outcome()
