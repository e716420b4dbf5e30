"""The Redis that ``backlane dev`` runs on when none is configured.

In order of preference: ``BACKLANE_REDIS_URL``; a private ``redis-server`` (AOF on, data under
``.backlane/redis``) when one is installed; else an in-process Redis (fakeredis), which keeps
nothing once the process stops.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(port: int) -> bool:
    """Whether a Redis on this loopback port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on a free loopback port (used by ``backlane dev`` and the tests)."""

    def __init__(self, *, appendonly: bool = False, data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.dir = data_dir or Path(tempfile.mkdtemp(prefix="backlane-redis-"))
        self.owns_dir = data_dir is None
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--maxmemory-policy", "noeviction", "--maxclients", "10000", "--loglevel", "warning",
        ]
        # its own session: a Ctrl-C or SIGTERM to our process group must not stop Redis before we drain
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if answers_ping(self.port):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Embedded:
    url: str
    description: str
    server: Any = None

    def close(self) -> None:
        if isinstance(self.server, RedisServer):
            self.server.stop()
        elif self.server is not None:
            self.server.shutdown()


def choose_redis(configured: str | None, data_dir: Path) -> Embedded:
    if configured:
        return Embedded(configured, f"Redis at {configured} (BACKLANE_REDIS_URL)")
    if shutil.which("redis-server"):
        server = RedisServer(appendonly=True, data_dir=data_dir / "redis").start()
        return Embedded(server.url, f"a private redis-server on {server.url}, AOF in {server.dir}", server)
    try:
        from fakeredis import TcpFakeServer
    except ImportError as exc:
        raise RuntimeError(
            "no Redis: set BACKLANE_REDIS_URL, install redis-server, or pip install 'backlane[embedded]'"
        ) from exc
    fake = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    threading.Thread(target=fake.serve_forever, daemon=True, name="in-process-redis").start()
    url = f"redis://127.0.0.1:{fake.server_address[1]}/0"
    return Embedded(url, f"an in-process Redis on {url} (fakeredis: NOTHING is kept when this stops)", fake)
