"""shrink(exclude=None): the live members agree and get a communicator of themselves,
ranked in their old order; after the death of any rank (rank 0 included), after several
failures in a row, with failures during the shrink itself, and with exclusions."""

from __future__ import annotations

import time

import numpy as np
import pytest
from recovery_world import die, run_ranks

import collectives

pytestmark = pytest.mark.multiprocess
TRANSPORTS = ["shm", "tcp"]


def _fail_and_revoke(comm: collectives.Communicator) -> None:
    """What a survivor does when a collective fails: make sure everyone stops, then shrink."""
    try:
        comm.all_reduce(np.ones(100))
    except collectives.CollectivesError:
        pass
    comm.revoke()


def _rank_sum(comm: collectives.Communicator, value: int) -> int:
    x = np.array([value], dtype=np.int64)
    comm.all_reduce(x)
    return int(x[0])


def _two_failures_in_a_row(comm: collectives.Communicator) -> tuple[int, ...]:
    comm.barrier()
    if comm.rank == 0:
        die()
    _fail_and_revoke(comm)
    new = comm.shrink()
    assert new is not None
    first = (new.rank, new.size, _rank_sum(new, comm.rank))
    if new.rank == 0:  # old rank 1: the new rank 0 dies too
        die()
    _fail_and_revoke(new)
    newer = new.shrink()
    assert newer is not None
    out = (*first, newer.rank, newer.size, _rank_sum(newer, comm.rank))
    newer.close()
    new.close()
    comm.close()
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shrink_after_rank_0_dies_and_then_the_new_rank_0(transport: str) -> None:
    out = run_ranks(_two_failures_in_a_row, 4, transport, timeout=3)
    assert out[0][0] == "died" and out[1][0] == "died", out
    assert out[2] == ("ok", (1, 3, 1 + 2 + 3, 0, 2, 2 + 3))
    assert out[3] == ("ok", (2, 3, 1 + 2 + 3, 1, 2, 2 + 3))


def _dies_in_shrink(comm: collectives.Communicator) -> tuple[int, int, int]:
    comm.barrier()
    if comm.rank == 3:
        die()
    _fail_and_revoke(comm)
    if comm.rank == 1:  # dies after the shrink's agreement, while connecting the new communicator
        state = comm._recovery
        assert state is not None
        state.connect = lambda *args, **kwargs: die()  # type: ignore[assignment]
    if comm.rank == 2:  # dies before voting
        die()
    new = comm.shrink()
    assert new is not None
    return new.rank, new.size, _rank_sum(new, comm.rank + 10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_members_that_die_during_the_shrink_are_left_out(transport: str) -> None:
    out = run_ranks(_dies_in_shrink, 5, transport, timeout=10, recovery_timeout=1)
    assert [out[r][0] for r in (1, 2, 3)] == ["died"] * 3, out
    assert out[0] == ("ok", (0, 2, 10 + 14))
    assert out[4] == ("ok", (1, 2, 10 + 14))


def _remote_death(comm: collectives.Communicator) -> tuple[int, int, int]:
    comm.barrier()
    if comm.rank == 1:
        die()
    _fail_and_revoke(comm)
    new = comm.shrink()
    assert new is not None
    return new.rank, new.size, _rank_sum(new, comm.rank)


def test_a_death_on_another_host_is_found_by_silence() -> None:
    out = run_ranks(_remote_death, 3, "tcp", timeout=3, recovery_timeout=0.5, hosts=["a", "b", "c"])
    assert out[1][0] == "died"
    assert out[0] == ("ok", (0, 2, 2)) and out[2] == ("ok", (1, 2, 2))


def _exclude_one(comm: collectives.Communicator) -> tuple[tuple[int, int, int] | None, int]:
    new = comm.shrink(exclude=[1])
    out = None if new is None else (new.rank, new.size, _rank_sum(new, comm.rank))
    old = _rank_sum(comm, 1)  # the old communicator still works: shrink does not revoke it
    if new is not None:
        new.close()
    return out, old


def test_excluded_members_get_none_and_the_rest_renumber() -> None:
    out = run_ranks(_exclude_one, 4, "tcp", timeout=5)
    assert out == {0: ("ok", ((0, 3, 5), 4)), 1: ("ok", (None, 4)), 2: ("ok", ((1, 3, 5), 4)), 3: ("ok", ((2, 3, 5), 4))}


def _exclude_one_that_votes_late(comm: collectives.Communicator) -> tuple[tuple[int, int, int] | None, int]:
    if comm.rank == 1:
        time.sleep(0.5)  # the others decide without it: nobody waits for a rank excluded by request
    return _exclude_one(comm)


def test_an_excluded_member_that_votes_late_still_gets_none_not_an_error() -> None:
    out = run_ranks(_exclude_one_that_votes_late, 4, "shm", timeout=5)
    assert out == {0: ("ok", ((0, 3, 5), 4)), 1: ("ok", (None, 4)), 2: ("ok", ((1, 3, 5), 4)), 3: ("ok", ((2, 3, 5), 4))}


def test_exclude_names_ranks_of_this_communicator() -> None:
    with collectives.init() as comm:
        with pytest.raises(collectives.InvalidArgumentError, match="exclude"):
            comm.shrink(exclude=[1])
        alone = comm.shrink()
        assert alone is not None and alone.size == 1
        alone.close()


def test_a_connect_failure_with_everyone_alive_is_raised_not_retried() -> None:
    from collectives.errors import ConnectError
    from collectives.testing import run_world

    def fn(comm: collectives.Communicator) -> str:
        state = comm._recovery
        assert state is not None
        if comm.rank == 1:
            def refuse(*args: object, **kwargs: object) -> collectives.Communicator:
                raise ConnectError("no room for the shrunk communicator")

            state.connect = refuse  # type: ignore[assignment]
        try:
            comm.shrink()
        except collectives.CollectivesError as exc:
            return type(exc).__name__
        return "shrunk"

    out = run_world(fn, 3, "inproc", timeout=30, recovery_timeout=0.5)
    assert out[1] == "ConnectError" and all(name != "shrunk" for name in out), out
