"""Mismatched calls and setting skew over the mpi transport, under a real mpiexec at 2
and 4 ranks (tests/faults/faults_mpi_script.py; issue 16, cases 4, 5 and 17)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectives.mpi import find_mpiexec

pytestmark = [pytest.mark.mpi, pytest.mark.multiprocess]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "faults" / "faults_mpi_script.py"


@pytest.mark.parametrize("ranks", [2, 4])
def test_mismatch_and_skew_over_mpi(ranks: int) -> None:
    if importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None:
        pytest.skip("mpi4py or mpiexec is missing (pip install mpi4py mpich)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [find_mpiexec() or "mpiexec", "-n", str(ranks), sys.executable, str(SCRIPT)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"[n={ranks}] ALL OK" in proc.stdout, output[-6000:]
