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
import json
import subprocess
import sys
import time
from pathlib import Path
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


class _Mpi:
    """The calls ``_measure`` makes, through mpi4py's buffer interface (as perf/peers/mpi.py)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.size = self.world.Get_size()

    def all_reduce(self, x: np.ndarray, out: np.ndarray | None = None) -> None:
        self.world.Allreduce(self.MPI.IN_PLACE if out is None else x, x if out is None else out)

    def broadcast(self, x: np.ndarray, root: int) -> None:
        self.world.Bcast(x, root=root)

    def all_gather(self, x: np.ndarray, out: np.ndarray) -> None:
        self.world.Allgather(x, out)

    def barrier(self) -> None:
        self.world.Barrier()


def _under_mpi(batches: int, calls: int) -> None:
    """One rank of the MPI run: rank 0 prints every rank's times as JSON."""
    comm = _Mpi()
    every = comm.world.gather(_measure(comm, batches, calls), root=0)
    if comm.world.Get_rank() == 0:
        print(json.dumps(every))


def _mpi_times(size: int, batches: int, calls: int) -> list[dict[str, float]]:
    from collectives.mpi import find_mpiexec

    here = Path(__file__).resolve()
    done = subprocess.run([find_mpiexec() or "mpiexec", "-n", str(size), sys.executable, str(here), "--under-mpi",
                           "--batches", str(batches), "--calls", str(calls)],
                          capture_output=True, text=True, timeout=600, cwd=here.parents[1])
    if done.returncode != 0:
        raise SystemExit(f"the MPI run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


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
        _under_mpi(args.batches, args.calls)
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
