"""The direct engine's routes by size: what the engines take and the cost model prices."""

from __future__ import annotations

import pytest

from collectives.algorithms import direct_routes as routes
from collectives.algorithms.registry import DIRECT_REDUCE_BYTES
from collectives.engines import small


@pytest.mark.parametrize("oversubscribed", [False, True])
def test_all_gathers_leave_the_window_beyond_its_limit_and_where_every_rank_has_a_core_from_the_reads_size(
        oversubscribed: bool) -> None:
    limit = routes.gather_window_bytes(oversubscribed)
    assert limit == (routes.GATHER_BYTES_OVERSUBSCRIBED if oversubscribed else routes.GATHER_BYTES)
    assert not routes.all_gather_by_reads(routes.GATHER_READS_BYTES - 1, oversubscribed)
    assert routes.all_gather_by_reads(routes.GATHER_READS_BYTES, oversubscribed) == (not oversubscribed)
    assert routes.all_gather_by_reads(limit, oversubscribed) == (not oversubscribed)
    assert routes.all_gather_by_reads(limit + 1, oversubscribed)


def test_an_all_gather_by_reads_copies_its_own_block_first_from_its_size() -> None:
    first = routes.ALL_GATHER_COPY_FIRST_BYTES
    assert routes.all_gather_copies_first(first) and not routes.all_gather_copies_first(first - 1)


@pytest.mark.parametrize("oversubscribed", [False, True])
def test_all_gathers_write_their_blocks_from_the_writes_size_below_the_streamed_copy_where_every_rank_has_a_core(
        oversubscribed: bool) -> None:
    first, stream = routes.ALL_GATHER_WRITES_BYTES, routes.ALL_GATHER_STREAM_BYTES
    assert first < stream
    assert not routes.all_gather_writes(first - 1, oversubscribed)
    assert routes.all_gather_writes(first, oversubscribed) == (not oversubscribed)
    assert routes.all_gather_writes(stream - 1, oversubscribed) == (not oversubscribed)
    assert not routes.all_gather_writes(stream, oversubscribed)


def test_a_two_rank_all_gather_of_16_mib_writes_its_block_and_one_of_32_mib_streams() -> None:
    """The harness's 16 MiB cell at 2 ranks (8 MiB blocks, every rank with a core): by writes, whose
    own copy reads each piece of ``x`` from the cache (it went by reads with the streamed own copy
    for a round: docs/performance.md, "Thirty-third round" and "Thirty-fifth round, a staging ring
    for the 2-rank 16 MiB all_gather"); the 32 MiB cell's 16 MiB blocks stream."""
    block = 8 << 20
    assert routes.all_gather_writes(block, False) and not routes.all_gather_streams(block)
    assert routes.all_gather_streams(2 * block) and not routes.all_gather_writes(2 * block, False)


def test_all_reduces_go_by_reads_sooner_where_every_rank_has_a_core_and_only_beyond_the_halves() -> None:
    """(The cost model prices every direct all-reduce below ``reads_from`` as the window's.)
    All-reduces take the halves up to ``ALL_REDUCE_HALVES_BYTES``, the other reductions up to
    ``HALF_BYTES``."""
    assert routes.reads_from(False, False) == routes.ALL_REDUCE_READS_FROM_BYTES
    assert routes.reads_from(False, True) == routes.reads_from(True, False) == routes.READS_FROM_BYTES
    assert min(routes.reads_from(s, o) for s in (False, True) for o in (False, True)) > small.HALF_BYTES
    assert small.HALF_BYTES <= small.ALL_REDUCE_HALVES_BYTES <= small._half_bytes()


def test_the_small_window_holds_the_largest_contribution_it_takes() -> None:
    assert small._half_bytes() >= routes.GATHER_BYTES >= routes.GATHER_BYTES_OVERSUBSCRIBED


def test_small_all_reduces_take_two_shots_where_ranks_outnumber_cores_from_the_two_shot_size_else_beyond_half() -> None:
    """(The same decision ``small.all_reduce_plan`` and, up to ``HALF_BYTES``, the cost model take.)"""
    two = routes.TWO_SHOT_BYTES
    assert routes.two_shot(two, True) and not routes.two_shot(two - 1, True)
    assert not routes.two_shot(two, False) and not routes.two_shot(small.HALF_BYTES, False)
    assert two <= small.HALF_BYTES
    cores = routes.TWO_SHOT_CORES_BYTES
    assert routes.two_shot(cores, False) and not routes.two_shot(cores - 1, False)
    assert small.HALF_BYTES < cores <= routes.ALL_REDUCE_HALVES_BYTES


def test_reduces_go_by_reads_sooner_where_ranks_outnumber_the_cores_and_only_beyond_the_slots() -> None:
    few, later = routes.REDUCE_PIECES_CROWDED_RANKS
    for size in (2, few, few + 1, 8):
        assert routes.reduce_reads_from(False, size) == routes.REDUCE_READS_BYTES[0]
    assert routes.reduce_reads_from(True, few + 1) == routes.reduce_reads_from(True, 8) == routes.REDUCE_READS_BYTES[1]
    assert routes.reduce_reads_from(False, 8) >= routes.reduce_reads_from(True, 8) > DIRECT_REDUCE_BYTES


def test_a_crowded_group_of_few_ranks_takes_reads_only_from_a_larger_size() -> None:
    few, later = routes.REDUCE_PIECES_CROWDED_RANKS
    assert routes.reduce_reads_from(True, few) == routes.reduce_reads_from(True, 3) == later
    assert later > routes.REDUCE_READS_BYTES[1]


@pytest.mark.parametrize("size", [3, 4, 8])
def test_reduces_below_the_reads_take_the_slots_piece_by_piece_only_where_ranks_outnumber_cores(size: int) -> None:
    crowded = routes.reduce_reads_from(True, size)
    assert routes.reduce_by_pieces(DIRECT_REDUCE_BYTES + 1, True, size) and routes.reduce_by_pieces(crowded - 1, True, size)
    assert not routes.reduce_by_pieces(crowded, True, size)
    assert not routes.reduce_by_pieces(DIRECT_REDUCE_BYTES + 1, False, size)
    assert not routes.reduce_by_pieces(0, True, size)  # nothing to cut: the schedule returns at once


def test_crowded_reduces_by_reads_of_eight_ranks_fold_in_c_below_the_c_bound_and_nothing_where_ranks_have_cores(
        ) -> None:
    """The crowded 8-rank reduces by reads (from ``REDUCE_READS_BYTES``' second) run in C below
    ``FOLDS_IN_C_BYTES``, the larger ones and where every rank has a core in Python."""
    start, bound = routes.reduce_reads_from(True, 8), routes.FOLDS_IN_C_BYTES
    assert start < bound
    assert routes.folds_in_c(start, True) and routes.folds_in_c(bound - 1, True)
    assert not routes.folds_in_c(bound, True)
    assert not routes.folds_in_c(start, False) and not routes.folds_in_c(routes.reduce_reads_from(False, 2), False)


def test_all_reduces_by_reads_fold_in_c_where_every_rank_has_a_core_and_in_python_where_ranks_outnumber_them(
        ) -> None:
    """Where every rank has a core an all-reduce by reads runs in C from the reads' smallest size up (the 2-rank
    4 MiB of the harness among them); where ranks outnumber cores in Python, as before."""
    start = routes.reads_from(False, False)
    for nbytes in (start, 4 << 20, 64 << 20):
        assert routes.all_reduce_folds_in_c(nbytes, False)
        assert not routes.all_reduce_folds_in_c(nbytes, True)


def test_broadcasts_beyond_the_halves_take_them_piece_by_piece_only_where_ranks_outnumber_cores() -> None:
    limit = routes.BROADCAST_HALVES_CROWDED_BYTES
    assert routes.broadcast_by_halves(small.BROADCAST_BYTES + 1, True)
    assert routes.broadcast_by_halves(limit, True) and not routes.broadcast_by_halves(limit + 1, True)
    assert not routes.broadcast_by_halves(small.BROADCAST_BYTES + 1, False)


def test_reduce_scatters_take_the_halves_beyond_half_bytes_only_where_ranks_outnumber_cores() -> None:
    limit = routes.REDUCE_SCATTER_HALVES_CROWDED_BYTES
    assert not routes.reduce_scatter_by_halves(routes.HALF_BYTES + 1, False)
    assert routes.reduce_scatter_by_halves(routes.HALF_BYTES + 1, True)
    assert routes.reduce_scatter_by_halves(limit, True) and not routes.reduce_scatter_by_halves(limit + 1, True)
    assert routes.HALF_BYTES < limit <= small._half_bytes() and limit < routes.reads_from(True, True)


def test_crowded_all_reduces_beyond_one_call_through_the_halves_take_them_piece_by_piece_below_the_reads() -> None:
    """Where ranks outnumber cores, all-reduces beyond ``ALL_REDUCE_HALVES_CROWDED_BYTES`` go through
    the halves a piece of at most that size per call, up to ``ALL_REDUCE_PIECES_CROWDED_BYTES`` and
    below the reads' size; where every rank has a core, never beyond ``ALL_REDUCE_HALVES_BYTES``."""
    one, limit, reads = (routes.ALL_REDUCE_HALVES_CROWDED_BYTES, routes.ALL_REDUCE_PIECES_CROWDED_BYTES,
                         routes.reads_from(False, True))
    assert one < limit <= reads
    assert routes.all_reduce_pieces(one, True) == 1 and routes.all_reduce_pieces(one + 1, True) == 2
    assert routes.all_reduce_pieces(2 * one, True) == 2 and routes.all_reduce_pieces(3 * one - 1, True) == 3
    assert routes.all_reduce_halves_crowded(one + 1, True) and routes.all_reduce_halves_crowded(min(limit, reads - 1), True)
    assert not routes.all_reduce_halves_crowded(reads, True) and not routes.all_reduce_halves_crowded(limit + 1, True)
    assert not routes.all_reduce_by_halves(one + 1, False) and routes.all_reduce_pieces(one + 1, False) == 1
    assert routes.all_reduce_pieces(routes.ALL_REDUCE_HALVES_BYTES, True) == 1
