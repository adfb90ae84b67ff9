"""The tuner's acceptance check for every collective at once, measured once and scored offline.

    python perf/tuner_check.py --json docs/perf/choices.json            # measure (a few minutes)
    python perf/tuner_check.py --from docs/perf/choices.json [--profile FILE]   # score, no measuring
    python perf/tuner_check.py --transports tcp --sizes 16M,32M,64M --json big.json   # these sizes only
    python perf/tuner_check.py --ranks 4,8 --transports tcp --hosts 2 --json two.json   # two hosts each
    python perf/tuner_check.py --ranks 4,8 --transports tcp --hosts 2 --netns --json two.json   # as namespaces (root)

Measuring: for each transport and world size, one world times every algorithm that can run
each collective (``tuner.candidates``; direct over shm) and the automatic choice, at every size
of an ``all_reduce_perf -b 8 -e 64M -f 4`` sweep, interleaved (``collectives.timing``: fastest
of a few batches, slowest rank), and keeps every time with the load average. Scoring: the
tuner's pick under a profile (the current one, or ``--profile``) is looked up among the times
measured in the same run and compared with the best of them (``perf.algo_all.within``: 10 %,
or 5 µs below 64 KiB). ``--hosts 2`` runs each tcp world as two hosts of half its ranks
instead (host identities on this machine, as ``validate_model.py --hosts`` does: shared memory
within a host, TCP across; the two-level all-reduce among the candidates); with ``--netns``
the two hosts are network namespaces joined by a veth pair (``collectives.testing.netns``:
TCP across over the pair's addresses; rows say ``"netns": true``). Picks are a pure function
of profile and model, so a model or profile change can be scored against saved measurements without measuring again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from collectives.testing.netns import Host, two_hosts
from collectives.timing import COLLECTIVES, measure_repeats
from collectives.tuning import tuner
from collectives.tuning.profile import Profile, current, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.algo_all import within  # noqa: E402  (the acceptance rule: 10 %, or 5 µs below 64 KiB)
from perf.colls import sweep_sizes  # noqa: E402
from perf.options import parse_size  # noqa: E402
from perf.repeats import agreement  # noqa: E402

SIZES = sweep_sizes(8, 64 << 20, 0, 4)  # all_reduce_perf -b 8 -e 64M -f 4: 8 B .. 32 MiB by 4


def measured_sizes(text: str | None) -> list[int]:
    """The sizes ``--sizes`` names (``16M,32M,64M``: nccl-tests' units), or the sweep's (``SIZES``) without it."""
    if not text:
        return list(SIZES)
    sizes = [parse_size(s) for s in text.split(",")]
    if any(n <= 0 for n in sizes):
        raise ValueError(f"--sizes: {text!r} is not a list of positive sizes (e.g. 16M,32M,64M)")
    return sizes


def measure_all(transports: list[str], ranks: list[int], collectives: list[str], sizes: list[int],
                rounds: int, repeats: int = 1, hosts: int = 0,
                places: Sequence[Host] | None = None) -> list[dict[str, Any]]:
    """Every world's rows; with ``hosts`` > 1, each tcp world of p ranks as that many hosts of
    p / hosts ranks instead (host identities on this machine, or the namespaces ``places``:
    shared memory within, TCP across; rows then say ``ranks_per_host``)."""
    rows: list[dict[str, Any]] = []
    for transport in transports:
        for p in ranks:
            per_host = p // hosts if hosts > 1 else 0
            if per_host and (transport != "tcp" or p % hosts or per_host < 2):
                continue  # two hosts: tcp between them, at least two ranks on each
            windows = transport == "shm"
            cases = [(c, n, a) for c in collectives for n in sizes
                     for a in [*tuner.candidates(c, windows, bool(per_host)), "auto"]]
            names = [places[r // per_host].name if places else f"h{r // per_host}" for r in range(p)] \
                if per_host else None
            load_before = os.getloadavg()[0]
            times = measure_repeats(cases, p, "auto" if per_host else transport, rounds=rounds, timeout=1800,
                                    repeats=repeats, hosts=names, netns=places if per_host else None)
            load_after = os.getloadavg()[0]
            by_key: dict[tuple[str, int], dict[str, list[float]]] = {}
            for (c, n, a), ts in zip(cases, times):
                by_key.setdefault((c, n), {})[a] = [t * 1e6 for t in ts]
            for (c, n), measured in by_key.items():
                row: dict[str, Any] = {"transport": transport, "ranks": p, "collective": c, "size": n,
                                       "times_us": {a: statistics.median(ts) for a, ts in measured.items()},
                                       "load": [round(load_before, 2), round(load_after, 2)]}
                if per_host:
                    row["ranks_per_host"] = per_host
                if per_host and places:
                    row["netns"] = True
                if repeats > 1:
                    row["repeats_us"] = {a: [round(t, 2) for t in ts] for a, ts in measured.items()}
                rows.append(row)
            layout = f" ({hosts} hosts of {per_host})" if per_host else ""
            print(f"# {transport} {p} ranks{layout}: {len(cases)} cases, load average {load_before:.2f} ->"
                  f" {load_after:.2f}", flush=True)
    return rows


def score(rows: list[dict[str, Any]], profile: Profile) -> tuple[list[str], int]:
    """Lines of a table (one per transport x ranks, a column per collective) and the count within."""
    table: dict[tuple[str, int, int], dict[str, list[int]]] = {}
    misses = []
    for r in rows:
        times = {a: t for a, t in r["times_us"].items() if a != "auto"}
        k = r.get("ranks_per_host", 0)  # several hosts of k ranks (0: one host)
        windows = r["transport"] == "shm" and not k
        priced = profile if r.get("netns") else profile.over_loopback()  # host identities: loopback between them
        pick = tuner.choose(r["collective"], r["size"], r["ranks"], r["transport"], windows, k, priced)
        if pick not in times:  # a run from before the direct engine took this collective (reduce, all_to_all)
            pick = tuner.choose(r["collective"], r["size"], r["ranks"], r["transport"], False, k, priced)
        best = min(times, key=lambda a: times[a])
        ok = within(times[pick] * 1e-6, times[best] * 1e-6, r["size"])
        cell = table.setdefault((r["transport"], r["ranks"], k), {}).setdefault(r["collective"], [0, 0])
        cell[0] += ok
        cell[1] += 1
        if not ok:
            layout = f"{r['ranks']}" + (f" ({k}/host)" if k else "")
            misses.append(f"  {r['transport']:<4} {layout} {r['collective']:<14} {r['size']:>9} B  picks {pick:<12}"
                          f" {times[pick]:10.1f} us  best {best:<12} {times[best]:10.1f} us")
    collectives = [c for c in COLLECTIVES if any(c in cells for cells in table.values())]
    lines = ["| transport | ranks | " + " | ".join(collectives) + " |", "|---|---|" + "---|" * len(collectives)]
    for (transport, p, k), cells in sorted(table.items()):
        ranks = f"{p} ({k} per host)" if k else f"{p}"
        lines.append(f"| {transport} | {ranks} | " + " | ".join(f"{cells[c][0]}/{cells[c][1]}" if c in cells else "-"
                                                           for c in collectives) + " |")
    inside = sum(cell[0] for cells in table.values() for cell in cells.values())
    return lines + [f"# tuner within 10 % of the best (5 us below 64 KiB): {inside} of {len(rows)}"] + misses, inside


def repeat_scores(rows: list[dict[str, Any]], profile: Profile) -> str:
    """The picks scored against each repeat alone: how much of a score is the run's own noise."""
    counts = []
    for k in range(min(len(ts) for r in rows for ts in r["repeats_us"].values())):
        one = [{**r, "times_us": {a: ts[k] for a, ts in r["repeats_us"].items()}} for r in rows]
        counts.append(str(score(one, profile)[1]))
    # the best algorithm of repeat 1 taken as the pick and scored against repeat 2: the run's own ceiling
    ceiling = 0
    for r in rows:
        first = {a: ts[0] for a, ts in r["repeats_us"].items() if a != "auto"}
        second = {a: ts[1] for a, ts in r["repeats_us"].items() if a != "auto"} if len(first) and all(
            len(ts) > 1 for ts in r["repeats_us"].values()) else first
        pick, best = min(first, key=first.__getitem__), min(second, key=second.__getitem__)
        ceiling += within(second[pick] * 1e-6, second[best] * 1e-6, r["size"])
    return (f"# scored against each repeat alone: {', '.join(counts)} of {len(rows)}; repeat 1's best scored against"
            f" repeat 2 (the run's own ceiling): {ceiling}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", default=None,
                        help="score saved measurements (files, comma-separated) instead of measuring")
    parser.add_argument("--profile", default=None, help="score the picks of this profile (default: the current one)")
    parser.add_argument("--margin", type=float, default=None, help="instead of the profile's margin (0.1: 10 %%)")
    parser.add_argument("--cores", type=int, default=None, help="instead of the profile's cores (0: not modelled)")
    parser.add_argument("--ranks", default="2,3,4")
    parser.add_argument("--transports", default="shm,tcp")
    parser.add_argument("--collectives", default=",".join(COLLECTIVES))
    parser.add_argument("--sizes", default=None,
                        help="measure these sizes (comma-separated, e.g. 16M,32M,64M) instead of the 8 B - 32 MiB sweep")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure everything this many times over, each time the median of its repeats")
    parser.add_argument("--hosts", type=int, default=0,
                        help="run each tcp world as this many hosts of ranks / hosts (host identities on this"
                             " machine: shared memory within, TCP across)")
    parser.add_argument("--netns", action="store_true",
                        help="with --hosts 2: the hosts are two network namespaces joined by a veth pair (root)")
    parser.add_argument("--json", default=None, help="keep the measurements here")
    args = parser.parse_args(argv)
    if args.netns and args.hosts != 2:
        parser.error("--netns makes two hosts: give --hosts 2")
    profile = load(args.profile) if args.profile else current()
    if args.margin is not None:
        profile = dataclasses.replace(profile, margin=args.margin)
    if args.cores is not None:
        profile = dataclasses.replace(profile, cores=args.cores)
    try:
        sizes = measured_sizes(args.sizes)
    except ValueError as e:
        parser.error(str(e))
    if args.source:
        rows = []
        for path in args.source.split(","):
            with open(path) as fh:
                rows += json.load(fh)["rows"]
    else:
        with two_hosts() if args.netns else nullcontext() as places:
            rows = measure_all(args.transports.split(","), [int(r) for r in args.ranks.split(",")],
                               args.collectives.split(","), sizes, args.rounds, args.repeats, args.hosts, places)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"rows": rows}, fh, indent=1)
                fh.write("\n")
    lines, _ = score(rows, profile)
    print(f"# {profile.source}; margin {profile.margin:g}, cores {profile.cores or 'not modelled'}")
    repeated = [ts for r in rows for a, ts in r.get("repeats_us", {}).items() if a != "auto"]
    if repeated:
        print(agreement(repeated, "times"))
        print(repeat_scores(rows, profile))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
