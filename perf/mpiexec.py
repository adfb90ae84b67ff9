"""A perf script's own loops under ``mpiexec`` beside ours (``--vs mpi``): the calls through
mpi4py, and the run that brings every rank's results back.

The script runs itself again as ``script --under-mpi ARGS`` on every rank; there it makes
its loops with ``MpiCalls`` in place of a communicator and calls ``gather_to_root`` with what
it measured, which rank 0 prints as JSON for ``run_script`` to read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class MpiCalls:
    """The calls the perf scripts make of a communicator, through mpi4py's buffer interface
    (as perf/peers/mpi.py)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()

    def all_reduce(self, x: np.ndarray, out: np.ndarray | None = None) -> None:
        self.world.Allreduce(self.MPI.IN_PLACE if out is None else x, x if out is None else out)

    def broadcast(self, x: np.ndarray, root: int) -> None:
        self.world.Bcast(x, root=root)

    def all_gather(self, x: np.ndarray, out: np.ndarray) -> None:
        self.world.Allgather(x, out)

    def barrier(self) -> None:
        self.world.Barrier()

    def gather_to_root(self, result: Any) -> None:
        """Every rank's ``result``, printed as one JSON line by rank 0."""
        every = self.world.gather(result, root=0)
        if self.rank == 0:
            print(json.dumps(every))


def run_script(script: str, size: int, args: Sequence[str]) -> list[Any]:
    """Run ``script --under-mpi ARGS`` on ``size`` ranks under mpiexec: every rank's result,
    in rank order."""
    from collectives.mpi import find_mpiexec

    here = Path(script).resolve()
    done = subprocess.run([find_mpiexec() or "mpiexec", "-n", str(size), sys.executable, str(here), "--under-mpi",
                           *args], capture_output=True, text=True, timeout=600, cwd=here.parents[1])
    if done.returncode != 0:
        raise SystemExit(f"the MPI run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))
