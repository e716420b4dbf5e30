"""The child processes of bench/bench_fanout.py: the SSE servers it compares, a Backlane worker, and
its load generators; what /proc says of a server (CPU time, RSS) and CLIENT LIST of its Redis
connections.

Every child runs in a session of its own (a Ctrl-C reaches the benchmark only, which then stops its
children in order) and gets SIGTERM if the benchmark dies without stopping it (PR_SET_PDEATHSIG).
Their output goes to a temporary directory, kept when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from redis.asyncio import Redis

from backlane.embedded import free_port
from bench.http_client import KeepAlive
from bench.processes import terminate

ROOT = Path(__file__).resolve().parents[1]
LOGS = Path(tempfile.gettempdir()) / f"bench-fanout-{os.getpid()}"
PROCS: list[subprocess.Popen[bytes]] = []
TENANT, KEY = "bench", "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **env}


def _log_file(name: str) -> BinaryIO:
    LOGS.mkdir(exist_ok=True)
    return open(LOGS / f"{name}.log", "ab")


def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with _log_file(name) as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=_child_env(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after 10 s."""
    terminate(proc, 10)
    if proc in PROCS:
        PROCS.remove(proc)


def stop_all() -> None:
    for proc in list(PROCS):
        stop(proc)


@dataclass(frozen=True)
class Kind:
    """One of the servers compared: how to start it and the name its Redis connections carry."""

    name: str
    module: list[str]
    client_name: str

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", *self.module, "--port", str(port)]


BACKLANE = Kind("Backlane", ["backlane", "api"], "backlane-api")
SHARED = Kind("shared", ["bench.baselines.shared_sse"], "bench-shared")
NAIVE = Kind("naive", ["bench.baselines.naive_sse"], "bench-naive")
KINDS = (BACKLANE, SHARED, NAIVE)


class Server:
    """One server process on a free port, for one measurement."""

    def __init__(self, kind: Kind, redis_url: str) -> None:
        self.kind, self.redis_url, self.port = kind, redis_url, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> Server:
        env = {"BACKLANE_REDIS_URL": self.redis_url, "BACKLANE_API_KEYS": f"{TENANT}:{KEY}",
               "BACKLANE_LOG_LEVEL": "WARNING", "BACKLANE_SSE_MAX_PER_TENANT": "1000000",
               "BENCH_REDIS_URL": self.redis_url}
        self.proc = spawn(self.kind.name, self.kind.command(self.port), env)
        conn = KeepAlive("127.0.0.1", self.port, AUTH)
        deadline = time.monotonic() + 30
        try:
            while True:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    if (await conn.request(conn.prepare("GET", "/healthz"))).status == 200:
                        return self
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind.name} did not answer /healthz within 30 s (log: {LOGS})")
                conn.close()
                await asyncio.sleep(0.05)
        finally:
            conn.close()

    def cpu_s(self) -> float:
        """utime + stime of the server process so far (s)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    async def redis_connections(self, redis: Redis) -> int:
        return sum(1 for c in await redis.client_list() if c.get("name") == self.kind.client_name)

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(stop, self.proc)


class LoadGenProcess:
    """A ``python3 -m bench.fanout_client`` child, driven by JSON lines (``LoadGen`` is the other side)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> LoadGenProcess:
        with _log_file(f"loadgen-{self.index}") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fanout_client", cwd=ROOT, env=_child_env({}),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=2**28, start_new_session=True, preexec_fn=_die_with_parent)
        return self

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {self.index} stopped (log: {LOGS})")
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # EOF: it returns
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
