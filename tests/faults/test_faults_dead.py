"""A rank killed (SIGKILL) or frozen (SIGSTOP) in the middle of an all_reduce loop, over
shared memory and TCP, in worlds of 2 and 4: every survivor raises within the timeout +
5 s, naming that rank (never a survivor that left because of it), the collective and its
sequence number; a frozen rank is called "unresponsive"; every process exits.
(reliability.md acceptance cases 1 and 2; the mpi transport: test_faults_mpi_frozen.py.)
"""

from __future__ import annotations

import signal

import pytest

from collectives.testing import RankError, run_world
from fault_worlds import (BOUND, TIMEOUT, figure, posted_then_killed_loop, reports, seq_named, signalled_loop,
                          sweep_victim)

pytestmark = pytest.mark.multiprocess

WORLDS = [("shm", 2), ("shm", 4), ("tcp", 2), ("tcp", 4)]
VICTIM = 1  # in a ring of 4, ranks 2 and 3 are further round: they must still name rank 1


@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_killed_rank_is_named_by_every_survivor(transport, size, tmp_path):
    try:
        with pytest.raises(RankError) as info:
            run_world(signalled_loop(tmp_path, VICTIM, signal.SIGKILL), size, transport, timeout=60)
    finally:
        sweep_victim(tmp_path)
    assert info.value.rank == VICTIM and info.value.exitcode == -signal.SIGKILL
    survivors = [r for r in range(size) if r != VICTIM]
    seen = reports(tmp_path, survivors)
    for rank, report in seen.items():
        message = report["message"]
        assert report["type"] == "PeerLostError" and report["peer"] == VICTIM, (rank, message)
        assert f"rank {VICTIM} died" in message, (rank, message)
        seq_named(message)
        assert report["after"] < BOUND, (rank, report)
    seqs = {seq_named(r["message"]) for r in seen.values()}
    assert max(seqs) - min(seqs) <= 1, seen  # the same all_reduce (a rank may have finished it)
    figure(f"kill {transport} n={size}", [r["after"] for r in seen.values()])


@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_frozen_rank_is_named_unresponsive_by_every_survivor(transport, size, tmp_path):
    assert run_world(signalled_loop(tmp_path, VICTIM, signal.SIGSTOP), size, transport, timeout=60) == [
        "raised"] * size  # the frozen rank too, once continued: every process ended
    survivors = [r for r in range(size) if r != VICTIM]
    seen = reports(tmp_path, survivors)
    for rank, report in seen.items():
        message = report["message"]
        assert report["type"] == "CollectiveTimeoutError" and report["absent"] == [VICTIM], (rank, message)
        assert f"rank {VICTIM} is unresponsive" in message and "stopped" in message, (rank, message)
        seq_named(message)
        assert 0.9 * TIMEOUT <= report["after"] < BOUND, (rank, report)  # a timeout, not sooner
    woken = reports(tmp_path, [VICTIM])[VICTIM]
    assert "this rank is the one its peers gave up on" in woken["message"], woken
    figure(f"freeze {transport} n={size}", [r["after"] for r in seen.values()])


def test_a_rank_killed_right_after_its_post_is_named_at_once_by_survivors_that_saw_it_go(tmp_path):
    # Each survivor's wait for the victim's last post finds it posted by a process already
    # dead, and returns it; the next call's wait on the victim must fail at once (it once
    # skipped the victim, whose channel the first check had marked failed, and slept out the
    # whole timeout: tests/ray/test_groups.py's flake, where one survivor timed out).
    timeout, calls = 2.0, 20  # (a survivor that waits it out still reports before run_world gives up on it)
    try:
        with pytest.raises(RankError) as info:
            run_world(posted_then_killed_loop(tmp_path, VICTIM, calls, timeout), 4, "shm", timeout=60)
    finally:
        sweep_victim(tmp_path)
    assert info.value.rank == VICTIM and info.value.exitcode == -signal.SIGKILL
    seen = reports(tmp_path, [0, 2, 3])
    for rank, report in seen.items():
        message = report["message"]
        assert report["held"] and report["calls"] == calls, (rank, report)  # the case under test happened
        assert report["type"] == "PeerLostError" and report["peer"] == VICTIM, (rank, message)
        assert f"all_reduce #{calls + 2}" in message and f"rank {VICTIM} died" in message, (rank, message)
        assert report["after"] < timeout / 2, (rank, report)  # named, not waited out
    figure("kill after its post, shm n=4", [r["after"] for r in seen.values()])
