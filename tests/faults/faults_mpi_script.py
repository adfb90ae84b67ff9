"""Run under mpiexec: mismatched calls and setting skew over the mpi transport.

    mpiexec -n 4 python tests/faults/faults_mpi_script.py

Each case makes a fresh communicator with ``from_mpi(MPI.COMM_WORLD, transport="mpi")``:
a count mismatch (the last rank one element fewer) for every collective x schedule
(checking off; once more for the ring all_reduce with rank 0, the store's host, closing
as soon as it has raised), COLLECTIVES_CHECK's field diff, and a timeout skew at init.
Rank 0 checks every rank's outcomes and prints "[n=N] ALL OK";
tests/faults/test_faults_mpi_checks.py runs it at 2 and 4 ranks.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collectives  # noqa: E402
from checks_helpers import ALGORITHMS, count_outcome, wrong_outcomes  # noqa: E402

WORLD = MPI.COMM_WORLD


def comm_over_mpi(**settings: object) -> collectives.Communicator:
    settings.setdefault("timeout", 3.0)
    return collectives.from_mpi(WORLD, transport="mpi", **settings)  # type: ignore[arg-type]


def count_case(collective: str, algorithm: str | None, store_kept: bool) -> tuple[str, str | None, int, str]:
    """One count mismatch on a fresh communicator. With ``store_kept``, every rank has its
    outcome before rank 0 closes (taking the store its process hosts along); without, each
    closes at once, so a rank may diagnose its failure after the store's host has left."""
    comm = comm_over_mpi()
    start = time.monotonic()
    outcome = count_outcome(comm, collective, 4, algorithm)
    if time.monotonic() - start > 2.5:
        outcome += " (waited out the timeout)"
    if store_kept:
        WORLD.Barrier()
    comm.close()
    WORLD.Barrier()
    return collective, algorithm, 4, outcome


def count_cases() -> list[tuple[str, str | None, int, str]]:
    outcomes = [count_case(collective, algorithm, store_kept=True)
                for collective, algorithms in ALGORITHMS.items()
                for algorithm in algorithms if algorithm != "direct"]  # direct: shared windows only
    outcomes.append(count_case("all_reduce", "ring", store_kept=False))
    return outcomes


def check_cases() -> list[str]:
    comm = comm_over_mpi(check=True)
    last = comm.rank == comm.size - 1
    x = np.ones(4, np.float32)
    seen = []
    for field, call in (
        ("op", lambda: comm.broadcast(x, 0) if last else comm.all_reduce(x)),
        ("count", lambda: comm.all_reduce(np.ones(3 if last else 4, np.float32))),
        ("root", lambda: comm.broadcast(x, 1 if last else 0)),
    ):
        try:
            call()
            seen.append(f"{field}: returned")
        except collectives.CollectiveMismatchError as exc:
            seen.append(exc.field)
    comm.close()
    return seen


def skew_case() -> str:
    try:
        comm_over_mpi(timeout=4.0 if WORLD.Get_rank() == WORLD.Get_size() - 1 else 3.0).close()
        return "initialised"
    except collectives.SettingsMismatchError as exc:
        return str(exc)


def main() -> int:
    n = WORLD.Get_size()
    try:
        counts = WORLD.gather(count_cases(), root=0)
        checks = WORLD.gather(check_cases(), root=0)
        skews = WORLD.gather(skew_case(), root=0)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        WORLD.Abort(1)
    if WORLD.Get_rank() == 0:
        wrong = wrong_outcomes(counts)
        wrong += [o[3] for cases in counts for o in cases if "waited out" in o[3]]
        wrong += [f"check: {c}" for c in checks if c != ["op", "count", "root"]]
        wrong += [f"skew: {s}" for s in skews if "timeout: rank 0: 3.0" not in s or f"rank {n - 1}: 4.0" not in s]
        if wrong:
            print("\n".join(wrong), flush=True)
            WORLD.Abort(1)
        print(f"[n={n}] ALL OK ({sum(map(len, counts))} count cases)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
