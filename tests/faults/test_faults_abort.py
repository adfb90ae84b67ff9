"""Issue 16, acceptance cases 8 and 9 (second half): ``abort()`` from another thread and
``close()`` with dead peers, per transport at 2 and 4 ranks (MPI: tests/faults/test_faults_mpi.py).

A blocked collective returns within 1 s of ``abort()`` (small ones wait in the shared
window, large ones in the rings or sockets: both are tried), later calls raise
``CommunicatorClosedError`` (or ``CommunicatorBrokenError`` where a peer's abort reached
the rank first), and a new communicator over the same ranks works. ``close()``
on survivors whose peer was SIGKILLed, with work still queued, returns within the timeout.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import collectives
from collectives.store import PrefixStore
from collectives.testing import run_world
from lifecycle_resources import AbortTimer

pytestmark = pytest.mark.multiprocess

ABORT_AFTER = 0.3
"""Seconds a rank waits in a collective before its watchdog thread aborts it."""
COUNTS = (8, 1 << 18)
"""Elements of the blocked all-reduce: a small-message plan and a large one."""
PATIENCE = 30.0
"""Seconds the absent rank waits for the others to be aborted: reached only when they never are."""


def _blocked_then_aborted(comm: collectives.Communicator, count: int) -> float:
    """Enter an all-reduce that cannot finish, abort it from a timer thread; the seconds
    from abort() to the call's return."""
    watchdog = AbortTimer(comm, ABORT_AFTER)
    with pytest.raises(collectives.CollectivesError):
        comm.all_reduce(np.ones(count))
    took = watchdog.seconds_to(time.monotonic())
    # Closed, or broken where a peer's abort reached this rank before its own did.
    later = (collectives.CommunicatorClosedError, collectives.CommunicatorBrokenError)
    with pytest.raises(later):
        comm.all_reduce(np.ones(count))
    with pytest.raises(later):
        comm.barrier()
    comm.abort()  # idempotent
    comm.close()
    return took


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_abort_from_another_thread_unblocks_within_a_second_and_a_new_communicator_works(transport, size,
                                                                                          arrivals):
    absent = size - 1  # never joins the blocked calls, so the others wait until aborted

    def fn(comm):
        took = []
        for round_, count in enumerate(COUNTS):
            store = PrefixStore(f"abort{round_}", comm.store)
            c = collectives.init(comm.rank, comm.size, store, transport=transport, timeout=30)
            if comm.rank == absent:  # until the others have been aborted and closed
                arrivals.wait(comm.size - 1, PATIENCE)
                c.abort()
            else:
                try:
                    took.append(_blocked_then_aborted(c, count))
                finally:
                    arrivals.arrive()
        again = collectives.init(comm.rank, comm.size, PrefixStore("again", comm.store), transport=transport,
                                 timeout=30)
        x = np.full(1000, comm.rank, dtype=np.int64)
        again.all_reduce(x)
        big = np.ones(1 << 18)
        again.all_reduce(big)
        again.close()
        return took, int(x[0]), float(big[0])

    results = run_world(fn, size, transport, timeout=60)
    print(f"{transport} n={size}: abort returned in {[round(t * 1000, 1) for r in results for t in r[0]]} ms")
    total = sum(range(size))
    for rank, (took, first, big) in enumerate(results):
        assert first == total and big == size
        if rank != absent:
            assert len(took) == len(COUNTS)
            assert max(took) < 1.0, f"rank {rank}: abort took {took} s"


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_close_with_a_dead_peer_returns_within_the_timeout(transport, size, tmp_path):
    timeout = 2.0
    dead = size - 1

    def fn(comm):
        c = collectives.init(comm.rank, comm.size, PrefixStore("short", comm.store), transport=transport,
                             timeout=timeout)
        c.barrier()
        if comm.rank == dead:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.2)  # the peer is dead by now
        work = c.all_reduce(np.ones(1 << 16), async_op=True)  # queued: waits on the dead rank
        start = time.monotonic()
        c.close()
        took = time.monotonic() - start
        try:
            work.wait()
        except collectives.CollectivesError:
            pass
        (tmp_path / f"rank{comm.rank}").write_text(repr(took))
        return took

    with pytest.raises(collectives.testing.RankError, match=f"rank {dead}"):
        run_world(fn, size, transport, timeout=30)
    took = [float((tmp_path / f"rank{r}").read_text()) for r in range(size) if r != dead]
    assert len(took) == size - 1
    print(f"{transport} n={size}: close() with a dead peer took {[round(t * 1000, 1) for t in took]} ms")
    assert max(took) < timeout + 5.0, took


@pytest.mark.parametrize("leave", ["abort", "close"])
def test_a_rank_that_left_with_a_message_unread_is_named_at_once_by_a_window_wait(leave, tmp_path):
    # Rank 1 sends rank 0 a message it never receives, then leaves (aborts or closes its
    # communicator) and stays alive; rank 0's next small all-reduce waits for it in the shared
    # window. The unread message in the ring once hid that rank 1 left: the window wait
    # (which reads no stream) slept out its whole timeout.
    timeout = 3.0
    left, told = tmp_path / "left", tmp_path / "told"

    def fn(comm):
        comm.timeout = timeout
        x = np.ones(8)
        comm.all_reduce(x)  # the small window is open
        if comm.rank == 1:
            comm.send(np.ones(4), 0, tag=7)  # never received
            comm.abort() if leave == "abort" else comm.close()
            left.write_text("1")
            deadline = time.monotonic() + PATIENCE
            while not told.exists() and time.monotonic() < deadline:  # alive while rank 0 waits
                time.sleep(0.01)
            return None
        while not left.exists():
            time.sleep(0.01)
        start = time.monotonic()
        try:
            comm.all_reduce(x)
        except collectives.PeerLostError as exc:
            return exc.peer, str(exc), time.monotonic() - start
        finally:
            told.write_text("1")
        return None

    peer, message, took = run_world(fn, 2, "shm", timeout=30)[0]
    assert peer == 1 and "rank 1" in message and "closed or abandoned its communicator" in message, message
    assert took < timeout / 2, (took, message)  # named, not waited out
