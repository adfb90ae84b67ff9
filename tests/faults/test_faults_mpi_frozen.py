"""The failures of test_faults_dead.py over the mpi transport, under a real mpiexec, in
worlds of 2 and 4: a frozen rank is named "unresponsive" by every survivor within the
timeout + 5 s, as on the other transports. A killed rank has no survivors to name it here:
MPI without ULFM ends the job (mpiexec kills every rank when one dies; MPICH's own
shared-memory segments of a killed job stay in /dev/shm, so no test kills one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectives.mpi import find_mpiexec
from fault_worlds import BOUND, TIMEOUT, figure, reports, seq_named

pytestmark = [pytest.mark.mpi, pytest.mark.multiprocess]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _mpiexec(size: int, folder: Path, sig: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mpi4py")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH or beside this Python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(HERE), env.get("PYTHONPATH")]))
    return subprocess.run([mpiexec, "-n", str(size), sys.executable, str(HERE / "mpi_faults.py"), str(folder), sig],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


@pytest.mark.parametrize("size", [2, 4])
def test_a_frozen_rank_is_named_unresponsive_over_mpi(size, tmp_path):
    proc = _mpiexec(size, tmp_path, "SIGSTOP")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    victim = size - 1
    seen = reports(tmp_path, list(range(size - 1)))
    for rank, report in seen.items():
        message = report["message"]
        assert report["type"] == "CollectiveTimeoutError" and report["absent"] == [victim], (rank, message)
        assert f"rank {victim} is unresponsive" in message, (rank, message)
        seq_named(message)
        assert 0.9 * TIMEOUT <= report["after"] < BOUND, (rank, report)
    assert all(f"rank {r} done" in proc.stdout for r in range(size)), proc.stdout  # the frozen one too
    figure(f"freeze mpi n={size}", [r["after"] for r in seen.values()])
