"""The load generator of bench/bench_fanout.py: a lean SSE client, and the process that runs thousands.

The figure must be the server's, so the client does the least a client can: an asyncio Protocol per
connection (no task, no stream reader), one prepared GET, the status line, a chunked (or plain) body
split into events on blank lines. No redirects, no reconnects, no TLS.

    bench_fanout.py ──JSON lines on stdin──▶ python3 -m bench.fanout_client ──▶ N SseClient
                    ◀─one JSON reply a line─         (own process, uvloop)        connections

An ``output`` event's text is one or more write timestamps (``"<time.time()>;"``, merged outputs
concatenate them): the client records write → parse latency for each. In text mode it rebuilds the
job's text instead: ``output`` appends its text, ``snapshot`` replaces what came before with its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any, cast

import orjson

from shared.status import TERMINAL

_TERMINAL = frozenset(s.value for s in TERMINAL)
#: one event as Backlane and the baselines send it (id:, event:, data: lines; comments have no data)
EVENT = re.compile(rb"event: ([^\n]*)\ndata: ([^\n]*)\n")


class SseClient(asyncio.Protocol):
    def __init__(self, request: bytes, latencies: array[float] | None) -> None:
        self.request = request
        self.path = ""
        #: where write → client latencies go (seconds); None: keep the text instead
        self.latencies = latencies
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.error = ""
        self._head = b""
        self._raw = b""  # body bytes not de-chunked yet
        self._body = b""  # de-chunked bytes not split into events yet
        self._chunked = False
        self._chunk_left = 0
        self._crlf = 0
        self.events = self.outputs = self.snapshots = 0
        self.text: list[str] = []
        self.running_at = ""
        self.terminal: dict[str, Any] | None = None
        self.t_start = time.perf_counter()
        self.t_first_byte = self.t_first_event = self.t_end = 0.0
        #: time.time() when the terminal event arrived (or the stream broke)
        self.end_wall = 0.0
        #: time.time() of the last output event
        self.last_recv = 0.0

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.t_first_byte:
            self.t_first_byte = time.perf_counter()
        if not self.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].decode("latin-1"), self._head[end + 4:]
            status_line, *lines = head.split("\r\n")
            self.status = int(status_line.split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            if self.status != 200:
                self._finish(f"answered {self.status}")
                return
        body = self._dechunk(data) if self._chunked else data
        if not body:
            return
        self._body += body
        cut = self._body.rfind(b"\n\n")
        if cut < 0:
            return
        complete, self._body = self._body[:cut + 2], self._body[cut + 2:]
        if found := EVENT.findall(complete):
            self._events(found, complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(str(exc) if exc else ("" if self.terminal else "closed before the terminal event"))

    # ---- parsing --------------------------------------------------------------------------

    def _dechunk(self, data: bytes) -> bytes:
        buf = self._raw + data if self._raw else data
        out, pos, n = [], 0, len(buf)
        while pos < n:
            if self._chunk_left:
                take = min(self._chunk_left, n - pos)
                out.append(buf[pos:pos + take])
                pos, self._chunk_left = pos + take, self._chunk_left - take
                if self._chunk_left:
                    break
                self._crlf = 2
            if self._crlf:
                skip = min(self._crlf, n - pos)
                pos, self._crlf = pos + skip, self._crlf - skip
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size, pos = int(buf[pos:end].split(b";", 1)[0], 16), end + 2
            if size == 0:  # the last chunk: the response is over (no trailers here)
                pos = n
                break
            self._chunk_left = size
        self._raw = buf[pos:]
        return b"".join(out)

    def _events(self, found: list[tuple[bytes, bytes]], complete: bytes) -> None:
        """The events of whole blocks, in bulk where they are all outputs (the common case): one JSON
        parse for all their data, no Python loop per line."""
        now = time.time()
        if not self.t_first_event:
            self.t_first_event = time.perf_counter()
        self.events += len(found)
        if b"event: status" not in complete and b"event: snapshot" not in complete:
            self._outputs([body["text"] for body in orjson.loads(b"[" + b",".join(d for _, d in found) + b"]")], now)
            return
        for event, data in found:
            if event == b"output":
                self._outputs([orjson.loads(data)["text"]], now)
            elif event == b"snapshot":
                body = orjson.loads(data)
                self.text = [body.get("text", "")]
                self.snapshots += 1
                if body.get("status") in _TERMINAL:  # it covers the terminal event: nothing follows
                    self.terminal = body.get("status_event") or body
                    self._finish("")
                    return
            elif event == b"status":
                body = orjson.loads(data)
                if body["status"] == "running":
                    self.running_at = body["at"]
                elif body["status"] in _TERMINAL:
                    self.terminal = body
                    self._finish("")
                    return

    def _outputs(self, texts: list[str], now: float) -> None:
        if self.latencies is None:
            self.text += texts
            self.outputs += len(texts)
            return
        stamps = "".join(texts).split(";")[:-1]
        self.latencies.extend(now - float(stamp) for stamp in stamps)
        self.outputs += len(stamps)
        self.last_recv = now

    def _finish(self, error: str) -> None:
        if self.done.done():
            return
        self.t_end, self.end_wall = time.perf_counter(), time.time()
        self.error = error
        self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


def get_request(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(host: str, port: int, path: str, headers: dict[str, str],
                  latencies: array[float] | None = None) -> SseClient:
    """Opens one SSE connection and sends its GET; ``client.done`` resolves at the terminal event."""
    client = SseClient(get_request(host, port, path, headers), latencies)
    client.path = path
    client.t_start = time.perf_counter()  # the connect counts: a first byte is timed from here
    await asyncio.get_running_loop().create_connection(lambda: client, host, port)
    return client


class LoadGen:
    """The commands one load-generator process answers (bench_fanout.py's ``LoadGenProcess``)."""

    def __init__(self) -> None:
        self.clients: list[SseClient] = []
        self.latencies: array[float] = array("d")
        self.cpu0 = 0.0

    async def open(self, host: str, port: int, paths: list[str], headers: dict[str, str], ready: int,
                   limit_s: float, at_once: int = 100) -> dict[str, Any]:
        """Connects a client per path, ``at_once`` connecting at a time (a burst of thousands would
        overflow the server's accept backlog); returns once each has had ``ready`` events."""
        gate, errors = asyncio.Semaphore(at_once), []

        async def one(path: str) -> None:
            async with gate:
                try:
                    self.clients.append(await connect(host, port, path, headers, self.latencies))
                except OSError as exc:
                    errors.append(str(exc))

        await asyncio.gather(*(one(p) for p in paths))
        await _until(lambda: all(c.done.done() or c.events >= ready for c in self.clients), limit_s)
        errors += [c.error for c in self.clients if c.done.done()]
        behind = sum(1 for c in self.clients if not c.done.done() and c.events < ready)
        return {"ok": len(paths) - len(errors) - behind, "failed": len(errors), "behind": behind,
                "errors": errors[:5]}

    async def mark(self) -> dict[str, Any]:
        del self.latencies[:]
        for client in self.clients:
            client.outputs, client.last_recv = 0, 0.0
        self.cpu0 = _cpu()
        return {}

    async def wait(self, expected: dict[str, int], limit_s: float) -> dict[str, Any]:
        """Until every client has had the outputs written to its job (by path), or ``limit_s`` passed."""
        t0 = time.monotonic()
        await _until(lambda: all(c.done.done() or c.outputs >= expected[c.path] for c in self.clients), limit_s)
        return {"waited": time.monotonic() - t0}

    async def collect(self) -> dict[str, Any]:
        return {"outputs": [[c.path, c.outputs] for c in self.clients],
                "last_recv": max((c.last_recv for c in self.clients), default=0.0),
                "latencies": base64.b64encode(self.latencies.tobytes()).decode(),
                "cpu": _cpu() - self.cpu0,
                "closed": sum(c.done.done() for c in self.clients)}

    async def close(self) -> dict[str, Any]:
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        self.clients = []
        return {}


async def _until(done: Callable[[], bool], limit_s: float) -> None:
    """Looks every 20 ms: an event to wake a waiter would cost every SSE event something."""
    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gen = LoadGen()
    while line := await reader.readline():  # EOF: the benchmark is gone, so are we
        command = orjson.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            break
        reply = await getattr(gen, name)(**command)
        sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_serve())
