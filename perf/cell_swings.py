"""Why a harness cell swings from run to run: every rank's time, ours and the peer's, sweep by sweep.

    python perf/cell_swings.py hypercube --np 4 -b 64 -e 1K -n 100 --worlds 3 --sweeps 4
    python perf/cell_swings.py alltoall --np 4 -b 64K -e 4M -f 4 -n 20 --worlds 3 --sweeps 4
    python perf/cell_swings.py all_gather --np 8 -b 8 -e 64M -f 8 -n 20 --worlds 3 --sweeps 2 --only 512

``perf/targets.py`` keeps only the harness's ratio column (peer time / ours, ranks' mean, out of
place and in place added), one harness run per round. This starts our world and the peer's as the
harness does (``perf.coordinator``), warms both up over the sizes as the harness does, then runs
``--sweeps`` sweeps of the sizes, each size ours then the peer's (the harness's order), and keeps
each rank's time per placement; ``--worlds`` times over, so that what changes with a world's start
(which ranks share a core, where the pages lie) shows apart from what changes within one world.
It prints one line per (world, sweep, size): our ranks' µs, the peer's, and the ratio the harness
would have printed; ``--json`` saves the lot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf.bench import RowSpec  # noqa: E402
from perf.colls import COLLECTIVES, sweep_sizes  # noqa: E402
from perf.coordinator import Coordinator  # noqa: E402
from perf.options import parse_size  # noqa: E402


def one_world(args: argparse.Namespace, world: int, sizes: list[int], out: list[dict[str, Any]]) -> None:
    """Start both worlds, warm them up, run the sweeps; append a record per (sweep, size)."""
    coord = Coordinator(args.np)
    try:
        ours = coord.start_collectives(transport=args.transport, algorithm=None, timeout=None)
        peer = coord.start_mpi()
        coord.wait_ready()
        minb, maxb = sizes[0], sizes[-1]
        ours.warmup(args.coll, "float", "sum", 0, minb, maxb, 1, 0)
        peer.warmup(args.coll, "float", "sum", 0, minb, maxb, 1, 0)
        time.sleep(args.settle)
        rep = 0
        for sweep in range(args.sweeps):
            for size in sizes:
                spec = RowSpec(args.coll, "float", "sum", 0, size, args.iters, 1, 0, 0, 0, (rep + 1, rep + 2))
                rep += 2
                t0 = time.time()
                mine = [r.time for r in ours.row(spec)]
                theirs = [r.time for r in peer.row(spec)]
                if args.only and size not in args.only:
                    continue
                ours_t = sum(statistics.mean(r[p] for r in mine) for p in range(2))
                peer_t = sum(statistics.mean(r[p] for r in theirs) for p in range(2))
                rec = {"world": world, "sweep": sweep, "size": size, "utc": time.strftime("%H:%M:%S", time.gmtime(t0)),
                       "load": os.getloadavg()[0], "ours": mine, "peer": theirs, "ratio": peer_t / ours_t}
                out.append(rec)
                print(line(rec), flush=True)
    finally:
        coord.close()


def line(rec: dict[str, Any]) -> str:
    """One record: per rank out/in-place µs, ours | the peer's, and the ratio."""
    def ranks(times: list[list[float]]) -> str:
        return " ".join(f"{t[0]:.0f}/{t[1]:.0f}" for t in times)
    return (f"w{rec['world']} s{rec['sweep']} {rec['size']:>8} {rec['utc']} {rec['load']:4.1f} "
            f"ratio {rec['ratio']:5.2f}  ours {ranks(rec['ours'])}  |  mpi {ranks(rec['peer'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("coll", choices=sorted(COLLECTIVES))
    parser.add_argument("--np", type=int, default=4)
    parser.add_argument("-b", default="8")
    parser.add_argument("-e", default="1K")
    parser.add_argument("-f", type=int, default=2)
    parser.add_argument("-n", "--iters", type=int, default=100)
    parser.add_argument("--transport", default="shm")
    parser.add_argument("--worlds", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--only", default="", help="print and keep only these sizes (bytes, comma separated)")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds to wait after the warm-up")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    args.only = {parse_size(s) for s in args.only.split(",") if s}
    sizes = sweep_sizes(parse_size(args.b), parse_size(args.e), 1, args.f)
    records: list[dict[str, Any]] = []
    for world in range(args.worlds):
        one_world(args, world, sizes, records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
