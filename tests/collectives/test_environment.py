"""``collectives.environment``: the one list of launcher variables, read the way ``init()``
reads them, and used by the perf harness and the spawner."""

from __future__ import annotations

import pytest

from collectives import environment
from collectives.environment import LAUNCHER_VARIABLES, LAUNCHERS, detect_launcher, local_rank, without_launcher
from collectives.mpi import mpiexec_environment

CASES = [
    ({}, None),
    ({"COLLECTIVES_RANK": "1", "COLLECTIVES_WORLD_SIZE": "2"}, "collectives-run"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "torchrun"),
    ({"RANK": "0"}, None),  # RANK alone is a common variable name, not torchrun
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, "mpiexec"),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, "mpiexec"),
    ({"MV2_COMM_WORLD_RANK": "1"}, "mpiexec"),
    ({"PMIX_RANK": "3"}, "mpiexec"),
    ({"MPI_LOCALRANKID": "0"}, "mpiexec"),
    ({"PMI_SIZE": "2"}, None),  # the harness's old copy said mpiexec here; init() never did
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, None),
    # init() tries our launcher first, then torchrun, then mpiexec
    ({"COLLECTIVES_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "PMI_RANK": "0"}, "collectives-run"),
    ({"RANK": "0", "WORLD_SIZE": "2", "PMI_RANK": "0"}, "torchrun"),
]


@pytest.mark.parametrize(("env", "name"), CASES, ids=[name or "none" for _, name in CASES])
def test_detect_launcher_in_init_order(env: dict[str, str], name: str | None) -> None:
    assert detect_launcher(env) == name


@pytest.mark.parametrize(("env", "name"), CASES, ids=[name or "none" for _, name in CASES])
def test_mpiexec_is_detected_exactly_where_the_mpi_module_sees_it(env: dict[str, str], name: str | None) -> None:
    """The list and collectives.mpi.mpiexec_environment (what init() asks) agree."""
    assert environment.MPIEXEC.started(env) == (mpiexec_environment(env) is not None)


def test_detect_launcher_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert detect_launcher() is None
    monkeypatch.setenv("PMIX_RANK", "0")
    assert detect_launcher() == "mpiexec"


def test_every_variable_that_reveals_a_launcher_is_one_a_child_loses() -> None:
    for launcher in LAUNCHERS:
        for names in launcher.reveal:
            assert set(names) <= LAUNCHER_VARIABLES, launcher.name
        assert set(launcher.local_rank) <= LAUNCHER_VARIABLES


def test_without_launcher_keeps_everything_else() -> None:
    env = {"PATH": "/bin", "COLLECTIVES_TIMEOUT": "5", "COLLECTIVES_RANK": "0", "RANK": "1", "WORLD_SIZE": "2",
           "MASTER_PORT": "29500", "PMI_FD": "7", "OMPI_COMM_WORLD_LOCAL_RANK": "0", "TORCHELASTIC_USE_AGENT_STORE": "1"}
    assert without_launcher(env) == {"PATH": "/bin", "COLLECTIVES_TIMEOUT": "5"}
    assert detect_launcher(without_launcher(env)) is None
    assert "RANK" in env  # a copy, the argument is left alone


@pytest.mark.parametrize(("env", "want"), [
    ({}, None),
    ({"COLLECTIVES_LOCAL_RANK": "2", "LOCAL_RANK": "1"}, 2),
    ({"LOCAL_RANK": "1", "MPI_LOCALRANKID": "3"}, 1),
    ({"MPI_LOCALRANKID": "3"}, 3),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "x", "MV2_COMM_WORLD_LOCAL_RANK": "4"}, 4),
])
def test_local_rank(env: dict[str, str], want: int | None) -> None:
    assert local_rank(env) == want


def test_the_perf_harness_asks_the_same_list() -> None:
    from perf import harness

    for env, name in CASES:
        assert harness.detect_launcher(env) == name
