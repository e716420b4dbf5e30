"""SSE fan-out, side by side: `backlane api` against two hand-rolled SSE servers on the same streams.

    python3 bench/bench_fanout.py [--reps 3] [--rates 5000,10000,20000,30000,40000] [--clients 1000]
                                  [--jobs 100] [--seconds 5] [--big] [--quick]

The servers (each run under uvicorn with uvloop and httptools, one process, fresh for every
measurement): Backlane's API; bench/baselines/shared_sse.py (one XREAD reader per process fanning
out to per-client queues) and bench/baselines/naive_sse.py (an XREAD BLOCK loop per client). All
read the job streams Backlane's workers write. One private redis-server; the same load generator
(bench/fanout_client.py: two processes of lean raw-socket SSE clients) and the same writer (fenced
appends, as a worker writes) for all three.

Each repetition, servers interleaved (for each rate, each server in turn):
1. fan-out: clients on live jobs (clients ÷ jobs followers per job); outputs whose text is the write
   time, at rate ÷ followers written per second, for --seconds after every client has connected and
   caught up: p50/p99 write → client latency, events lost (expected - received after a 5 s grace),
   delivered/s, server CPU µs per delivered event (/proc utime+stime), the server's Redis connections
   (CLIENT LIST by name), the load generators' own CPU;
2. memory per idle connection: RSS with --idle-clients connections on jobs that get no events,
   minus RSS with none, ÷ clients;
3. resume: one client reads a finished job of --resume-events outputs from the start (first byte,
   first event, all text), then 10 at once; Backlane with ?compact=false and with its default. The
   text rebuilt from the stream (``snapshot`` replaces, ``output`` appends) must equal the written one;
4. single job: a `backlane worker` (bench/fanout_jobs.py) writes --single-events outputs as fast as
   it can, one follower: events/s from the job's start to the terminal event at the follower;
5. --big: Backlane alone, 10,000 connections on one process at 5k delivered events/s.

Then the medians, the highest rate each server held (p99 ≤ 50 ms, nothing lost) and Backlane's
figures against their targets. The machine's cores are shared by Redis, the server, the load
generators and the writer: the load generators' CPU is printed so a saturated client shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from bench.fanout_measures import Bench, fanout, finished_job, idle_memory, resume, single_job
from bench.fanout_processes import BACKLANE, KINDS, LOGS, LoadGenProcess, spawn, stop, stop_all
from bench.fanout_report import Results, summary
from compute.leases import Attempts
from shared.connection import connect
from shared.jobs import JobStore
from shared.settings import Settings

FULL = {"reps": 3, "rates": "5000,10000,20000,30000,40000", "clients": 1000, "jobs": 100, "seconds": 5.0,
        "idle_clients": 1000, "resume_events": 100_000, "single_events": 100_000}
QUICK = {"reps": 1, "rates": "5000,20000", "clients": 200, "jobs": 20, "seconds": 2.0,
         "idle_clients": 200, "resume_events": 20_000, "single_events": 20_000}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w.removeprefix("v=") for w in redis if w.startswith("v=")), "?")
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, redis-server {version}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def raise_fd_limit(need: int) -> bool:
    """Raises RLIMIT_NOFILE (the children inherit it) to at least ``need``; False when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return True
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return True
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # past the hard limit: only root may
        return True
    except (ValueError, OSError):
        return False


async def run(args: argparse.Namespace, url: str) -> Results:
    redis = connect(url, 32)
    store = JobStore(redis, Settings(redis_url=url))
    b = Bench(url, redis, store, Attempts(store, "bench-writer"), [])
    results = Results(rates=args.rate_list)
    worker = None
    try:
        b.loadgens = [await LoadGenProcess(i).start() for i in range(args.loadgens)]
        job = await finished_job(b, args.resume_events)
        warm = await finished_job(b, 2000)  # past one page: the warm-up takes the streaming path too
        for rep in range(1, args.reps + 1):
            print(f"repetition {rep} of {args.reps}: {args.clients} clients on {args.jobs} jobs, "
                  f"{args.seconds:g} s per rate", flush=True)
            for rate in args.rate_list:
                for kind in KINDS:
                    results.fanout[kind.name, rate].append(
                        await fanout(b, kind, rate, args.clients, args.jobs, args.seconds))
            for kind in KINDS:
                results.idle[kind.name].append(await idle_memory(b, kind, args.idle_clients, args.jobs))
            for kind in KINDS:
                variants = ({"Backlane": "?compact=false", "Backlane default": ""} if kind is BACKLANE
                            else {kind.name: ""})
                for label, figures in (await resume(b, kind, variants, job, warm, args.concurrent)).items():
                    results.resume[label].append(figures)
            worker = spawn("worker", [sys.executable, "-m", "backlane", "worker", "--import", "bench.fanout_jobs",
                                      "--concurrency", "1"],
                           {"BACKLANE_REDIS_URL": url, "BACKLANE_LOG_LEVEL": "WARNING"})
            for kind in KINDS:
                results.single[kind.name].append(await single_job(b, kind, args.single_events))
            await asyncio.to_thread(stop, worker)
            worker = None
            if args.big:
                print(f"    Backlane, {args.big_clients:,} connections on one process:", flush=True)
                results.big.append(await fanout(b, BACKLANE, args.big_rate, args.big_clients, args.jobs,
                                                args.seconds))
    finally:
        if worker is not None:
            await asyncio.to_thread(stop, worker)
        for lg in b.loadgens:
            await lg.stop()
        await redis.aclose()
    return results


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: " + ", ".join(
        f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--reps", type=int, help=f"repetitions (default {FULL['reps']})")
    parser.add_argument("--rates", help=f"delivered events/s, comma-separated (default {FULL['rates']})")
    parser.add_argument("--clients", type=int, help=f"SSE clients (default {FULL['clients']})")
    parser.add_argument("--jobs", type=int, help=f"live jobs they follow (default {FULL['jobs']})")
    parser.add_argument("--seconds", type=float, help=f"of steady writing per rate (default {FULL['seconds']})")
    parser.add_argument("--idle-clients", type=int, help=f"for memory per connection (default "
                                                          f"{FULL['idle_clients']})")
    parser.add_argument("--resume-events", type=int, help=f"outputs of the resumed job ({FULL['resume_events']})")
    parser.add_argument("--single-events", type=int, help=f"outputs of the single job ({FULL['single_events']})")
    parser.add_argument("--concurrent", type=int, default=10, help="resumers at once (default 10)")
    parser.add_argument("--loadgens", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--big", action="store_true", help="also 10,000 connections on one Backlane process")
    parser.add_argument("--big-clients", type=int, default=10_000)
    parser.add_argument("--big-rate", type=float, default=5000)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.rate_list = [float(r) for r in str(args.rates).split(",") if r.strip()]
    for name in ("reps", "clients", "jobs", "idle_clients", "resume_events", "single_events", "concurrent",
                 "loadgens", "big_clients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.clients % args.jobs or not args.rate_list or min(args.rate_list) <= 0 or args.seconds <= 0:
        parser.error("--clients must be a multiple of --jobs; --rates and --seconds must be positive")
    return args


def main() -> None:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below stops the children
    # the naive server holds a Redis connection per client beside the client's own socket
    if not raise_fd_limit(max(args.clients, args.idle_clients) * 2 + 1000):
        sys.exit(f"cannot raise the open-files limit to {max(args.clients, args.idle_clients) * 2 + 1000}")
    if args.big and not raise_fd_limit(args.big_clients + 1000):
        print(f"--big skipped: the open-files limit ({resource.getrlimit(resource.RLIMIT_NOFILE)[1]}) cannot be "
              f"raised to {args.big_clients + 1000} for {args.big_clients:,} connections", flush=True)
        args.big = False
    print(f"machine: {machine()}", flush=True)
    server = RedisServer().start()
    try:
        import uvloop

        results = uvloop.run(run(args, server.url))
        summary(results, args)
        shutil.rmtree(LOGS, ignore_errors=True)
    except KeyboardInterrupt:
        sys.exit(f"interrupted; child process logs: {LOGS}")
    except BaseException:
        print(f"child process logs: {LOGS}", file=sys.stderr)
        raise
    finally:
        stop_all()
        server.cleanup()


if __name__ == "__main__":
    main()

