"""Several saved runs of ``perf/crowd_cost.py`` side by side: whether a crowd term holds across them.

One line per layout (transport, size, ranks on CPUs): measured over priced in every run and its
median, and µs a message measured beyond the price (``per_msg_us`` as ``crowd_cost.py`` prints
it). For ranks spread over two CPUs, ``beyond 1`` is that excess less the same run's excess for
one rank a core (2 ranks on 2 CPUs): what crowding the cores adds in that run, the part a crowd
term would have to price; a term holds where it is alike in every run (docs/simulation.md, *The
thirty-eighth round*).

    python perf/crowd_runs.py docs/perf/crowd_calib32.json docs/perf/crowd_calib34.json ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.tuning.profile import DEFAULT_FILE, Profile, load  # noqa: E402
from perf import crowd_cost  # noqa: E402

Key = tuple[str, int, int, int]  # transport, size, ranks, cpus


def excesses(rows: list[dict[str, Any]], profile: Profile) -> dict[Key, tuple[float, float]]:
    """Per layout of one run: measured over priced, and µs a message measured beyond the price."""
    out = {}
    for r in rows:
        model = crowd_cost.price(r, profile)
        per_msg = crowd_cost.steps(r["ranks"]) * crowd_cost.per_core(r)
        out[(r["transport"], r["size"], r["ranks"], r["cpus"])] = (r["measured_us"] / model,
                                                                   (r["measured_us"] - model) / per_msg)
    return out


def table(runs: list[dict[Key, tuple[float, float]]]) -> list[str]:
    """One line per layout present in every run (see the module's docstring)."""
    keys = sorted(set.intersection(*(set(run) for run in runs)), key=lambda k: (k[0], k[1], k[3], k[2]))
    lines = []
    for key in keys:
        ratios = [run[key][0] for run in runs]
        extra = [run[key][1] for run in runs]
        line = (f"{key[0]} {key[1]:>7} {key[2]} on {key[3]}: ratio " + " ".join(f"{a:.2f}" for a in ratios)
                + f" (median {statistics.median(ratios):.2f}); us/msg beyond " + " ".join(f"{b:.1f}" for b in extra))
        alone = (key[0], key[1], 2, 2)
        if key[3] == 2 and key != alone and all(alone in run for run in runs):
            beyond = [run[key][1] - run[alone][1] for run in runs]
            line += "; beyond 1 " + " ".join(f"{b:.1f}" for b in beyond) + f" (median {statistics.median(beyond):.1f})"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="files written by perf/crowd_cost.py --json")
    parser.add_argument("--profile", default=str(DEFAULT_FILE), help="the profile to price with (default: built-in)")
    args = parser.parse_args(argv)
    profile = load(args.profile)
    runs = []
    for path in args.runs:
        with open(path) as f:
            saved = json.load(f)
        runs.append(excesses(saved["rows"] if isinstance(saved, dict) else saved, profile))
    print("# runs: " + " ".join(os.path.basename(p) for p in args.runs))
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
