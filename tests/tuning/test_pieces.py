"""A reduce one way through the slots in pieces of at most a slot (where ranks outnumber cores,
below the reads' size) is priced from what it does (tuning/pieces.py): per piece the engine's
call and the root's wake, per byte the root's p - 1 folds and the writers' p - 1 copies."""

from __future__ import annotations

import pytest

from collectives.algorithms import direct_routes
from collectives.algorithms.registry import DIRECT_REDUCE_BYTES
from collectives.tuning import pieces, tuner
from collectives.tuning.profile import Profile, TransportCosts

SHM = TransportCosts(overhead=3e-6, alpha=10e-6, beta=0.1e-9, gamma=0.05e-9, direct_alpha=2e-6, direct_beta=0.04e-9,
                     wake=1e-6, cache_beta=0.07e-9)
SLOT = DIRECT_REDUCE_BYTES


def test_the_price_cuts_the_pieces_the_library_cuts() -> None:
    """The model may not import the engines: its piece (a direct reduce's slot) must be the
    size plans/windowed.PiecewiseReduce cuts by (the pipelined slot)."""
    from collectives.engines import small

    assert SLOT == small.PIPELINED_BROADCAST_BYTES
    assert pieces.count(SLOT) == 1 and pieces.count(SLOT + 1) == 2 and pieces.count(4 * SLOT) == 4


def test_the_pieces_are_taken_where_ranks_outnumber_cores_below_the_reads() -> None:
    top = direct_routes.reduce_reads_from(True)
    assert pieces.taken("reduce", SLOT + 1, 4, 2) and pieces.taken("reduce", top - 1, 3, 2)
    assert pieces.taken("reduce", SLOT, 4, 2) and pieces.taken("reduce", 8, 8, 2)  # one piece: the same one-way call
    assert not pieces.taken("reduce", top, 4, 2)  # the reads' size
    assert not pieces.taken("reduce", 4 * SLOT, 2, 2) and not pieces.taken("reduce", 4 * SLOT, 4, 0)
    assert not pieces.taken("broadcast", 4 * SLOT, 4, 2)


@pytest.mark.parametrize("size", [3, 4, 8])
def test_a_piecewise_reduce_costs_a_call_and_a_wake_per_piece_and_the_folds_and_copies_per_byte(size: int) -> None:
    n = 4 * SLOT
    want = 4 * (2e-6 + 1e-6) + n * (size - 1) * (0.05e-9 + 0.04e-9)
    profile = Profile({"shm": SHM}, "test", 0.0, 2, cache_bytes=SLOT)  # a cache smaller than a piece changes nothing
    assert tuner.predict("reduce", "direct", n, size, "shm", 0, profile) == pytest.approx(want, rel=1e-12)
    assert not tuner.direct_runs_schedule("reduce", n, size, SHM, 2)


def test_an_uneven_last_piece_costs_one_call_more_and_its_bytes() -> None:
    assert pieces.count(8) == 1 and pieces.count(SLOT) == 1
    assert pieces.count(SLOT + 1) == 2 and pieces.count(2 * SLOT) == 2
    assert pieces.pieces_time(SLOT + SLOT // 2, 4, SHM) == pytest.approx(
        2 * 3e-6 + 1.5 * SLOT * 3 * 0.09e-9, rel=1e-12)

