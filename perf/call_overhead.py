"""Per-call time of small collectives, the best of many batches: the cost of the code path.

    python perf/call_overhead.py --np 2 --transport shm
    python perf/call_overhead.py --np 2 --vs mpi    # the same loops through mpi4py, side by side

Each rank runs batches of back-to-back calls (8-byte all_reduce in place and into ``out=``,
broadcast and all_gather, and a 64 KiB all_reduce) and keeps the fastest batch's time per
call. On a shared or oversubscribed machine noise only ever adds time, so the minimum says
what the library's own path costs where a median says as much about the neighbours; run it
alternately against another checkout (``PYTHONPATH=/other/checkout``) to compare builds.
``--vs mpi`` runs the same cases through mpi4py (``mpiexec -n N``) after ours and adds MPICH's
time and the ratio (MPICH's time over ours: > 1, we are faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from collectives.testing import run_world

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.mpiexec import MpiCalls, run_script  # noqa: E402


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


def _mpi_times(size: int, batches: int, calls: int) -> list[dict[str, float]]:
    return run_script(__file__, size, ["--batches", str(batches), "--calls", str(calls)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", dest="size", type=int, default=2)
    parser.add_argument("--transport", default="shm", help="shm, tcp or inproc (as run_world takes)")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300, help="calls per batch")
    parser.add_argument("--vs", choices=["mpi"], help="also time the same calls through mpi4py (mpiexec)")
    parser.add_argument("--under-mpi", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.under_mpi:
        comm = MpiCalls()
        comm.gather_to_root(_measure(comm, args.batches, args.calls))
        return 0
    per_rank = run_world(lambda comm: _measure(comm, args.batches, args.calls), args.size, args.transport,
                         timeout=600)
    peer = _mpi_times(args.size, args.batches, args.calls) if args.vs else None
    print(f"# {args.size} ranks over {args.transport}: best of {args.batches} batches of {args.calls} calls, "
          "us per call (slowest rank)" + ("; MPICH through mpi4py, and MPICH's time over ours" if peer else ""))
    for name in per_rank[0]:
        ours = max(rank[name] for rank in per_rank)
        if peer is None:
            print(f"{name:<22}{ours:>9.2f}")
        else:
            theirs = max(rank[name] for rank in peer)
            print(f"{name:<22}{ours:>9.2f}{theirs:>9.2f}{theirs / ours:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
