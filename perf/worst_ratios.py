"""Where the cost model is furthest off: saved validation rows grouped by case, worst first.

    python perf/worst_ratios.py docs/perf/validation_calib6.json docs/perf/validation_calib7.json --transport shm
    python perf/worst_ratios.py docs/perf/validation_calib*.json --by ranks,algorithm

Predicts every row of the saved runs (``perf/validate_model.py --json``) again with the current
model and a profile (the built-in one unless ``--profile``), and prints, per group of cases
(by default collective, algorithm, ranks and size), the median ratio measured / predicted over
the runs, its range, and how many runs' cases are within 25 %; ``--top`` groups furthest from 1
(by the median's log), then the runs' medians side by side. A group off the same way in every
run is the model's error; one whose ratio flips from run to run is the machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from collectives.tuning.profile import DEFAULT_FILE, load  # noqa: E402
from perf.validate_model import repredict  # noqa: E402


def ratios(files: list[str], transport: str, keys: list[str], profile: str, cores: int) -> dict[tuple[Any, ...], dict[str, list[float]]]:
    """Per group of ``keys``, per file: the ratios measured / predicted of its rows."""
    groups: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    model = {"now": load(profile)}
    for name in files:
        with open(name) as f:
            saved = json.load(f)
        rows = [r for r in (saved["rows"] if isinstance(saved, dict) else saved) if r["transport"] == transport]
        for r in repredict(rows, model, cores):
            groups[tuple(r[k] for k in keys)][name].append(r["measured_us"] / r["now_us"])
    return groups


def within(x: float) -> bool:
    """Whether a ratio measured / predicted is a prediction within 25 % of the measurement."""
    return 0.8 <= x <= 1 / 0.75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="saved runs of perf/validate_model.py --json")
    parser.add_argument("--transport", default="shm")
    parser.add_argument("--by", default="collective,algorithm,ranks,size", help="the row fields of a group")
    parser.add_argument("--top", type=int, default=30, help="how many groups to print, worst first")
    parser.add_argument("--profile", default=DEFAULT_FILE)
    parser.add_argument("--cores", type=int, default=0, help="the measured machine's cores (default: the rows')")
    args = parser.parse_args(argv)
    keys = args.by.split(",")
    cores = args.cores
    if not cores:
        with open(args.files[0]) as f:
            saved = json.load(f)
        cores = saved.get("cores", 0) if isinstance(saved, dict) else 0
    groups = ratios(args.files, args.transport, keys, args.profile, cores or os.cpu_count() or 1)
    lines = []
    for key, runs in groups.items():
        every = [x for xs in runs.values() for x in xs]
        median = statistics.median(every)
        lines.append((abs(math.log(median)), key, median, min(every), max(every), sum(map(within, every)), len(every),
                      [statistics.median(runs[f]) if f in runs else float("nan") for f in args.files]))
    lines.sort(key=lambda line: -line[0])
    print(f"# {args.transport}: {len(groups)} groups by {args.by}; measured / predicted, worst first")
    print(f"# {' '.join(keys)} | median (min-max) | within 25 % | per run: " + " ".join(os.path.basename(f) for f in args.files))
    for _, key, median, lo, hi, inside, n, per_run in lines[:args.top]:
        print(f"  {' '.join(str(k) for k in key)} | {median:.2f} ({lo:.2f}-{hi:.2f}) | {inside}/{n} | "
              + " ".join(f"{x:.2f}" for x in per_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
