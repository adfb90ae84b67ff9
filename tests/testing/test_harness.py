"""collectives.testing.run_world: results in rank order, failures named by rank, hangs bounded."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

import collectives
from collectives.errors import CollectivesError
from collectives.testing import RankError, run_world

PROCESS_TRANSPORTS = ["shm", "tcp"]
ALL_TRANSPORTS = ["inproc", *PROCESS_TRANSPORTS]


@pytest.fixture(params=ALL_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_results_come_back_in_rank_order(transport: str) -> None:
    scale = 10  # a closure: forked processes see it too

    def fn(comm: Any) -> tuple[int, int, int]:
        comm.barrier()
        return (comm.rank, comm.size, comm.rank * scale)

    assert run_world(fn, 3, transport, timeout=30) == [(0, 3, 0), (1, 3, 10), (2, 3, 20)]


def test_ranks_really_communicate(transport: str) -> None:

    def fn(comm: Any) -> list[float]:
        x = np.arange(4, dtype=np.float64) + 100 * comm.rank
        comm.all_reduce(x)
        return x.tolist()

    expected = [300.0 + 3 * i for i in range(4)]  # 0 + 100 + 200, plus 3*i
    assert run_world(fn, 3, transport, timeout=30) == [expected] * 3


def test_world_of_one(transport: str) -> None:
    assert run_world(lambda comm: (comm.rank, comm.size), 1, transport, timeout=30) == [(0, 1)]


def test_an_exception_is_reraised_naming_the_rank(transport: str) -> None:
    def fn(comm: Any) -> None:
        if comm.rank == 1:
            raise ValueError("boom on purpose")

    with pytest.raises(RankError, match=r"^rank 1 raised ValueError: boom on purpose$") as info:
        run_world(fn, 3, transport, timeout=30)
    error = info.value
    assert isinstance(error, CollectivesError)
    assert error.rank == 1 and error.ranks == [1]
    assert error.exception_type == "ValueError"
    assert "boom on purpose" in error.remote_traceback and "in fn" in error.remote_traceback
    assert isinstance(error.__cause__, ValueError) and isinstance(error.exception, ValueError)


def test_the_first_failure_is_reported_not_its_consequences(transport: str) -> None:
    def fn(comm: Any) -> None:
        if comm.rank == 2:
            raise KeyError("root cause")
        comm.barrier()  # the others lose rank 2 here (PeerLostError or a timeout)

    start = time.monotonic()
    with pytest.raises(RankError, match=r"^rank 2 raised KeyError: 'root cause'$"):
        run_world(fn, 3, transport, timeout=20)
    assert time.monotonic() - start < 15


def test_the_communicator_is_closed_after_fn() -> None:
    comms: list[Any] = []
    run_world(comms.append, 2, "inproc", timeout=30)
    assert len(comms) == 2
    for comm in comms:
        with pytest.raises(collectives.CommunicatorClosedError):
            comm.barrier()


def test_a_library_error_keeps_its_type(transport: str) -> None:
    def fn(comm: Any) -> None:
        comm.broadcast(b"", root=comm.size + 5)  # an invalid root: raised locally on every rank

    with pytest.raises(RankError) as info:
        run_world(fn, 2, transport, timeout=30)
    assert info.value.exception_type == "collectives.errors.InvalidArgumentError"
    assert isinstance(info.value.exception, collectives.InvalidArgumentError)


def test_a_hanging_rank_is_reported_after_the_timeout(transport: str) -> None:
    release = threading.Event()

    def fn(comm: Any) -> int:
        if comm.rank == 1:
            release.wait(30)  # a thread cannot be killed: released at the end of the test
        return comm.rank

    start = time.monotonic()
    try:
        with pytest.raises(RankError, match=r"^rank\(s\) 1 did not finish within 0.5 s") as info:
            run_world(fn, 3, transport, timeout=0.5)
    finally:
        release.set()
    assert info.value.ranks == [1]
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("transport_name", PROCESS_TRANSPORTS)
def test_a_process_killed_without_reporting_is_named_with_its_exit_code(transport_name: str) -> None:
    def fn(comm: Any) -> None:
        if comm.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        comm.barrier()  # rank 1 loses rank 0 here; the death is still what is reported

    with pytest.raises(RankError, match=r"^rank 0 was killed by SIGKILL \(exit code -9\) without reporting") as info:
        run_world(fn, 2, transport_name, timeout=30)
    assert info.value.exitcode == -signal.SIGKILL


def test_an_unpicklable_result_is_reported() -> None:
    with pytest.raises(RankError, match=r"^rank 0 raised .*(Pickl|pickle)"):
        run_world(lambda comm: threading.Lock(), 1, "tcp", timeout=30)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(collectives.InvalidArgumentError, match="world_size"):
        run_world(lambda comm: None, 0)
    with pytest.raises(collectives.InvalidArgumentError, match="transport"):
        run_world(lambda comm: None, 2, "carrier-pigeon")
