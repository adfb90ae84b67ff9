"""mpi4py integration under a real mpiexec: tests/collectives/mpi_script.py at 2, 3 and 4 ranks.

The script checks every collective x algorithm over transport="mpi" and over the default
transports against MPI's own Allreduce, Reduce_scatter_block, Allgather, Bcast, Reduce,
Gather, Scatter and Alltoall on the same inputs, runs the transport conformance suite
with ranks as MPI processes, ``from_mpi`` on Split communicators, ranks claiming two
hosts, and ``init()`` under mpiexec. Skips with the reason when mpi4py, an MPI library
or mpiexec is missing. The in-process tests below need no MPI.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from collectives.mpi import find_mpiexec, mpiexec_environment
from collectives.transports.mpi import TagMap

pytestmark = pytest.mark.mpi

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "collectives" / "mpi_script.py"
RUN_TIMEOUT = 180.0
_OUR_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@lru_cache(maxsize=None)
def _mpi_missing() -> str | None:
    """Why mpiexec runs cannot happen here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if find_mpiexec() is None:
        return "no mpiexec on PATH or beside this Python (pip install mpich, or install an MPI library)"
    probe = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode != 0:
        return f"mpi4py cannot load an MPI library: {probe.stderr.strip().splitlines()[-1:]}"
    return None


@lru_cache(maxsize=None)
def _launcher_flags() -> tuple[str, ...]:
    """Open MPI's mpiexec refuses more ranks than cores, and root, unless told; MPICH's
    hydra oversubscribes and runs as root as it is."""
    try:
        text = subprocess.run([find_mpiexec() or "mpiexec", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if "Open MPI" in text or "OpenRTE" in text:
        return ("--oversubscribe", "--allow-run-as-root")
    return ()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_") and k not in _OUR_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_mpiexec(ranks: int) -> None:
    reason = _mpi_missing()
    if reason:
        pytest.skip(reason)
    command = [find_mpiexec() or "mpiexec", *_launcher_flags(), "-n", str(ranks), sys.executable, str(SCRIPT)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_clean_env(), cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{' '.join(command)} did not finish in {RUN_TIMEOUT:g} s; output so far:\n{out[-4000:]}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} exited with {proc.returncode}:\n{output[-6000:]}"
    assert f"[n={ranks}] ALL OK" in proc.stdout, (
        f"the script did not report ALL OK at {ranks} ranks (an mpiexec of another MPI than mpi4py's "
        f"starts {ranks} worlds of one):\n{output[-6000:]}"
    )


# -- no MPI needed ---------------------------------------------------------------------------


def test_tag_map_is_exact_and_keeps_classes_apart() -> None:
    for tag_ub in (32767, (1 << 29) - 1, (1 << 31) - 1):
        tags = TagMap(tag_ub)
        reserved = {tags.close_tag, tags.overflow_tag}
        assert max(reserved) == tag_ub
        samples = [0, 1, 5, tags.low_span - 1, tags.low_span, 1 << 32, (1 << 64) - 1]
        for cls in range(1, 8):
            base = cls << 61
            samples += [base, base | 5, base | (tags.high_span - 1), base | tags.high_span]
        mapped: dict[int, int] = {}
        for tag in samples:
            m = tags.mpi_tag(tag)
            if m is None:
                continue
            assert 0 <= m <= tag_ub and m not in reserved, (tag_ub, tag, m)
            assert mapped.setdefault(m, tag) == tag, f"tags {mapped[m]:#x} and {tag:#x} share MPI tag {m}"
        assert tags.mpi_tag(5) != tags.mpi_tag((1 << 62) | 5) != tags.mpi_tag((1 << 61) | 5)
        assert tags.mpi_tag(1 << 32) is None and tags.mpi_tag((1 << 64) - 1) is None
        assert tags.mpi_tag(tags.low_span) is None


def test_mpiexec_environment() -> None:
    assert mpiexec_environment({}) is None
    assert mpiexec_environment({"RANK": "0", "WORLD_SIZE": "2"}) is None
    hydra = mpiexec_environment({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"})
    assert hydra == {"launcher": "MPICH/Intel MPI (hydra)", "rank": 3, "size": 4, "local_rank": 1, "local_size": 2}
    ompi = mpiexec_environment({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "8",
                                "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert ompi is not None and (ompi["launcher"], ompi["rank"], ompi["size"], ompi["local_rank"]) == ("Open MPI", 1, 8, 1)
    pmix = mpiexec_environment({"PMIX_RANK": "2"})
    assert pmix is not None and pmix["rank"] == 2 and pmix["size"] is None


def test_init_without_mpi4py_under_mpiexec_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by mpiexec as one of several ranks but mpi4py is missing: a clear error,
    not N separate worlds of one."""
    import collectives
    from collectives.errors import UnsupportedError

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # "import mpi4py" now raises ImportError
    with pytest.raises(UnsupportedError, match="mpi4py is not installed"):
        collectives.init(env={"PMI_RANK": "0", "PMI_SIZE": "2"})
    with collectives.init(env={"PMI_RANK": "0", "PMI_SIZE": "1"}) as comm:  # mpiexec -n 1: a world of one
        assert comm.size == 1
        assert comm.all_reduce(np.ones(3))[0] == 1.0
