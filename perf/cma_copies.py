"""The single copies of the direct all-gather by reads or writes, timed alone on two cores.

The direct engine's all-gather by single-copy reads or writes (``engines/exchange_reads.py``,
``_reads_c.c``) is, per rank and call, one ``process_vm_readv`` of each peer's block into its
``out`` and a ``memcpy`` of its own block (reads), or, where every rank has a core and the blocks
are of ``direct_routes.ALL_GATHER_WRITES_BYTES`` and more, a ``process_vm_writev`` of each piece of
its block into every peer's ``out`` and the same piece into its own, read from the cache the second
time (writes); plus flags. This times those steps without the flags: two processes, each pinned to
its own core, each running the same loop at once on its own buffers and its peer's (as the two
ranks of an all-gather do), in C (``engines/_reads_c.c``'s ``time_copies``), the median over
``--rounds`` of the mean over ``--calls`` calls, per step (``collectives/single_copies.py``, by
which ``collectives-tune`` times ``memcpy``, ``read`` and ``write`` for the profile):

- ``memcpy``: ``block`` bytes of my heap into my heap;
- ``read`` / ``write``: one ``process_vm_readv`` / ``process_vm_writev`` of ``block`` bytes
  between my heap and my peer's;
- ``reads``: ``memcpy`` then ``read`` (the route by reads at 2 ranks);
- ``writes``: ``write`` then ``memcpy`` of the same source, piece by piece (the route by writes).

A line fitted through the sizes within the cache (``--fit-max``) gives each step's cost per call
and per byte (docs/simulation.md, *The forty-fifth round*).

    python perf/cma_copies.py --sizes 16K,32K,64K,128K,256K,512K,1M,2M --json cma.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from collectives.single_copies import MODES, fit, run  # noqa: E402
from perf.options import parse_size  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16K,32K,64K,128K,256K,512K,1M,2M,4M")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fit-max", default="1M", help="the largest block of the fitted line (within the cache)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    start, load0 = time.strftime("%H:%M:%S", time.gmtime()), os.getloadavg()[0]
    rows = run(sizes, args.calls, args.rounds)
    end, load1 = time.strftime("%H:%M:%S", time.gmtime()), os.getloadavg()[0]
    print(f"# {start}-{end} UTC, load {load0:.2f} -> {load1:.2f}; us a call, rank 0 / rank 1")
    print(f"{'bytes':>9} " + " ".join(f"{m:>15}" for m in MODES))
    for n in sizes:
        cells = [next(r for r in rows if r["mode"] == m and r["bytes"] == n) for m in MODES]
        print(f"{n:>9} " + " ".join(f"{c['us']:>7.2f}/{c['peer_us']:<7.2f}" for c in cells))
    most = parse_size(args.fit_max)
    fits = {m: fit(rows, m, most) for m in MODES}
    for m, (alpha, beta) in fits.items():
        print(f"# {m:>7}: {alpha:6.2f} us a call + {beta:.4f} ns a byte (blocks up to {most} B)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"start": start, "end": end, "load": [load0, load1], "rows": rows,
                       "fit_max": most, "fits": {m: {"alpha_us": a, "beta_ns": b} for m, (a, b) in fits.items()}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
