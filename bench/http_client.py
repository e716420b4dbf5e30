"""A minimal keep-alive HTTP/1.1 client for bench/bench_jobs.py: one connection, one request at a time.

Server benchmarks (wrk, h2load) drive a server with a client that does little more than write requests
and read responses, so that the figure is the server's. httpx is a full client: on these 2-core machines
it costs about 1 ms of the benchmark process's CPU per request, as much as the API's own work on a
create, and the two share the cores. This client writes a prepared request and reads the status line,
the headers and a body of known length or in chunks (an SSE stream), nothing else: no redirects, no
cookies, no TLS, no pipelining. It speaks only to the API it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


#: uvicorn closes a connection idle for 5 s (its timeout_keep_alive): one idle this long is not reused,
#: as httpx's pool does with its keepalive_expiry, so a request never meets a connection being closed
IDLE_S = 4.0


class KeepAlive:
    """One connection to ``host:port``, opened on first use and again after the server closed it or
    it sat idle for ``IDLE_S``."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in {"Host": f"{host}:{port}", **headers}.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: the rest of a response that follow() stopped reading, and its headers
        self._unread: tuple[AsyncIterator[bytes], dict[str, str]] | None = None
        self._used = 0.0

    def close(self) -> None:
        self._unread = None
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    def prepare(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        """The bytes of one request (build it once, send it many times)."""
        head = f"{method} {path} HTTP/1.1\r\n{self._headers}"
        if body:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + body

    async def request(self, raw: bytes) -> Response:
        """Sends a prepared request and reads the whole response."""
        status, headers, reader = await self._send(raw)
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b"".join([chunk async for chunk in self._chunks(reader)])
        else:
            body = b""
        self._done(headers)
        return Response(status, headers, body)

    async def follow(self, raw: bytes, until: Callable[[str, str], bool]) -> tuple[str, str] | None:
        """Sends a prepared request for an SSE stream and reads its events (comments, the keep-alives,
        are skipped) until ``until(event, data)`` holds: returns that event, or None when the stream
        ended first. The rest of the stream is read before the next request, so its end is not waited
        for here (the API ends a job's stream right after its terminal event)."""
        status, headers, reader = await self._send(raw)
        if status != 200:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self._done(headers)
            raise RuntimeError(f"the events request was answered {status}: {body[:200]!r}")
        chunks, pending = self._chunks(reader), b""
        async for chunk in chunks:
            pending += chunk
            *blocks, pending = pending.split(b"\n\n")
            for block in blocks:
                event, data = "message", []
                for line in block.decode().split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if data and until(event, "\n".join(data)):
                    self._unread = (chunks, headers)
                    return event, "\n".join(data)
        self._done(headers)
        return None

    async def _send(self, raw: bytes) -> tuple[int, dict[str, str], asyncio.StreamReader]:
        if self._unread is not None:
            (rest, headers), self._unread = self._unread, None
            async for _ in rest:
                pass
            self._done(headers)
        if self._writer is not None and time.monotonic() - self._used > IDLE_S:
            self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ", 2)[1]), headers, self._reader

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """The chunks of a chunked body, until the last (no trailers: the API sends none)."""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield (await reader.readexactly(size + 2))[:-2]

    def _done(self, headers: dict[str, str]) -> None:
        self._used = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            self.close()
