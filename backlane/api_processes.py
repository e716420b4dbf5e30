"""``backlane api``: one API process, or N behind one port (``--workers N``, ``BACKLANE_API_WORKERS``).

    backlane api --workers 3
    ┌──────────────────────────────────────────────┐
    │ supervisor: uvicorn's Multiprocess           │  binds the port once; starts N processes; pings
    │ (no app, no Redis)                           │  each twice a second and replaces one that died or
    └────┬───────────────┬───────────────┬─────────┘  hangs; SIGTERM/SIGINT: SIGTERM to each, then waits
         │ the one listening socket, inherited by each
    ┌────▼─────┐    ┌────▼─────┐    ┌────▼─────┐
    │ API      │    │ API      │    │ API      │  each accepts from the shared socket, and has its own
    │ process  │    │ process  │    │ process  │  app, hub, Redis pool, SSE slots and job-types cache;
    └──────────┘    └──────────┘    └──────────┘  on SIGTERM it stops as a lone API process does
       metrics: a private PROMETHEUS_MULTIPROC_DIR, summed at each scrape (api/metrics_processes.py)

Why uvicorn's supervisor, not N processes each binding the port with SO_REUSEPORT: with one
listening socket, connections waiting to be accepted stay queued when a process dies (the kernel
drops those queued on a dead process's own SO_REUSEPORT socket), and replacing processes, health
pings and signals are uvicorn's, tested there. A process started by the supervisor builds its app
from the environment they share (``app_for_process``): host and port are the supervisor's business.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from shared.settings import Settings

from . import logs

if TYPE_CHECKING:
    from starlette.applications import Starlette

#: how long a stopping API process lets open responses (event streams) finish
GRACEFUL_S = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def freeze_startup_objects() -> None:
    """Moves everything allocated at start-up out of the collector's view: with thousands of SSE
    connections, full collections over those objects caused second-long pauses (pitfalls.md)."""
    gc.collect()
    gc.freeze()


def end_streams_first() -> None:
    """Makes a stopping uvicorn server end the open event streams first (``api/sse.py``), before it
    waits up to GRACEFUL_S for its open requests: a stream would otherwise hold it all that time and
    then be cut mid-response. uvicorn has no hook for it, and the processes of ``--workers N`` are
    uvicorn's own servers: its ``shutdown`` is wrapped, once per process."""
    import uvicorn

    from api.sse import stop_streams

    shutdown = uvicorn.Server.shutdown
    if getattr(shutdown, "ends_streams_first", False):
        return

    async def ending_streams_first(self: uvicorn.Server, sockets: Any = None) -> None:
        stop_streams()
        await shutdown(self, sockets)

    ending_streams_first.ends_streams_first = True  # type: ignore[attr-defined]
    uvicorn.Server.shutdown = ending_streams_first  # type: ignore[method-assign]


def serve(settings: Settings) -> None:
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": logs.level(),
        "log_config": logs.uvicorn_config(logs.level()), "proxy_headers": True,
        "timeout_graceful_shutdown": GRACEFUL_S,
    }
    if settings.api_workers == 1:
        from api.app import create_app

        app = create_app(settings)
        end_streams_first()
        freeze_startup_objects()
        uvicorn.run(app, **options)
        return
    _serve_processes(settings.api_workers, options)


def _serve_processes(workers: int, options: dict[str, Any]) -> None:
    """What ``uvicorn.run(..., workers=N)`` does, keeping the supervisor to see whether a process
    failed to start: uvicorn then stops them all but exits 0, and a service manager would not notice."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    with _shared_metrics_dir():
        config = uvicorn.Config(f"{__name__}:app_for_process", factory=True, workers=workers, **options)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit("backlane: an API process failed to start (its log says why); all have stopped")


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[str]:
    """A fresh directory for the processes' metrics files, named in the environment they inherit
    (so their prometheus-client starts in multiprocess mode); removed when they have all stopped."""
    from api.metrics_processes import DIR_VARIABLE

    path = tempfile.mkdtemp(prefix="backlane-api-metrics-")
    os.environ[DIR_VARIABLE] = path
    try:
        yield path
    finally:
        del os.environ[DIR_VARIABLE]
        shutil.rmtree(path, ignore_errors=True)


def app_for_process() -> Starlette:
    """The app of one process the supervisor started (uvicorn calls this in that process)."""
    from api.app import create_app

    _stop_with_supervisor()
    end_streams_first()
    app = create_app(Settings.from_env())
    freeze_startup_objects()
    return app


def _stop_with_supervisor() -> None:
    """On Linux, asks for SIGTERM when the supervisor ends, however it ends: a supervisor killed with
    SIGKILL would otherwise leave its processes serving the port with nobody to replace or stop them."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    supervisor = multiprocessing.parent_process()
    if supervisor is not None and os.getppid() != supervisor.pid:  # it ended before we asked
        os.kill(os.getpid(), signal.SIGTERM)
