"""Metrics of several API processes behind one port, summed at each scrape.

A scrape reaches whichever process accepts its connection, so with ``backlane api --workers N`` no
process may answer from its own counters alone. ``backlane api`` gives its processes a private
directory in ``PROMETHEUS_MULTIPROC_DIR``; prometheus-client, seeing it when first imported, keeps
every counter and gauge in a memory-mapped file per process, and the process that answers reads
them all:

    process 101 ── counter_101.db, gauge_livesum_101.db, gauge_livemax_101.db ──┐
    process 102 ── counter_102.db, gauge_livesum_102.db, gauge_livemax_102.db ──┼─▶ GET /metrics
    (killed 99) ── counter_99.db  (its live gauges: removed at the next scrape) ─┘   (any process)

Counters of a process that has ended still count (a total does not drop when a process is replaced);
its gauges (clients now, streams watched now) do not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

#: the variable prometheus-client reads when it is first imported
DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def shared_dir() -> str | None:
    """The directory the API processes share their metrics in, or None for one process on its own."""
    return os.environ.get(DIR_VARIABLE) or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the number
        return True
    return True


def forget_dead_processes(directory: str) -> list[int]:
    """Removes the live gauges of processes that have ended (a killed process cannot remove its own);
    returns their ids."""
    dead = sorted({int(found.group(1)) for name in os.listdir(directory)
                   if (found := _LIVE_GAUGE_FILE.match(name)) and not _alive(int(found.group(1)))})
    for pid in dead:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def summed_registry(directory: str, *collectors: Collector) -> CollectorRegistry:
    """A registry for one scrape: every process's counters and gauges from ``directory``, plus
    ``collectors`` (read from Redis, the same in every process)."""
    if not Path(directory).is_dir():
        raise RuntimeError(f"{DIR_VARIABLE}={directory!r} is not a directory")
    forget_dead_processes(directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry
