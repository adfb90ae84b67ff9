"""The cases the model is furthest off, across several saved validation runs.

    python perf/worst_cases.py --from docs/perf/validation_calib6.json,docs/perf/validation_calib7.json
    python perf/worst_cases.py docs/perf/validation_calib*.json --transport tcp --collective broadcast --top 20
    python perf/worst_cases.py docs/perf/validation_calib*.json --transport shm --by ranks,algorithm --measured-over-predicted
    python perf/worst_cases.py docs/perf/validation_calib2[2-5]_shm.json --by family,crowded,band  # coarse classes
    python perf/worst_cases.py docs/perf/validation_calib26_tcp.json --by ranks --against OTHER.json  # one machine?

Predicts the rows of each saved ``perf/validate_model.py --json`` file again with the current
model (``validate_model.repredict``, under ``--profile`` or the built-in profile), groups them by
``--by`` (by default the whole case: transport, collective, algorithm, ranks, ranks per host,
size; or coarser: ``DERIVED``), and prints the groups by how far the median ratio over the runs lies
from 1 (in log), worst first: the median and range, how many rows are within 25 %, how many are
predicted more than 25 % under and over, the median prediction, and each run's median ratio. An
error of the same sign in every run is the model's; one that flips from run to run is the machine's.
The ratio is predicted / measured, or measured / predicted with ``--measured-over-predicted``.
With ``--against``, also each world's measurements over the same cases in other runs. With
``--undisturbed`` the rows measured beside other work (``perf/disturbed.py``) are set aside, in
both, and counted and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from collectives.tuning.profile import current, load  # noqa: E402
from perf import disturbed  # noqa: E402
from perf.validate_model import repredict  # noqa: E402

CASE = ("transport", "collective", "algorithm", "ranks", "ranks_per_host", "size")
"""The row fields of one case."""

LARGE_BYTES = 1 << 20
"""Where ``band`` says large: the validation runs' sizes 8 B and 64 KiB are small, 1 and 4 MiB large."""

DERIVED: dict[str, Callable[[dict[str, Any], int], str]] = {
    "family": lambda row, cores: "direct" if row["algorithm"] == "direct" else "schedule",
    "crowded": lambda row, cores: "crowded" if row["ranks"] > cores else "a core each",
    "band": lambda row, cores: "large" if row["size"] >= LARGE_BYTES else "small",
}
"""Coarser fields ``--by`` may name beside the rows' own: the direct engine or a schedule (ring,
tree, recursive), whether the ranks outnumber the measured machine's cores, small or large."""

Runs = dict[str, list[tuple[float, float]]]
"""Per saved file, the (predicted µs, measured µs) of a group's rows in it."""


def _rows(path: str, undisturbed: float | None = None, aside: list[str] | None = None) -> list[dict[str, Any]]:
    """A saved run's rows; with ``undisturbed``, those ``disturbed.split`` keeps at that threshold,
    what it set aside described in ``aside``."""
    with open(path) as f:
        saved = json.load(f)
    rows: list[dict[str, Any]] = saved["rows"] if isinstance(saved, dict) else saved
    if undisturbed is None:
        return rows
    kept, set_aside, unrecorded = disturbed.split(rows, undisturbed)
    if aside is not None:
        aside += disturbed.describe(rows, set_aside, unrecorded, undisturbed, os.path.basename(path))
    return kept


def saved_cores(path: str) -> int:
    """The cores a saved run records for its machine (2, this machine's, where it records none)."""
    with open(path) as f:
        saved = json.load(f)
    return int(saved.get("cores") or 2) if isinstance(saved, dict) else 2


def cases(paths: list[str], profile_path: str | None, cores: int, by: tuple[str, ...] = CASE,
          transport: str | None = None, collective: str | None = None, undisturbed: float | None = None,
          aside: list[str] | None = None) -> dict[tuple[Any, ...], Runs]:
    """Per group of the rows' ``by`` fields (of ``transport`` and ``collective`` where given),
    per file: (predicted µs, measured µs) of its rows (with ``undisturbed``, of those ``_rows`` keeps)."""
    profile = load(profile_path) if profile_path else current()
    out: dict[tuple[Any, ...], Runs] = {}
    for path in paths:
        rows = [r for r in _rows(path, undisturbed, aside) if (transport is None or r["transport"] == transport)
                and (collective is None or r["collective"] == collective)]
        for r in repredict(rows, {"now": profile}, cores):
            key = tuple(DERIVED[k](r, cores) if k in DERIVED else r[k] for k in by)
            out.setdefault(key, {}).setdefault(path, []).append((r["now_us"], r["measured_us"]))
    return out


def misses(runs: Runs) -> tuple[int, int]:
    """A group's rows predicted more than 25 % under their measurement, and more than 25 % over."""
    every = [p / m - 1 for rows in runs.values() for p, m in rows]
    return sum(e < -0.25 for e in every), sum(e > 0.25 for e in every)


def ratio(predicted: float, measured: float, measured_over_predicted: bool = False) -> float:
    """Predicted / measured, or its inverse."""
    return measured / predicted if measured_over_predicted else predicted / measured


def worst(found: dict[tuple[Any, ...], Runs], measured_over_predicted: bool = False
          ) -> list[tuple[float, tuple[Any, ...], Runs]]:
    """The groups with the median ratio over all their rows, furthest from 1 (in log) first."""
    ranked = [(statistics.median(ratio(p, m, measured_over_predicted) for rows in runs.values() for p, m in rows),
               key, runs) for key, runs in found.items()]
    return sorted(ranked, key=lambda x: -abs(math.log(x[0])))


def measured_over(paths: list[str], others: list[str], undisturbed: float | None = None,
                  aside: list[str] | None = None) -> dict[tuple[int, int], float]:
    """Per world (ranks, ranks per host): the median, over the cases both sets of saved runs
    measured, of a row's measurement over the same case's in ``others`` (their median where several
    runs did): whether two runs of the same cases saw the same machine (``undisturbed``: as ``_rows``)."""
    theirs: dict[tuple[Any, ...], list[float]] = {}
    for path in others:
        for r in _rows(path, undisturbed, aside):
            theirs.setdefault(tuple(r[k] for k in CASE), []).append(r["measured_us"])
    ratios: dict[tuple[int, int], list[float]] = {}
    for path in paths:
        for r in _rows(path, undisturbed):
            case = tuple(r[k] for k in CASE)
            if case in theirs:
                ratios.setdefault((r["ranks"], r["ranks_per_host"]), []).append(
                    r["measured_us"] / statistics.median(theirs[case]))
    return {world: statistics.median(v) for world, v in sorted(ratios.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="saved runs of perf/validate_model.py --json")
    parser.add_argument("--from", dest="source", default="", help="more saved runs, comma-separated")
    parser.add_argument("--profile", default=None, help="a profile file (default: the built-in one)")
    parser.add_argument("--cores", type=int, default=0, help="the measured machine's cores (default: the first run's)")
    parser.add_argument("--transport", default=None)
    parser.add_argument("--collective", default=None)
    parser.add_argument("--by", default=",".join(CASE),
                        help=f"the row fields of a group, or of {', '.join(DERIVED)} (coarser: DERIVED)")
    parser.add_argument("--top", type=int, default=30, help="how many groups to print, worst first")
    parser.add_argument("--measured-over-predicted", action="store_true", help="ratios measured / predicted")
    parser.add_argument("--against", default="", help="other saved runs of the same cases, comma-separated: "
                        "print the runs' measurements over theirs, per world size")
    disturbed.add_argument(parser)
    args = parser.parse_args(argv)
    paths = [*args.files, *(p for p in args.source.split(",") if p)]
    if not paths:
        parser.error("no saved runs: name them, or give --from")
    by = tuple(args.by.split(","))
    unknown = [k for k in by if k not in CASE and k not in DERIVED]
    if unknown:
        parser.error(f"--by names no field {', '.join(unknown)}: rows have {', '.join(CASE)}; "
                     f"coarser: {', '.join(DERIVED)}")
    flip = args.measured_over_predicted
    aside: list[str] = []
    found = cases(paths, args.profile, args.cores or saved_cores(paths[0]), by, args.transport, args.collective,
                  args.undisturbed, aside)
    if aside:
        print("\n".join(aside))
    print(f"# {len(found)} groups by {args.by}; {'measured / predicted' if flip else 'predicted / measured'}, worst first")
    print(f"# {' '.join(by)} | median (min-max) | within 25 % | under / over | median predicted us | per run: "
          + " ".join(os.path.basename(p) for p in paths))
    for median, key, runs in worst(found, flip)[:args.top]:
        every = [ratio(p, m, flip) for rows in runs.values() for p, m in rows]
        inside = sum(abs(p / m - 1) <= 0.25 for rows in runs.values() for p, m in rows)
        per_run = " ".join(f"{statistics.median(ratio(p, m, flip) for p, m in runs[path]):.2f}" if path in runs
                           else "-" for path in paths)
        predicted = statistics.median(p for rows in runs.values() for p, _ in rows)
        under, over = misses(runs)
        print(f"  {' '.join(str(k) for k in key)} | {median:.2f} ({min(every):.2f}-{max(every):.2f}) | "
              f"{inside}/{len(every)} | {under} / {over} | {predicted:.1f} | {per_run}")
    if args.against:
        aside = []
        against = measured_over(paths, args.against.split(","), args.undisturbed, aside)
        if aside:
            print("\n".join(aside))
        print("# measured over the same case in " + ", ".join(os.path.basename(p) for p in args.against.split(","))
              + " (median per world: ranks/per host)")
        for (ranks, per_host), ratio_ in against.items():
            print(f"  {ranks}/{per_host} {ratio_:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
