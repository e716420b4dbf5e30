"""Serving the API for tests: a real uvicorn on a loopback socket (streaming, disconnects), an
in-process ASGI client (plain routes), and a worker simulated with the same Lua scripts compute uses.

httpx's ASGI transport buffers whole bodies, so SSE cannot be tested through it. This follows
httpx's own ``tests/conftest.py``: the server runs in a thread with its own event loop; the app's
lifespan (and its Redis pool) lives on that loop.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from redis_server import free_port
from starlette.applications import Starlette
from starlette.types import ASGIApp

from shared.jobs import JobStore
from shared.serialization import dumps, members, now_ms, rfc3339

ROOT = Path(__file__).resolve().parent.parent


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not in the main thread: leave signals alone
        pass


@dataclass
class Served:
    url: str
    server: uvicorn.Server


@contextmanager
def serve_in_thread(app: ASGIApp, *, graceful_s: float = 1.0) -> Iterator[Served]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=graceful_s,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        yield Served(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def serve_in_process(env: Mapping[str, str], *, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """``uvicorn api.app:app_from_env --factory`` in a child process: its own interpreter and core,
    as in production. Yields the base URL once /healthz answers."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:app_from_env",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "2",
        *extra_args,
    ]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API process exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API process did not answer /healthz")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def backlane_process(env: Mapping[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``backlane <args>`` in a child process (its output in ``log``); stopped (SIGTERM, then SIGKILL)
    on exit unless the test already ended it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backlane", *args], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def worker_process(env: Mapping[str, str], log: Path, *args: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return backlane_process(env, log, "worker", *args)


def supervisor_process(env: Mapping[str, str], log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return backlane_process(env, log, "supervisor")


# ---- the API under test, in-process, and a worker simulated with the Lua scripts ----------------

AUTH_ACME = {"Authorization": "Bearer key-acme"}
AUTH_GLOBEX = {"Authorization": "Bearer key-globex"}


@asynccontextmanager
async def asgi_client(
    app: Starlette, headers: Mapping[str, str] = AUTH_ACME
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over ASGITransport with the app's lifespan running (non-streaming routes only)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        base = "http://testserver"
        async with httpx.AsyncClient(transport=transport, base_url=base, headers=headers) as client:
            yield client


class SimWorker:
    """Drives a job the way compute does, through the same scripts: start → append → transition."""

    def __init__(self, store: JobStore, worker_id: str = "sim") -> None:
        self.store = store
        self.worker_id = worker_id

    async def start(self, job_id: str, job_type: str = "demo.story") -> int:
        now = now_ms()
        reply = await self.store.scripts.run(
            "start",
            self.store.job_keys(job_id, job_type),
            [
                job_id,
                self.worker_id,
                now,
                rfc3339(now),
                self.store.settings.lease_ms,
                self.store.retention_ms,
            ],
        )
        assert reply[0] == "ok", reply
        return int(reply[1])

    async def emit(self, job_id: str, token: int, *events: tuple[str, dict[str, Any]]) -> int:
        """Appends events; returns how many the attempt has written."""
        k = self.store.keys
        # append takes the index of the batch's first event within the attempt (resends are skipped)
        emitted = await self.store.redis.hget(k.job(job_id), "emitted")  # type: ignore[misc]
        args: list[Any] = [token, int(emitted or 0)]
        for event_type, body in events:
            args += [event_type, members(body)]
        return int(await self.store.scripts.run("append", self.store.append_keys(job_id), args))

    async def output(self, job_id: str, token: int, *texts: str) -> int:
        return await self.emit(job_id, token, *(("output", {"text": t}) for t in texts))

    async def finish(
        self,
        job_id: str,
        token: int,
        status: str = "completed",
        result: Any = None,
        job_type: str = "demo.story",
    ) -> None:
        event: dict[str, Any] = {} if result is None else {"result": result}
        fields = {} if result is None else {"result": dumps(result)}
        store = self.store
        outcome = await store.transition(job_id, job_type, status, token=token, event=event, fields=fields)
        assert outcome.outcome == "ok", outcome


# ---- reading SSE byte by byte, so a test can cut a stream anywhere ------------------------------


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class SSEParser:
    """Splits an SSE byte stream into events (and counts comment lines, the keep-alives)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        self.buffer += chunk
        events: list[Event] = []
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
            if "data" in fields:
                events.append(Event(fields.get("id"), fields.get("event", "message"), fields["data"]))
        return events


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """The value of one unlabelled series of the server's /metrics."""
    match = re.search(rf"^{name} (\S+)$", (await http.get("/metrics")).text, re.MULTILINE)
    assert match, name
    return float(match.group(1))
