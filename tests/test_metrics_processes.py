"""The bookkeeping of metrics shared by several API processes (api/metrics_processes.py); summing
them over real processes is tested in tests/integration/test_api_processes.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from api.metrics_processes import forget_dead_processes, summed_registry


def _ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _file(directory: Path, name: str) -> None:
    MmapedDict(str(directory / name)).close()


def test_a_dead_process_s_live_gauges_go_and_its_counters_stay(tmp_path: Path) -> None:
    dead, alive = _ended_pid(), os.getpid()
    for pid in (dead, alive):
        for name in (f"counter_{pid}.db", f"gauge_livesum_{pid}.db", f"gauge_livemax_{pid}.db", f"gauge_all_{pid}.db"):
            _file(tmp_path, name)
    assert forget_dead_processes(str(tmp_path)) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f"counter_{dead}.db", f"gauge_all_{dead}.db",
        f"counter_{alive}.db", f"gauge_all_{alive}.db", f"gauge_livemax_{alive}.db", f"gauge_livesum_{alive}.db",
    ])
    assert forget_dead_processes(str(tmp_path)) == []


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"PROMETHEUS_MULTIPROC_DIR=.*gone"):
        summed_registry(str(tmp_path / "gone"))
