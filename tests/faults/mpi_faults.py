"""Run under mpiexec by test_faults_mpi_frozen.py: ``mpi_faults.py FOLDER SIGNAL`` connects the
ranks over the mpi transport and runs fault_worlds' all_reduce loop, in which the last
rank signals itself (the store lives in rank 0's process, which must stay up)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import collectives
from fault_worlds import signalled_loop

folder, sig = Path(sys.argv[1]), getattr(signal, sys.argv[2])
comm = collectives.init(transport="mpi", timeout=60.0)
try:
    signalled_loop(folder, comm.size - 1, sig)(comm)
finally:
    comm.close()
print(f"rank {comm.rank} done", flush=True)
