"""Server-sent events responses: the exact headers, each chunk in one write, the end on a disconnect.

    response start ──▶ for each chunk the feed yields (events, or a keep-alive comment when idle):
                          one ``http.response.body`` write
                       client gone (``http.disconnect``) ──▶ the handler is cancelled, the feed closed

A stream is one coroutine and one small task that waits for the disconnect: no task group, no
per-chunk timeout, no queue. The feed decides when to send a keep-alive (it knows when it is idle),
and a client that stops reading blocks only its own writer (the server's flow control); the hub
drops it from the live feed once it falls too far behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_HEADERS = [
    # exactly this: Starlette would otherwise append "; charset=utf-8"
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]


class _EventStream(Response):
    def __init__(self, chunks: AsyncIterator[bytes] | None, whole: bytes = b"") -> None:
        self.status_code, self.raw_headers, self.background = 200, list(_HEADERS), None
        self.chunks, self.whole = chunks, whole

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if scope["method"] == "HEAD":  # the headers, no body
            await _close(self.chunks)
        elif self.chunks is None:
            await send({"type": "http.response.body", "body": self.whole, "more_body": True})
        else:
            await _stream(self.chunks, receive, send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(chunks: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    handler = asyncio.current_task()
    assert handler is not None
    state = {"streaming": True, "gone": False}

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        state["gone"] = True
        if state["streaming"]:  # once the stream has ended, there is nothing left to stop
            handler.cancel()

    watcher = asyncio.create_task(until_disconnect())
    try:
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            state["streaming"] = False
            watcher.cancel()
            await _close(chunks)
    except asyncio.CancelledError:
        if not state["gone"]:
            raise  # the server is stopping: let it
        handler.uncancel()  # the client left: this stream is over, not the request's task


async def _close(chunks: AsyncIterator[bytes] | None) -> None:
    """Runs the feed's cleanup now (its hub subscription, its gauges), not whenever it is collected."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def event_stream_response(chunks: AsyncIterator[bytes]) -> Response:
    """Sends each chunk as it comes (encoded events, or a keep-alive comment) until the iterator ends
    or the client leaves."""
    return _EventStream(chunks)


def whole_stream_response(chunk: bytes) -> Response:
    """An event stream that is all here (the job has ended): ``chunk``, its last event terminal, then the end."""
    return _EventStream(None, chunk)
