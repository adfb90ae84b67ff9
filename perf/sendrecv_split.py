"""What a 2-rank ``sendrecv`` costs beside the bytes it moves: our call against a copy of the same
size on one rank while the other copies too.

    python perf/sendrecv_split.py --bytes 256K 1M 4M --calls 200 --batches 5

Each rank runs, in turn, batches of back-to-back calls of each case (a barrier before each
batch) and keeps the median batch's µs per call; rank 0's are printed:

- ``out``, ``in``, ``shared``: ``comm.sendrecv`` with the peer out of place (separate arrays),
  in place (``MPI_Sendrecv_replace``) and between the two halves of one array (hypercube_perf's
  exchange), with the calls the lane swapped by single copy (``swaps``), by halves
  (``halves``, engines/_half_swap.h; out of place below the halves' size, the push, each rank
  writing its whole message into the peer's receive, bound and counted as the halves are) or
  sent through its ring (``ring``);
- ``in/out``, ``out/in`` (only with ``--cases``; ``--both`` prints both ranks): the mixed pair,
  rank 0 in place and rank 1 out of place (separate arrays), and the other way round: the
  out-of-place rank offers a push (below ``HALF_BYTES_OUT_OF_PLACE``) or the halves, which the
  in-place rank (through the ring below ``HALF_BYTES``) takes whole (``whole``: it moves both
  messages) where it finds it, else both go through the ring;
- ``entry``: the lane's C call with a peer it refuses at once (the call's own floor);
- ``memcpy``: ``numpy.copyto`` of the message into the receive buffer;
- ``readv``: ``process_vm_readv`` of the message out of this rank's own memory (the single-copy
  swap's read, without a peer's cache in the way).

The split of a swap into its checks, its handshake, its read and its wait for the peer's answer
needs counters inside the C call (docs/performance.md, "Twenty-first round, point to point").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from collectives.buffers import address_of
from collectives.config import parse_size
from collectives.testing import run_world
from collectives.transports import cma


DEFAULT_CASES = ("out", "in", "shared", "entry", "memcpy", "readv")
"""The cases run without ``--cases`` (the mixed pair's, ``in/out`` and ``out/in``, only when named)."""


def _batches(comm: Any, call: Callable[[], Any], calls: int, batches: int) -> float:
    """The median batch's µs per call, after 20 untimed calls."""
    for _ in range(20):
        call()
    times = []
    for _ in range(batches):
        comm.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def _cases(comm: Any, nbytes: int, calls: int, batches: int, names: list[str] | None = None
           ) -> dict[str, tuple[float, int, int, int, int]]:
    """Per case (``DEFAULT_CASES``, or those in ``names``): (µs per call, calls swapped, by halves, through the
    ring, taken whole by a mixed pair's in-place rank) on this rank."""
    peer, pid = 1 - comm.rank, os.getpid()
    x, out = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
    halves = np.zeros(2 * nbytes, np.uint8)
    mine, theirs = (halves[:nbytes], halves[nbytes:]) if comm.rank == 0 else (halves[nbytes:], halves[:nbytes])
    lane = comm._express
    cases: dict[str, Callable[[], Any]] = {
        "out": lambda: comm.sendrecv(x, peer, out, peer),
        "in": lambda: comm.sendrecv(x, peer, x, peer),
        "shared": lambda: comm.sendrecv(mine, peer, theirs, peer),
        "in/out": lambda: comm.sendrecv(x, peer, x if comm.rank == 0 else out, peer),
        "out/in": lambda: comm.sendrecv(x, peer, x if comm.rank == 1 else out, peer),
        "entry": lambda: lane.sendrecv(x, -1, out, peer, 0),
        "memcpy": lambda: np.copyto(out, x),
        "readv": lambda: cma.read(pid, address_of(x), out, comm.rank),
    }
    result = {}
    for name, call in cases.items():
        if name not in (names or DEFAULT_CASES):
            continue
        swaps, halves, sends, whole = lane.swaps, lane.halves, lane.sends, getattr(lane, "taken_whole", 0)
        us = _batches(comm, call, calls, batches)
        result[name] = (us, lane.swaps - swaps, lane.halves - halves, lane.sends - sends,
                        getattr(lane, "taken_whole", 0) - whole)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", nargs="+", default=["256K", "1M", "4M"])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--cases", nargs="+", help=f"these cases (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--both", action="store_true", help="print rank 1's line after rank 0's")
    args = parser.parse_args()
    for text in args.bytes:
        nbytes = parse_size(text)
        ranks = run_world(lambda comm: _cases(comm, nbytes, args.calls, args.batches, args.cases), 2, "shm",
                          timeout=600)
        for name in ranks[0]:
            for rank in (0, 1) if args.both else (0,):
                us, swaps, halves, ring, whole = ranks[rank][name]
                who = f" r{rank}" if args.both else ""
                print(f"{text:>6} {name:7s}{who} {us:9.1f} us/call  swaps {swaps:5d}  halves {halves:5d}"
                      f"  ring {ring:5d}  whole {whole:5d}", flush=True)


if __name__ == "__main__":
    main()
