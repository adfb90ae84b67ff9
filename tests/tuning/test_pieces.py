"""A reduce piece by piece through the slots (where ranks outnumber cores, beyond one slot and
below the reads' size) is priced as the one-way pipeline it runs (tuning/pieces.py): the first
piece's copies by the writers on the cores the root leaves them, then per piece the root's fold
and its wake to the piece."""

from __future__ import annotations

import pytest

from collectives.algorithms import direct_routes
from collectives.algorithms.registry import DIRECT_REDUCE_BYTES
from collectives.tuning import pieces, tuner
from collectives.tuning.profile import Profile, TransportCosts

SHM = TransportCosts(overhead=3e-6, alpha=10e-6, beta=0.1e-9, gamma=0.05e-9, direct_alpha=2e-6, direct_beta=0.05e-9,
                     wake=1e-6)
SLOT = DIRECT_REDUCE_BYTES


def test_the_pieces_are_taken_where_ranks_outnumber_cores_beyond_a_slot_below_the_reads() -> None:
    top = direct_routes.reduce_reads_from(True)
    assert pieces.taken("reduce", SLOT + 1, 4, 2) and pieces.taken("reduce", top - 1, 3, 2)
    assert not pieces.taken("reduce", SLOT, 4, 2)  # one slot: the slots' own reduce
    assert not pieces.taken("reduce", top, 4, 2)  # the reads' size
    assert not pieces.taken("reduce", 4 * SLOT, 2, 2) and not pieces.taken("reduce", 4 * SLOT, 4, 0)
    assert not pieces.taken("broadcast", 4 * SLOT, 4, 2)


@pytest.mark.parametrize("size", [3, 4, 8])
def test_a_piecewise_reduce_costs_the_fill_then_the_roots_fold_and_a_wake_per_piece(size: int) -> None:
    n = 4 * SLOT
    fold = 2e-6 + SLOT * ((size + 1) * 0.05e-9 + (size - 1) * 0.05e-9)  # the root's, per piece
    copies = (size - 1) * SLOT * 0.05e-9  # the writers', on the one core the root leaves them
    want = copies + 4 * (fold + 1e-6)
    assert pieces.pieces_time(n, size, SHM, 2) == pytest.approx(want, rel=1e-12)
    profile = Profile({"shm": SHM}, "test", 0.0, 2)
    assert tuner.predict("reduce", "direct", n, size, "shm", 0, profile) == pytest.approx(want, rel=1e-12)
    assert not tuner.direct_runs_schedule("reduce", n, size, SHM, 2)


def test_an_uneven_last_piece_is_priced_as_pieces_of_even_length() -> None:
    s = pieces.stages(SLOT + SLOT // 2, 4, SHM, 2)
    assert s.count == 2
    assert s.fold == pytest.approx(2e-6 + 0.75 * SLOT * (5 * 0.05e-9 + 3 * 0.05e-9), rel=1e-12)
