"""Predicted crossovers of our all-reduce schedules on a GPU cluster (docs/simulation.md).

    python perf/sim_crossovers.py [--ranks 64,512,4096] [--collective all_reduce]

For each world size, on 8-GPU NVLink nodes with one 400 Gb/s NIC per GPU in a two-level
fat tree (``collectives.sim.cluster``, transport ``nvlink``), the predicted time of ring,
tree and recursive from 8 B to 256 MiB by factors of 4, the fastest at each size, and the
sizes where the fastest changes. Trees are replayed in full (no symmetry to use), so this
takes a few minutes at 4096 ranks.
"""

from __future__ import annotations

import argparse
import sys

from collectives.sim.cluster import cluster
from collectives.sim.predict import predict
from collectives.tuning import tuner
from collectives.tuning.profile import current

SIZES = [8 << (2 * i) for i in range(13)]  # 8 B .. 128 MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="64,512,4096")
    parser.add_argument("--collective", default="all_reduce")
    args = parser.parse_args(argv)
    tuner.REPLAY_EVENTS = 20_000_000  # this is an offline study: replay the trees whatever it takes
    profile = current()
    for p in (int(r) for r in args.ranks.split(",")):
        c = cluster("nvlink", p, None, profile)
        print(f"# {c.describe()}")
        print(f"# {'size':>10} {'ring us':>10} {'tree us':>10} {'recursive us':>12}  fastest  (ring vs tree)")
        previous = None
        changes = []
        for n in SIZES:
            t = {a: predict(args.collective, a, n, c, "nvlink", profile) for a in ("ring", "tree", "recursive")}
            best = min(t, key=lambda a: t[a])
            pair = "ring" if t["ring"] <= t["tree"] else "tree"
            print(f"  {n:>10} {t['ring'] * 1e6:>10.1f} {t['tree'] * 1e6:>10.1f} {t['recursive'] * 1e6:>12.1f}"
                  f"  {best:<9} {pair}", flush=True)
            if previous is not None and best != previous:
                changes.append(f"{previous} -> {best} at {n} B")
            previous = best
        print(f"# {p} ranks: fastest changes: {'; '.join(changes) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
