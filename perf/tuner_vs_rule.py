"""Where the tuner's automatic choice differs from the size rule it replaced.

    python perf/tuner_vs_rule.py [--profile FILE] [--ranks 2,3,4] [--transports shm,tcp]

For every collective, world size, transport and size of an ``all_reduce_perf -b 8 -e 64M
-f 4`` sweep: the rule's choice (``algorithms.registry.automatic``), the tuner's
(``tuning.tuner.choose``) and, where they differ, both predicted times. One host: over
shm the direct engine is a candidate (shared windows), over tcp it is not.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from collectives.algorithms.registry import automatic
from collectives.timing import COLLECTIVES
from collectives.tuning import tuner
from collectives.tuning.profile import Profile, current, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.colls import sweep_sizes  # noqa: E402

SIZES = sweep_sizes(8, 64 << 20, 0, 4)  # the sizes of all_reduce_perf -b 8 -e 64M -f 4: 8 B .. 32 MiB by 4


def differences(ranks: list[int], transports: list[str], profile: Profile) -> list[str]:
    lines = []
    for transport in transports:
        for p in ranks:
            for collective in COLLECTIVES:
                for n in SIZES:
                    windows = transport == "shm"
                    rule = automatic(collective, n, p, windows)
                    pick = tuner.choose(collective, n, p, transport, windows, 0, profile)
                    if rule != pick:
                        times = tuner.fastest(collective, n, p, transport, windows, 0, profile)
                        lines.append(f"  {transport:<4} {p} ranks {collective:<14} {n:>9} B  rule {rule:<9}"
                                     f" {times[rule] * 1e6:9.1f} us   tuner {pick:<9} {times[pick] * 1e6:9.1f} us")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--ranks", default="2,3,4")
    parser.add_argument("--transports", default="shm,tcp")
    parser.add_argument("--margin", type=float, default=None, help="instead of the profile's margin (0.1: 10 %%)")
    args = parser.parse_args(argv)
    profile = load(args.profile) if args.profile else current()
    if args.margin is not None:
        profile = dataclasses.replace(profile, margin=args.margin)
    ranks = [int(r) for r in args.ranks.split(",")]
    transports = args.transports.split(",")
    lines = differences(ranks, transports, profile)
    total = len(transports) * len(ranks) * len(COLLECTIVES) * len(SIZES)
    print(f"# {profile.source}; margin {profile.margin:g}")
    print(f"# {len(lines)} of {total} choices differ (collective x ranks {args.ranks} x transport x {len(SIZES)} sizes)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
