"""Backlane processes for the browser tests: ``backlane dev`` in one process, or api + supervisor + workers
as separate processes (so a test can SIGKILL a worker), each against the test's private redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backlane.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "key-ui-test"
STARTUP_S = 20.0
#: lifetime of links.events tokens in the split-process tests
TOKEN_TTL_S = 2
#: lease of the stale-heartbeat test: long enough that the supervisor leaves a paused worker's job alone
LONG_LEASE_S = 16


def _env(redis_url: str, port: int, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BACKLANE_REDIS_URL": redis_url,
        "BACKLANE_API_KEYS": f"ui:{KEY}",
        "BACKLANE_HOST": "127.0.0.1",
        "BACKLANE_PORT": str(port),
        "BACKLANE_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@dataclass
class Processes:
    """Started processes and where the API listens; ``stop()`` ends every one of them."""

    redis_url: str
    env_extra: Mapping[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sign_in_url(self) -> str:
        return f"{self.base_url}/ui/#key={KEY}"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "backlane", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=_env(self.redis_url, self.port, self.env_extra),
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye; the lease must expire for the supervisor to notice."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process is frozen (no heartbeats) but alive; ``resume`` thaws it."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the API did not answer /healthz within {STARTUP_S} s")

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused process would not act on SIGTERM
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
