"""What this worker tells the others about itself, and when (``shared/worker_info.py``).

The facts ride on a beat the worker sends anyway: ``next()`` hands the beat loop the info to write
when it differs from what was last written, or when the last write is ``INFO_REFRESH_MS`` old (its
expiry must be pushed back), and None otherwise; ``written()`` records what a beat that got through
wrote. So jobs that start and end between two beats cost one write at the next beat, whatever their
number, and an idle worker writes once per refresh.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace

from shared.serialization import now_ms
from shared.worker_info import INFO_REFRESH_MS, RunningJob, WorkerInfo, package_version


class Presence:
    def __init__(self, worker_id: str, job_types: Iterable[str], concurrency: int, lease_ms: int,
                 running: Callable[[], Iterable[RunningJob]], draining: Callable[[], bool]) -> None:
        self._base = WorkerInfo(
            id=worker_id, host=socket.gethostname(), pid=os.getpid(), version=package_version(),
            job_types=tuple(sorted(job_types)), concurrency=concurrency, started_at=now_ms(), lease_ms=lease_ms,
        )
        self._running = running
        self._draining = draining
        self._written: WorkerInfo | None = None
        self._written_at = 0

    def current(self) -> WorkerInfo:
        """The facts as they are now."""
        return replace(self._base, running=tuple(sorted(self._running())), draining=self._draining())

    def next(self, now: int) -> WorkerInfo | None:
        """The info the next beat should write, or None when the last write still stands."""
        info = self.current()
        if info == self._written and now - self._written_at < INFO_REFRESH_MS:
            return None
        return info

    def written(self, info: WorkerInfo, now: int) -> None:
        """A beat wrote ``info`` at ``now``."""
        self._written, self._written_at = info, now
