"""The 4-rank tcp all-reduce taken apart: the tree's two phases and the recursive schedule's, measured and priced.

The 4-rank tcp all-reduce of 8 MiB and more is priced on the tree level with the recursive
schedule while measured 10-28 % slower (docs/simulation.md, "The thirty-ninth round: tcp's
picks"). This script measures, over tcp, each all-reduce beside its two phases run alone: the
tree's binomial reduce to rank 0 and binomial broadcast from it (``tree.all_reduce`` is exactly
the one and then the other), and the recursive schedule's reduce-scatter by halving and
all-gather by doubling (at a power of two ``recursive.all_reduce`` is exactly those; called
alone each runs its own plan, out of place). Every row is priced by the tuner's model as
``perf/ring_parts.py`` prices it, on the line and replayed in full.

    python perf/tree_parts.py --json docs/perf/tree_parts_calib19_tcp.json   # measure (under the lock)
    python perf/tree_parts.py --ranks 2,4 --json two_and_four.json           # at 2 ranks as well
    python perf/tree_parts.py --from docs/perf/tree_parts_calib19_tcp.json   # price saved rows again
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.tuning.profile import load  # noqa: E402
from perf import saved_rows  # noqa: E402
from perf.ring_parts import measure as measure_parts, table  # noqa: E402

CASES = [("all_reduce", "tree"), ("reduce", "tree"), ("broadcast", "tree"),
         ("all_reduce", "recursive"), ("reduce_scatter", "recursive"), ("all_gather", "recursive")]
SIZES = (8 << 20, 32 << 20)
RANKS = (4,)


def measure(repeats: int, rounds: int, ranks_list: tuple[int, ...] = RANKS) -> list[dict[str, Any]]:
    """Every case at every size and world size over tcp: one row each (``ring_parts.measure``'s rows)."""
    return measure_parts(repeats, rounds, ranks_list, CASES, SIZES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    saved_rows.add_arguments(parser, repeats=3, rounds=5)
    parser.add_argument("--ranks", default=",".join(map(str, RANKS)),
                        help="world sizes, comma-separated (default 4; 2 beside it: a core each)")
    args = parser.parse_args(argv)
    ranks = tuple(int(r) for r in args.ranks.split(","))
    profile = load(args.profile)
    rows, cores = saved_rows.rows_and_cores(args, "perf/tree_parts.py", lambda: measure(args.repeats, args.rounds, ranks))
    print("\n".join(table(rows, profile, cores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
