"""Server-sent events responses: the exact headers, each chunk in one write, the end on a disconnect.

    response start ──▶ for each chunk the feed yields (events, or a keep-alive comment when idle):
                          one ``http.response.body`` write
                       client gone (``http.disconnect``) ──▶ the handler is cancelled, the feed closed
                       server stopping (``stop_streams``) ──▶ the same, then the response's end

A stream is one coroutine and one small task that waits for the disconnect: no task group, no
per-chunk timeout, no queue. The feed decides when to send a keep-alive (it knows when it is idle),
and a client that stops reading blocks only its own writer (the server's flow control); the hub
drops it from the live feed once it falls too far behind. A stopping server ends its open streams
first (it calls ``stop_streams`` as it begins to shut down): each ends cleanly and its client resumes
with its cursor, on another process or after the restart, instead of holding the shutdown until the
server cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

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


class _Open:
    """One stream being sent: what ends it early, and why."""

    __slots__ = ("gone", "handler", "stopping", "streaming")

    def __init__(self, handler: asyncio.Task[Any]) -> None:
        self.handler, self.streaming, self.gone, self.stopping = handler, True, False, False

    def end(self) -> None:
        if self.streaming:  # once the stream has ended, there is nothing left to stop
            self.handler.cancel()


#: the streams this process is sending now
_open: set[_Open] = set()


def stop_streams() -> None:
    """Ends every stream this process is sending (call it on its event loop, as the server starts to
    stop): each sends its end, and its client resumes elsewhere with its cursor."""
    for stream in tuple(_open):
        stream.stopping = True
        stream.end()


async def _stream(chunks: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    handler = asyncio.current_task()
    assert handler is not None
    stream = _Open(handler)

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        stream.gone = True
        stream.end()

    watcher = asyncio.create_task(until_disconnect())
    _open.add(stream)
    try:
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            stream.streaming = False
            _open.discard(stream)
            watcher.cancel()
            await _close(chunks)
    except asyncio.CancelledError:
        if not (stream.gone or stream.stopping):
            raise  # cancelled from outside (the server cutting it): let it
        # the client left, or the server asked the stream to end: it is over, not the request's task
        handler.uncancel()


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
