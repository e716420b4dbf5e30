"""Server-sent events responses: the exact headers, and a keep-alive comment while idle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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


#: the headers event_stream_response sends (sse-starlette adds Connection: keep-alive to ours)
_STREAM_HEADERS = EventSourceResponse(iter(()), headers=HEADERS).raw_headers


class _Whole(Response):
    """The stream of a job whose every event is known already (it has ended): the same status and
    headers as event_stream_response, the events in one chunk, then the end. sse-starlette's task
    group (the sender, pings, a disconnect and a shutdown listener) has nothing to wait for here and
    cost more than the rest of the request."""

    def __init__(self, chunk: bytes) -> None:
        self.status_code, self.chunk, self.raw_headers = 200, chunk, list(_STREAM_HEADERS)
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] != "HEAD":  # as sse-starlette answers HEAD: the headers, no body
            await send({"type": "http.response.body", "body": self.chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def whole_stream_response(chunk: bytes) -> Response:
    """An event stream that is all here: ``chunk`` (encoded events, the last one terminal), then the end."""
    return _Whole(chunk)
