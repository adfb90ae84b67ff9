"""Run under mpiexec by test_faults_per_op_timeout.py: ``faults_per_op_mpi.py FOLDER`` runs
the per-op timeout cases of per_op_timeouts.py over the mpi transport (a longer timeout
honoured, then a shorter one firing, which leaves the communicator broken) and writes
``rank<r>.json``. The store lives in rank 0's process, which outlasts the others' use of it:
the late rank leaves only once the others have given up on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import collectives
from per_op_timeouts import longer, shorter

folder = Path(sys.argv[1])
comm = collectives.init(transport="mpi", timeout=60.0)
try:
    report = {"longer": longer(comm), "shorter": shorter(folder)(comm)}
finally:
    comm.close()
(folder / f"rank{comm.rank}.json").write_text(json.dumps(report))
print(f"rank {comm.rank} done", flush=True)
