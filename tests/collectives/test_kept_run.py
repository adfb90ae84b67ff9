"""The C runner of kept plans (``_fast_c.KeptRun``, made by ``_fast_path.kept_run``) takes the
steps of ``Communicator._run_kept``: the same Call (name, sequence number, timeout, deadline),
the same flight recorder slot, the same errors, the run lock released after each.

Each case runs a plan of ours, kept under a broadcast's signature on a world of one, through the
C fast path twice: with the communicator's runner, and with ``_kept_run`` set to None (the C
fast path then calls the Python ``_run_kept``), and compares what the plan saw and what the
caller got.
"""

from __future__ import annotations

import gc
import time
import weakref
from typing import Any

import numpy as np
import pytest

import collectives
from collectives import _fast_path
from collectives.errors import CommunicatorBrokenError, CommunicatorClosedError, PeerLostError

KEY = ("broadcast", np.dtype(np.float32), 4, 0, None)


class Seen:
    """A plan that records the Call it was given, then does what it is told."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, int, float, float, float]] = []

    def __call__(self, x: Any, out: Any, call: Any) -> None:
        self.calls.append((call.name, call.seq, call.timeout, call.deadline, time.monotonic()))
        if self.fail is not None:
            raise self.fail


def _comm(runner: bool, plan: Seen) -> Any:
    comm = collectives.init(rank=0, size=1)
    assert comm._fast is _fast_path.C, "the C fast path is not in use"
    assert type(comm._kept_run).__name__ == "KeptRun"
    if not runner:
        comm._kept_run = None
    comm._plans[KEY] = plan
    return comm


def _lock_is_free(comm: Any) -> bool:
    free: bool = comm._run_lock.acquire(blocking=False)
    if free:
        comm._run_lock.release()
    return free


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_the_plan_gets_the_call_numbered_and_timed_and_the_recorder_its_slot(runner: bool) -> None:
    plan = Seen()
    comm = _comm(runner, plan)
    try:
        x = np.arange(4, dtype=np.float32)
        before = time.monotonic()
        for _ in range(3):
            assert comm.broadcast(x, 0) is x
        assert [(name, seq, timeout) for name, seq, timeout, _, _ in plan.calls] == [
            ("broadcast", 1, comm.timeout), ("broadcast", 2, comm.timeout), ("broadcast", 3, comm.timeout)]
        for _, _, timeout, deadline, at in plan.calls:
            assert before + timeout <= deadline <= at + timeout
        entries = comm.trace()
        assert [(e["seq"], e["op"], e["state"]) for e in entries] == [(1, "broadcast", "completed"),
                                                                       (2, "broadcast", "completed"),
                                                                       (3, "broadcast", "completed")]
        assert all(e["duration_us"] >= 0 for e in entries)
        assert _lock_is_free(comm)
    finally:
        comm.close()


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_an_op_timeout_block_is_the_calls_timeout(runner: bool) -> None:
    plan = Seen()
    comm = _comm(runner, plan)
    try:
        x = np.zeros(4, dtype=np.float32)
        with comm.op_timeout(2.5):
            comm.broadcast(x, 0)
        comm.broadcast(x, 0)
        assert [timeout for _, _, timeout, _, _ in plan.calls] == [2.5, comm.timeout]
    finally:
        comm.close()


def _failure(runner: bool, error: BaseException) -> tuple[BaseException, list[dict[str, Any]], bool, BaseException]:
    """What the caller gets from a plan raising ``error``, the recorder's entries, whether the
    lock is free, and what the next call raises."""
    comm = _comm(runner, Seen(error))
    try:
        x = np.zeros(4, dtype=np.float32)
        with pytest.raises(BaseException) as first:
            comm.broadcast(x, 0)
        free = _lock_is_free(comm)
        comm._plans[KEY] = Seen()
        with pytest.raises(BaseException) as second:
            comm.broadcast(x, 0)
            raise AssertionError("no error")
        return first.value, comm.trace(), free, second.value
    finally:
        comm.close()


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_failing_plan_raises_its_error_marks_the_slot_failed_and_frees_the_lock(runner: bool) -> None:
    error, entries, free, after = _failure(runner, ValueError("the plan's own error"))
    assert error.__class__ is ValueError and str(error) == "the plan's own error"
    assert error.__traceback__ is not None
    assert [(e["seq"], e["state"], e.get("error")) for e in entries] == [(1, "failed", "ValueError: the plan's own error"),
                                                                         (2, "completed", None)]
    assert free
    assert isinstance(after, AssertionError), "one failed plan of ours does not break the communicator"


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_transport_failure_breaks_the_communicator_alike_on_both(runner: bool) -> None:
    error, entries, free, after = _failure(runner, PeerLostError("peer 1 left"))
    python_error, _, _, python_after = _failure(False, PeerLostError("peer 1 left"))
    assert (type(error), str(error)) == (type(python_error), str(python_error))
    assert (error.__context__ is None) == (python_error.__context__ is None)
    assert type(error.__cause__) is type(python_error.__cause__)
    assert [e["state"] for e in entries] == ["failed"]  # (the next call is refused before it is numbered)
    assert free
    assert isinstance(after, CommunicatorBrokenError) and (type(after), str(after)) == (type(python_after), str(python_after))


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_closed_communicator_refuses_a_kept_call(runner: bool) -> None:
    comm = _comm(runner, Seen())
    comm.close()
    with pytest.raises(CommunicatorClosedError):
        comm.broadcast(np.zeros(4, dtype=np.float32), 0)


def test_a_communicator_with_a_runner_is_collected() -> None:
    comm = collectives.init(rank=0, size=1)
    assert comm._kept_run is not None
    comm.close()
    gone = weakref.ref(comm)
    del comm
    gc.collect()
    assert gone() is None


def test_the_runner_refuses_what_it_cannot_run() -> None:
    from collectives import _fast_c  # type: ignore[attr-defined]

    comm = collectives.init(rank=0, size=1)
    try:
        with pytest.raises(ValueError, match="power of two"):
            _fast_c.KeptRun(comm, _fast_path.nothing, 1000)
        with pytest.raises(AttributeError):
            _fast_c.KeptRun(object(), _fast_path.nothing, 1024)
    finally:
        comm.close()


def test_pure_python_communicators_have_no_runner() -> None:
    comm = collectives.init(rank=0, size=1, pure_python=True)
    try:
        assert comm._fast is _fast_path.PYTHON and comm._kept_run is None
    finally:
        comm.close()


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_failure_handler_that_returns_lets_the_call_complete(runner: bool) -> None:
    comm = _comm(runner, Seen(ValueError("handled")))
    comm._failed = lambda name, seq, exc: None  # (the real one always raises)
    try:
        x = np.zeros(4, dtype=np.float32)
        assert comm.broadcast(x, 0) is x
        assert [(e["seq"], e["state"]) for e in comm.trace()] == [(1, "completed")]
        assert _lock_is_free(comm)
    finally:
        comm.close()


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_repeated_call_keeps_one_key_in_the_recorder_and_leaves_the_collector_nothing(runner: bool) -> None:
    comm = _comm(runner, Seen())
    comm._plans[KEY] = lambda x, out, call: None  # (a plan that keeps nothing of its calls)
    try:
        x = np.arange(4, dtype=np.float32)
        comm.broadcast(x, 0)
        gc.collect()
        gc.disable()  # (the count of new objects below is the collector's trigger)
        try:
            before = gc.get_count()[0]
            for _ in range(100):
                comm.broadcast(x, 0)
            grown = gc.get_count()[0] - before
        finally:
            gc.enable()
        keys = [comm._trace_slots[seq][0] for seq in range(1, 102)]
        assert all(key == KEY for key in keys)
        assert len({id(key) for key in keys}) == 1, "a new key object per call lives on in the ring"
        assert grown < 10, f"{grown} objects for the collector after 100 calls"
        comm._plans[("broadcast", np.dtype(np.float64), 4, 0, None)] = comm._plans[KEY]
        comm.broadcast(np.zeros(4), 0)  # another key is recorded as itself
        assert comm._trace_slots[102][0] == ("broadcast", np.dtype(np.float64), 4, 0, None)
    finally:
        comm.close()


@pytest.mark.parametrize("runner", [True, False], ids=["KeptRun", "python"])
def test_a_barrier_is_numbered_and_recorded_by_either_runner(runner: bool) -> None:
    comm = _comm(runner, Seen())
    barrier = Seen()
    comm._barrier = barrier  # (the planner's barrier: what the runner calls)
    try:
        assert comm.barrier() is None
        comm.broadcast(np.zeros(4, dtype=np.float32), 0)
        assert comm.barrier() is None
        assert [(name, seq) for name, seq, *_ in barrier.calls] == [("barrier", 1), ("barrier", 3)]
        assert [(e["seq"], e["op"], e["state"]) for e in comm.trace()] == [
            (1, "barrier", "completed"), (2, "broadcast", "completed"), (3, "barrier", "completed")]
        assert _lock_is_free(comm)
    finally:
        comm.close()


def test_the_runner_called_from_python_takes_a_communicator_key_plan_and_buffers() -> None:
    comm = collectives.init(rank=0, size=1)
    runner = comm._kept_run
    try:
        with pytest.raises(TypeError, match="comm, key, plan, x, out"):
            runner(comm, ("barrier", None), comm._barrier)
        with pytest.raises(TypeError, match="key must be a tuple"):
            runner(comm, "barrier", comm._barrier, None, None)
        with pytest.raises(TypeError, match="comm, key, plan, x, out"):
            runner(comm, ("barrier", None), comm._barrier, None, out=None)
        assert [e["op"] for e in comm.trace()] == []  # nothing was numbered
    finally:
        comm.close()
