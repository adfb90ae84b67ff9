"""The environment variables that reveal a launcher: the one list.

A process learns that a launcher started it, and which rank it is, from variables the
launcher sets. ``collectives.init()`` reads them to find rank, size and store; the perf
harness reads them to tell "I am one rank of N" from "I start the ranks myself"
(``--np``); the spawner (:mod:`collectives.spawn`) removes them from the environment of
the children it starts, so that a child never believes it is a rank of the launcher that
started its parent (an inherited ``PMI_FD`` would even lead mpi4py to a PMI server that
is not its own). Those three readers used to keep their own copies, and the copies
drifted; this module is the list they share.

Launchers, in the order ``init()`` tries them:

================ ================================================================
collectives-run  COLLECTIVES_RANK (with COLLECTIVES_WORLD_SIZE, COLLECTIVES_STORE_ADDR, ...)
torchrun         RANK and WORLD_SIZE (with MASTER_ADDR, MASTER_PORT, LOCAL_RANK, ...)
mpiexec          PMI_RANK (MPICH, Intel MPI), OMPI_COMM_WORLD_RANK (Open MPI),
                 MV2_COMM_WORLD_RANK (MVAPICH), PMIX_RANK (PMIx) or MPI_LOCALRANKID
================ ================================================================

Slurm's ``srun`` is not a launcher of its own here: with an MPI plugin it sets the PMI or
PMIx variables above, and ``SLURM_PROCID`` alone names no store for ranks to meet in, so
``init()`` does not read it (the harness would otherwise refuse ``--np`` inside every
Slurm allocation).

Reads the environment only and imports nothing of the library, so anything may import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "COLLECTIVES_RUN",
    "LAUNCHERS",
    "LAUNCHER_VARIABLES",
    "LOCAL_RANK_VARIABLES",
    "MPIEXEC",
    "TORCHRUN",
    "Launcher",
    "detect_launcher",
    "incomplete_launcher",
    "local_rank",
    "without_launcher",
]


@dataclass(frozen=True)
class Launcher:
    """What one launcher sets in the environment of each rank it starts.

    Attributes:
        name: how the harness and the logs call it (``"torchrun"``).
        reveal: sets of variables; the launcher started this process when every
            variable of any one set is present.
        variables: every variable it sets that speaks of the job (the ``reveal`` ones
            included): what a child of one of its ranks must not inherit.
        local_rank: the variables that hold the rank's index on its host, first first.
    """

    name: str
    reveal: tuple[tuple[str, ...], ...]
    variables: tuple[str, ...]
    local_rank: tuple[str, ...] = ()

    def started(self, env: Mapping[str, str]) -> bool:
        """Whether this launcher started the process whose environment is ``env``."""
        return any(all(name in env for name in names) for names in self.reveal)


COLLECTIVES_RUN = Launcher(
    name="collectives-run",
    reveal=(("COLLECTIVES_RANK",),),
    variables=("COLLECTIVES_RANK", "COLLECTIVES_WORLD_SIZE", "COLLECTIVES_LOCAL_RANK", "COLLECTIVES_LOCAL_WORLD_SIZE",
               "COLLECTIVES_STORE_ADDR", "COLLECTIVES_SECRET"),
    local_rank=("COLLECTIVES_LOCAL_RANK",),
)
"""Our launcher (:mod:`collectives.run`), and the job environment of :mod:`collectives.spawn`."""

TORCHRUN = Launcher(
    name="torchrun",
    reveal=(("RANK", "WORLD_SIZE"),),
    variables=("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
               "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
               "TORCHELASTIC_USE_AGENT_STORE"),
    local_rank=("LOCAL_RANK",),
)
"""``torchrun`` (torch.distributed.run), and anything that sets its variables by hand."""

MPI_RANKS: tuple[tuple[str, str | None, str], ...] = (
    ("PMI_RANK", "PMI_SIZE", "MPICH/Intel MPI (hydra)"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MVAPICH"),
    ("PMIX_RANK", None, "PMIx"),
)
"""Per MPI launcher: the variable holding the rank, the one holding the world size (None
where it says none), and whose launcher sets them."""

MPI_LOCAL_RANKS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
MPI_LOCAL_SIZES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")

MPIEXEC = Launcher(
    name="mpiexec",
    reveal=(*((rank,) for rank, _, _ in MPI_RANKS), ("MPI_LOCALRANKID",)),
    variables=("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT", "PMI_ID", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
               "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
               "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_NODE_RANK", "MV2_COMM_WORLD_RANK",
               "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK"),
    local_rank=MPI_LOCAL_RANKS,
)
"""MPI launchers: MPICH and Intel MPI (hydra), Open MPI, MVAPICH, PMIx (as
:func:`collectives.mpi.mpiexec_environment` reads them)."""

LAUNCHERS: tuple[Launcher, ...] = (COLLECTIVES_RUN, TORCHRUN, MPIEXEC)
"""Every launcher, in the order ``init()`` tries them: the first that started us wins."""

LAUNCHER_VARIABLES: frozenset[str] = frozenset(name for launcher in LAUNCHERS for name in launcher.variables)
"""Every variable any launcher sets for a rank."""

LOCAL_RANK_VARIABLES: tuple[str, ...] = tuple(name for launcher in LAUNCHERS for name in launcher.local_rank)
"""Where a launcher says the rank's index on its host, in launcher order."""


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """The environment to read: ``env``, else ``os.environ``."""
    return os.environ if env is None else env


def detect_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the launcher that started this process (``"collectives-run"``,
    ``"torchrun"``, ``"mpiexec"``), or None when none did. ``env`` defaults to
    ``os.environ``."""
    env = _env(env)
    for launcher in LAUNCHERS:
        if launcher.started(env):
            return launcher.name
    return None


def incomplete_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """What is missing where a launcher's variables are only partly set, or None.

    Such an environment (``WORLD_SIZE`` and ``MASTER_*`` without ``RANK``, say: a
    hand-written job script) would otherwise start every process as a world of one, each
    training alone. ``RANK`` by itself is a common variable name and says nothing, and a
    world size of 1 needs no rank; anything else half-set is named here, for ``init()``
    to refuse.
    """
    env = _env(env)
    if "COLLECTIVES_RANK" not in env:
        ours = [n for n in ("COLLECTIVES_WORLD_SIZE", "COLLECTIVES_STORE_ADDR") if n in env]
        if ours and env.get("COLLECTIVES_WORLD_SIZE", "").strip() != "1":
            return f"{' and '.join(ours)} are set but COLLECTIVES_RANK is not (collectives-run sets all three)"
    elif "COLLECTIVES_WORLD_SIZE" not in env:
        return "COLLECTIVES_RANK is set but COLLECTIVES_WORLD_SIZE is not (collectives-run sets both)"
    if detect_launcher(env) is not None:
        return None
    torch = [n for n in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if n in env]
    if "WORLD_SIZE" in env and env["WORLD_SIZE"].strip() != "1":
        return f"{', '.join(torch)} {'are' if len(torch) > 1 else 'is'} set but RANK is not (torchrun sets RANK, " \
               "WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each process)"
    if "RANK" in env and ("MASTER_ADDR" in env or "MASTER_PORT" in env):
        return f"RANK and {', '.join(torch)} are set but WORLD_SIZE is not (torchrun sets RANK, WORLD_SIZE, " \
               "MASTER_ADDR and MASTER_PORT for each process)"
    return None


def local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This rank's index on its host where a launcher says it, else None."""
    env = _env(env)
    for name in LOCAL_RANK_VARIABLES:
        text = env.get(name, "")
        if text.isdigit():
            return int(text)
    return None


def without_launcher(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) without any launcher's variables: the
    environment to start a child in that must not pass for one of our own ranks."""
    return {name: value for name, value in _env(env).items() if name not in LAUNCHER_VARIABLES}
