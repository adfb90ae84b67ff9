"""The cost of a message as ranks crowd onto one core, measured and priced.

The model prices ranks beyond a host's cores by queueing them for the cores and by ``wake`` +
``crowd_wake`` per rank sharing a core at every step a rank waited (``tuning/machine.py``). This
script measures that directly: ring all-reduces (every rank sends and receives once per step,
``2 (P - 1)`` steps) of P ranks pinned to one CPU (``taskset -c 0``: P ranks a core) against the
same P over two CPUs, so that k ranks share a core for k = 1 .. 4, and prices every row with the
tuner's own model (``sim.predict`` on ``sim.cluster`` with the layout's cores, as
``perf/validate_model.py`` does), with and without the crowd terms (``wake``, ``crowd_wake``,
``crowd_beta``), so the table shows what the terms add beside what the crowd costs.

    python perf/crowd_cost.py --json docs/perf/crowd_calib32.json   # measure (under the lock), then price
    python perf/crowd_cost.py --from docs/perf/crowd_calib32.json   # price saved rows again

A row's ``per_msg_us`` is µs per step over the ranks per core (µs of one rank's message on its
core, where the core runs its ranks' steps in turn); ``ratio`` is measured over the model's price.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.sim.cluster import cluster  # noqa: E402
from collectives.sim.predict import predict  # noqa: E402
from collectives.tuning.profile import Profile, load  # noqa: E402
from perf import saved_rows  # noqa: E402

LAYOUTS = [(2, 2), (3, 2), (4, 2), (8, 2), (2, 1), (3, 1), (4, 1)]
"""(ranks, CPUs they are pinned to): 1, 1.5, 2 and 4 ranks a core over two CPUs; 2, 3, 4 on one."""
SIZES = (8, 256 << 10)
TRANSPORTS = ("shm", "tcp")


def steps(ranks: int) -> int:
    """Steps of a ring all-reduce: reduce-scatter and all-gather, ``ranks - 1`` each."""
    return 2 * (ranks - 1)


def measure(transports: tuple[str, ...], repeats: int, rounds: int) -> list[dict[str, Any]]:
    """Ring all-reduces of every layout (the ranks inherit this process's CPU mask), one row each."""
    from collectives.timing import measure_repeats

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise SystemExit("crowd_cost: needs two CPUs in this process's mask")
    rows = []
    try:
        for transport in transports:
            for ranks, cpus in LAYOUTS:
                os.sched_setaffinity(0, set(allowed[:cpus]))
                cases = [("all_reduce", n, "ring") for n in SIZES]
                started = time.strftime("%H:%M:%S", time.gmtime())
                for (_, size, _), times in zip(cases, measure_repeats(cases, ranks, transport, rounds=rounds,
                                                                      repeats=repeats)):
                    times = sorted(t * 1e6 for t in times)
                    rows.append({"transport": transport, "ranks": ranks, "cpus": cpus, "size": size,
                                 "measured_us": times[len(times) // 2], "repeats_us": times, "utc": started})
    finally:
        os.sched_setaffinity(0, set(allowed))
    return rows


def without_crowd(profile: Profile) -> Profile:
    """``profile`` with every transport's crowd terms (``wake``, ``crowd_wake``, ``crowd_beta``) at 0."""
    return dataclasses.replace(profile, transports={
        name: dataclasses.replace(costs, wake=0.0, crowd_wake=0.0, crowd_beta=0.0)
        for name, costs in profile.transports.items()})


def price(row: dict[str, Any], profile: Profile) -> float:
    """µs of the row's call on ``profile``'s model, its ranks on ``cpus`` cores of one host."""
    c = cluster(row["transport"], row["ranks"], None, profile, row["cpus"])
    return predict("all_reduce", "ring", row["size"], c, row["transport"], profile) * 1e6


def per_core(row: dict[str, Any]) -> float:
    """Ranks per core of the row's layout (at least 1: one rank per core waits alone)."""
    return max(1.0, row["ranks"] / row["cpus"])


def table(rows: list[dict[str, Any]], profile: Profile) -> list[str]:
    """One line per row: measured and priced µs per step and per message of the core, their ratio,
    and what the crowd terms add to the price."""
    bare = without_crowd(profile)
    lines = [f"{'tr':<4}{'P':>3}{'cpus':>5}{'k':>5}{'size':>8}  {'meas us':>9}{'model':>9}{'bare':>9}"
             f"{'ratio':>7}  {'meas/msg':>9}{'model/msg':>10}{'crowd/msg':>10}"]
    for r in sorted(rows, key=lambda r: (r["transport"], r["size"], per_core(r), r["cpus"])):
        model, nocrowd = price(r, profile), price(r, bare)
        k, s = per_core(r), steps(r["ranks"])
        lines.append(f"{r['transport']:<4}{r['ranks']:>3}{r['cpus']:>5}{k:>5.1f}{r['size']:>8}  "
                     f"{r['measured_us']:>9.1f}{model:>9.1f}{nocrowd:>9.1f}{r['measured_us'] / model:>7.2f}  "
                     f"{r['measured_us'] / s / k:>9.1f}{model / s / k:>10.1f}{(model - nocrowd) / s / k:>10.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    saved_rows.add_arguments(parser, repeats=3, rounds=5, cores=False)  # it pins its own CPUs
    args = parser.parse_args(argv)
    profile = load(args.profile)
    rows, _ = saved_rows.rows_and_cores(args, "perf/crowd_cost.py", lambda: measure(
        tuple(args.transports.split(",")), args.repeats, args.rounds))
    print("\n".join(table(rows, profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
