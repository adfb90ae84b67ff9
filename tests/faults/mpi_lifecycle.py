"""Run under mpiexec by tests/faults/test_faults_mpi.py: abort() and init/close cycles over
transport="mpi". ``mpi_lifecycle.py OUTDIR [CYCLES]``: each rank writes OUTDIR/rank<N>.json.

1. abort(): every rank but the last enters an all-reduce the last never joins; a timer
   thread aborts it after ABORT_AFTER s. The call must return within 1 s, later calls
   must raise, and a new communicator over the same ranks must work.
2. CYCLES from_mpi/all_reduce/close cycles leave descriptors, threads, sockets and the
   library's /dev/shm entries unchanged.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, __file__.rsplit("/", 1)[0])

import collectives  # noqa: E402
from lifecycle_resources import AbortTimer, snapshot  # noqa: E402

ABORT_AFTER = 0.3
CYCLES = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def abort_round(world: MPI.Comm, count: int) -> float | None:
    """One blocked all-reduce, aborted; seconds from abort() to the call's return. The absent
    rank stays away until the others have been aborted: an MPI barrier they enter once out."""
    comm = collectives.from_mpi(world, transport="mpi", timeout=30)
    absent = world.size - 1
    if world.rank == absent:
        world.Barrier()
        comm.abort()
        return None
    try:
        return _aborted(comm, count)
    finally:
        world.Barrier()


def _aborted(comm: collectives.Communicator, count: int) -> float:
    """The blocked all-reduce of a rank that joins it, aborted by a timer thread."""
    watchdog = AbortTimer(comm, ABORT_AFTER)
    try:
        comm.all_reduce(np.ones(count))
    except collectives.CollectivesError:
        pass
    else:
        raise AssertionError("an all-reduce a rank never joined returned after abort()")
    took = watchdog.seconds_to(time.monotonic())
    for later in (lambda: comm.all_reduce(np.ones(count)), comm.barrier):
        try:
            later()
        except (collectives.CommunicatorClosedError, collectives.CommunicatorBrokenError):
            pass
        else:
            raise AssertionError("a call on an aborted communicator did not raise")
    comm.close()
    return took


def main() -> None:
    world = MPI.COMM_WORLD
    took = [abort_round(world, count) for count in (8, 1 << 18)]
    world.Barrier()
    with collectives.from_mpi(world, transport="mpi", timeout=30) as again:
        x = np.full(100, world.rank, dtype=np.int64)
        again.all_reduce(x)
        assert int(x[0]) == sum(range(world.size)), x[0]

    def cycle() -> None:
        comm = collectives.from_mpi(world, transport="mpi", timeout=30)
        comm.all_reduce(np.ones(1000))
        comm.close()

    cycle()
    before = snapshot()
    start = time.monotonic()
    for _ in range(CYCLES):
        cycle()
    seconds = time.monotonic() - start
    after = snapshot()
    with open(f"{sys.argv[1]}/rank{world.rank}.json", "w") as f:
        json.dump({"rank": world.rank, "abort": took, "before": before, "after": after, "cycles": CYCLES,
                   "seconds": seconds}, f)


if __name__ == "__main__":
    main()
