"""An out-of-place ``sendrecv`` with one peer from ``PUSH_BYTES`` below ``HALF_BYTES_OUT_OF_PLACE``
(from ``PUSH_BYTES_CROWDED`` below ``HALF_BYTES_OUT_OF_PLACE_CROWDED`` where ranks outnumber
cores) through the express lane (engines/_half_swap.h, ``push``): where both ranks are in the
lane at once, each writes its whole message into the other's receive buffer, bound as the halves
are (test_express_halves.py); in place, or where the peer does not come with the same call, the
call goes as before. Every case runs with the lane and without it (``pure_python``), and must
deliver the same bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives.engines import express
from collectives.testing import run_world
from test_express_halves import _late, _learn, _message, _swaps  # (this folder)

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("patient_offers")]  # (conftest.py)

BLOCK_64K = 32 << 10  # a block of hypercube_perf's 2-rank 64 KiB cell (its exchange's message)
SIZES = [express.PUSH_BYTES, express.PUSH_BYTES + 7, express.HALF_BYTES_OUT_OF_PLACE - 1]


def _pushes(comm: Any, how: str, learn: bool = True, rounds: int = 4) -> Any:
    """``_swaps`` at the SIZES (each rank late in turn): whether every receive came to hold the
    peer's message, the calls the lane swapped by halves and, of them, by each rank writing its
    whole message."""
    ok, halves = _swaps(comm, SIZES, how, rounds=rounds, learn=learn)
    return ok, halves, comm._express.pushes


@pytest.mark.parametrize("how", ["apart", "one array"])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_out_of_place_below_the_halves_each_rank_writes_its_whole_message_into_the_peers(
        how: str, pure_python: bool) -> None:
    results = run_world(lambda comm: _pushes(comm, how), 2, "shm", timeout=60, pure_python=pure_python)
    assert all(ok for ok, _, _ in results)
    pushes = [p for _, _, p in results]
    assert pushes[0] == pushes[1] and (pushes[0] > 0) is (not pure_python), pushes
    assert all(halves == pushed for _, halves, pushed in results)  # (all of the halves' calls here)


@pytest.mark.parametrize("how", ["in place", "mixed"])
def test_in_place_on_either_side_nothing_is_pushed_and_the_messages_arrive(how: str) -> None:
    """In place (and where one rank is in place, the other not: its offer finds no taker and is
    withdrawn at the in-place rank's frame), the message goes through the ring as below
    ``PUSH_BYTES``."""
    results = run_world(lambda comm: _pushes(comm, how, rounds=2), 2, "shm", timeout=60)
    assert all(ok for ok, _, _ in results)
    assert [p for _, _, p in results] == [0, 0], results


def test_where_no_larger_message_taught_single_copy_the_first_calls_ask_the_engine_then_push() -> None:
    results = run_world(lambda comm: _pushes(comm, "apart", learn=False, rounds=12), 2, "shm", timeout=60)
    assert all(ok for ok, _, _ in results)
    assert results[0][2] == results[1][2] > 0, results


def test_where_ranks_outnumber_cores_out_of_place_below_the_crowded_halves_is_pushed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores, out of place, each rank writes its whole message from
    ``PUSH_BYTES_CROWDED`` up to ``HALF_BYTES_OUT_OF_PLACE_CROWDED`` (below
    ``HALF_BYTES_OUT_OF_PLACE``, where ranks with a core each push too)."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)  # the forked ranks inherit it
    sizes = [express.PUSH_BYTES_CROWDED, 128 << 10, express.HALF_BYTES_OUT_OF_PLACE_CROWDED - 16]
    results = run_world(lambda comm: (*_swaps(comm, sizes, "one array", rounds=2), comm._express.pushes), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _, _ in results)
    pushes = [p for _, _, p in results]
    assert pushes[0] == pushes[1] > 0, pushes
    assert all(halves == pushed for _, halves, pushed in results)  # (none by halves)


def test_where_ranks_outnumber_cores_the_crowded_halves_size_goes_by_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)
    sizes = [express.HALF_BYTES_OUT_OF_PLACE_CROWDED, express.HALF_BYTES_OUT_OF_PLACE_CROWDED + 7]
    results = run_world(lambda comm: (*_swaps(comm, sizes, "one array", rounds=2), comm._express.pushes), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _, _ in results)
    assert [p for _, _, p in results] == [0, 0], results
    halves = [h for _, h, _ in results]
    assert halves[0] == halves[1] > 0, halves


def test_where_ranks_outnumber_cores_below_the_crowded_push_the_ring_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PUSH_BYTES`` (32 KiB) is the push's size where each rank has a core; where ranks
    outnumber cores the 4-rank hypercube's blocks below ``PUSH_BYTES_CROWDED`` go through the
    ring as before."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)
    sizes = [express.PUSH_BYTES, express.PUSH_BYTES_CROWDED - 16]
    results = run_world(lambda comm: (*_swaps(comm, sizes, "one array", rounds=2), comm._express.pushes), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _, _ in results)
    assert [p for _, _, p in results] == [0, 0], results


def _hypercube_rounds(comm: Any, n: int, written: bool, calls: int = 6) -> tuple[bool, int, int]:
    """hypercube_perf's exchange at 2 ranks: blocks of ``n`` bytes of one array, rank r sending
    block r and receiving the peer's into block 1 - r, ``calls`` times in a row (after a barrier,
    each rank late in turn); with ``written`` each call first copies the rank's block in from a
    separate array (its out-of-place cell), else the block stays as written once (in place).
    Whether after every call both blocks held both ranks' messages, the lane's sends through the
    ring and its pushes."""
    peer, ok = 1 - comm.rank, []
    _learn(comm)
    rows = np.zeros(2 * n, np.uint8)
    mine, theirs = rows[comm.rank * n:(comm.rank + 1) * n], rows[peer * n:(peer + 1) * n]
    sends, pushes = comm._express.sends, comm._express.pushes
    for i in range(calls):
        seed = 10 * comm.rank + (i if written else 0)
        if written or i == 0:
            mine[...] = _message(n, seed)
        theirs[...] = 0
        comm.barrier()
        if comm.rank == i % 2:
            _late(30e-6)
        comm.sendrecv(mine, peer, theirs, peer)
        ok.append(bool(np.array_equal(mine, _message(n, seed))))
        ok.append(bool(np.array_equal(theirs, _message(n, 10 * peer + (i if written else 0)))))
    return all(ok), comm._express.sends - sends, comm._express.pushes - pushes


@pytest.mark.parametrize("written", [False, True], ids=["in place", "out of place"])
@pytest.mark.parametrize("n", [BLOCK_64K, BLOCK_64K + 7])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_the_two_rank_64_kib_hypercubes_blocks_are_pushed_with_every_byte_on_both_ranks(
        n: int, written: bool, pure_python: bool) -> None:
    """hypercube_perf's 2-rank 64 KiB cell exchanges blocks of 32 KiB, from ``PUSH_BYTES``: both
    ranks push every call (none through the ring), and the bytes are the engine's."""
    calls = 6
    results = run_world(lambda comm: _hypercube_rounds(comm, n, written, calls), 2, "shm", timeout=60,
                        pure_python=pure_python)
    assert all(ok for ok, _, _ in results), results
    if pure_python:
        assert [(ring, pushed) for _, ring, pushed in results] == [(0, 0), (0, 0)], results
    else:
        assert [(ring, pushed) for _, ring, pushed in results] == [(0, calls), (0, calls)], results


def test_out_of_place_below_the_push_goes_through_the_ring() -> None:
    calls = 4
    results = run_world(lambda comm: _hypercube_rounds(comm, express.PUSH_BYTES - 16, True, calls), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _, _ in results), results
    assert [(ring, pushed) for _, ring, pushed in results] == [(calls, 0), (calls, 0)], results


MIXED_SIZES = [express.PUSH_BYTES, express.PUSH_BYTES + 7, express.HALF_BYTES - 1]
"""The mixed pair's sizes below ``HALF_BYTES``: the push's first and the last that the in-place rank
sends through the ring."""


def _mixed_rounds(comm: Any, sizes: list[int], in_place_rank: int, calls: int = 4) -> Any:
    """``calls`` sendrecvs a size, rank ``in_place_rank`` in place and the other out of place
    (separate arrays), after a barrier; the in-place rank late by a millisecond in even calls (the
    other rank's offer waits for it), the out-of-place rank in odd ones (the in-place rank comes
    to no offer). Whether after every call each rank held the peer's message (the out-of-place
    rank its own left as it was), and the lane's sends through the ring, its single-copy swaps,
    its calls by halves or pushed, its calls taken whole by the in-place rank, its out-of-place
    calls that offered nothing (the peer seen in place), and its offers declined and expired,
    over all of them."""
    peer, ok = 1 - comm.rank, []
    _learn(comm)
    lane = comm._express
    before = (lane.sends, lane.swaps, lane.halves, lane.taken_whole, lane.unoffered, lane.declined, lane.expired)
    for n in sizes:
        for i in range(calls):
            x = _message(n, 10 * comm.rank + i)
            out = x if comm.rank == in_place_rank else np.zeros(n, np.uint8)
            comm.barrier()
            if (comm.rank == in_place_rank) is (i % 2 == 0):
                _late(1e-3)
            comm.sendrecv(x, peer, out, peer)
            ok.append(bool(np.array_equal(out, _message(n, 10 * peer + i))))
            ok.append(out is x or bool(np.array_equal(x, _message(n, 10 * comm.rank + i))))
    after = (lane.sends, lane.swaps, lane.halves, lane.taken_whole, lane.unoffered, lane.declined, lane.expired)
    return all(ok), *(b - a for a, b in zip(before, after))


@pytest.mark.parametrize("in_place_rank", [0, 1])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_a_mixed_pairs_in_place_rank_takes_the_offer_whole_or_both_go_through_the_ring(
        in_place_rank: int, pure_python: bool) -> None:
    """One rank in place, the other out of place, from ``PUSH_BYTES`` below ``HALF_BYTES``: the
    out-of-place rank offers a push or the halves; the in-place rank (through the ring otherwise)
    that finds the offer takes it whole, writing its message into the offerer's receive and
    reading the offerer's over its own (``taken_whole``, on both ranks); where it comes first, both
    go through the ring, and the out-of-place rank's later calls of that size offer nothing
    (``unoffered``: its frame goes beside the peer's). No offer waits out its time for an answer
    (``expired``, 20 ms here: each call where the out-of-place rank came first did before), and
    every byte is the engine's."""
    calls = 4
    results = run_world(lambda comm: _mixed_rounds(comm, MIXED_SIZES, in_place_rank, calls), 2, "shm",
                        timeout=60, pure_python=pure_python)
    assert all(ok for ok, *_ in results), results
    if pure_python:
        assert [counts for _, *counts in results] == [[0] * 7] * 2, results
        return
    total = calls * len(MIXED_SIZES)
    for sends, swaps, halves, whole, _, _, expired in (r[1:] for r in results):
        assert (swaps, halves, expired) == (0, 0, 0) and sends + whole == total, results
    assert results[0][4] == results[1][4] > 0, results  # (the first call of a size, the in-place rank late)
    assert results[1 - in_place_rank][5] > 0, results  # (the calls after one through the ring)
    assert results[in_place_rank][5:] == (0, 0, 0), results  # (it offers nothing)


@pytest.mark.parametrize("in_place_rank", [0, 1])
def test_a_mixed_pair_from_the_in_place_halves_binds_by_the_push_taken_whole_or_by_halves(in_place_rank: int) -> None:
    """From ``HALF_BYTES`` below ``HALF_BYTES_OUT_OF_PLACE`` the in-place rank offers the halves and
    the out-of-place rank a push: the one that comes second binds both, the in-place rank taking the
    push whole (``taken_whole``), the out-of-place rank taking the halves instead of its push
    (``halves``, none pushed). Nothing goes through the ring, no offer waits out its time, and
    every byte is the engine's."""
    sizes = [express.HALF_BYTES, express.HALF_BYTES_OUT_OF_PLACE - 7]
    calls = 4
    results = run_world(lambda comm: (*_mixed_rounds(comm, sizes, in_place_rank, calls), comm._express.pushes), 2,
                        "shm", timeout=60)
    assert all(ok for ok, *_ in results), results
    for sends, swaps, halves, whole, unoffered, _, expired, pushes in (r[1:] for r in results):
        assert (sends, swaps, unoffered, expired, pushes) == (0, 0, 0, 0, 0), results
        assert halves + whole == calls * len(sizes), results
    assert results[0][3:5] == results[1][3:5], results  # (both ranks count each call alike)
    assert results[0][3] > 0 and results[0][4] > 0, results  # (each rank late in turn: both ways bind)


def test_where_ranks_outnumber_cores_a_mixed_pairs_offer_is_declined_at_the_in_place_ranks_rts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores the in-place rank sends from ``SWAP_BYTES_IN_PLACE_CROWDED`` by
    single copy (a copy aside and an RTS): its RTS declines the out-of-place rank's push at once,
    and both swap."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)  # the forked ranks inherit it
    sizes = [express.PUSH_BYTES_CROWDED, express.HALF_BYTES_OUT_OF_PLACE_CROWDED - 1]
    calls = 4
    results = run_world(lambda comm: _mixed_rounds(comm, sizes, 0, calls), 2, "shm", timeout=60)
    assert all(ok for ok, *_ in results), results
    assert results[0][1:] == (0, calls * len(sizes), 0, 0, 0, 0, 0), results
    sends, swaps, halves, whole, unoffered, declined, expired = results[1][1:]
    assert (sends, swaps, halves, whole, unoffered, expired) == (0, calls * len(sizes), 0, 0, 0, 0), results
    assert declined > 0, results
