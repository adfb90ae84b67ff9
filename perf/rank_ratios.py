"""Where a validation run's model is off, by world size: rows within 25 % per transport and ranks,
and measured over predicted per (ranks, collective, algorithm) at each size.

The arithmetic of ``perf/validate_model.py --from`` (the same cluster and prediction per saved
row), grouped to find which world sizes, collectives, algorithms and sizes a profile misprices
(docs/simulation.md, *The thirty-sixth round*).

    python perf/rank_ratios.py docs/perf/validation_calib25_shm.json [--profile FILE] [--ranks 3,8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.tuning.profile import DEFAULT_FILE, load  # noqa: E402
from perf.validate_model import repredict  # noqa: E402


def groups(rows: list[dict[str, Any]]) -> tuple[dict[tuple[str, int], list[int]],
                                                 dict[tuple[int, str, str], list[tuple[int, float]]]]:
    """Rows within 25 % and rows, per (transport, ranks); (size, measured / predicted) per
    (ranks, collective, algorithm) of the one-host rows."""
    counts: dict[tuple[str, int], list[int]] = {}
    ratios: dict[tuple[int, str, str], list[tuple[int, float]]] = {}
    for r in rows:
        ok = abs(r["p_us"] - r["measured_us"]) <= 0.25 * r["measured_us"]
        c = counts.setdefault((r["transport"], r["ranks"]), [0, 0])
        c[0] += ok
        c[1] += 1
        if r["ranks_per_host"] >= r["ranks"]:
            ratios.setdefault((r["ranks"], r["collective"], r["algorithm"]), []).append(
                (r["size"], r["measured_us"] / r["p_us"]))
    return counts, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a validation run saved by perf/validate_model.py --json")
    parser.add_argument("--profile", default=str(DEFAULT_FILE))
    parser.add_argument("--ranks", default="", help="only these world sizes in the ratio table (e.g. 3,8)")
    args = parser.parse_args(argv)
    with open(args.source) as f:
        data = json.load(f)
    rows = repredict(data["rows"], {"p": load(args.profile)}, data.get("cores", os.cpu_count() or 1))
    counts, ratios = groups(rows)
    wanted = {int(p) for p in args.ranks.split(",") if p}
    for (ranks, collective, algorithm), points in sorted(ratios.items()):
        if not wanted or ranks in wanted:
            print(f"{ranks:>2} {collective:<11} {algorithm:<10} "
                  + " ".join(f"{size:>8}:{ratio:5.2f}" for size, ratio in sorted(points)))
    print(f"# {os.path.basename(args.source)}: {sum(c[0] for c in counts.values())} of {len(rows)} within 25 %;"
          + "".join(f" {t}{p} {c[0]}/{c[1]}" for (t, p), c in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
