"""Backlane on one redis-server and on a three-master Redis Cluster, in one run: jobs/s, events/s, worker
beats/s, and the Redis CPU that each job, each event and each beat costs, per master.

    python3 bench/bench_cluster.py [--jobs 4000] [--events 80000] [--batch 20] [--concurrency 16]
                                   [--event-jobs 48] [--beats 20000] [--reps 3] [--rate]

Starts a private redis-server and a private local Cluster (``backlane/local_cluster.py``, three masters,
no replicas), warms both up, then runs the repetitions interleaved (single, cluster, single, …) and
prints the medians. Each repetition, on an emptied Redis:

1. jobs: ``--jobs`` no-op jobs created with ``JobStore.create`` by ``--concurrency`` tasks (with
   ``--rate``, through the API's per-tenant rate limit, as ``POST /v1/jobs`` does; one tenant), then one
   ``compute.worker.Worker`` in burst mode, concurrency ``--concurrency``, runs them: claim, start,
   completed. Every job must end completed;
2. events: ``--event-jobs`` jobs created and taken (claimed and started), then ``--concurrency`` tasks append
   ``--events`` output events with ``Attempts.append`` (the worker's fenced append), ``--batch`` a call,
   each task to jobs of its own;
3. beats: the worker holding those jobs beats with ``Attempts.beat`` (one ``beat`` script per shard, which
   keeps all its leases there: one pipeline on a single Redis, side by side on a Cluster), until
   ``--beats`` shard beats have run; a shard beat costs the same however many jobs the worker runs;
4. Redis CPU: ``INFO cpu`` (used_cpu_user + used_cpu_sys: the whole redis-server, reading and writing
   sockets included; used_cpu_sys alone is "in the kernel", a split the kernel counts in scheduler
   ticks, so only the sum over the masters is shown) and ``INFO commandstats`` are read on
   every master before and after each part. "Inside commands" is commandstats' usec (wall clock, so a
   server that waits for a core counts the wait) of EVALSHA, which includes the commands its script
   runs (those are not added again), and of the other commands the clients send (BLPOP, SUBSCRIBE,
   SCRIPT LOAD). The spread is the busiest master's CPU over the mean of the masters.

The benchmark process is one Python process: on a small machine it, not Redis, sets the rates; the
CPU µs per job, per event and per beat are what carry over to other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis as sync_redis
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.ratelimit import create_within_rate
from backlane.embedded import RedisServer
from backlane.local_cluster import LocalCluster
from compute.context import JobContext
from compute.leases import Attempts, Started
from compute.registry import job_type
from compute.worker import Worker
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

#: commands the clients send themselves; every other command in commandstats ran inside a script
#: (and its time is already in EVALSHA's)
OUTSIDE_SCRIPTS = {"evalsha", "eval", "script|load", "blpop", "subscribe", "ping", "cluster|slots",
                   "cluster|shards", "command", "command|docs", "client|setname", "client|setinfo", "hello"}
LEASE_MS = 60_000


@job_type("bench.noop", max_attempts=1)
async def noop(ctx: JobContext) -> None:
    return None


@dataclass(frozen=True)
class Sample:
    """One master's counters at one moment."""

    cpu_us: float
    sys_us: float
    command_us: float
    calls: int


@dataclass(frozen=True)
class Cost:
    """What one job (or one event) cost each master, in µs: Redis CPU, of it in the kernel, inside commands;
    and commands."""

    cpu: list[float]
    sys: list[float]
    cmd: list[float]
    calls: list[float]


@dataclass(frozen=True)
class Rep:
    """One repetition on one target."""

    shards: int
    create: float  # jobs/s
    work: float  # jobs/s
    jobs: float  # jobs/s, create and worker together
    events: float  # events/s
    beats: float  # shard beats/s
    per_job: Cost
    per_event: Cost
    per_beat: Cost


@dataclass
class Target:
    name: str
    url: str
    ports: list[int]
    flush: Callable[[], None]


async def sample(node: Redis) -> Sample:
    cpu = await node.info("cpu")
    stats = await node.info("commandstats")
    rows = {name.removeprefix("cmdstat_"): row for name, row in stats.items()}
    return Sample(
        cpu_us=(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])) * 1e6,
        sys_us=float(cpu["used_cpu_sys"]) * 1e6,
        command_us=sum(float(row["usec"]) for name, row in rows.items() if name in OUTSIDE_SCRIPTS),
        calls=sum(int(row["calls"]) for name, row in rows.items() if name != "info"),
    )


async def snapshot(nodes: list[Redis]) -> list[Sample]:
    return list(await asyncio.gather(*(sample(node) for node in nodes)))


def per_unit(before: list[Sample], after: list[Sample], n: int) -> Cost:
    pairs = list(zip(before, after, strict=True))
    return Cost(cpu=[(a.cpu_us - b.cpu_us) / n for b, a in pairs],
                sys=[(a.sys_us - b.sys_us) / n for b, a in pairs],
                cmd=[(a.command_us - b.command_us) / n for b, a in pairs],
                calls=[(a.calls - b.calls) / n for b, a in pairs])


async def create_jobs(store: JobStore, n: int, concurrency: int, rate: bool) -> None:
    new = NewJob(tenant="bench", type=noop.name, input={}, max_attempts=1)

    async def creator(count: int) -> None:
        for _ in range(count):
            if rate:
                await create_within_rate(store, new, None, 1_000_000_000)
            else:
                await store.create(new)

    await asyncio.gather(*(creator(n // concurrency + (i < n % concurrency)) for i in range(concurrency)))


async def start_jobs(store: JobStore, n: int) -> tuple[Attempts, list[Started]]:
    """``n`` running jobs to append to, taken (claimed and started) as a worker does."""
    await create_jobs(store, n, 1, rate=False)
    attempts = Attempts(store, "bench")
    started: list[Started] = []
    while len(started) < n:
        taken, _ = await attempts.take([noop.name], n - len(started), LEASE_MS)
        assert taken, "a created job could not be taken"
        started += taken
    return attempts, started


async def append_events(attempts: Attempts, started: list[Started], calls: int, batch: int,
                        concurrency: int) -> None:
    events = [("output", {"text": "token "})] * batch
    written = {s.job_id: 0 for s in started}

    async def appender(i: int) -> None:
        mine = started[i::concurrency]  # each job is written by one task: its indexes stay in order
        for k in range(i, calls, concurrency):
            s = mine[(k // concurrency) % len(mine)]
            written[s.job_id] = await attempts.append(s.job_id, s.token, written[s.job_id], events)

    await asyncio.gather(*(appender(i) for i in range(concurrency)))


async def run_target(target: Target, args: argparse.Namespace, jobs: int, events: int, beats: int) -> Rep:
    """One repetition on one target: the rates, and per master the Redis cost of a job, an event, a beat."""
    target.flush()
    redis = connect(target.url, 2 * args.concurrency + 16, block_s=1.0)
    nodes = [Redis(host="127.0.0.1", port=port, decode_responses=True) for port in target.ports]
    try:
        settings = Settings(redis_url=target.url)
        store = JobStore(redis, settings)
        await store.agree_on_shards()
        await store.register_types([noop.policy])

        before = await snapshot(nodes)
        t0 = time.perf_counter()
        await create_jobs(store, jobs, args.concurrency, args.rate)
        t1 = time.perf_counter()
        await Worker(settings, redis, {noop.name: noop}, concurrency=args.concurrency).run(burst=True)
        t2 = time.perf_counter()
        after = await snapshot(nodes)
        completed = (await store.counts()).get(f"jobs|{noop.name}|completed", 0)
        if completed != jobs:
            raise RuntimeError(f"{target.name}: {completed} of {jobs} jobs completed")
        per_job = per_unit(before, after, jobs)

        attempts, started = await start_jobs(store, max(args.event_jobs, args.concurrency))
        calls = events // args.batch
        before = await snapshot(nodes)
        t3 = time.perf_counter()
        await append_events(attempts, started, calls, args.batch, args.concurrency)
        t4 = time.perf_counter()
        after = await snapshot(nodes)
        per_event = per_unit(before, after, calls * args.batch)

        rounds = max(1, beats // store.keys.shards)
        before = await snapshot(nodes)
        t5 = time.perf_counter()
        for _ in range(rounds):
            if notices := await attempts.beat(LEASE_MS):
                raise RuntimeError(f"{target.name}: a beat heard {notices}")
        t6 = time.perf_counter()
        after = await snapshot(nodes)
        beaten = rounds * store.keys.shards
        return Rep(shards=store.keys.shards, create=jobs / (t1 - t0), work=jobs / (t2 - t1), jobs=jobs / (t2 - t0),
                   events=calls * args.batch / (t4 - t3), beats=beaten / (t6 - t5), per_job=per_job,
                   per_event=per_event, per_beat=per_unit(before, after, beaten))
    finally:
        await redis.aclose()
        for node in nodes:
            await node.aclose()


async def idle_cpu(targets: list[Target], seconds: float = 2.0) -> dict[str, list[float]]:
    """Each master's CPU µs per second with no client at work (the server's cron; a Cluster's bus)."""
    nodes = {t.name: [Redis(host="127.0.0.1", port=p) for p in t.ports] for t in targets}
    before = {name: await snapshot(ns) for name, ns in nodes.items()}
    await asyncio.sleep(seconds)
    after = {name: await snapshot(ns) for name, ns in nodes.items()}
    for ns in nodes.values():
        for node in ns:
            await node.aclose()
    return {name: [(a.cpu_us - b.cpu_us) / seconds for b, a in zip(before[name], after[name], strict=True)]
            for name in nodes}


def median(reps: list[Rep], value: Callable[[Rep], float]) -> float:
    return statistics.median(value(r) for r in reps)


def per_master(reps: list[Rep], values: Callable[[Rep], list[float]]) -> list[float]:
    """The median of each master's figure."""
    return [statistics.median(values(r)[m] for r in reps) for m in range(len(values(reps[0])))]


def spread(values: list[float]) -> float:
    """The busiest master over the mean of the masters (1.00: perfectly even)."""
    mean = statistics.mean(values)
    return max(values) / mean if mean else float("nan")


def machine() -> str:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, {redis_version.split(' sha=')[0]}, "
            f"redis-py {sync_redis.__version__}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def report(targets: list[Target], results: dict[str, list[Rep]], idle: dict[str, list[float]],
           args: argparse.Namespace) -> None:
    one, many = results["single"], results["cluster"]
    ports = targets[1].ports
    n_leases = max(args.event_jobs, args.concurrency)

    def both(value: Callable[[Rep], float]) -> tuple[float, float]:
        return median(one, value), median(many, value)

    rows: list[tuple[str, tuple[float, float], str]] = [
        (f"create, {args.concurrency} tasks (jobs/s)", both(lambda r: r.create), ",.0f"),
        ("worker: claim → start → completed (jobs/s)", both(lambda r: r.work), ",.0f"),
        ("create → completed, both parts (jobs/s)", both(lambda r: r.jobs), ",.0f"),
        (f"append, {args.batch} event{'s' if args.batch > 1 else ''} a call (events/s)", both(lambda r: r.events),
         ",.0f"),
        (f"beat of a worker running {n_leases} jobs (shard beats/s)", both(lambda r: r.beats), ",.0f"),
        ("Redis CPU per job, all masters (µs)", both(lambda r: sum(r.per_job.cpu)), ",.1f"),
        ("  of which in the kernel (µs)", both(lambda r: sum(r.per_job.sys)), ",.1f"),
        ("  time inside commands (µs)", both(lambda r: sum(r.per_job.cmd)), ",.1f"),
        ("Redis commands per job", both(lambda r: sum(r.per_job.calls)), ",.1f"),
        ("Redis CPU per event, all masters (µs)", both(lambda r: sum(r.per_event.cpu)), ",.2f"),
        ("  of which in the kernel (µs)", both(lambda r: sum(r.per_event.sys)), ",.2f"),
        ("  time inside commands (µs)", both(lambda r: sum(r.per_event.cmd)), ",.2f"),
        ("Redis CPU per shard beat, all masters (µs)", both(lambda r: sum(r.per_beat.cpu)), ",.2f"),
        ("  of which in the kernel (µs)", both(lambda r: sum(r.per_beat.sys)), ",.2f"),
        ("  time inside commands (µs)", both(lambda r: sum(r.per_beat.cmd)), ",.2f"),
        ("job CPU spread over the masters (max/mean)",
         (1.0, spread(per_master(many, lambda r: r.per_job.cpu))), ".2f"),
        ("event CPU spread over the masters (max/mean)",
         (1.0, spread(per_master(many, lambda r: r.per_event.cpu))), ".2f"),
        ("beat CPU spread over the masters (max/mean)",
         (1.0, spread(per_master(many, lambda r: r.per_beat.cpu))), ".2f"),
    ]
    print(f"\nmedians of {args.reps} repetitions: {args.jobs} jobs, {args.events} events, {args.beats} "
          f"shard beats, concurrency {args.concurrency},\n{n_leases} running jobs for the events and beats"
          f"{', creates through the rate limit' if args.rate else ''}\n")
    heads = ["figure", f"1 redis-server ({one[0].shards} shard)",
             f"Cluster, {len(ports)} masters ({many[0].shards} shards)", "cluster/single"]
    lines = [[label, f"{a:{fmt}}", f"{b:{fmt}}", f"{b / a:.2f}" if a else "–"] for label, (a, b), fmt in rows]
    table(heads, lines)

    print(f"\nthe Cluster, each master (medians of {args.reps})\n")
    lines = []
    for label, values, fmt in [("Redis CPU per job (µs)", lambda r: r.per_job.cpu, ".1f"),
                               ("inside commands (µs)", lambda r: r.per_job.cmd, ".1f"),
                               ("commands per job", lambda r: r.per_job.calls, ".1f"),
                               ("Redis CPU per event (µs)", lambda r: r.per_event.cpu, ".2f"),
                               ("inside commands (µs)", lambda r: r.per_event.cmd, ".2f"),
                               ("Redis CPU per shard beat (µs)", lambda r: r.per_beat.cpu, ".2f"),
                               ("inside commands (µs)", lambda r: r.per_beat.cmd, ".2f")]:
        got = per_master(many, values)
        lines.append([label, *(f"{v:{fmt}}" for v in got), f"{spread(got):.2f}"])
    table(["", *(f"127.0.0.1:{p}" for p in ports), "max/mean"], lines)
    print(f"\nidle Redis CPU, not subtracted (µs/s): redis-server {idle['single'][0]:,.0f}; "
          f"Cluster masters {', '.join(f'{v:,.0f}' for v in idle['cluster'])}")


def table(heads: list[str], lines: list[list[str]]) -> None:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(x) for x in column) for column in zip(heads, *lines, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |")
    print("|" + "|".join(("-" * (w + 1)) + (":" if i else "-") for i, w in enumerate(widths)) + "|")
    for line in lines:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        print("| " + " | ".join(cells) + " |")


async def run(targets: list[Target], args: argparse.Namespace) -> None:
    for target in targets:  # scripts loaded, slots mapped, code paths warm
        await run_target(target, args, min(200, args.jobs), min(2000, args.events), min(1000, args.beats))
    idle = await idle_cpu(targets)
    results: dict[str, list[Rep]] = {t.name: [] for t in targets}
    for rep in range(1, args.reps + 1):
        for target in targets:
            got = await run_target(target, args, args.jobs, args.events, args.beats)
            results[target.name].append(got)
            print(f"rep {rep} {target.name:<8} {got.create:,.0f} created/s, {got.work:,.0f} run/s, "
                  f"{got.events:,.0f} events/s, {got.beats:,.0f} beats/s; Redis CPU "
                  f"{sum(got.per_job.cpu):.0f} µs/job, {sum(got.per_event.cpu):.1f} µs/event, "
                  f"{sum(got.per_beat.cpu):.1f} µs/beat", flush=True)
    report(targets, results, idle, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4000, help="no-op jobs per repetition and target")
    parser.add_argument("--events", type=int, default=80000, help="events appended per repetition and target")
    parser.add_argument("--batch", type=int, default=20, help="events per append call")
    parser.add_argument("--concurrency", type=int, default=16, help="creating and appending tasks; worker slots")
    parser.add_argument("--event-jobs", type=int, default=48, help="running jobs the events go to")
    parser.add_argument("--beats", type=int, default=20000, help="shard beats per repetition and target")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rate", action="store_true", help="create through the per-tenant rate limit, as the API")
    args = parser.parse_args()
    if min(args.jobs, args.batch, args.concurrency, args.reps, args.beats) < 1 or args.events < args.batch:
        parser.error("--jobs, --batch, --concurrency, --beats and --reps must be at least 1, --events at least "
                     "--batch")
    print("$ python3 " + shlex.join(sys.argv))
    print(machine())
    server, cluster = RedisServer(), LocalCluster()
    try:
        server.start()
        cluster.start()

        def flush_single() -> None:
            with sync_redis.Redis(port=server.port) as client:
                client.flushall()

        targets = [Target("single", server.url, [server.port], flush_single),
                   Target("cluster", cluster.url, cluster.ports, cluster.flushall)]
        asyncio.run(run(targets, args))
    finally:
        cluster.cleanup()
        server.cleanup()


if __name__ == "__main__":
    main()
