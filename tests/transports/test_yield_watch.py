"""The yield watch (``progress.YieldWatch``): crowded waits yield to a peer queued on their CPU,
until a yield is seen to hand the CPU to something else for long while a task outside the job is
runnable (more tasks running on the host than the job's ranks that are); then they sleep instead,
for a while. Only worlds of more ranks than CPUs and at most ``WATCH_CROWD`` a CPU keep a watch. The
compiled plans keep the same words by the same rules (``_flags.h``), and a held watch keeps both
kinds of wait from yielding."""

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
    WATCH_CROWD,
    YieldWatch,
    host_running,
    outsider,
    outsider_runnable,
    pid_running,
    watch_applies,
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


def _c_outsider(host: int, ours: int) -> bool:
    from collectives.engines import _small_c  # type: ignore[attr-defined]
    return bool(_small_c.outsider(host, ours))


OUTSIDERS = [pytest.param(outsider, id="python")]
if small_native.built():
    OUTSIDERS.append(pytest.param(_c_outsider, id="c"))


@pytest.mark.parametrize("test", OUTSIDERS)
def test_an_outsider_is_a_running_task_beyond_the_jobs_running_ranks(test: Callable[[int, int], bool]) -> None:
    """4 ranks on 2 cores beside one busy loop: 5 running, 4 of them ours. 8 ranks of ours queued on
    2 cores (woken, not yet run) are no outsider, however many of them run."""
    assert test(5, 4) and test(2, 1)
    assert not test(4, 4) and not test(8, 8) and not test(1, 1)
    assert not test(3, 4)  # a peer counted running before the host's count, asleep at it


def test_only_worlds_of_at_most_twice_the_cpus_beyond_them_keep_a_watch() -> None:
    assert WATCH_CROWD == 2
    assert watch_applies(3, 2) and watch_applies(4, 2) and watch_applies(16, 8)
    assert not watch_applies(2, 2) and not watch_applies(1, 2)  # every rank a core: no crowded waits
    assert not watch_applies(5, 2) and not watch_applies(8, 2)  # np8 on 2 cores: yielding pays


def _sleeper() -> Any:
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    for _ in range(200):  # until it sleeps
        if pid_running(child.pid) is False:
            break
        time.sleep(0.01)
    return child


def test_the_counts_read_this_process_running_and_a_sleeping_one_not() -> None:
    child = _sleeper()
    try:
        assert pid_running(os.getpid()) is True and pid_running(child.pid) is False
        running = host_running()
        assert running is not None and running >= 1
        if small_native.built():
            from collectives.engines import _small_c  # type: ignore[attr-defined]
            assert _small_c.pid_running(os.getpid()) is True and _small_c.pid_running(child.pid) is False
            assert _small_c.host_running() >= 1
    finally:
        child.kill()
        child.wait()
    assert pid_running(child.pid) is None  # reaped: unknown
    if small_native.built():
        from collectives.engines import _small_c  # type: ignore[attr-defined]
        assert _small_c.pid_running(child.pid) is None


def test_a_peer_running_at_either_read_and_unknown_peers_count_as_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each peer's state is read before and after the host's count: one running at either read is
    ours (woken or put to sleep between them); peers with no pid here, or unreadable, count as ours
    running too."""
    states = {11: [True, False], 12: [False, True], 13: [False, False], 14: [None, None]}
    reads = {pid: iter(seq) for pid, seq in states.items()}
    monkeypatch.setattr(progress, "pid_running", lambda pid: next(reads[pid]))
    monkeypatch.setattr(progress, "host_running", lambda: 5)  # the caller, 11, 12, 14 and one more
    assert outsider_runnable([11, 12, 13, 14])
    reads = {pid: iter(seq) for pid, seq in states.items()}
    assert not outsider_runnable([11, 12, 13, 14], unknown=1)  # the fifth is a peer with no pid here
    monkeypatch.setattr(progress, "host_running", lambda: None)
    assert not outsider_runnable([])  # unreadable: no outsider


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
@pytest.mark.parametrize("watched", [True, False], ids=["watched", "unwatched"])
def test_a_held_watch_keeps_a_watched_crowded_wait_from_yielding(implementation: str, watched: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, with the watch held, a wait for a late peer sleeps without a
    yield, in C (its ``held_waits``) and in Python; in a world that keeps no watch (more than
    ``WATCH_CROWD`` ranks a CPU) the same wait yields, the watch held or not."""
    if implementation == "python":
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        if not small_native.built():
            pytest.skip("the C extension is not built")
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    monkeypatch.setattr(shm_window, "watch_applies", lambda ranks, cpus: watched)
    ok, yields, held = run_world(lambda comm: _late_peer_calls(comm, True), 2, "shm", timeout=60)[0]
    assert ok
    if implementation == "python":
        assert held is None and (yields == 0 if watched else yields > 0)
    else:
        assert held is not None and (held > 0 if watched else held == 0)


@pytest.mark.multiprocess
def test_a_clear_watch_lets_a_crowded_wait_yield_before_it_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same wait with the watch clear yields first (the Python plans, with no task taken for one
    outside the job, so that a busy host cannot hold the watch under the test)."""
    monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)
    monkeypatch.setattr(shm_window, "watch_applies", lambda ranks, cpus: True)
    monkeypatch.setattr(shm_window, "outsider_runnable", lambda pids, unknown=0: False)
    ok, yields, held = run_world(lambda comm: _late_peer_calls(comm, False), 2, "shm", timeout=60)[0]
    assert ok and held is None
    assert yields > 0
