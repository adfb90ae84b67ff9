"""The barrier: through the small window's flags where every rank shares the host (one post
and a read of each peer's flag), through the dissemination schedule elsewhere; on every
route nobody leaves before the last rank arrives, and barriers interleave with small
collectives without mixing their turns."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from collectives.engines import small_native
from collectives.engines.small import EXIT_WAIT_SECONDS
from collectives.plans import windowed
from collectives.testing import run_world
from collectives.transports.progress import oversubscribed

pytestmark = pytest.mark.multiprocess

LATE = 0.3  # seconds the last rank arrives after the others


def _waits_for_the_late_rank(comm):
    kind = type(comm._barrier).__name__
    comm.barrier()  # everyone here: the late rank's delay starts together
    if comm.rank == comm.size - 1:
        time.sleep(LATE)
    start = time.monotonic()
    comm.barrier()
    return kind, time.monotonic() - start


@pytest.mark.parametrize("transport,size,route", [("shm", 2, "SmallBarrier"), ("shm", 4, "SmallBarrier"),
                                                  ("tcp", 3, "InPlace")])
def test_nobody_leaves_a_barrier_before_the_last_rank_arrives(transport, size, route):
    results = run_world(_waits_for_the_late_rank, size, transport, timeout=60)
    assert {kind for kind, _ in results} == {route}
    for rank, (_, waited) in enumerate(results[:-1]):
        assert waited >= LATE * 0.8, f"rank {rank} left after {waited:.3f} s"


def test_barriers_between_small_collectives_keep_every_result_right():
    def fn(comm):
        assert isinstance(comm._barrier, windowed.SmallBarrier)
        got = []
        for i in range(60):
            x = np.full(3 + i % 5, comm.rank + i, dtype=np.float64)
            comm.all_reduce(x)
            if i % 3 == 0:
                comm.barrier()
            b = np.full(4, comm.rank * 10.0 + i) if comm.rank == i % comm.size else np.zeros(4)
            comm.broadcast(b, root=i % comm.size)
            if i % 2:
                comm.barrier()
            got.append((x.copy(), b.copy()))
        return got

    size = 3
    results = run_world(fn, size, "shm", timeout=60)
    for i in range(60):
        want_x = sum(r + i for r in range(size))
        want_b = (i % size) * 10.0 + i
        for rank in range(size):
            x, b = results[rank][i]
            assert np.all(x == want_x) and np.all(b == want_b), (rank, i)


def test_a_world_asking_for_schedules_keeps_the_dissemination_barrier(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_ALGO", "ring")
    results = run_world(_waits_for_the_late_rank, 2, "shm", timeout=60)
    assert [kind for kind, _ in results] == ["InPlace", "InPlace"]
    assert results[0][1] >= LATE * 0.8


def test_a_barrier_meeting_an_all_reduce_raises_on_both_ranks():
    def fn(comm):
        comm.timeout = 5.0
        try:
            if comm.rank == 0:
                comm.barrier()
            else:
                comm.all_reduce(np.ones(2))
        except Exception as exc:  # noqa: BLE001 - the test reads what each rank raised
            return type(exc).__name__, str(exc)
        return None

    results = run_world(fn, 2, "shm", timeout=60)
    for kind, text in results:  # each names the mismatch the first rank to fail recorded
        assert kind == "MessageMismatchError", results
        assert "is in a barrier" in text and "passed 16 bytes" in text, results


def _completes_while_the_early_rank_is_stopped(comm):
    """Rank 0 waits out the barrier (asleep by then); rank 1 stops it, then completes the
    barrier: how long rank 1's barrier took."""
    pids = comm.all_gather(np.array([os.getpid()], dtype=np.int64))
    comm.barrier()
    if comm.rank == 0:
        comm.barrier()
        return None
    time.sleep(LATE)  # rank 0 is asleep in the barrier by now
    os.kill(int(pids[0]), signal.SIGSTOP)
    try:
        start = time.monotonic()
        comm.barrier()
        return time.monotonic() - start
    finally:
        os.kill(int(pids[0]), signal.SIGCONT)


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "python"])
def test_the_last_rank_leaves_a_barrier_once_a_sleeping_rank_runs_again_or_after_a_bounded_wait(
        pure_python, monkeypatch):
    # The rank that completes a barrier waits for a rank that slept in it to run again, so
    # that they leave together (a clock started after the barrier starts alike); a rank that
    # does not run again (stopped here) holds it EXIT_WAIT_SECONDS at most.
    if pure_python:
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    if oversubscribed(2):
        pytest.skip("fewer than 2 CPUs: waits yield, and ranks leave as they may")
    _, waited = run_world(_completes_while_the_early_rank_is_stopped, 2, "shm", timeout=60)
    assert EXIT_WAIT_SECONDS <= waited < 1.0


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "python"])
def test_where_ranks_outnumber_cpus_the_last_rank_also_waits_for_a_sleeping_rank(pure_python, monkeypatch):
    # Two ranks confined to one CPU: every wait yields, and a woken rank can wait long for
    # the core; the ranks still leave together, within the same bounded wait.
    if pure_python:
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the ranks inherit it: 2 ranks on 1 CPU
    try:
        assert oversubscribed(2)
        _, waited = run_world(_completes_while_the_early_rank_is_stopped, 2, "shm", timeout=60)
    finally:
        os.sched_setaffinity(0, allowed)
    assert EXIT_WAIT_SECONDS <= waited < 1.0
