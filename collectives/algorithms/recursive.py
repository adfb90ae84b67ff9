"""Recursive halving and doubling (MPICH, Thakur–Rabenseifner–Gropp 2005), for any p.

p' = largest power of two <= p, r = p - p'. Non-powers of two are *folded* first
(MPICH's scheme): among ranks < 2r, each even rank sends its whole vector to the odd
rank above it, which adds it in and acts for both; even ranks sit out. The remaining p'
ranks get new ranks 0..p'-1 and run the power-of-two algorithm; at the end each odd rank
hands its even neighbour the result (all-reduce) or its block (reduce-scatter).

* reduce-scatter by recursive halving, distance halving: at mask = p'/2, p'/4, ..., 1 a
  rank exchanges half of its current block range with new rank ^ mask, keeping the lower
  half if it is the lower rank, and adds the partner's copy of the kept half. After lg p'
  steps new rank i owns block i (natural order). Cost lg p'·α + (p'-1)/p'·n(β+γ).
* all-gather by recursive doubling, the exact reverse (mask = 1, 2, ...).
* all-reduce (Rabenseifner) = both: 2 lg p'·α + 2(p'-1)/p'·nβ + (p'-1)/p'·nγ, plus the
  fold (≈ 2nβ + nγ) when p is not a power of two. Each element is summed once by its
  owner, then copied, so all ranks get the same bits.
* short all-reduce (``all_reduce_short``): recursive doubling of the whole vector, lg p'·α
  + lg p'·n(β+γ): half the steps, which is what counts while latency dominates (MPICH
  takes it below 2 KiB). Partners combine the same two operands in the same order, so
  all ranks still get the same bits.
* all-gather for any p uses Bruck's dissemination: in round k rank r sends the 2^k blocks
  it holds to r - 2^k and receives the next 2^k from r + 2^k (fewer in the last round):
  ceil(lg p)α + (p-1)/p·nβ, with no rotation because blocks stay at their own offsets.
* broadcast = binomial scatter + Bruck all-gather (van de Geijn): bandwidth-optimal
  2(p-1)/p·nβ with 2 lg p latency terms.
* reduce = recursive-halving reduce-scatter + the owners sending their blocks to the root.
"""

from __future__ import annotations

from . import tree
from .schedule import Recv, Schedule, Send, exchange, floor_pow2, partition, segments, span, wrapped_spans


class _Fold:
    """The MPICH fold of p ranks onto p' = 2^floor(lg p)."""

    def __init__(self, rank: int, size: int) -> None:
        self.size = size
        self.p2 = floor_pow2(size)
        self.extra = size - self.p2
        if rank < 2 * self.extra:
            self.newrank = -1 if rank % 2 == 0 else rank // 2
        else:
            self.newrank = rank - self.extra

    def real(self, newrank: int) -> int:
        return 2 * newrank + 1 if newrank < self.extra else newrank + self.extra

    def members(self, newrank: int) -> tuple[int, int]:
        """Real ranks [first, last) that new rank ``newrank`` acts for."""
        if newrank < self.extra:
            return 2 * newrank, 2 * newrank + 2
        return newrank + self.extra, newrank + self.extra + 1


def _fold_in(rank: int, fold: _Fold, count: int, segment: int) -> Schedule:
    if rank < 2 * fold.extra:
        if rank % 2 == 0:
            yield from exchange(rank + 1, (0, count), None, None, segment)
        else:
            yield from exchange(None, None, rank - 1, (0, count), segment, reduce=True, first=True)


def _fold_out(rank: int, fold: _Fold, count: int, segment: int) -> Schedule:
    """Each odd rank of the fold hands its even neighbour the whole result."""
    if rank < 2 * fold.extra:
        if rank % 2 == 1:
            yield from exchange(rank - 1, (0, count), None, None, segment)
        else:
            yield from exchange(None, None, rank + 1, (0, count), segment)


def _halving(fold: _Fold, vblocks: list[tuple[int, int]], segment: int) -> Schedule:
    nr = fold.newrank
    lo, hi = 0, fold.p2
    mask = fold.p2 // 2
    while mask >= 1:
        partner = fold.real(nr ^ mask)
        mid = (lo + hi) // 2
        keep, give = ((lo, mid), (mid, hi)) if nr & mask == 0 else ((mid, hi), (lo, mid))
        yield from exchange(partner, span(vblocks, *give), partner, span(vblocks, *keep), segment, reduce=True)
        lo, hi = keep
        mask //= 2


def _doubling(fold: _Fold, vblocks: list[tuple[int, int]], segment: int) -> Schedule:
    nr = fold.newrank
    mask = 1
    while mask < fold.p2:
        partner_nr = nr ^ mask
        mine = (nr & ~(mask - 1), (nr & ~(mask - 1)) + mask)
        theirs = (partner_nr & ~(mask - 1), (partner_nr & ~(mask - 1)) + mask)
        partner = fold.real(partner_nr)
        yield from exchange(partner, span(vblocks, *mine), partner, span(vblocks, *theirs), segment)
        mask *= 2


def all_reduce(rank: int, size: int, count: int, segment: int) -> Schedule:
    fold = _Fold(rank, size)
    vblocks = partition(count, fold.p2)
    yield from _fold_in(rank, fold, count, segment)
    if fold.newrank >= 0:
        yield from _halving(fold, vblocks, segment)
        yield from _doubling(fold, vblocks, segment)
    yield from _fold_out(rank, fold, count, segment)


def all_reduce_short(rank: int, size: int, count: int, segment: int) -> Schedule:
    """Recursive doubling of the whole vector: at mask = 1, 2, ..., p'/2 a rank swaps its
    partial result with new rank ^ mask and combines the two, the lower rank's first."""
    fold = _Fold(rank, size)
    yield from _fold_in(rank, fold, count, segment)
    nr = fold.newrank
    if nr >= 0:
        mask = 1
        while mask < fold.p2:
            partner = fold.real(nr ^ mask)
            yield from exchange(partner, (0, count), partner, (0, count), segment, reduce=True, first=nr & mask != 0)
            mask *= 2
    yield from _fold_out(rank, fold, count, segment)


def _vblocks(fold: _Fold, blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [span(blocks, *fold.members(nr)) for nr in range(fold.p2)]


def reduce_scatter(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Rank r ends with block r of the WORK buffer reduced."""
    fold = _Fold(rank, size)
    count = blocks[-1][0] + blocks[-1][1] if blocks else 0
    yield from _fold_in(rank, fold, count, segment)
    if fold.newrank >= 0:
        yield from _halving(fold, _vblocks(fold, blocks), segment)
    if rank < 2 * fold.extra:
        if rank % 2 == 1:
            yield from exchange(rank - 1, blocks[rank - 1], None, None, segment)
        else:
            yield from exchange(None, None, rank + 1, blocks[rank], segment)


def reduce(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    """Reduce-scatter by recursive halving, then every block owner sends its block to the
    root (the WORK buffer of the root ends with the whole reduced vector)."""
    fold = _Fold(rank, size)
    vblocks = partition(count, fold.p2)
    yield from _fold_in(rank, fold, count, segment)
    if fold.newrank >= 0:
        yield from _halving(fold, vblocks, segment)
    root_nr = _Fold(root, size).newrank
    if rank == root:
        owners = [nr for nr in range(fold.p2) if nr != root_nr]
        yield tuple(
            Recv(fold.real(nr), o, n) for nr in owners for o, n in segments(*vblocks[nr], segment)
        )
    elif fold.newrank >= 0:
        yield tuple(Send(root, o, n) for o, n in segments(*vblocks[fold.newrank], segment))


def _bruck(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    held = 1
    while held < size:
        n = min(held, size - held)
        to, frm = (rank - held) % size, (rank + held) % size
        step: list[Send | Recv] = []
        for start, length in wrapped_spans(blocks, rank + held, n):
            step.extend(Recv(frm, o, c) for o, c in segments(start, length, segment))
        for start, length in wrapped_spans(blocks, rank, n):
            step.extend(Send(to, o, c) for o, c in segments(start, length, segment))
        if step:
            yield tuple(step)
        held += n


def all_gather(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Recursive doubling when p is a power of two, Bruck otherwise; blocks in place."""
    if size == floor_pow2(size):
        yield from _doubling(_Fold(rank, size), blocks, segment)
    else:
        yield from _bruck(rank, size, blocks, segment)


def broadcast(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    blocks = partition(count, size)
    yield from tree.scatter(rank, size, root, blocks, segment, root_buf=0)
    yield from all_gather(rank, size, blocks, segment)
