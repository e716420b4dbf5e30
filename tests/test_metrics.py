"""The run-time histogram /metrics prints from the counts the scripts keep."""

from __future__ import annotations

import re
from pathlib import Path

from api.metrics import RUN_MS_BUCKETS, Metrics, run_time_buckets

LIB = Path(__file__).resolve().parents[1] / "shared" / "lua" / "lib.lua"


def histogram_lines(counts: dict[str, int]) -> list[str]:
    metrics = Metrics()
    metrics.job_counts.update(counts, {})
    return [line for line in metrics.render().decode().splitlines() if line.startswith("backlane_job_run_seconds")]


def test_the_buckets_are_those_of_lib_lua() -> None:
    found = re.search(r"local RUN_MS_BUCKETS = \{([^}]*)\}", LIB.read_text())
    assert found is not None
    assert tuple(int(x) for x in found.group(1).split(",")) == RUN_MS_BUCKETS


def test_runs_counted_once_per_bucket_print_as_cumulative_buckets() -> None:
    """Runs of 50 ms, 700 ms and 2 h, each counted in its smallest bucket as transition() does, print
    as the counts kept in every bucket that holds a run did."""
    per_bucket = {"run_ms_bucket|t|100": 1, "run_ms_bucket|t|1000": 1, "run_ms_bucket|t|+Inf": 1,
                  "run_ms_sum|t": 7_200_750}
    cumulative = {"run_ms|t|100": 1, **{f"run_ms|t|{le}": 2 for le in RUN_MS_BUCKETS[2:]}, "run_ms|t|500": 1,
                  "run_ms|t|+Inf": 3, "run_ms_sum|t": 7_200_750}
    assert run_time_buckets(per_bucket)["t"] == [("100", 1), ("500", 1), *((str(le), 2) for le in RUN_MS_BUCKETS[2:]),
                                                 ("+Inf", 3)]
    assert histogram_lines(per_bucket) == histogram_lines(cumulative)
    assert 'backlane_job_run_seconds_bucket{le="0.5",type="t"} 1.0' in histogram_lines(per_bucket)


def test_buckets_start_at_the_first_that_holds_a_run_and_old_counts_add_in() -> None:
    # one run of 2 s kept the old way (every bucket from 5 s), one of 20 s per bucket
    counts = {**{f"run_ms|t|{le}": 1 for le in RUN_MS_BUCKETS[3:]}, "run_ms|t|+Inf": 1,
              "run_ms_bucket|t|60000": 1, "run_ms_sum|t": 22_000}
    assert run_time_buckets(counts)["t"] == [("5000", 1), ("15000", 1), ("60000", 2), ("300000", 2),
                                             ("900000", 2), ("3600000", 2), ("+Inf", 2)]


def test_types_print_in_the_order_their_fields_sort() -> None:
    counts = {"run_ms_bucket|a|100": 1, "run_ms_bucket|a.b|100": 1, "run_ms_bucket|ab|100": 1}
    assert list(run_time_buckets(counts)) == sorted(["a", "a.b", "ab"], key=lambda t: f"{t}|")
    assert list(run_time_buckets(counts)) == ["a.b", "ab", "a"]
