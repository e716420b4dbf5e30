"""Prometheus metrics of one API process, in a registry of its own (tests build many apps).

Several API processes behind one port (``backlane api --workers N``) sum theirs at each scrape:
api/metrics_processes.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .hub import Hub
from .metrics_processes import shared_dir, summed_registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: counters the Lua scripts and the supervisor keep in the stats hash; always exported, 0 when unset
KNOWN_STATS = {
    "stale_writes": "writes refused because their lease token was stale (zombie workers)",
    "lease_expiries": "leases that expired (workers that died or stalled)",
    "webhook_deliveries": "webhook deliveries answered with 2xx",
    "webhook_failures": "webhook deliveries that failed (to be retried)",
    "webhook_given_up": "webhook events given up after the whole retry schedule",
}
TERMINAL = frozenset({"completed", "failed", "canceled", "expired"})
#: upper bounds (ms) of the run-time histogram's buckets: RUN_MS_BUCKETS of shared/lua/lib.lua
RUN_MS_BUCKETS = (100, 500, 1000, 5000, 15000, 60000, 300000, 900000, 3600000)
#: with several processes, how often each writes its hub's gauges where the others' scrapes read them
HUB_GAUGES_EVERY_S = 1.0


def run_time_buckets(counts: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """The run-time histogram of each type in the counts hash, cumulative as Prometheus has it:
    (upper bound in ms, or ``+Inf``; runs that took no longer), smallest first, for each bound that
    some run fits under. transition() in lib.lua counts a run once, in the smallest bucket that holds
    it (``run_ms_bucket|TYPE|LE``); counts kept before it did that hold every bucket a run fits under
    (``run_ms|TYPE|LE``) and add in as they are, so the buckets go on from them, as ``run_ms_sum`` does.
    Types come in the order their fields sort."""
    counted: dict[str, dict[str, int]] = {}
    cumulative: dict[str, dict[str, int]] = {}
    for field, value in counts.items():
        kind, _, rest = field.partition("|")
        if kind in ("run_ms_bucket", "run_ms"):
            job_type, _, le = rest.rpartition("|")
            (counted if kind == "run_ms_bucket" else cumulative).setdefault(job_type, {})[le] = value
    histograms: dict[str, list[tuple[str, int]]] = {}
    for job_type in sorted(counted.keys() | cumulative.keys(), key=lambda t: t + "|"):
        own, kept = counted.get(job_type, {}), cumulative.get(job_type, {})
        bounds = sorted({*RUN_MS_BUCKETS, *(int(le) for le in (*own, *kept) if le != "+Inf")})
        rows, runs = [], 0
        for le in [*map(str, bounds), "+Inf"]:
            runs += own.get(le, 0)
            if runs + kept.get(le, 0):
                rows.append((le, runs + kept.get(le, 0)))
        if rows:
            histograms[job_type] = rows
    return histograms


class JobCounts(Collector):
    """Jobs by type and status, run times, retries, tokens and cost, from the counts kept in Redis by the
    scripts (so every API process reports the same numbers, whichever worker did the work)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.stats: dict[str, int] = {}

    def update(self, counts: dict[str, int], stats: dict[str, int]) -> None:
        self.counts, self.stats = dict(counts), dict(stats)

    def collect(self) -> Iterator[Metric]:
        current = GaugeMetricFamily("backlane_jobs", "jobs now in a non-terminal status", labels=["type", "status"])
        finished = CounterMetricFamily("backlane_jobs_finished", "jobs that reached a terminal status",
                                       labels=["type", "status"])
        retries = CounterMetricFamily("backlane_retries", "automatic retries after transient failures",
                                      labels=["type"])
        tokens = CounterMetricFamily("backlane_tokens", "model tokens used, by kind", labels=["type", "kind"])
        ratio = GaugeMetricFamily("backlane_cached_token_ratio", "cached input tokens / input tokens",
                                  labels=["type"])
        model_tokens = CounterMetricFamily("backlane_model_tokens", "model tokens used, by type, model and kind",
                                           labels=["type", "model", "kind"])
        model_calls = CounterMetricFamily("backlane_model_calls", "model calls recorded, by type and model",
                                          labels=["type", "model"])
        cost = CounterMetricFamily("backlane_cost_usd", "what model calls cost by the price table (USD); models "
                                   "without a price count in tokens only", labels=["type", "model"])
        sums: dict[str, float] = {}
        inputs: dict[str, tuple[int, int]] = {}
        for field, value in sorted(self.counts.items()):
            kind, _, rest = field.partition("|")
            if kind == "jobs":
                job_type, _, status = rest.rpartition("|")
                (finished if status in TERMINAL else current).add_metric([job_type, status], max(0, value))
            elif kind == "run_ms_sum":
                sums[rest] = value / 1000
            elif kind == "model_tokens":
                type_model, _, token_kind = rest.rpartition("|")
                job_type, _, model = type_model.partition("|")
                model_tokens.add_metric([job_type, model, token_kind], value)
            elif kind in ("model_calls", "cost_nusd"):
                job_type, _, model = rest.partition("|")
                if kind == "cost_nusd":
                    cost.add_metric([job_type, model], value / 1e9)
                else:
                    model_calls.add_metric([job_type, model], value)
            elif kind == "tokens":
                job_type, _, token_kind = rest.rpartition("|")
                tokens.add_metric([job_type, token_kind], value)
                seen = inputs.get(job_type, (0, 0))
                if token_kind == "input_tokens":
                    inputs[job_type] = (value, seen[1])
                elif token_kind == "cached_tokens":
                    inputs[job_type] = (seen[0], value)
        for field, value in self.stats.items():
            if field.startswith("retries|"):
                retries.add_metric([field.partition("|")[2]], value)
        for job_type, (input_tokens, cached) in inputs.items():
            if input_tokens:
                ratio.add_metric([job_type], cached / input_tokens)
        run = HistogramMetricFamily("backlane_job_run_seconds", "run time of attempts that ended the job",
                                    labels=["type"])
        for job_type, rows in run_time_buckets(self.counts).items():
            seconds = [(le if le == "+Inf" else str(int(le) / 1000), runs) for le, runs in rows]
            run.add_metric([job_type], seconds, sum_value=sums.get(job_type, 0.0))
        yield from (current, finished, retries, tokens, ratio, run, model_tokens, model_calls, cost)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ResourceMetrics(Collector):
    """Per named resource (``GET /v1/resources``'s views): its use now as gauges, its admissions, waits,
    pauses and breaker openings as counters. ``collect`` is synchronous: /metrics reads the views first."""

    def __init__(self) -> None:
        self.views: list[dict[str, Any]] = []

    def update(self, views: list[dict[str, Any]]) -> None:
        self.views = list(views)

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, text: str, labels: tuple[str, ...] = ("resource",)) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"backlane_resource_{name}", text, labels=list(labels))

        def counter(name: str, text: str, labels: tuple[str, ...] = ("resource",)) -> CounterMetricFamily:
            return CounterMetricFamily(f"backlane_resource_{name}", text, labels=list(labels))

        running = gauge("running", "jobs using the resource that run now (its concurrency)")
        requests = gauge("requests_in_window", "calls admitted within the resource's window")
        tokens = gauge("tokens_in_window", "tokens admitted within the resource's window (settled)")
        waiting = gauge("waiting_jobs", "jobs waiting for the resource")
        paused = gauge("paused", "1 while the resource is paused after a Retry-After")
        breaker = gauge("breaker", "1 for the breaker's state now", ("resource", "state"))
        admitted = counter("admitted_calls", "calls admitted")
        used = counter("tokens", "tokens admitted (estimates, settled to the real count)")
        waits = counter("waits", "times a call (or a claim) was told to wait, by reason", ("resource", "reason"))
        pauses = counter("pauses", "Retry-After answers that paused the resource")
        opens = counter("breaker_opens", "times the breaker opened")
        for view in self.views:
            name, use, totals = view["name"], view["in_use"], view["totals"]
            running.add_metric([name], use["running"])
            requests.add_metric([name], use["requests"])
            tokens.add_metric([name], use["tokens"])
            waiting.add_metric([name], view["waiting"])
            paused.add_metric([name], 1 if view["paused_until"] else 0)
            for state in ("closed", "open", "half_open"):
                breaker.add_metric([name, state], 1 if view["breaker"]["state"] == state else 0)
            admitted.add_metric([name], totals["admitted"])
            used.add_metric([name], totals["tokens"])
            for reason, n in totals["waits"].items():
                waits.add_metric([name, reason], n)
            pauses.add_metric([name], totals["pauses"])
            opens.add_metric([name], totals["breaker_opens"])
        yield from (running, requests, tokens, waiting, paused, breaker, admitted, used, waits, pauses, opens)


class RedisStats(Collector):
    """Exports the stats hash of Redis. ``collect`` is synchronous, so the /metrics handler reads
    the hash first (``update``) and the collector reports that snapshot."""

    def __init__(self) -> None:
        self.snapshot: dict[str, int] = {}

    def update(self, stats: dict[str, int]) -> None:
        self.snapshot = dict(stats)

    def collect(self) -> Iterator[CounterMetricFamily]:
        names = dict.fromkeys(KNOWN_STATS) | dict.fromkeys(n for n in self.snapshot if _NAME.match(n))
        for name in names:
            help_text = KNOWN_STATS.get(name, f"{name} (from the Redis stats hash)")
            yield CounterMetricFamily(f"backlane_{name}", help_text, value=self.snapshot.get(name, 0))


class Metrics:
    def __init__(self) -> None:
        #: set when this is one of several API processes (api/metrics_processes.py)
        self.shared_dir = shared_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "backlane_http_requests", "HTTP requests answered, by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        reg = self.registry
        # how each gauge sums over several processes (ignored by one process on its own)
        self.sse_clients = Gauge("backlane_sse_clients", "SSE clients connected", registry=reg,
                                 multiprocess_mode="livesum")
        self.sse_snapshots = Counter(
            "backlane_sse_snapshots", "resumes far behind that began with a snapshot", registry=reg
        )
        self.sse_lagged = Counter(
            "backlane_sse_lagged", "times a slow SSE client fell back to catch-up reads", registry=reg
        )
        self.hub_streams = Gauge("backlane_hub_streams_watched", "job streams the hub reads", registry=reg,
                                 multiprocess_mode="livesum")
        self.hub_readers = Gauge("backlane_hub_readers", "hub reader connections", registry=reg,
                                 multiprocess_mode="livesum")
        self.deepest_queue = Gauge(
            "backlane_sse_deepest_queue", "events waiting in the fullest SSE client queue", registry=reg,
            multiprocess_mode="livemax",
        )
        self.redis_stats = RedisStats()
        self.registry.register(self.redis_stats)
        self.job_counts = JobCounts()
        self.registry.register(self.job_counts)
        self.resources = ResourceMetrics()
        self.registry.register(self.resources)

    def watch_hub(self, hub: Hub) -> None:
        """One process: the hub's gauges are read from it at each scrape. Several: see ``copy_hub``."""
        if self.shared_dir is None:
            self.hub_streams.set_function(lambda: hub.watched)
            self.hub_readers.set_function(lambda: hub.readers)
            self.deepest_queue.set_function(lambda: hub.deepest_queue)

    async def copy_hub(self, hub: Hub, every_s: float = HUB_GAUGES_EVERY_S) -> None:
        """Several processes: a scrape reads every process's file, not this process's hub, so the
        hub's numbers are written there every ``every_s`` until cancelled."""
        while True:
            self.hub_streams.set(hub.watched)
            self.hub_readers.set(hub.readers)
            self.deepest_queue.set(hub.deepest_queue)
            await asyncio.sleep(every_s)

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        return generate_latest(summed_registry(self.shared_dir, self.redis_stats, self.job_counts))


class RequestCounter:
    """Counts every HTTP response by the route that matched (not the raw path: ids would explode
    the label set). A streaming response is counted when it ends."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
