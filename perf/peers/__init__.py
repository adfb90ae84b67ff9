"""Peers for ``--vs``: the same collectives through other libraries (MPI via mpi4py,
torch.distributed's gloo), run by the same harness code so the numbers compare."""

from __future__ import annotations

PEERS = ("mpi", "gloo")


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here (None if it can), without starting anything."""
    import shutil

    if peer == "mpi":
        if not importable("mpi4py"):
            return "mpi4py is not installed"
        if shutil.which("mpiexec") is None and shutil.which("mpirun") is None:
            return "no mpiexec on PATH (install an MPI, e.g. MPICH or Open MPI)"
        return None
    if peer == "gloo":
        if not importable("torch"):
            return "torch is not installed"
        return None
    return f"unknown peer {peer!r} (known: {', '.join(PEERS)})"


def importable(name: str) -> bool:
    """Whether ``import name`` can work, without importing it (torch takes seconds)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
