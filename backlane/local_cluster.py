"""A private three-master Redis Cluster on loopback ports, for the tests and the benchmarks.

Three ``redis-server`` processes with cluster mode on, joined by ``redis-cli --cluster create`` with no
replicas, so each master owns about a third of the 16384 hash slots. Nothing is persisted: the nodes'
``nodes-<port>.conf`` files live in a temporary directory that :meth:`LocalCluster.cleanup` removes.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from .embedded import answers_ping, free_port

# A cluster node also listens on its port + 10000 (the cluster bus), which must stay below 65536.
BUS_PORT_OFFSET = 10000
MAX_PORT = 55000
SLOTS = 16384


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports below 55000 whose cluster bus ports (port + 10000) are free too.

    Another process may take a port between this check and ``redis-server`` binding it; :meth:`LocalCluster.start`
    then tries again with fresh ports.
    """
    taken: set[int] = set()
    ports: list[int] = []
    for _ in range(1000):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if port >= MAX_PORT or {port, bus} & taken or not _can_bind(bus):
            continue
        ports.append(port)
        taken |= {port, bus}
        if len(ports) == count:
            return ports
    raise RuntimeError(f"found no {count} free port pairs (P, P+{BUS_PORT_OFFSET}) with P < {MAX_PORT}")


def _binary(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return exe


def _cluster_info(port: int) -> dict[str, str]:
    client = sync_redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)
    try:
        raw = client.cluster("INFO")
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses the reply into a dict
        return {str(key): str(value) for key, value in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class LocalCluster:
    """Three cluster-enabled ``redis-server`` masters on free loopback ports, joined into one cluster."""

    def __init__(self, *, masters: int = 3, ready_timeout: float = 20.0) -> None:
        self.masters = masters
        self.ready_timeout = ready_timeout
        self.ports: list[int] = []
        self.dir: Path | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []  # every redis-server started, kept after cleanup so tests can check them
        self.create_output = ""  # what redis-cli --cluster create printed

    @property
    def url(self) -> str:
        """One node's URL; a cluster client discovers the other nodes from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def start(self) -> LocalCluster:
        server, cli = _binary("redis-server"), _binary("redis-cli")
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start(server, cli)
                return self
            except _PortTaken:
                self.cleanup()
                if attempt == attempts:
                    raise RuntimeError(f"redis-server could not bind its ports in {attempts} attempts") from None
            except BaseException:
                self.cleanup()
                raise
        raise AssertionError("unreachable")

    def _start(self, server: str, cli: str) -> None:
        self.ports = cluster_ports(self.masters)
        self.dir = Path(tempfile.mkdtemp(prefix="backlane-redis-cluster-"))
        for port in self.ports:
            args = [
                server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--maxmemory-policy", "noeviction", "--maxclients", "10000",
                "--logfile", str(self.dir / f"redis-{port}.log"), "--loglevel", "warning",
            ]
            # its own session, like the single-server helper: a Ctrl-C to pytest must not stop it mid-test
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(proc)
            self.pids.append(proc.pid)
        self._wait_for_pings()
        self._create(cli)
        self._wait_until_ok()

    def _wait_for_pings(self) -> None:
        deadline = time.monotonic() + 10
        pending = list(zip(self.ports, self.procs, strict=True))
        while pending and time.monotonic() < deadline:
            for port, proc in list(pending):
                if proc.poll() is not None:
                    log = self._log_tail(port)
                    if "Address already in use" in log:
                        raise _PortTaken(port)
                    raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}:\n{log}")
                if answers_ping(port):
                    pending.remove((port, proc))
            if pending:
                time.sleep(0.02)
        if pending:
            raise RuntimeError(f"redis-server did not answer PING on port(s) {[p for p, _ in pending]} within 10 s")

    def _create(self, cli: str) -> None:
        args = [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports)]
        args += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = subprocess.run(
                args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self.ready_timeout
            )
        except subprocess.TimeoutExpired as exc:
            output = _plain(_text(exc.stdout) + _text(exc.stderr))
            raise RuntimeError(
                f"redis-cli --cluster create did not finish in {self.ready_timeout:g} s:\n{output}"
            ) from None
        self.create_output = _plain(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create exited with {done.returncode}:\n{self.create_output}"
            )

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        infos: dict[int, dict[str, str] | str] = {}
        while True:
            for port in self.ports:
                try:
                    infos[port] = _cluster_info(port)
                except sync_redis.RedisError as exc:
                    infos[port] = f"CLUSTER INFO failed: {exc}"
            if all(_is_ready(info, self.masters) for info in infos.values()):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        states = "\n".join(f"  127.0.0.1:{port}: {_summary(info)}" for port, info in infos.items())
        raise RuntimeError(
            f"the Redis Cluster was not ready within {self.ready_timeout:g} s "
            f"(want cluster_state:ok, cluster_slots_assigned:{SLOTS} on every node):\n{states}\n"
            f"redis-cli --cluster create said:\n{self.create_output}"
        )

    def _log_tail(self, port: int, lines: int = 20) -> str:
        if self.dir is None:
            return ""
        try:
            text = (self.dir / f"redis-{port}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def flushall(self) -> None:
        """Empty every master (FLUSHALL only reaches the node it is sent to)."""
        for port in self.ports:
            client = sync_redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            try:
                client.flushall()
            finally:
                client.close()

    def cleanup(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 10 s) and remove the temporary directory."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class _PortTaken(Exception):
    """A node could not bind its port: another process took it after :func:`cluster_ports` checked it."""


def _is_ready(info: dict[str, str] | str, masters: int) -> bool:
    return (
        isinstance(info, dict)
        and info.get("cluster_state") == "ok"
        and info.get("cluster_slots_assigned") == str(SLOTS)
        and info.get("cluster_known_nodes") == str(masters)
    )


def _summary(info: dict[str, str] | str) -> str:
    if isinstance(info, str):
        return info
    keys = ("cluster_state", "cluster_slots_assigned", "cluster_slots_ok", "cluster_known_nodes", "cluster_size")
    return " ".join(f"{key}:{info.get(key, '?')}" for key in keys)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def _plain(text: str) -> str:
    """``text`` without the colour escapes redis-cli prints even into a pipe."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
