"""Calls right after a barrier that one rank reached late: when each rank starts, and its time.

    python perf/after_barrier.py --np 2                  # 16-byte broadcasts, rank 0 2 ms early
    python perf/after_barrier.py --np 2 --late-ms 0      # everyone on time
    python perf/after_barrier.py --np 2 --vs mpi         # the same through mpi4py, after ours

A harness times a cell as nccl-tests does: one call, a barrier, then the timed calls. Where a
rank reached the barrier long before the others, it waited asleep, and the time it takes to
wake (tens of microseconds on a virtual machine) falls on whoever waits for it next: the
timed calls of a peer that left the barrier at once. Each batch here makes the other ranks
``--late-ms`` late, runs one broadcast and a barrier, then ``--calls`` broadcasts of
``--bytes`` from rank 0, and records each rank's start (a clock all processes share) and
time per call. It prints, per rank, the median over batches of when it started after rank
0 and of its µs per call, and the mean over ranks (the harness's ``-a 1`` time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from collectives.testing import run_world

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.mpiexec import MpiCalls, run_script  # noqa: E402


def _measure(comm: Any, batches: int, calls: int, nbytes: int, late: float) -> list[tuple[float, float]]:
    """(start, µs per call) of each batch on this rank."""
    x = np.ones(max(1, nbytes // 4), dtype=np.float32)
    for _ in range(calls):
        comm.broadcast(x, 0)
    rows = []
    for _ in range(batches):
        if comm.rank != 0:
            time.sleep(late)
        comm.broadcast(x, 0)
        comm.barrier()
        start = time.monotonic()
        for _ in range(calls):
            comm.broadcast(x, 0)
        rows.append((start, (time.monotonic() - start) / calls * 1e6))
        comm.barrier()
    return rows


def _summary(per_rank: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Per rank: the median start after rank 0's (µs) and the median µs per call."""
    return [(statistics.median((mine[0] - zero[0]) * 1e6 for mine, zero in zip(rows, per_rank[0])),
             statistics.median(us for _, us in rows)) for rows in per_rank]


def _mpi_rows(size: int, args: argparse.Namespace) -> list[list[tuple[float, float]]]:
    every = run_script(__file__, size, ["--batches", str(args.batches), "--calls", str(args.calls), "--bytes",
                                        str(args.bytes), "--late-ms", str(args.late_ms)])
    return [[tuple(row) for row in rank] for rank in every]


def _print(name: str, per_rank: list[list[tuple[float, float]]]) -> None:
    summary = _summary(per_rank)
    for rank, (start, us) in enumerate(summary):
        print(f"{name:<12}{rank:>5}{start:>12.1f}{us:>10.2f}")
    print(f"{name:<12}{'mean':>5}{'':>12}{statistics.mean(us for _, us in summary):>10.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", dest="size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20, help="timed calls per batch (nccl-tests' default: 20)")
    parser.add_argument("--bytes", type=int, default=16)
    parser.add_argument("--late-ms", type=float, default=2.0, help="how late ranks other than 0 reach the barrier")
    parser.add_argument("--vs", choices=["mpi"], help="also run the same batches through mpi4py (mpiexec)")
    parser.add_argument("--under-mpi", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    late = args.late_ms / 1e3
    if args.under_mpi:
        comm = MpiCalls()
        comm.gather_to_root(_measure(comm, args.batches, args.calls, args.bytes, late))
        return 0
    ours = run_world(lambda comm: _measure(comm, args.batches, args.calls, args.bytes, late), args.size, "shm",
                     timeout=600)
    print(f"# {args.size} ranks over shm: {args.calls} broadcasts of {args.bytes} B after a barrier that ranks "
          f"1.. reach {args.late_ms:g} ms late; medians of {args.batches} batches")
    print(f"# {'library':<10}{'rank':>5}{'start (us)':>12}{'us/call':>10}")
    _print("collectives", ours)
    if args.vs:
        _print("mpi", _mpi_rows(args.size, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
