"""Server-sent events responses: the exact headers, and a keep-alive comment while idle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

HEADERS = {
    # exactly this: Starlette would otherwise append "; charset=utf-8"
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep="\n")


def event_stream_response(chunks: AsyncIterator[bytes], keepalive_s: float) -> EventSourceResponse:
    """Sends encoded events as they come, with a keep-alive comment when idle for ``keepalive_s``."""
    return EventSourceResponse(chunks, headers=HEADERS, ping=keepalive_s, sep="\n", ping_message_factory=_ping)
