"""``backlane``: the entry points (README: "The two commands", "Running in production").

    backlane dev          API + worker + supervisor in one process, on the embedded default Redis
    backlane api          the stateless HTTP API (``--workers N``: N processes behind one port)
    backlane worker       a compute worker (``--import pkg.module`` for your own job types)
    backlane supervisor   restarts dead work; any number may run

This module is the only place that sees both ``api`` and ``compute``: it wires processes, nothing else.
How ``backlane api`` runs one API process or several: api_processes.py; how every process logs: logs.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import logging
import os
import secrets
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from backlane import logs
from shared.logs import LOG_FORMATS, configure_logging
from shared.settings import Settings, SettingsError

log = logging.getLogger("backlane")


def _settings(args: argparse.Namespace, defaults: dict[str, str] | None = None) -> Settings:
    """Settings from the environment over ``defaults`` (named BACKLANE_*), then the flags over both."""
    settings = Settings.from_env({**(defaults or {}), **os.environ})
    changes = {name: getattr(args, name) for name in ("host", "port", "worker_concurrency", "api_workers")
               if getattr(args, name, None) is not None}
    return replace(settings, **changes) if changes else settings


def _require_redis(settings: Settings) -> str:
    if not settings.redis_url:
        sys.exit("backlane: set BACKLANE_REDIS_URL (e.g. redis://127.0.0.1:6379/0); `backlane dev` starts its own")
    return settings.redis_url


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a process's main coroutine on uvloop, a faster event loop, where it is installed (the
    API's uvicorn picks it up by itself), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:  # not on Windows
        asyncio.run(main)
        return
    uvloop.run(main)


def cmd_api(args: argparse.Namespace) -> None:
    from backlane.api_processes import serve

    settings = _settings(args)
    _require_redis(settings)
    serve(settings)


def _import_from_cwd() -> None:
    """``--import myjobs`` finds ``myjobs.py`` in the directory the command runs from, as with arq and
    Celery: an installed console script has its own directory on ``sys.path``, not the current one."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def cmd_worker(args: argparse.Namespace) -> None:
    from compute.worker import run_worker

    settings = _settings(args)
    _require_redis(settings)
    _import_from_cwd()
    _run(run_worker(settings, args.imports, concurrency=args.worker_concurrency, burst=args.burst))


def cmd_supervisor(args: argparse.Namespace) -> None:
    from compute.supervisor import run_supervisor

    settings = _settings(args)
    _require_redis(settings)
    _run(run_supervisor(settings))


def _dev_key(settings: Settings) -> tuple[Settings, str]:
    if settings.api_keys:
        return settings, next(iter(settings.api_keys))
    key = "dev-" + secrets.token_urlsafe(18)
    return replace(settings, api_keys={key: "dev"}), key


def _dev_webhook_secret(settings: Settings) -> tuple[Settings, str | None]:
    """Webhooks are always signed; in development a fresh secret for every tenant lets a job with a
    ``webhook_url`` run at once. None when one is configured."""
    if settings.webhook_secret("*") is not None:
        return settings, None
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return replace(settings, webhook_secrets={**settings.webhook_secrets, "*": secret}), secret


def _dev_server(app: object, settings: Settings) -> object:
    """A uvicorn server that leaves signals to us: uvicorn re-raises SIGTERM once it has stopped,
    which would end the process before the worker drains and the private Redis is stopped."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            yield

    return Server(uvicorn.Config(app, host=settings.host, port=settings.port,  # type: ignore[arg-type]
                                 log_level=logs.level(), log_config=None, timeout_graceful_shutdown=3))


async def _dev(settings: Settings, imports: list[str]) -> None:
    import signal

    from api.app import create_app
    from backlane.api_processes import end_streams_first, freeze_startup_objects
    from compute.registry import BUILTIN_MODULES, load
    from compute.supervisor import Supervisor
    from compute.worker import Worker
    from shared.connection import connect
    from shared.jobs import JobStore

    assert settings.redis_url
    redis = connect(settings.redis_url, settings.redis_max_connections)
    job_types = load(BUILTIN_MODULES + imports)
    store = JobStore(redis, settings)
    await store.agree_on_shards()
    await store.register_types([jt.policy for jt in job_types.values()])
    worker = Worker(settings, redis, job_types)
    supervisor = Supervisor(settings, redis)
    end_streams_first()
    server = _dev_server(create_app(settings), settings)
    freeze_startup_objects()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    tasks = [asyncio.create_task(worker.run(), name="worker"),
             asyncio.create_task(supervisor.run(), name="supervisor")]
    try:
        await server.serve()  # type: ignore[attr-defined]  # returns on Ctrl-C / SIGTERM
    finally:
        worker.drain()
        supervisor.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), settings.drain_grace_s + 5)
        await redis.aclose()


def cmd_dev(args: argparse.Namespace) -> None:
    from backlane.embedded import choose_redis

    # development receivers listen on this machine: webhooks to private addresses are allowed unless
    # BACKLANE_WEBHOOK_ALLOW_PRIVATE=0 says otherwise
    settings = _settings(args, {"BACKLANE_WEBHOOK_ALLOW_PRIVATE": "1"})
    data_dir = Path(os.environ.get("BACKLANE_DATA_DIR", ".backlane"))
    embedded = choose_redis(settings.redis_url, data_dir)
    settings, key = _dev_key(replace(settings, redis_url=embedded.url))
    if settings.api_workers > 1:
        log.warning("backlane dev runs in one process: BACKLANE_API_WORKERS applies to backlane api only")
    settings, webhook_secret = _dev_webhook_secret(settings)
    _import_from_cwd()
    print(f"Backlane dev: using {embedded.description}", flush=True)
    print(f"Backlane UI: http://{settings.host}:{settings.port}/ui/#key={key}", flush=True)
    print(f"API key (tenant {settings.api_keys[key]!r}): {key}", flush=True)
    if webhook_secret:
        print(f"Webhook signing secret (this run only; set BACKLANE_WEBHOOK_SECRET to keep one): {webhook_secret}",
              flush=True)
    try:
        _run(_dev(settings, args.imports))
    finally:
        embedded.close()


def _version() -> str:
    """The installed package's version (pyproject.toml), or "unknown" when run from a tree not installed."""
    try:
        return importlib.metadata.version("backlane")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _at_least_one(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backlane", description="A background lane for long-running AI work.")
    parser.add_argument("--version", action="version", version=f"backlane {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, *, http: bool = False, worker: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text + " Configuration: BACKLANE_* "
                           "environment variables (see README); flags override them.")
        p.add_argument("--log-format", choices=LOG_FORMATS, help="log lines as text or one JSON object each "
                       "(BACKLANE_LOG_FORMAT, default text)")
        if http:
            p.add_argument("--host", help="address to bind (BACKLANE_HOST, default 127.0.0.1)")
            p.add_argument("--port", type=int, help="port to bind (BACKLANE_PORT, default 8000)")
        if worker:
            p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                           help="a module whose JobType values this worker serves (repeatable)")
            p.add_argument("--concurrency", dest="worker_concurrency", type=_at_least_one,
                           help="jobs run at once (BACKLANE_WORKER_CONCURRENCY, default 4)")
        return p

    add("dev", "Run API, worker and supervisor in one process on the embedded default Redis.",
        http=True, worker=True).set_defaults(func=cmd_dev)
    a = add("api", "Run the HTTP API (stateless; run as many as you like).", http=True)
    a.add_argument("--workers", dest="api_workers", type=_at_least_one, metavar="N",
                   help="API processes behind the one port, each replaced if it dies (BACKLANE_API_WORKERS, "
                        "default 1)")
    a.set_defaults(func=cmd_api)
    w = add("worker", "Run a compute worker that claims and runs jobs.", worker=True)
    w.add_argument("--burst", action="store_true", help="exit once no work is ready and nothing runs")
    w.set_defaults(func=cmd_worker)
    add("supervisor", "Restart jobs whose worker died; expire jobs past their deadline.").set_defaults(
        func=cmd_supervisor)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        configure_logging(args.log_format, os.environ)  # uvicorn's lines too (log_config=None)
        args.func(args)
    except SettingsError as exc:
        sys.exit(f"backlane: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
