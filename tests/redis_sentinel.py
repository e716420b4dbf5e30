"""The tests' private Redis master, replica and three sentinels: the same the benchmarks start."""

from backlane.local_sentinel import SERVICE, LocalSentinel

__all__ = ["SERVICE", "LocalSentinel"]
