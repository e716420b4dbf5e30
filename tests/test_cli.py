"""The `backlane` command as operators run it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis_server import free_port

from shared.jobs import JobStore, NewJob
from shared.serialization import loads


@pytest.mark.parametrize("command", ["dev", "api", "worker", "supervisor"])
def test_every_command_has_help(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "backlane", command, "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "BACKLANE_" in out and f"backlane {command}" in out


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    run = subprocess.run([sys.executable, "-m", "backlane", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"backlane {version('backlane')}" and re.fullmatch(r"backlane \d+\.\d+\.\d+\S*",
                                                                                   run.stdout.strip())


def test_production_commands_refuse_to_start_without_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    run = subprocess.run([sys.executable, "-m", "backlane", "worker"], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "BACKLANE_REDIS_URL" in run.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "0"], {}, "argument --workers: must be at least 1, got 0"),
    (["--workers", "two"], {}, "argument --workers: expected a whole number, got 'two'"),
    ([], {"BACKLANE_API_WORKERS": "0"}, "BACKLANE_API_WORKERS must be at least 1, got 0"),
    ([], {"BACKLANE_API_WORKERS": "x"}, "BACKLANE_API_WORKERS='x'"),
])
def test_a_bad_number_of_api_processes_stops_start_up(args: list[str], env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    run = subprocess.run([sys.executable, "-m", "backlane", "api", *args], capture_output=True, text=True,
                         env={**clean, "BACKLANE_REDIS_URL": "redis://127.0.0.1:1/0", **env}, timeout=30)
    assert run.returncode != 0 and message in run.stderr, run.stderr


@pytest.mark.parametrize("command", ["worker", "dev"])
def test_a_concurrency_below_one_is_refused(command: str) -> None:
    """Bug: ``--concurrency 0`` started a worker that could run nothing. Cause: flags replaced settings
    after they were validated. Fix: the flag is checked as it is parsed, as ``--workers`` is."""
    run = subprocess.run([sys.executable, "-m", "backlane", command, "--concurrency", "0"], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2 and "argument --concurrency: must be at least 1, got 0" in run.stderr, run.stderr


def test_dev_runs_a_job_end_to_end_and_shuts_down_cleanly(redis_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env.update({"BACKLANE_REDIS_URL": redis_url, "BACKLANE_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "backlane", "dev"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "BACKLANE_REDIS_URL" in lines[0]
        assert re.search(r"Webhook signing secret .*: whsec_\S+", lines[3]), lines
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
        # every webhook is signed: dev makes a secret so a job with a webhook_url is taken at once
        hooked = httpx.post(f"{base}/v1/jobs", headers=auth, json={
            "type": "demo.story", "input": {"topic": "hooked", "steps": 1, "tokens_per_step": 1, "delay_ms": 0},
            "webhook_url": f"http://127.0.0.1:{free_port()}/hook"})
        assert hooked.status_code == 201, hooked.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _console_script() -> list[str]:
    """``backlane`` as installed: its own directory on sys.path, not the current one (``-m`` would add it)."""
    script = Path(sys.executable).with_name("backlane")
    return [str(script)] if script.exists() else [sys.executable, "-P", "-m", "backlane"]


@pytest.mark.anyio
async def test_worker_imports_a_module_from_the_directory_it_runs_in(store: JobStore, tmp_path: Path) -> None:
    """Bug: ``backlane worker --import myjobs``, run next to myjobs.py as the README shows, failed
    with ModuleNotFoundError.
    Cause: the registry imports with importlib.import_module, and a console script has its own bin
    directory on sys.path, not the current directory.
    Fix: ``worker`` and ``dev`` put the current directory first on sys.path, as arq and Celery do."""
    (tmp_path / "myjobs.py").write_text(
        "import asyncio\n\n"
        "from compute.registry import job_type\n\n\n"
        "@job_type(\"cwd.echo\")\n"
        "async def echo(ctx):\n"
        "    await asyncio.sleep(0.3)\n"
        "    return ctx.input\n"
    )
    job_id = (await store.create(NewJob(tenant="acme", type="cwd.echo", input={"x": 1}, max_attempts=1))).job_id
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_") and k != "PYTHONPATH"}
    env["BACKLANE_REDIS_URL"] = str(store.settings.redis_url)
    run = await asyncio.to_thread(
        subprocess.run, [*_console_script(), "worker", "--import", "myjobs", "--burst"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "cwd.echo" in await store.job_types()  # registered, and served:
    raw = await store.load(job_id)
    assert raw is not None and raw["status"] == "completed" and loads(raw["result"]) == {"x": 1}


@pytest.mark.parametrize("run", range(3))
def test_a_burst_worker_with_nothing_to_do_exits_at_once(redis_url: str, run: int) -> None:
    """Bug: ``backlane worker --burst`` on an empty Redis never exited, nor did an early SIGTERM stop it.
    Cause: the worker cancelled its cancel listener once, while it was still inside ``subscribe``;
    Python 3.11's wait_for (in redis-py's send) swallows such a cancel and the listener waited in
    ``listen()`` for ever. Fix: background tasks are cancelled until they are done (shared/tasks.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKLANE_")}
    env["BACKLANE_REDIS_URL"] = redis_url
    proc = subprocess.Popen([sys.executable, "-m", "backlane", "worker", "--burst"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the burst worker did not exit within 20 s") from None
    assert proc.returncode == 0, err
