"""What bench/bench_fanout.py prints at the end: medians over the repetitions, the highest rate each
server held, and Backlane's figures against their targets (met or not, as measured: the targets are
fixed here, never tuned to a run)."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings

#: a rate is held when the median p99 stays at or under this and no repetition lost an event
HELD_P99_MS = 50.0
#: the hub's readers per shard (api/hub.py ``max_readers``), beside the API's pool
HUB_READERS = 4
SERVERS = ("Backlane", "shared", "naive")

Rows = list[dict[str, Any]]


@dataclass
class Results:
    rates: list[float]
    fanout: defaultdict[tuple[str, float], Rows] = field(default_factory=lambda: defaultdict(list))
    idle: defaultdict[str, Rows] = field(default_factory=lambda: defaultdict(list))
    resume: defaultdict[str, Rows] = field(default_factory=lambda: defaultdict(list))
    single: defaultdict[str, Rows] = field(default_factory=lambda: defaultdict(list))
    big: Rows = field(default_factory=list)


def med(rows: Rows, key: str) -> float:
    values = [r[key] for r in rows if not math.isnan(r[key])]
    return statistics.median(values) if values else float("nan")


def held(results: Results, server: str, rate: float) -> bool:
    rows = results.fanout[server, rate]
    return bool(rows) and med(rows, "p99") <= HELD_P99_MS and all(r["lost"] == 0 and r["failed"] == 0 for r in rows)


def highest_held(results: Results, server: str) -> float:
    return max((rate for rate in results.rates if held(results, server, rate)), default=0.0)


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return float("inf") if b == 0 and a > 0 else float("nan")
    return a / b


def _fmt(value: float, spec: str = ",.1f") -> str:
    return "n/a" if math.isnan(value) else "∞" if math.isinf(value) else format(value, spec)


def fanout_table(results: Results, reps: int) -> None:
    print(f"\nfan-out, medians of {reps} repetition(s) (lost, failed: summed over them)")
    print(f"{'server':<9}{'rate/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'lost':>8}{'failed':>7}{'delivered/s':>13}"
          f"{'written/s':>11}{'CPU µs/ev':>11}{'Redis':>7}{'loadgen %':>10}  held")
    for rate in results.rates:
        for server in SERVERS:
            rows = results.fanout[server, rate]
            if not rows:
                continue
            print(f"{server:<9}{rate:>8,.0f}{_fmt(med(rows, 'p50')):>9}{_fmt(med(rows, 'p99')):>9}"
                  f"{sum(r['lost'] for r in rows):>8}{sum(r['failed'] for r in rows):>7}"
                  f"{_fmt(med(rows, 'delivered'), ',.0f'):>13}{_fmt(med(rows, 'written'), ',.0f'):>11}"
                  f"{_fmt(med(rows, 'cpu_us')):>11}{_fmt(med(rows, 'conns'), '.0f'):>7}"
                  f"{_fmt(med(rows, 'loadgen_cpu'), '.0f'):>10}  {'yes' if held(results, server, rate) else 'no'}")
    print(f"highest rate held (p99 ≤ {HELD_P99_MS:g} ms, nothing lost): " + ", ".join(
        f"{s} {highest_held(results, s):,.0f}/s" for s in SERVERS))


def other_tables(results: Results) -> None:
    print(f"\n{'figure (medians)':<44}" + "".join(f"{s:>18}" for s in (*SERVERS, "Backlane default")))

    def row(label: str, table: defaultdict[str, Rows], key: str, spec: str = ",.1f") -> None:
        cells = "".join(f"{_fmt(med(table[s], key), spec) if table[s] else '':>18}"
                        for s in (*SERVERS, "Backlane default"))
        print(f"{label:<44}{cells}")

    row("idle memory per connection (KB)", results.idle, "kb_per_conn")
    row("Redis connections with 10 idle clients", results.idle, "conns_10", ".0f")
    row("Redis connections with N idle clients", results.idle, "conns_n", ".0f")
    row("resume: first byte (ms)", results.resume, "first_byte", ".2f")
    row("resume: first event (ms)", results.resume, "first_event", ".2f")
    row("resume: all text (ms)", results.resume, "all_text")
    row("resume: 10 at once, all done (ms)", results.resume, "concurrent")
    row("resume: events received", results.resume, "events", ",.0f")
    row("single job, end to end (events/s)", results.single, "rate", ",.0f")
    row("single job, worker's write rate (events/s)", results.single, "worker_rate", ",.0f")
    if results.big:
        big = results.big
        print(f"\nBacklane, 10,000-connection run(s): p50 {_fmt(med(big, 'p50'))} ms, p99 {_fmt(med(big, 'p99'))} ms, "
              f"lost {sum(r['lost'] for r in big)}, failed {sum(r['failed'] for r in big)}, delivered "
              f"{_fmt(med(big, 'delivered'), ',.0f')}/s, CPU {_fmt(med(big, 'cpu_us'))} µs/ev, Redis conns "
              f"{_fmt(med(big, 'conns'), '.0f')}, load gen CPU {_fmt(med(big, 'loadgen_cpu'), '.0f')}%")


def targets(results: Results, args: argparse.Namespace) -> None:
    lines: list[tuple[str, str, str, bool]] = []  # (figure, values, target, met)

    def add(figure: str, values: str, target: str, met: bool) -> None:
        lines.append((figure, values, target, met))

    b_held, s_held = highest_held(results, "Backlane"), highest_held(results, "shared")
    r = ratio(b_held, s_held)
    add("highest rate held, Backlane ÷ shared", f"{b_held:,.0f} ÷ {s_held:,.0f} = {_fmt(r, '.2f')}×", "≥ 2×",
        b_held > 0 and r >= 2)
    at = min(results.rates, key=lambda rate: abs(rate - 20000))
    b_cpu, s_cpu = med(results.fanout["Backlane", at], "cpu_us"), med(results.fanout["shared", at], "cpu_us")
    r = ratio(b_cpu, s_cpu)
    add(f"CPU per delivered event at {at:,.0f}/s, Backlane ÷ shared",
        f"{_fmt(b_cpu)} ÷ {_fmt(s_cpu)} µs = {_fmt(r, '.2f')}×", "≤ 0.5×", r <= 0.5)
    kb, s_kb = med(results.idle["Backlane"], "kb_per_conn"), med(results.idle["shared"], "kb_per_conn")
    add("idle memory per connection, Backlane", f"{_fmt(kb)} KB (shared {_fmt(s_kb)}, {_fmt(ratio(kb, s_kb), '.2f')}×)",
        "≤ 32 KB", kb <= 32)
    bound = Settings().redis_max_connections + HUB_READERS
    counts = [row["conns"] for rate in results.rates for row in results.fanout["Backlane", rate]]
    counts += [row["conns_n"] for row in results.idle["Backlane"]] + [row["conns"] for row in results.big]
    most = max(counts, default=0)
    clients = max([args.clients, args.idle_clients] + ([args.big_clients] if results.big else []))
    others = ", ".join(f"{s} {_fmt(med(results.idle[s], 'conns_n'), '.0f')}" for s in ("shared", "naive"))
    add(f"Redis connections, Backlane, up to {clients:,} clients", f"at most {most} (idle {args.idle_clients:,}: "
        f"{others})", f"≤ {bound} (pool + hub readers)", 0 < most <= bound)
    for label in ("Backlane", "Backlane default"):
        rows, shared = results.resume[label], results.resume["shared"]
        for key, name, limit in (("first_byte", "first byte", 10), ("all_text", "all text", 100),
                                 ("concurrent", f"{args.concurrent} at once", 300)):
            value = med(rows, key)
            add(f"resume {name}, {label}" + (" (compact=false)" if label == "Backlane" else ""),
                f"{_fmt(value)} ms (shared {_fmt(med(shared, key))}, {_fmt(ratio(value, med(shared, key)), '.2f')}×)",
                f"≤ {limit} ms", value <= limit)
    rate = med(results.single["Backlane"], "rate")
    add("single job, end to end, Backlane", f"{_fmt(rate, ',.0f')} events/s (shared "
        f"{_fmt(med(results.single['shared'], 'rate'), ',.0f')})", "≥ 40,000/s", rate >= 40000)
    print("\ntargets" + (" (a --quick smoke run: not the sizes the targets are for)" if args.quick else ""))
    for figure, values, target, met in lines:
        print(f"  {'MET    ' if met else 'NOT MET'}  {figure}: {values}; target {target}")
    print(f"{sum(m for *_, m in lines)} of {len(lines)} targets met")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores: a load above "
          f"that means other work shared them)")


def summary(results: Results, args: argparse.Namespace) -> None:
    fanout_table(results, args.reps)
    other_tables(results)
    targets(results, args)
