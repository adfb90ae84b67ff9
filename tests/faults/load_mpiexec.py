"""Run a script of tests/faults under mpiexec and read back the ``RESULT {json}`` line its
rank 0 prints (the load and large-message tests over the mpi transport)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from collectives.mpi import find_mpiexec

REPO = Path(__file__).resolve().parents[2]
_OUR_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@lru_cache(maxsize=None)
def mpi_missing() -> str | None:
    """Why mpiexec runs cannot happen here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if find_mpiexec() is None:
        return "no mpiexec on PATH or beside this Python (pip install mpich, or install an MPI library)"
    return None


def _launcher_flags(mpiexec: str) -> tuple[str, ...]:
    """Open MPI's mpiexec refuses more ranks than cores, and root, unless told."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return ("--oversubscribe", "--allow-run-as-root") if "Open MPI" in text or "OpenRTE" in text else ()


def run_mpiexec(script: str, ranks: int, args: list[str], timeout: float) -> dict[str, Any]:
    """``mpiexec -n ranks python tests/faults/<script> args...``; the JSON rank 0 printed."""
    reason = mpi_missing()
    if reason:
        pytest.skip(reason)
    mpiexec = find_mpiexec() or "mpiexec"
    command = [mpiexec, *_launcher_flags(mpiexec), "-n", str(ranks), sys.executable,
               str(REPO / "tests" / "faults" / script), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_") and k not in _OUR_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{' '.join(command)} did not finish in {timeout:g} s; output so far:\n{out[-4000:]}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} exited with {proc.returncode}:\n{output[-6000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"expected one RESULT line from rank 0 of {ranks}:\n{output[-6000:]}"
    result: dict[str, Any] = json.loads(lines[0][len("RESULT "):])
    return result
