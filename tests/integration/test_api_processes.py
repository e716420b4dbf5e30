"""A real `backlane api --workers 2`: connections spread over both processes, a resume on another
process is exact, a killed process is replaced, SIGTERM and SIGINT stop them all, /metrics sums them.

Which process serves a connection is read from /proc (the server's end of our TCP connection, and
the process holding that socket), so the API needs no way of telling it. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_server import AUTH_ACME, Event, SSEParser
from redis_server import free_port

from compute.types.demo import full_text, story_words
from shared.keys import Keys
from shared.serialization import loads

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

TERMINAL = ("completed", "failed", "canceled", "expired")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return int(ppid), state


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the loopback connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if (local, remote) == (server_port, client_port):
                return fields[9]
    return None


class ApiProcesses:
    """`backlane api --workers N` in its own session (so a Ctrl-C can be sent to its process group)."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backlane", "api", "--workers", str(workers), "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def children(self) -> set[int]:
        """The API processes now running (not the supervisor, not multiprocessing's resource tracker)."""
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                info = _ppid_and_state(int(entry))
                if info and info[0] == self.proc.pid and info[1] != "Z" and b"spawn_main" in _cmdline(int(entry)):
                    found.add(int(entry))
        return found

    def serving(self, response: httpx.Response) -> int:
        """The process holding the server's end of ``response``'s connection (still open)."""
        client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        inode = _socket_inode(self.port, client_port)
        assert inode is not None, "no such connection in /proc/net/tcp"
        for pid in self.children():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                       for fd in os.listdir(f"/proc/{pid}/fd")):
                    return pid
        raise AssertionError(f"no API process holds socket {inode}")

    def get(self, path: str, **kwargs: Any) -> tuple[int, httpx.Response]:
        """A GET on a new connection: which process answered, and the answer (body read)."""
        with httpx.Client(base_url=self.url, timeout=10) as client, client.stream("GET", path, **kwargs) as response:
            pid = self.serving(response)
            response.read()
            return pid, response

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"the supervisor exited ({self.proc.returncode}): {self.log.read_text()}"
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.05)

    def answering(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_api(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiProcesses]]:
    started: list[ApiProcesses] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    base.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_API_KEYS": "acme:key-acme,globex:key-globex",
                 "BACKLANE_LOG_LEVEL": "INFO", "TMPDIR": str(tmp_path)})  # the metrics directory, also when killed

    def start(**env: str) -> ApiProcesses:
        api = ApiProcesses({**base, **env}, tmp_path / f"api-{len(started)}.log")
        started.append(api)
        api.wait_until(lambda: len(api.children()) == 2 and api.answering(), 30, "two API processes to answer")
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def worker(redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_LOG_LEVEL": "WARNING"})
    proc = subprocess.Popen([sys.executable, "-m", "backlane", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    proc.kill()
    proc.wait(10)


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


HEALTHZ_COUNT = 'backlane_http_requests_total{method="GET",route="/healthz",status="200"}'


def test_new_connections_reach_both_processes_and_metrics_sum_them(start_api: Callable[..., ApiProcesses]) -> None:
    api = start_api()
    children = api.children()
    before = _metric(api.get("/metrics")[1].text, HEALTHZ_COUNT)  # the readiness probes of start_api
    served: list[int] = []
    while set(served) != children or len(served) < 20:
        assert len(served) < 200, f"200 new connections all went to {set(served)} of {children}"
        pid, response = api.get("/healthz")
        assert response.status_code == 200
        served.append(pid)
    # every scrape sums both processes, whichever answers it (a request is counted just after its
    # answer is sent: the first scrape may come a moment early)
    api.wait_until(lambda: _metric(api.get("/metrics")[1].text, HEALTHZ_COUNT) == before + len(served), 5,
                   "the last request to be counted")
    scraped_by: list[int] = []
    while set(scraped_by) != children:
        assert len(scraped_by) < 200, f"200 scrapes all went to {set(scraped_by)}"
        pid, response = api.get("/metrics")
        scraped_by.append(pid)
        assert _metric(response.text, HEALTHZ_COUNT) == before + len(served)
    # each line of the log names the process that wrote it
    log = api.log.read_text()
    for pid in children:
        assert f"INFO [{pid}] uvicorn.error: Application startup complete." in log


def test_the_stream_cap_is_per_process_and_the_clients_gauge_sums_both(
    start_api: Callable[..., ApiProcesses],
) -> None:
    api = start_api(BACKLANE_SSE_MAX_PER_TENANT="1")
    with httpx.Client(base_url=api.url, headers=AUTH_ACME, timeout=10) as http:
        urls = [http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": f"cap {i}"}}).json()["links"][
            "events"] for i in range(2)]  # nobody runs them: their streams stay open
    with httpx.Client(timeout=10) as first_client, first_client.stream("GET", urls[0]) as first:
        assert first.status_code == 200
        first_pid = api.serving(first)
        refused = 0
        while True:  # new connections until one reaches the other process: one stream each is allowed
            assert refused < 100, "100 new connections never reached the second process"
            second_client = httpx.Client(timeout=10)
            second = second_client.send(second_client.build_request("GET", urls[1]), stream=True)
            if second.status_code == 200:
                break
            assert second.status_code == 429 and api.serving(second) == first_pid
            second.close()
            second_client.close()
            refused += 1
        try:
            assert api.serving(second) != first_pid
            _, metrics = api.get("/metrics")
            assert _metric(metrics.text, "backlane_sse_clients") == 2  # one in each process
            # each hub watches its one stream; hubs write their gauges every second
            api.wait_until(lambda: _metric(api.get("/metrics")[1].text, "backlane_hub_streams_watched") == 2, 5,
                           "both hubs' gauges")
        finally:
            second.close()
            second_client.close()


class OpenStream:
    """An event stream held open on its own connection, read a few events at a time. ``client``
    keeps no idle connection, so each stream opens a new one."""

    def __init__(self, api: ApiProcesses, client: httpx.Client, url: str, headers: dict[str, str]) -> None:
        self.response = client.send(client.build_request("GET", url, headers=headers), stream=True)
        self.pid = api.serving(self.response)
        self.chunks = self.response.iter_raw()
        self.parser = SSEParser()

    def take(self, budget: int) -> list[Event]:
        """Up to ``budget`` events: fewer when the stream ends; any more in the last chunk are
        dropped, as a client cut off mid-chunk would lose them."""
        taken: list[Event] = []
        for chunk in self.chunks:
            taken += self.parser.feed(chunk)
            if len(taken) >= budget:
                break
        return taken[:budget]

    def close(self) -> None:
        self.response.close()


def test_a_resume_on_the_other_process_gets_every_event_once_while_a_worker_writes(
    start_api: Callable[..., ApiProcesses], worker: subprocess.Popen[bytes],
) -> None:
    """Each resume is made to land on the other process while the job runs: with one stream allowed
    per tenant and process, the next connection opens while the last one is still held, so the
    process holding it answers 429 and only the other can take it. The cut connection then closes."""
    api = start_api(BACKLANE_SSE_MAX_PER_TENANT="1")
    spec = {"topic": "two processes", "steps": 3, "tokens_per_step": 60, "delay_ms": 50}  # 9 s
    http = httpx.Client(base_url=api.url, headers=AUTH_ACME, timeout=10,
                        limits=httpx.Limits(max_keepalive_connections=0))
    job = http.post("/v1/jobs", json={"type": "demo.story", "input": spec}).json()
    url = f"/v1/jobs/{job['id']}/events"
    rng = random.Random(20261202)
    got: list[Event] = []
    held: OpenStream | None = None
    pids: list[int] = []
    resumed_while_running = refused = 0
    while not got or loads(got[-1].data).get("status") not in TERMINAL:
        assert len(pids) < 1000 and refused < 20_000, "no progress"
        status = http.get(f"/v1/jobs/{job['id']}").json()["status"]
        cursor = {"Last-Event-ID": got[-1].id or ""} if got else {}
        stream = OpenStream(api, http, url, cursor)  # a new connection
        if stream.response.status_code == 429:
            assert held is not None and stream.pid == held.pid  # the cap, per process
            stream.close()
            refused += 1
            continue
        assert stream.response.status_code == 200, stream.response.read()
        if held is not None:
            if stream.pid == held.pid:  # only once the job has ended: its events then go whole, outside the cap
                assert http.get(f"/v1/jobs/{job['id']}").json()["status"] in TERMINAL
            else:
                resumed_while_running += status == "running"
            held.close()
        held = stream
        pids.append(stream.pid)
        got += stream.take(rng.randint(1, 12))
    assert held is not None
    held.close()
    http.close()
    data = [loads(e.data) for e in got]
    assert [d["seq"] for d in data] == list(range(1, len(data) + 1))  # no gap, no repeat
    assert len({e.id for e in got}) == len(got)
    assert [d["status"] for d in data if d["type"] == "status"] == ["queued", "running", "completed"]
    assert "".join(d["text"] for d in data if d["type"] == "output") == full_text(story_words(spec["topic"], 3, 60))
    assert set(pids) == api.children() and resumed_while_running >= 3, (pids, resumed_while_running)
    _, end = api.get(url, headers={**AUTH_ACME, "Last-Event-ID": got[-1].id or ""})
    assert end.status_code == 204
    print(f"{len(pids)} connections, {resumed_while_running} resumed on the other process while the job ran, "
          f"{refused} refused by the cap")


def test_a_killed_process_is_replaced_and_the_port_keeps_answering(start_api: Callable[..., ApiProcesses]) -> None:
    api = start_api()
    before = api.children()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    answered = 0
    while api.children() in (before, before - {victim}):  # until the replacement has started
        pid, response = api.get("/healthz")
        assert response.status_code == 200 and pid != victim
        answered += 1
        assert answered < 2000, "no replacement"
    after = api.children()
    assert len(after) == 2 and victim not in after
    replacement = (after - before).pop()
    api.wait_until(lambda: any(api.get("/healthz")[0] == replacement for _ in range(20)), 30,
                   "the replacement to serve")
    assert f"Child process [{victim}] died" in api.log.read_text()


@pytest.mark.parametrize("how", ["SIGTERM to the supervisor", "Ctrl-C (SIGINT to the process group)"])
def test_sigterm_and_ctrl_c_stop_every_process_within_seconds(start_api: Callable[..., ApiProcesses],
                                                              how: str) -> None:
    """A stopping process ends its open event streams first: the stream ends cleanly (a whole chunked
    response, so the client resumes with its cursor) well before the graceful 5 s, every process has
    ended and the supervisor exits 0."""
    api = start_api()
    children = api.children()
    with httpx.Client(base_url=api.url, headers=AUTH_ACME, timeout=10) as http:
        job = http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "stop"}}).json()
    events = job["links"]["events"]
    with httpx.Client(timeout=15) as client, client.stream("GET", events) as stream:  # held open: nobody runs it
        assert stream.status_code == 200
        started = time.monotonic()
        if how.startswith("SIGTERM"):
            api.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(api.proc.pid, signal.SIGINT)
        for _ in stream.iter_raw():  # a cut response would raise RemoteProtocolError here
            pass
        stream_ended = time.monotonic() - started
        assert api.proc.wait(15) == 0
        took = time.monotonic() - started
    assert stream_ended < 3 and took < 4, f"the stream ended after {stream_ended:.1f} s, all stopped in {took:.1f} s"
    assert not any(_ppid_and_state(pid) for pid in children), "an API process outlived the supervisor"
    assert not api.answering()
    print(f"{how}: the stream ended after {stream_ended:.1f} s, all stopped after {took:.1f} s")


def test_a_supervisor_killed_with_sigkill_leaves_no_process_serving(start_api: Callable[..., ApiProcesses]) -> None:
    api = start_api()
    children = api.children()
    api.proc.kill()
    api.proc.wait(10)
    deadline = time.monotonic() + 10
    while any(_ppid_and_state(pid) for pid in children):
        assert time.monotonic() < deadline, "the API processes outlived their supervisor by 10 s"
        time.sleep(0.05)
    assert not api.answering()


@pytest.mark.single_redis
def test_a_process_that_cannot_start_stops_all_with_a_failure(redis_url: str, tmp_path: Path) -> None:
    """The data in Redis was written with one shard and the processes are set up for three: each
    refuses to start, and the supervisor exits non-zero (uvicorn's own exits 0)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    client.set(Keys().shard_count, "1")
    client.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_SHARDS": "3"})
    api = ApiProcesses(env, tmp_path / "api.log")
    try:
        assert api.proc.wait(30) != 0
    finally:
        api.stop()
    log = api.log.read_text()
    assert "an API process failed to start" in log and "shard" in log.lower(), log
