"""Run under mpiexec (tests/faults/test_faults_large.py): 2^31+3 uint8 through all_reduce
and broadcast over the mpi transport (tests/faults/load_large.py), every byte checked.

    mpiexec -n 2 python tests/faults/load_large_mpi_script.py

Rank 0 prints one line ``RESULT {json}``; a failure prints its traceback and aborts the job.
"""

from __future__ import annotations

import json
import os
import sys

from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collectives  # noqa: E402
import load_large  # noqa: E402

WORLD = MPI.COMM_WORLD


def main() -> None:
    with collectives.from_mpi(WORLD, transport="mpi", timeout=300.0) as comm:
        result = load_large.large_calls(comm)
    results = WORLD.gather(result, root=0)
    if WORLD.Get_rank() == 0:
        print("RESULT " + json.dumps({"ranks": WORLD.Get_size(), "per_rank": results}), flush=True)


if __name__ == "__main__":
    from mpi_main import main_or_abort

    main_or_abort(main, WORLD)
