"""Per-operation timeouts (reliability acceptance case 7): ``with comm.op_timeout(s):``
gives the operations issued inside it ``s`` seconds instead of the group's timeout. A
shorter one fires at its own value (not the group's); a longer one is honoured (a call that
waits longer than the group's timeout but less than its own succeeds), synchronous and
``async_op``, and the group's timeout applies again after the block. Over shared memory and
TCP at 2 and 4 ranks; the block's rules (per thread, nesting, restoring) in one process."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import collectives
from collectives.errors import CollectiveTimeoutError, InvalidArgumentError
from collectives.testing import run_world
from fault_worlds import figure

WORLDS = [("shm", 2), ("shm", 4), ("tcp", 2), ("tcp", 4)]
GROUP = 0.4
"""The group's timeout where a longer per-op one is honoured (seconds)."""
LATE = 1.2
"""How late the late rank is: three times the group's timeout."""
SHORT = 0.5
"""The per-op timeout that must fire, against a group timeout of 60 s."""


@pytest.mark.multiprocess
@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_longer_per_op_timeout_is_honoured(transport, size):
    late = size - 1

    def fn(comm):
        x = np.ones(1000)
        comm.all_reduce(x)  # #1: everyone connected and there
        comm.timeout = GROUP
        took = []
        with comm.op_timeout(30):
            if comm.rank == late:
                time.sleep(LATE)
            began = time.monotonic()
            comm.all_reduce(x)  # synchronous: waits LATE > GROUP for the late rank
            took.append(time.monotonic() - began)
            if comm.rank == late:
                time.sleep(LATE)
            began = time.monotonic()
            work = comm.all_reduce(x, async_op=True)  # runs on the worker thread, with the block's timeout
        value = work.wait()  # (waited for outside the block: the value it was issued under holds)
        took.append(time.monotonic() - began)
        restored = comm.timeout
        comm.timeout = 60.0
        comm.barrier()  # the communicator is healthy
        return took, restored, float(value[0])

    results = run_world(fn, size, transport, timeout=60)
    waited = []
    for rank, (took, restored, value) in enumerate(results):
        assert value == size ** 3, (rank, value)  # both calls completed, with the right sums
        assert restored == GROUP  # the group's timeout again after the block
        if rank != late:
            assert all(t > GROUP for t in took), (rank, took)  # they did wait past the group's timeout
            waited += took
    figure(f"per-op timeout 30 s honoured past the group's {GROUP} s, {transport} n={size}, waited", waited)


@pytest.mark.multiprocess
@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_shorter_per_op_timeout_fires_at_its_value(transport, size, tmp_path: Path):
    late = size - 1
    others = [r for r in range(size) if r != late]

    def fn(comm):
        x = np.ones(1000)
        comm.all_reduce(x)  # #1, everyone there; the group's timeout stays 60 s
        if comm.rank == late:  # absent from #2 until every other rank has given up on it
            deadline = time.monotonic() + 30
            while not all((tmp_path / f"rank{r}").exists() for r in others) and time.monotonic() < deadline:
                time.sleep(0.01)
            return None
        began = time.monotonic()
        try:
            with comm.op_timeout(datetime.timedelta(seconds=SHORT)):
                comm.all_reduce(x)
        except CollectiveTimeoutError as exc:
            after = time.monotonic() - began
            (tmp_path / f"rank{comm.rank}").touch()
            return type(exc).__name__, exc.timeout, exc.absent, str(exc), after, comm.timeout
        (tmp_path / f"rank{comm.rank}").touch()
        return "returned"

    results = run_world(fn, size, transport, timeout=60)
    raised = []
    for rank in others:
        assert results[rank] != "returned", f"rank {rank} completed all_reduce #2 without rank {late}"
        name, timeout, absent, message, after, group = results[rank]
        assert timeout == SHORT and f"after {SHORT:g} s" in message, message
        assert absent == [late], message
        assert SHORT <= after < SHORT + 5.0, (after, message)  # at its own value, far from the group's 60 s
        assert group == 60.0
        raised.append(after)
    figure(f"per-op timeout {SHORT} s (group 60 s) raised, {transport} n={size}, after", raised)


def test_the_block_is_per_thread_nests_and_restores():
    comm = collectives.init(rank=0, size=1, timeout=7.0)
    try:
        seen: list[float] = []
        with comm.op_timeout(2) as seconds:
            assert seconds == 2.0 and comm.timeout == 2.0
            other = threading.Thread(target=lambda: seen.append(comm.timeout))
            other.start()
            other.join()
            with comm.op_timeout(datetime.timedelta(minutes=1)):
                assert comm.timeout == 60.0  # the innermost block wins
            assert comm.timeout == 2.0
            assert comm.all_reduce(np.ones(3), async_op=True).wait().tolist() == [1.0, 1.0, 1.0]
        assert seen == [7.0]  # another thread keeps the group's timeout
        assert comm.timeout == 7.0
        with pytest.raises(RuntimeError), comm.op_timeout(1):
            raise RuntimeError("left by an error")
        assert comm.timeout == 7.0
        comm.timeout = 9.0  # sets the group's timeout
        assert comm.timeout == 9.0
        for wrong in (0, -1, float("nan"), float("inf"), "5", True, datetime.timedelta(0)):
            with pytest.raises(InvalidArgumentError, match="op_timeout"), comm.op_timeout(wrong):
                pass
    finally:
        comm.close()

