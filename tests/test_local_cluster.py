"""The test harness's private Redis Cluster: three masters, every slot served, and nothing left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.cluster import RedisCluster
from redis_cluster import SLOTS, LocalCluster

# a hung cluster start should fail within a minute, not after the suite's 300 s
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    yield cluster
    cluster.cleanup()


def _node(port: int) -> sync_redis.Redis:
    return sync_redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def _runs_node(pid: int, port: int) -> bool:
    """Whether process ``pid`` is still a redis-server serving ``port`` (a reused pid does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: only ask whether the pid is alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "redis-server" in cmdline and str(port) in cmdline


def test_the_cluster_has_three_masters(cluster: LocalCluster) -> None:
    assert len(cluster.ports) == 3
    assert all(port < 55000 for port in cluster.ports)
    with _node(cluster.ports[0]) as node:
        nodes = node.execute_command("CLUSTER NODES")
    masters = {f"127.0.0.1:{port}" for port in cluster.ports}
    assert {addr.split("@")[0] for addr, info in nodes.items() if "master" in info["flags"]} == masters
    assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}/0"


def test_every_node_sees_all_16384_slots_covered(cluster: LocalCluster) -> None:
    for port in cluster.ports:
        with _node(port) as node:
            info = node.execute_command("CLUSTER INFO")
            slots = node.execute_command("CLUSTER SLOTS")
        assert (info["cluster_state"], int(info["cluster_slots_assigned"])) == ("ok", SLOTS)
        # [[start, end, [host, port, node id, ...]], ...]: contiguous ranges from 0 to 16383, one per master
        ranges = sorted((int(start), int(end), int(primary[1])) for start, end, primary, *_ in slots)
        assert [start for start, _, _ in ranges] == [0] + [end + 1 for _, end, _ in ranges[:-1]]
        assert ranges[-1][1] == SLOTS - 1
        assert sorted(port for _, _, port in ranges) == sorted(cluster.ports)


def test_a_cluster_client_writes_keys_across_the_masters_and_reads_them_back(cluster: LocalCluster) -> None:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        for i in range(30):
            client.set(f"key:{i}", f"value {i}")
        assert [client.get(f"key:{i}") for i in range(30)] == [f"value {i}" for i in range(30)]
    finally:
        client.close()
    for port in cluster.ports:  # 30 keys hashed over three slot ranges: each master holds some
        with _node(port) as node:
            assert node.dbsize() > 0


def test_flushall_empties_every_master(cluster: LocalCluster) -> None:
    client = RedisCluster.from_url(cluster.url)
    try:
        for i in range(30):
            client.set(f"flush:{i}", i)
    finally:
        client.close()
    cluster.flushall()
    for port in cluster.ports:
        with _node(port) as node:
            assert node.dbsize() == 0


def test_cleanup_stops_every_node_and_removes_its_directory() -> None:
    cluster = LocalCluster().start()
    ports, pids, data_dir = list(cluster.ports), list(cluster.pids), cluster.dir
    assert len(pids) == 3 and data_dir is not None
    assert all(_runs_node(pid, port) for pid, port in zip(pids, ports, strict=True))
    cluster.cleanup()
    assert not any(_runs_node(pid, port) for pid, port in zip(pids, ports, strict=True))
    assert not data_dir.exists()


def test_a_failed_start_leaves_no_node_running(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalCluster, cli: str) -> None:
        raise RuntimeError("no cluster today")

    monkeypatch.setattr(LocalCluster, "_create", refuse)
    cluster = LocalCluster()
    with pytest.raises(RuntimeError, match="no cluster today"):
        cluster.start()
    assert len(cluster.pids) == 3
    assert not any(_runs_node(pid, port) for pid, port in zip(cluster.pids, cluster.ports, strict=True))
    assert cluster.dir is None


def test_redis_url_follows_BACKLANE_TEST_REDIS(redis_url: str) -> None:
    with sync_redis.Redis.from_url(redis_url, decode_responses=True) as client:
        enabled = client.info("cluster")["cluster_enabled"]
    assert enabled == (1 if os.environ.get("BACKLANE_TEST_REDIS") == "cluster" else 0)


@pytest.mark.single_redis
def test_a_single_redis_test_does_not_run_against_the_cluster() -> None:
    assert os.environ.get("BACKLANE_TEST_REDIS") != "cluster"
