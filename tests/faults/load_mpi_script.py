"""Run under mpiexec (tests/faults/test_faults_mpi_load.py): the load cases of issue 16 over
the mpi transport, and what MPICH's own blocking wait costs, for comparison.

    mpiexec -n 8 python tests/faults/load_mpi_script.py LATE_SECONDS MPI_LATE_SECONDS

1000 all_reduces of 8 B over ``transport="mpi"`` (timed), then one all_reduce that the last
rank joins LATE_SECONDS late while every other rank measures the CPU time its process
used over the wait; then MPI's own ``Allreduce`` with the last rank MPI_LATE_SECONDS late,
measured the same way (0: skipped). Rank 0 prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import collectives  # noqa: E402

CALLS = 1000
WORLD = MPI.COMM_WORLD


def late_wait(call: Callable[[], None], late: float) -> float:
    """Run ``call`` with the last rank ``late`` seconds behind; this rank's CPU share over it
    (-1 on the late rank)."""
    WORLD.Barrier()
    if WORLD.Get_rank() == WORLD.Get_size() - 1:
        time.sleep(late)
        call()
        return -1.0
    wall, cpu = time.monotonic(), time.process_time()
    call()
    waited = time.monotonic() - wall
    if waited < late / 2:
        raise AssertionError(f"rank {WORLD.Get_rank()} did not wait for the late rank ({waited:.2f} s)")
    return (time.process_time() - cpu) / waited


def main() -> None:
    late, mpi_late = float(sys.argv[1]), float(sys.argv[2])
    comm = collectives.from_mpi(WORLD, transport="mpi", timeout=60.0)
    size = comm.size
    x = np.ones(1, dtype=np.int64)
    comm.barrier()
    start = time.monotonic()
    for _ in range(CALLS):
        x[0] = comm.rank + 1
        comm.all_reduce(x)
        if x[0] != size * (size + 1) // 2:
            raise AssertionError(f"rank {comm.rank}: all_reduce gave {x[0]}")
    calls_seconds = WORLD.allreduce(time.monotonic() - start, op=MPI.MAX)

    def ours() -> None:
        x[0] = 1
        comm.all_reduce(x)
        if x[0] != size:
            raise AssertionError(f"rank {comm.rank}: the late all_reduce gave {x[0]}")

    share = late_wait(ours, late)
    y = np.ones(1, dtype=np.int64)
    mpich_share = late_wait(lambda: WORLD.Allreduce(MPI.IN_PLACE, y), mpi_late) if mpi_late > 0 else -1.0
    comm.close()
    shares = WORLD.gather(share, root=0)
    mpich_shares = WORLD.gather(mpich_share, root=0)
    if WORLD.Get_rank() == 0:
        print("RESULT " + json.dumps({
            "ranks": size, "calls_seconds": calls_seconds,
            "shares": [s for s in shares if s >= 0], "mpich_shares": [s for s in mpich_shares if s >= 0],
        }), flush=True)


if __name__ == "__main__":
    from mpi_main import main_or_abort

    main_or_abort(main, WORLD)
