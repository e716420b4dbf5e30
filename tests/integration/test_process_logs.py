"""Structured logs of real `backlane api`, `worker` and `supervisor` processes: every stderr line of
``--log-format json`` is one JSON object, and one job's life can be followed by its id through them
(created, started, failed and retried, started again, completed; a lost worker's job taken over)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_server import free_port

pytestmark = pytest.mark.slow

KEY = "key-logs"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Processes:
    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
        env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_API_KEYS": f"acme:{KEY}",
                    "BACKLANE_PORT": str(self.port), "BACKLANE_LOG_LEVEL": "INFO",
                    "BACKLANE_HEARTBEAT_S": "0.2", "BACKLANE_LEASE_S": "1", "BACKLANE_SUPERVISOR_INTERVAL_S": "0.1",
                    "BACKLANE_DRAIN_GRACE_S": "0.5"})
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "backlane", *args], env={**self.env, **env},
                                    stdout=subprocess.DEVNULL, stderr=err)
        self.procs[name] = proc
        return proc

    def stderr(self, name: str) -> list[str]:
        return (self.log_dir / f"{name}.err").read_text().splitlines()

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(15)

    def stop_all(self) -> None:
        for name in self.procs:
            self.stop(name, signal.SIGKILL)


@pytest.fixture
def procs(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(redis_url, tmp_path)
    yield p
    p.stop_all()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line parsed: a line that is not one JSON object fails the test."""
    parsed = [json.loads(line) for line in lines]
    for line in parsed:
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line), line
    return parsed


def api_ready(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def worker_ids(http: httpx.Client) -> list[str]:
    return [w["id"] for w in http.get("/v1/workers").json()["workers"]]


def job_status(http: httpx.Client, job_id: str) -> tuple[str, int]:
    job = http.get(f"/v1/jobs/{job_id}").json()
    return job["status"], job["attempt"]


def test_one_job_s_life_in_json_lines_across_the_processes(procs: Processes) -> None:
    procs.start("api", "api", "--log-format", "json")
    procs.start("worker", "worker", "--log-format", "json")
    procs.start("supervisor", "supervisor", "--log-format", "json")
    with httpx.Client(base_url=procs.url, headers=AUTH, timeout=10) as http:
        wait_for(lambda: api_ready(http), 20, "the API")
        worker = wait_for(lambda: worker_ids(http), 20, "the worker")[0]
        spec = {"topic": "logs", "steps": 1, "tokens_per_step": 3, "delay_ms": 0,
                "fail": {"class": "transient", "times": 1}}
        job = http.post("/v1/jobs", json={"type": "demo.story", "input": spec}).json()
        wait_for(lambda: job_status(http, job["id"]) == ("completed", 2), 30, "the retried job to complete")
    for name in ("api", "worker", "supervisor"):
        procs.stop(name)

    api, work = json_lines(procs.stderr("api")), json_lines(procs.stderr("worker"))
    json_lines(procs.stderr("supervisor"))
    mine = [line for line in api + work if line.get("job_id") == job["id"]]
    assert [(line["event"], line["attempt"]) for line in mine] == [
        ("job.created", 0), ("job.started", 1), ("job.retried", 1), ("job.started", 2), ("job.completed", 2)]
    for line in mine:
        assert line["type"] == "demo.story" and line["tenant"] == "acme", line
        assert line["message"] and line["time"].endswith("Z")
    created, *by_worker = mine
    assert created["logger"] == "backlane.api" and "worker" not in created
    for line in by_worker:
        assert line["logger"] == "backlane.worker" and line["worker"] == worker, line
    retried = by_worker[1]
    assert retried["level"] == "INFO" and retried["error_class"] == "transient"
    assert retried["error"] == "demo failure 1 of 1" and retried["retry_in_ms"] >= 500
    # uvicorn speaks through the same formatter: its start-up, and one line per request with its fields
    assert any(line["logger"] == "uvicorn.error" and "Started server process" in line["message"] for line in api)
    posts = [line for line in api if line["logger"] == "uvicorn.access" and line.get("method") == "POST"]
    assert posts and posts[0]["path"] == "/v1/jobs" and posts[0]["status"] == 201
    # a job writes a few lines over its life, not one per output event
    assert len([line for line in work if line.get("job_id") == job["id"]]) == 4


def test_a_lost_worker_s_job_is_logged_by_the_supervisor(procs: Processes) -> None:
    procs.start("api", "api")  # text: each process has its own format
    procs.start("victim", "worker", "--log-format", "json")
    procs.start("supervisor", "supervisor", BACKLANE_LOG_FORMAT="json")
    with httpx.Client(base_url=procs.url, headers=AUTH, timeout=10) as http:
        wait_for(lambda: api_ready(http), 20, "the API")
        victim = wait_for(lambda: worker_ids(http), 20, "the worker")[0]
        spec = {"topic": "lost", "steps": 1, "tokens_per_step": 200, "delay_ms": 20}
        job = http.post("/v1/jobs", json={"type": "demo.story", "input": spec}).json()
        wait_for(lambda: job_status(http, job["id"]) == ("running", 1), 20, "the job to run")
        procs.stop("victim", signal.SIGKILL)
        wait_for(lambda: job_status(http, job["id"])[1] == 1 and job_status(http, job["id"])[0] == "queued", 20,
                 "the supervisor to restart the job")
    procs.stop("supervisor")
    lost = [line for line in json_lines(procs.stderr("supervisor")) if line.get("job_id") == job["id"]]
    assert len(lost) == 1, lost
    assert lost[0]["event"] == "job.worker_lost" and lost[0]["logger"] == "backlane.supervisor"
    assert lost[0]["level"] == "WARNING" and lost[0]["worker"] == victim and lost[0]["attempt"] == 1
    assert lost[0]["outcome"] == "restarted" and lost[0]["type"] == "demo.story" and lost[0]["tenant"] == "acme"
    # text is today's format, with the fields as key=value
    created = next(line for line in procs.stderr("api") if "job created" in line)
    assert re.search(rf" INFO \[{procs.procs['api'].pid}\] backlane.api: job created job_id={job['id']} "
                     "type=demo.story tenant=acme attempt=0$", created)


@pytest.mark.parametrize(("args", "env", "named"), [
    (("worker",), {"BACKLANE_LOG_FORMAT": "xml"}, "BACKLANE_LOG_FORMAT='xml': expected text or json"),
    (("supervisor",), {"BACKLANE_LOG_LEVEL": "LOUD"}, "BACKLANE_LOG_LEVEL='LOUD'"),
    (("api", "--log-format", "xml"), {}, "--log-format: invalid choice: 'xml'"),
])
def test_a_bad_log_setting_stops_start_up_naming_it(redis_url: str, args: tuple[str, ...], env: dict[str, str],
                                                    named: str) -> None:
    run = subprocess.run([sys.executable, "-m", "backlane", *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "BACKLANE_REDIS_URL": redis_url, **env})
    assert run.returncode != 0 and named in run.stderr, run.stderr
