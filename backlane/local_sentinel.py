"""A private Redis master, two replicas and three sentinels on loopback ports, for the tests and the
benchmarks: what ``redis+sentinel://`` URLs point at, and a failover to provoke.

    master ──replicates to──▶ 2 replicas       3 sentinels (quorum 2) watch the master; when it stops
       ▲                                       answering for ``down_after_ms`` they agree, promote a
       └──────── monitored as SERVICE ────────  replica and point the other at it (the killed master is
                                               not started again)

Two replicas, so that after one failover a replica is still there to confirm writes
(``BACKLANE_REDIS_MIN_REPLICAS=1`` would otherwise refuse every create until one rejoins).

The servers persist nothing (no AOF, no RDB): a failover, not a restart, is what keeps the data.
Everything lives in a temporary directory that :meth:`LocalSentinel.cleanup` removes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

from .embedded import answers_ping, free_port

SERVICE = "backlane"


class LocalSentinel:
    def __init__(self, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="backlane-sentinel-"))
        self.master_port = free_port()
        self.replica_ports = [free_port() for _ in range(2)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> LocalSentinel:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
                  "--loglevel", "warning"]
        self._spawn(self.master_port, [exe, "--port", str(self.master_port), "--dir", str(self.dir), *common])
        for port in self.replica_ports:
            self._spawn(port, [exe, "--port", str(port), "--dir", str(self.dir), "--dbfilename", f"dump-{port}.rdb",
                               *common, "--replicaof", "127.0.0.1", str(self.master_port)])
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self._spawn(port, [exe, str(conf), "--sentinel", "--loglevel", "warning"])
        for port in self.replica_ports:
            self.wait_for(lambda port=port: self._replica_synced(port), 20, "the replicas to sync")
        self.wait_for(lambda: self.master() == ("127.0.0.1", self.master_port), 20, "the sentinels to agree")
        return self

    def _spawn(self, port: int, args: list[str]) -> None:
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        self.wait_for(lambda: answers_ping(port), 10, f"a server on port {port}")

    @staticmethod
    def wait_for(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except sync_redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")

    @staticmethod
    def _replica_synced(port: int) -> bool:
        client = sync_redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def master(self) -> tuple[str, int] | None:
        """The master the first sentinel that answers names."""
        for port in self.sentinel_ports:
            client = sync_redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                reply: Any = client.sentinel_get_master_addr_by_name(SERVICE)
                host, master_port = reply
                return str(host), int(master_port)
            except (sync_redis.RedisError, TypeError, ValueError):
                continue
            finally:
                client.close()
        return None

    def kill_master(self) -> int:
        """SIGKILLs the current master; its port."""
        current = self.master()
        assert current is not None
        proc = self.procs.pop(current[1])
        proc.kill()
        proc.wait(10)
        return current[1]

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
