"""Messages over 2 GiB (issue 16, acceptance case 20): 2^31+3 one-byte elements, so both
the byte count and the element count pass INT_MAX, through all_reduce and broadcast (which
the algorithms cut into segments) and as one point-to-point message (one MPI_Isend of
2^31+3 bytes over the mpi transport, framed by the shm and tcp streams).

Rank r's input is a pattern of period 251 (a prime: 2^31 is not a multiple of it, so an
offset truncated to 32 bits, or wrapped, reads a different value), written and checked
in 16 MiB chunks so that no temporary of the message's size exists beside the buffer.
Used by test_faults_large.py (shm, tcp) and load_large_mpi_script.py (mpi).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

COUNT = 2**31 + 3
PERIOD = 251
CHUNK = PERIOD << 16  # 16 MiB, a multiple of the period


def pattern(seed: int) -> np.ndarray:
    """One period of input ``seed`` (rank r's all_reduce input is seed r)."""
    return ((np.arange(PERIOD, dtype=np.int64) * 7 + seed * 13 + 5) % 256).astype(np.uint8)


def _tiled(one_period: np.ndarray) -> np.ndarray:
    return np.tile(one_period, CHUNK // PERIOD + 1)


def fill(x: np.ndarray, one_period: np.ndarray) -> None:
    """``x[i] = one_period[i % PERIOD]`` for every i, a chunk at a time."""
    tiled = _tiled(one_period)
    for start in range(0, x.size, CHUNK):
        stop = min(x.size, start + CHUNK)
        phase = start % PERIOD
        x[start:stop] = tiled[phase : phase + stop - start]


def first_difference(x: np.ndarray, one_period: np.ndarray) -> int | None:
    """The first index where ``x`` is not the periodic ``one_period``, or None."""
    tiled = _tiled(one_period)
    for start in range(0, x.size, CHUNK):
        stop = min(x.size, start + CHUNK)
        phase = start % PERIOD
        want = tiled[phase : phase + stop - start]
        got = x[start:stop]
        if not np.array_equal(got, want):
            return start + int(np.flatnonzero(got != want)[0])
    return None


def large_calls(comm: Any) -> dict[str, Any]:
    """All-reduce (SUM) 2^31+3 uint8 in place, broadcast the result from the last rank to
    ranks whose buffer was zeroed, then send it from rank 0 to rank 1 (zeroed again), all
    in one buffer; check every byte of each result. Returns the seconds of each call."""
    size, me = comm.size, comm.rank
    x = np.empty(COUNT, dtype=np.uint8)
    fill(x, pattern(me))
    summed = (sum(pattern(r).astype(np.int64) for r in range(size)) % 256).astype(np.uint8)
    seconds = {}

    def timed(name: str, call: Any, receiver: bool) -> None:
        comm.barrier()
        start = time.monotonic()
        call()
        seconds[name] = time.monotonic() - start
        where = first_difference(x, summed) if receiver else None
        if where is not None:
            raise AssertionError(f"rank {me}: the {name} of {COUNT} bytes is wrong from byte {where} on "
                                 f"(got {x[where]}, want {summed[where % PERIOD]})")

    timed("all_reduce", lambda: comm.all_reduce(x), True)
    root = size - 1
    if me != root:
        x.fill(0)  # so that a broadcast that moved nothing, or moved too little, shows
    timed("broadcast", lambda: comm.broadcast(x, root), True)
    if me == 1:
        x.fill(0)
    timed("send", lambda: comm.send(x, 1, tag=7) if me == 0 else comm.recv(x, 0, tag=7) if me == 1 else None,
          me == 1)
    comm.barrier()
    return seconds  # (x is freed on return, before the communicator closes)
