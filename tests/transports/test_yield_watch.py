"""The yield watch (``progress.YieldWatch``): crowded waits yield to a peer queued on their CPU,
until a yield is seen to hand the CPU to something else for long while more tasks are runnable
than the job's awake ranks (a process outside the job); then they sleep instead, for a while. The compiled plans keep the same words by
the same rules (``_flags.h``), and a held watch keeps both kinds of wait from yielding."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import collectives
from collectives.engines import small_native
from collectives.testing import run_world
from collectives.transports import progress, shm_window
from collectives.transports.progress import (
    LONG_YIELD_NS,
    OUTSIDER_HOLD_NS,
    YieldWatch,
    runnable_beyond,
)

T0 = 10**12  # a monotonic clock reading, ns


def _python_note(words: Any, took: int, now: int, outsider: bool = True) -> bool:
    watch = YieldWatch()
    watch.words = words
    return watch.note(took, now, lambda: outsider)


def _c_note(words: Any, took: int, now: int, outsider: bool = True) -> bool:
    from collectives.engines import _small_c  # type: ignore[attr-defined]
    return bool(_small_c.watch_note(int(words.ctypes.data), took, now, outsider))


Note = Callable[..., bool]
NOTES = [pytest.param(_python_note, id="python")]
if small_native.built():
    NOTES.append(pytest.param(_c_note, id="c"))


@pytest.fixture(params=NOTES)
def note(request: pytest.FixtureRequest) -> Note:
    return request.param  # type: ignore[no-any-return]


def test_short_yields_never_hold_the_waits(note: Note) -> None:
    words = np.zeros(2, dtype=np.int64)
    for i in range(1000):
        assert not note(words, LONG_YIELD_NS - 1, T0 + i * 1000)
    assert words.tolist() == [0, 0]


def test_a_long_yield_beside_an_outsider_holds_the_waits_for_the_hold_time(note: Note) -> None:
    words = np.zeros(2, dtype=np.int64)
    assert note(words, LONG_YIELD_NS, T0)
    assert words.tolist() == [T0 + OUTSIDER_HOLD_NS, T0]
    watch = YieldWatch()
    watch.words = words
    assert watch.held(T0 + OUTSIDER_HOLD_NS - 1) and not watch.held(T0 + OUTSIDER_HOLD_NS)
    assert note(words, 8 * LONG_YIELD_NS, T0 + 5)  # a later one moves the hold on
    assert words.tolist() == [T0 + 5 + OUTSIDER_HOLD_NS, T0 + 5]


def test_long_yields_with_no_task_beyond_ours_runnable_hold_nothing(note: Note) -> None:
    """A rank's own work between calls makes long yields too: without tasks beyond the job's ranks
    runnable they are not counted."""
    words = np.zeros(2, dtype=np.int64)
    for i in range(10):
        assert not note(words, 10 * LONG_YIELD_NS, T0 + i * 1000, False)
    assert words.tolist() == [0, 0]


def test_runnable_beyond_counts_the_caller_itself() -> None:
    """At least the asking task runs: more than 0 ranks' worth always, never more than a million."""
    assert runnable_beyond(0) and not runnable_beyond(10**6)
    if small_native.built():
        from collectives.engines import _small_c  # type: ignore[attr-defined]
        assert _small_c.runnable_beyond(0) and not _small_c.runnable_beyond(10**6)


def test_the_compiled_plans_keep_the_watch_by_the_same_constants() -> None:
    if not small_native.built():
        pytest.skip("the C extension is not built")
    from collectives.engines import _small_c  # type: ignore[attr-defined]
    assert (_small_c.LONG_YIELD_NS, _small_c.OUTSIDER_HOLD_NS) == (LONG_YIELD_NS, OUTSIDER_HOLD_NS)
    words = np.zeros(2, dtype=np.int64)
    words[0] = T0
    assert _small_c.watch_held(int(words.ctypes.data), T0 - 1) and not _small_c.watch_held(int(words.ctypes.data), T0)
    with pytest.raises(ValueError, match="address 0"):
        _small_c.watch_note(0, LONG_YIELD_NS, T0, True)


def _late_peer_calls(comm: collectives.Communicator, hold: bool) -> tuple[bool, int, int | None]:
    """Rank 0 all-reduces 8 B while rank 1 comes late, ten times, with this process's watch held
    (or cleared) first: whether the sums were right, rank 0's ``os.sched_yield`` calls in Python,
    and its C plan's ``held_waits`` (None: no C plan)."""
    yields = 0
    real_yield = os.sched_yield

    def counted_yield() -> None:
        nonlocal yields
        yields += 1
        real_yield()

    ok = []
    x = np.ones(1)
    for _ in range(10):
        progress.WATCH.clear()
        if hold:
            progress.WATCH.words[0] = time.monotonic_ns() + 3600 * 10**9
        comm.barrier()
        if comm.rank == 1:
            time.sleep(0.02)  # late: rank 0 waits for it
        x[:] = 1
        os.sched_yield = counted_yield  # (a forked rank's own os module), for the all-reduce alone
        try:
            comm.all_reduce(x)
        finally:
            os.sched_yield = real_yield
        ok.append(bool(x[0] == comm.size))
    plan = comm._plans[("all_reduce", x.dtype, x.size, collectives.ReduceOp.SUM, None)]
    native = getattr(getattr(plan, "kernel", plan), "native", None)
    return all(ok), yields, None if native is None else native.held_waits


@pytest.mark.multiprocess
@pytest.mark.parametrize("implementation", ["c", "python"])
def test_a_held_watch_keeps_a_crowded_wait_from_yielding(implementation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, with the watch held, a wait for a late peer sleeps without a
    yield, in C (its ``held_waits``) and in Python."""
    if implementation == "python":
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        if not small_native.built():
            pytest.skip("the C extension is not built")
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    ok, yields, held = run_world(lambda comm: _late_peer_calls(comm, True), 2, "shm", timeout=60)[0]
    assert ok
    assert yields == 0
    assert held is None if implementation == "python" else (held is not None and held > 0)


@pytest.mark.multiprocess
def test_a_clear_watch_lets_a_crowded_wait_yield_before_it_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same wait with the watch clear yields first (the Python plans, with no task taken for one
    beyond the job's, so that a busy host cannot hold the watch under the test)."""
    monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)
    monkeypatch.setattr(shm_window, "runnable_beyond", lambda ranks: False)
    ok, yields, held = run_world(lambda comm: _late_peer_calls(comm, False), 2, "shm", timeout=60)[0]
    assert ok and held is None
    assert yields > 0
