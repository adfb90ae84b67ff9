"""What test_faults_per_op_timeout.py runs on every rank, under ``run_world`` (shm, tcp) and
under mpiexec (faults_per_op_mpi.py): a longer per-op timeout honoured, a shorter one firing
at its own value, and the checks of what the ranks saw."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import numpy as np

from collectives.errors import CollectiveTimeoutError

GROUP = 0.2
"""The group's timeout where a longer per-op one is honoured (seconds)."""
LATE = 0.6
"""How late the late rank is: three times the group's timeout."""
SHORT = 0.5
"""The per-op timeout that must fire, against a group timeout of 60 s."""


def longer(comm: Any) -> tuple[list[float], float, float]:
    """Two calls inside ``op_timeout(30)`` in a group of ``GROUP`` s, each waiting ``LATE``
    for the last rank: synchronous, then ``async_op`` (waited for after the block)."""
    late = comm.size - 1
    x = np.ones(1000)
    comm.all_reduce(x)  # everyone connected and there
    comm.timeout = GROUP
    took = []
    with comm.op_timeout(30):
        if comm.rank == late:
            time.sleep(LATE)
        began = time.monotonic()
        comm.all_reduce(x)  # waits LATE > GROUP for the late rank
        took.append(time.monotonic() - began)
        if comm.rank == late:
            time.sleep(LATE)
        began = time.monotonic()
        work = comm.all_reduce(x, async_op=True)  # runs on the worker thread, with the block's timeout
    value = work.wait()
    took.append(time.monotonic() - began)
    restored = comm.timeout
    comm.timeout = 60.0
    comm.barrier()  # the communicator is healthy
    return took, restored, float(value[0])


def check_longer(results: list[Any]) -> list[float]:
    """Assert what ``longer`` returned on every rank; the waits of the ranks that waited."""
    size, waited = len(results), []
    for rank, (took, restored, value) in enumerate(results):
        assert value == size ** 3, (rank, value)  # both calls completed, with the right sums
        assert restored == GROUP  # the group's timeout again after the block
        if rank != size - 1:
            assert all(t > GROUP for t in took), (rank, took)  # they did wait past the group's timeout
            waited += took
    return waited


def shorter(folder: Path) -> Any:
    """A fn for every rank: the last rank stays out of the second all_reduce until the
    others have given up on it under ``op_timeout(SHORT)`` (the group's timeout is 60 s)."""

    def fn(comm: Any) -> Any:
        late = comm.size - 1
        x = np.ones(1000)
        comm.timeout = 60.0
        comm.all_reduce(x)  # everyone there
        if comm.rank == late:
            deadline = time.monotonic() + 30
            while not all((folder / f"gave_up{r}").exists() for r in range(late)) and time.monotonic() < deadline:
                time.sleep(0.01)
            return None
        began = time.monotonic()
        try:
            with comm.op_timeout(datetime.timedelta(seconds=SHORT)):
                comm.all_reduce(x)
        except CollectiveTimeoutError as exc:
            after = time.monotonic() - began
            (folder / f"gave_up{comm.rank}").touch()
            return type(exc).__name__, exc.timeout, exc.absent, str(exc), after, comm.timeout
        (folder / f"gave_up{comm.rank}").touch()
        return "returned"

    return fn


def check_shorter(results: list[Any]) -> list[float]:
    """Assert what ``shorter`` returned on every rank; when the waiting ranks raised."""
    late, raised = len(results) - 1, []
    for rank in range(late):
        assert results[rank] != "returned", f"rank {rank} completed all_reduce #2 without rank {late}"
        _name, timeout, absent, message, after, group = results[rank]
        assert timeout == SHORT and f"after {SHORT:g} s" in message, message
        assert absent == [late], message
        assert SHORT <= after < SHORT + 5.0, (after, message)  # at its own value, far from the group's 60 s
        assert group == 60.0
        raised.append(after)
    return raised
