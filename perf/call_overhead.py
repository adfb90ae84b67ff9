"""Per-call time of small collectives, the best of many batches: the cost of the code path.

    python perf/call_overhead.py --np 2 --transport shm

Each rank runs batches of back-to-back calls (8-byte all_reduce in place and into ``out=``,
broadcast and all_gather, and a 64 KiB all_reduce) and keeps the fastest batch's time per
call. On a shared or oversubscribed machine noise only ever adds time, so the minimum says
what the library's own path costs where a median says as much about the neighbours; run it
alternately against another checkout (``PYTHONPATH=/other/checkout``) to compare builds.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from collectives.testing import run_world


def _measure(comm: Any, batches: int, calls: int) -> dict[str, float]:
    x = np.ones(2, dtype=np.float32)
    out = np.empty(2, dtype=np.float32)
    gathered = np.empty(2 * comm.size, dtype=np.float32)
    big = np.ones(16384, dtype=np.float32)
    cases = {
        "all_reduce 8 B": lambda: comm.all_reduce(x),
        "all_reduce 8 B out=": lambda: comm.all_reduce(x, out=out),
        "broadcast 8 B": lambda: comm.broadcast(x, 0),
        "all_gather 8 B": lambda: comm.all_gather(x, gathered),
        "all_reduce 64 KiB": lambda: comm.all_reduce(big),
    }
    best: dict[str, float] = {}
    for name, call in cases.items():
        for _ in range(calls):  # warm-up: plans built and kept
            call()
        fastest = float("inf")
        for _ in range(batches):
            comm.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            fastest = min(fastest, (time.perf_counter() - start) / calls)
        best[name] = fastest * 1e6
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", dest="size", type=int, default=2)
    parser.add_argument("--transport", default="shm", help="shm, tcp or inproc (as run_world takes)")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300, help="calls per batch")
    args = parser.parse_args(argv)
    per_rank = run_world(lambda comm: _measure(comm, args.batches, args.calls), args.size, args.transport,
                         timeout=600)
    print(f"# {args.size} ranks over {args.transport}: best of {args.batches} batches of {args.calls} calls, "
          "us per call (slowest rank)")
    for name in per_rank[0]:
        print(f"{name:<22}{max(rank[name] for rank in per_rank):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
