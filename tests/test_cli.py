"""The `backlane` command as operators run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from redis_server import free_port


@pytest.mark.parametrize("command", ["dev", "api", "worker", "supervisor"])
def test_every_command_has_help(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "backlane", command, "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "BACKLANE_" in out and f"backlane {command}" in out


def test_production_commands_refuse_to_start_without_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    run = subprocess.run([sys.executable, "-m", "backlane", "worker"], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "BACKLANE_REDIS_URL" in run.stderr


def test_dev_runs_a_job_end_to_end_and_shuts_down_cleanly(redis_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "backlane", "dev"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "BACKLANE_REDIS_URL" in lines[0]
        ui = re.search(r"Backlane UI: (http://\S+/ui/#key=(\S+))", lines[1])
        assert ui, lines
        key = ui.group(2)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dev did not answer /healthz"
            time.sleep(0.05)
        auth = {"Authorization": f"Bearer {key}"}
        job = httpx.post(f"{base}/v1/jobs", headers=auth, json={
            "type": "demo.story", "input": {"topic": "dev", "steps": 1, "tokens_per_step": 5, "delay_ms": 0}}).json()
        with httpx.stream("GET", job["links"]["events"], timeout=15) as events:  # the token alone suffices
            body = "".join(events.iter_text())
        assert '"status":"completed"' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
