"""Which classes of a validation run's rows the model misses: per collective, world size, size band
and algorithm, how many rows are within 25 %, priced low (measured more than 25 % above the
price) and priced high, and the median signed error.

The arithmetic of ``perf/validate_model.py --from`` (the same cluster and prediction per saved
row, each run priced with its own cores), grouped so that the largest systematic class of misses
stands out, and, with ``--against``, each case's measurement over the same case measured in
other runs (median per world size): whether two runs of the same cases saw the same machine
(docs/simulation.md, *The forty-third round*).

    python perf/miss_classes.py docs/perf/validation_calib26_tcp.json,docs/perf/validation_calib29_tcp.json
    python perf/miss_classes.py OLD.json --against NEW.json [--profile FILE] [--by ranks,size]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.tuning.profile import DEFAULT_FILE, Profile, load  # noqa: E402
from perf.validate_model import repredict  # noqa: E402

WITHIN = 0.25
"""A row is met when the price is within this share of the measurement (the validation's bar)."""
KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "run": lambda r: r["run"],
    "collective": lambda r: r["collective"],
    "ranks": lambda r: (r["ranks"], r["ranks_per_host"]),
    "size": lambda r: r["size"],
    "algorithm": lambda r: r["algorithm"],
}
"""The dimensions a class is made of (``--by`` joins them with commas)."""


def priced(paths: Sequence[str], profile: Profile) -> list[dict[str, Any]]:
    """Every saved row of ``paths`` priced again under ``profile``, with its run's file name and its
    signed error (price over measurement, less 1) as ``error``."""
    out = []
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        for row in repredict(doc["rows"], {"p": profile}, doc.get("cores") or os.cpu_count() or 1):
            row["run"] = os.path.basename(path)
            row["error"] = row["p_us"] / row["measured_us"] - 1.0
            out.append(row)
    return out


def classes(rows: list[dict[str, Any]], by: Sequence[str]) -> dict[tuple[Any, ...], dict[str, float]]:
    """Per class (the values of the ``by`` dimensions): rows, met, priced low, priced high and the
    median signed error."""
    grouped: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        grouped.setdefault(tuple(KEYS[k](r) for k in by), []).append(r["error"])
    return {key: {"rows": len(errors), "met": sum(abs(e) <= WITHIN for e in errors),
                  "low": sum(e < -WITHIN for e in errors), "high": sum(e > WITHIN for e in errors),
                  "median": statistics.median(errors)}
            for key, errors in sorted(grouped.items())}


def measured_over(rows: list[dict[str, Any]], others: list[dict[str, Any]]) -> dict[tuple[int, int], float]:
    """Per world (ranks, ranks per host): the median over the cases both sets measured of a row's
    measurement over the same case's in ``others`` (the median of those where several runs did)."""
    def case(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["transport"], r["ranks"], r["ranks_per_host"], r["collective"], r["algorithm"], r["size"]
    theirs: dict[tuple[Any, ...], list[float]] = {}
    for r in others:
        theirs.setdefault(case(r), []).append(r["measured_us"])
    ratios: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if case(r) in theirs:
            ratios.setdefault((r["ranks"], r["ranks_per_host"]), []).append(
                r["measured_us"] / statistics.median(theirs[case(r)]))
    return {world: statistics.median(v) for world, v in sorted(ratios.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="perf/validate_model.py --json runs, comma-separated")
    parser.add_argument("--profile", default=str(DEFAULT_FILE))
    parser.add_argument("--by", action="append", default=None,
                        help=f"a class's dimensions, comma-separated, of {', '.join(KEYS)} (repeatable;"
                             " default: each alone, then ranks,size)")
    parser.add_argument("--against", default=None, help="other runs of the same cases, comma-separated:"
                                                        " print the measurements' ratio per world size")
    args = parser.parse_args(argv)
    profile = load(args.profile)
    rows = priced(args.source.split(","), profile)
    met = sum(abs(r["error"]) <= WITHIN for r in rows)
    print(f"# {met} of {len(rows)} rows within {WITHIN:.0%}; priced low {sum(r['error'] < -WITHIN for r in rows)},"
          f" high {sum(r['error'] > WITHIN for r in rows)}")
    for by in args.by or [*([k] for k in KEYS), ["ranks", "size"]]:
        dims = by.split(",") if isinstance(by, str) else by
        print(f"# by {', '.join(dims)}: rows, within, priced low, priced high, median error")
        for key, c in classes(rows, dims).items():
            name = " ".join(str(k) for k in key)
            print(f"  {name:<44} {c['rows']:>4} {c['met']:>4} {c['low']:>4} {c['high']:>4} {c['median']:+7.0%}")
    if args.against:
        others = priced(args.against.split(","), profile)
        print("# measured over the same case in " + ", ".join(os.path.basename(p) for p in args.against.split(","))
              + " (median per world: ranks/per host)")
        for (p, k), ratio in measured_over(rows, others).items():
            print(f"  {p}/{k} {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
