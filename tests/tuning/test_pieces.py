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


@pytest.mark.parametrize("nbytes", [SLOT + 8, 4 * SLOT, 7 * SLOT - 8])
def test_the_price_counts_the_pieces_the_library_cuts(nbytes: int) -> None:
    """plans/windowed.PiecewiseReduce cuts by DIRECT_REDUCE_BYTES, as the model counts; each
    piece is one one-way call through a slot, so it must fit one."""
    from types import SimpleNamespace

    import numpy as np

    from collectives import ReduceOp
    from collectives.engines import small
    from collectives.plans.windowed import PiecewiseReduce

    assert SLOT <= small.PIPELINED_BROADCAST_BYTES
    plan = PiecewiseReduce(SimpleNamespace(rank=0, size=4), 0, np.dtype(np.float64), nbytes // 8, ReduceOp.SUM)
    assert len(plan.pieces) == pieces.count(nbytes)
    assert max(hi - lo for lo, hi, _ in plan.pieces) * 8 <= SLOT


def test_the_pieces_are_taken_where_ranks_outnumber_cores_below_the_reads() -> None:
    top = direct_routes.reduce_reads_from(True, 3)
    assert pieces.taken("reduce", SLOT + 1, 3, 2) and pieces.taken("reduce", top - 1, 3, 2)
    assert pieces.taken("reduce", SLOT, 4, 2) and pieces.taken("reduce", 8, 8, 2)  # one piece: the same one-way call
    assert not pieces.taken("reduce", top, 3, 2)  # the reads' size
    for size in (4, 8):  # more ranks a core: the reads from a smaller size
        start = direct_routes.reduce_reads_from(True, size)
        assert start < top and pieces.taken("reduce", SLOT + 1, size, 2) and pieces.taken("reduce", start - 1, size, 2)
        assert not pieces.taken("reduce", start, size, 2) and not pieces.taken("reduce", 4 << 20, size, 2)
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

