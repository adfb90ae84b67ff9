"""agree(flag): the bitwise AND over the live members, the same on every one of them,
with the failed ranks; a member silent past recovery_timeout is declared failed."""

from __future__ import annotations

import time

import pytest
from recovery_world import die, run_ranks

import collectives
from collectives import RankDeclaredFailedError
from collectives.testing import run_world


def test_agree_is_the_and_of_every_flag() -> None:
    def fn(comm: collectives.Communicator) -> tuple[int, tuple[int, ...], int]:
        first = comm.agree([7, 5, 6][comm.rank])
        return int(first), first.failed, int(comm.agree(1))

    assert run_world(fn, 3, "inproc", timeout=20) == [(4, (), 1)] * 3


def _agree_after_death(comm: collectives.Communicator) -> tuple[int, tuple[int, ...]]:
    comm.barrier()
    if comm.rank == 0:
        die()
    result = comm.agree(0b1110 if comm.rank == 2 else 0b0111)
    return int(result), result.failed


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_agree_after_rank_0_died_counts_the_survivors(transport: str) -> None:
    out = run_ranks(_agree_after_death, 4, transport, timeout=3, recovery_timeout=30)
    assert out[0][0] == "died"
    assert [out[r] for r in (1, 2, 3)] == [("ok", (0b0110, (0,)))] * 3  # found dead by its pid: no 30 s wait


def _late_voter(comm: collectives.Communicator) -> tuple[int, tuple[int, ...], float]:
    comm.barrier()
    if comm.rank == 2:
        time.sleep(1.5)  # alive, but silent past recovery_timeout
    start = time.monotonic()
    result = comm.agree(1)
    return int(result), result.failed, time.monotonic() - start


@pytest.mark.multiprocess
def test_a_member_silent_past_recovery_timeout_is_declared_failed() -> None:
    # Three "hosts": no rank can see another's pid, so only silence tells.
    out = run_ranks(_late_voter, 3, "tcp", timeout=5, recovery_timeout=0.5, hosts=["a", "b", "c"])
    for rank in (0, 1):
        kind, (flag, failed, took) = out[rank]
        assert (kind, flag, failed) == ("ok", 1, (2,))
        assert 0.5 <= took < 5.0
    kind, text = out[2]
    assert kind == "error" and text.startswith(RankDeclaredFailedError.__name__) and "declared rank 2 failed" in text
