"""A local fake of the OpenAI API for tests: real wire format, real loopback socket.

    with FakeOpenAI() as fake:
        client = OpenAI(base_url=fake.base_url, api_key="test", _strict_response_validation=True)
        fake.controls.drops = [5]          # cut the next stream after 5 events
        ...
        assert fake.create_calls == 1

Responses run on the server's own clock (a task per response), independent of any client
connection, as background mode does upstream. ``controls`` (see ``_controls.Controls``) injects
faults; the counters and logs below let a test prove what the client did.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from ._app import DropFilter, build_app
from ._batches import FakeBatch, FakeFile
from ._controls import Controls, HttpFault, Outcome
from ._responses import FakeResponse
from .webhooks import Delivery

__all__ = ["Controls", "Delivery", "FakeOpenAI", "FakeResponse", "HttpFault", "Outcome"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


class FakeOpenAI:
    def __init__(self, controls: Controls | None = None) -> None:
        self.controls = controls or Controls()
        self.responses: dict[str, FakeResponse] = {}
        self.files: dict[str, FakeFile] = {}
        self.batches: dict[str, FakeBatch] = {}
        #: POST /v1/responses calls, and their bodies, faults included
        self.create_calls = 0
        self.create_bodies: list[dict[str, Any]] = []
        #: GET /v1/responses/{id} calls (polls and resumes)
        self.retrieve_calls = 0
        #: when each of them arrived (time.monotonic())
        self.retrieve_at: list[float] = []
        #: the starting_after of each resumed stream (-1 when absent)
        self.resume_after: list[int] = []
        #: response ids whose cancel was asked for
        self.cancel_calls: list[str] = []
        self.stream_connections = 0
        self.batch_create_calls = 0
        self.webhooks_sent: list[Delivery] = []
        self.background_tasks: set[asyncio.Task[None]] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it
        # every reused keep-alive connection waits ~40 ms on Nagle + delayed ACK
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self), log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        logging.getLogger("uvicorn.error").addFilter(DropFilter())
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Runs ``fn(*args)`` on the server's loop and returns its result (for state that tasks touch)."""
        assert self._server is not None and self._server.loop is not None
        loop = self._server.loop

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        # end every run so open streams finish and the server can close its connections
        self.call(lambda: [x.cancel() for x in [*self.responses.values(), *self.batches.values()]])
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- conveniences for tests ---------------------------------------------------------

    def only_response(self) -> FakeResponse:
        (resp,) = self.responses.values()
        return resp

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
        """Polls a condition on the fake's state (it changes on another thread) until true or timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition on the fake upstream not met in time")
            time.sleep(interval)
