"""The tests' private Redis Cluster: the same one the benchmarks start."""

from backlane.local_cluster import SLOTS, LocalCluster

__all__ = ["SLOTS", "LocalCluster"]
