"""The cases the model is furthest off, across several saved validation runs.

    python perf/worst_cases.py --from docs/perf/validation_calib6.json,docs/perf/validation_calib7.json
    python perf/worst_cases.py --from A.json,B.json --transport tcp --collective broadcast --top 20

Predicts the rows of each saved ``perf/validate_model.py --json`` file again with the current
model (``validate_model.repredict``, under ``--profile`` or the built-in profile), groups them by
case (transport, collective, algorithm, ranks, ranks per host, size), and prints the cases by
how far the median of predicted / measured over the runs lies from 1, worst first, with how many
runs predicted the case within 25 % and each run's measurement. An error of the same sign in
every run is the model's; one that flips from run to run is the machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Any

from collectives.tuning.profile import current, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.validate_model import repredict  # noqa: E402

Case = tuple[str, str, str, int, int, int]


def cases(paths: list[str], profile_path: str | None, cores: int) -> dict[Case, list[tuple[float, float]]]:
    """Every case of the files: (predicted µs, measured µs) per run that measured it."""
    profile = load(profile_path) if profile_path else current()
    out: dict[Case, list[tuple[float, float]]] = {}
    for path in paths:
        with open(path) as f:
            rows: list[dict[str, Any]] = json.load(f)["rows"]
        for r in repredict(rows, {"now": profile}, cores):
            key = (r["transport"], r["collective"], r["algorithm"], r["ranks"], r["ranks_per_host"], r["size"])
            out.setdefault(key, []).append((r["now_us"], r["measured_us"]))
    return out


def worst(found: dict[Case, list[tuple[float, float]]]) -> list[tuple[float, Case, list[tuple[float, float]]]]:
    """The cases with the median of predicted / measured, furthest from 1 (in log) first."""
    ranked = [(statistics.median(p / m for p, m in runs), case, runs) for case, runs in found.items()]
    return sorted(ranked, key=lambda x: -abs(math.log(x[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="saved validate_model.py --json files, comma-separated")
    parser.add_argument("--profile", default=None, help="a profile file (default: the built-in one)")
    parser.add_argument("--cores", type=int, default=2, help="cores of the machine the runs were measured on")
    parser.add_argument("--transport", default=None)
    parser.add_argument("--collective", default=None)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    ranked = [w for w in worst(cases(args.source.split(","), args.profile, args.cores))
              if (args.transport is None or w[1][0] == args.transport)
              and (args.collective is None or w[1][1] == args.collective)]
    print("# transport collective algorithm ranks (per host) size: median predicted / measured, runs within 25 %,"
          " median predicted us, measured us per run")
    for ratio, (transport, collective, algorithm, p, k, size), runs in ranked[:args.top]:
        inside = sum(abs(pr / m - 1) <= 0.25 for pr, m in runs)
        measured = " ".join(f"{m:.0f}" for _, m in runs)
        print(f"  {transport:<4} {collective:<14} {algorithm:<10} {p:>2} ({k:>2}) {size:>9} B  {ratio:5.2f}"
              f"  {inside}/{len(runs)}  {statistics.median(pr for pr, _ in runs):9.1f}  {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
