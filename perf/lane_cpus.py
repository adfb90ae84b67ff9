"""Timed ``sendrecv`` calls of 2 ranks and where each rank ran: the express lane's slow mode.

    python perf/lane_cpus.py --bytes 256K --calls 300 --runs 6             # the build on PYTHONPATH
    python perf/lane_cpus.py --bytes 128K --swap-bytes 128K --written      # single copy from 128 KiB
    python perf/lane_cpus.py --bytes 128K --swap-bytes 128K --pinned 20    # both ranks left on one CPU

Each call: a barrier, then one timed ``sendrecv`` with the peer; after it (outside the timing)
the rank notes the CPU it is on (``sched_getcpu``). ``--written`` rewrites the sent block
before each call; ``--shared`` sends and receives two halves of one array (hypercube_perf's
exchange); ``--pinned N`` runs the first N calls (untimed) with both ranks pinned to one CPU
and then gives them back their mask, as a futex wake-up leaves two ranks on one CPU. Per run it prints the median and least µs per call (rank 0's) and how many calls
ended with both ranks on one CPU: a run whose median sits near its least and far above the
others' is the slow mode (docs/performance.md, "Nineteenth round, point to point").
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from typing import Any

import numpy as np

from collectives.config import parse_size
from collectives.engines import express
from collectives.testing import run_world

_libc = ctypes.CDLL(None, use_errno=True)


def _loop(comm: Any, nbytes: int, calls: int, written: bool, shared: bool,
          pinned: int) -> tuple[list[float], list[int], int]:
    """(µs per call, CPU after each call, calls the lane swapped) on this rank."""
    peer = 1 - comm.rank
    if shared:
        big = np.zeros(2 * nbytes, np.uint8)
        x, out = big[:nbytes], big[nbytes:]
    else:
        x, out = np.zeros(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
    for _ in range(20):
        comm.sendrecv(x, peer, out, peer)
    allowed = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {min(allowed)})
        for _ in range(pinned):
            comm.barrier()
            comm.sendrecv(x, peer, out, peer)
        os.sched_setaffinity(0, allowed)
    swaps0 = comm._express.swaps
    times, cpus = [], []
    for i in range(calls):
        if written:
            x.fill(i & 0xFF)
        comm.barrier()
        t = time.perf_counter()
        comm.sendrecv(x, peer, out, peer)
        times.append((time.perf_counter() - t) * 1e6)
        cpus.append(_libc.sched_getcpu())
    return times, cpus, comm._express.swaps - swaps0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", default="256K")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--swap-bytes", default=None, help="the lane's SWAP_BYTES for these runs")
    parser.add_argument("--written", action="store_true")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--pinned", type=int, default=0)
    args = parser.parse_args()
    if args.swap_bytes is not None:
        express.SWAP_BYTES = parse_size(args.swap_bytes)
    nbytes = parse_size(args.bytes)
    for run in range(args.runs):
        ranks = run_world(lambda comm: _loop(comm, nbytes, args.calls, args.written, args.shared, args.pinned), 2, "shm",
                          timeout=120)
        (t0, c0, s0), (_, c1, _) = ranks
        same = sum(a == b for a, b in zip(c0, c1))
        print(f"run {run}: {args.bytes} median {statistics.median(t0):.1f} us, least {min(t0):.1f}, "
              f"both on one CPU after {same} of {len(c0)} calls, swaps {s0}", flush=True)


if __name__ == "__main__":
    main()
