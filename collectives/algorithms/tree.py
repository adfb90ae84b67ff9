"""Binomial-tree algorithms (MPICH ``bcast_intra_binomial.c``, ``reduce_intra_binomial.c``).

Ranks are renumbered relative to the root, v = (rank - root) mod p. In the binomial tree
the parent of v is v - lowbit(v) and its children are v + m for m = lowbit(v)/2, ..., 1
(the root: every power of two below p), so the tree has depth ceil(lg p) for any p.

* broadcast: receive from the parent, pass to the children: ceil(lg p)(α + nβ). Segments
  flow down the tree one after another, so deep trees pipeline.
* reduce: the mirror image; children are folded into the parent's partial in a fixed
  order (nearest child first), so the result does not depend on timing.
* gather / scatter: the same tree carrying subtree blocks, halving (scatter) or doubling
  (gather) per level: ceil(lg p)α + (p-1)/p·nβ.
* all-reduce = reduce to rank 0 + broadcast from 0; reduce-scatter = reduce + scatter;
  all-gather = gather + broadcast. Latency-optimal for small messages: 2·ceil(lg p) steps
  instead of the ring's 2(p-1). The root computes each element once, the rest is copying,
  so every rank sees the same bits.
"""

from __future__ import annotations

from .schedule import INPUT, WORK, Recv, Schedule, Send, ceil_pow2, lowest_bit, segments, wrapped_spans


def _real(v: int, root: int, size: int) -> int:
    return (v + root) % size


def _children(v: int, size: int) -> list[int]:
    """Relative children of v, nearest first."""
    top = lowest_bit(v) if v else ceil_pow2(size)
    children = []
    m = 1
    while m < top:
        if v + m < size:
            children.append(v + m)
        m <<= 1
    return children


def broadcast(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    v = (rank - root) % size
    parent = _real(v - lowest_bit(v), root, size) if v else None
    children = [_real(c, root, size) for c in reversed(_children(v, size))]  # farthest first
    pieces = segments(0, count, segment)
    for i in range(len(pieces) + 1):
        step: list[Send | Recv] = []
        if parent is not None and i < len(pieces):
            step.append(Recv(parent, *pieces[i]))
        # the root sends segment i at once; others forward the one received last step
        j = i if parent is None else i - 1
        if 0 <= j < len(pieces):
            step.extend(Send(c, *pieces[j]) for c in children)
        if step:
            yield tuple(step)


def reduce(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    """Binomial reduce into the WORK buffer of ``root`` (other ranks' WORK is scratch)."""
    v = (rank - root) % size
    parent = _real(v - lowest_bit(v), root, size) if v else None
    children = [_real(c, root, size) for c in _children(v, size)]
    for offset, length in segments(0, count, segment):
        for child in children:
            yield (Recv(child, offset, length, reduce=True),)
        if parent is not None:
            yield (Send(parent, offset, length),)


def _subtree(v: int, size: int) -> tuple[int, int]:
    """Relative ranks [first, last) in the subtree rooted at v."""
    extent = lowest_bit(v) if v else ceil_pow2(size)
    return v, min(v + extent, size)


def _pieces(w: int, root: int, size: int, blocks: list[tuple[int, int]], segment: int) -> list[tuple[int, int]]:
    """The segments (offset, length) of the blocks of the subtree rooted at relative rank ``w``,
    in rank order: what moves over the edge between ``w`` and its parent, either way."""
    first, last = _subtree(w, size)
    return [(o, n) for start, length in wrapped_spans(blocks, root + first, last - first)
            for o, n in segments(start, length, segment)]


def gather(rank: int, size: int, root: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Binomial gather of rank-ordered blocks into the root's WORK buffer; each rank
    starts with its own block in place in its WORK buffer."""
    v = (rank - root) % size
    for child in _children(v, size):
        yield tuple(Recv(_real(child, root, size), o, n) for o, n in _pieces(child, root, size, blocks, segment))
    if v:
        parent = _real(v - lowest_bit(v), root, size)
        yield tuple(Send(parent, o, n) for o, n in _pieces(v, root, size, blocks, segment))


def scatter(
    rank: int, size: int, root: int, blocks: list[tuple[int, int]], segment: int, *, root_buf: int = INPUT
) -> Schedule:
    """Binomial scatter of rank-ordered blocks from the root (reading ``root_buf``) into
    every rank's WORK buffer at the same offsets."""
    v = (rank - root) % size
    if v:
        parent = _real(v - lowest_bit(v), root, size)
        yield tuple(Recv(parent, o, n) for o, n in _pieces(v, root, size, blocks, segment))
    buf = root_buf if v == 0 else WORK
    for child in reversed(_children(v, size)):
        to = _real(child, root, size)
        yield tuple(Send(to, o, n, buf=buf) for o, n in _pieces(child, root, size, blocks, segment))


def all_reduce(rank: int, size: int, count: int, segment: int) -> Schedule:
    yield from reduce(rank, size, 0, count, segment)
    yield from broadcast(rank, size, 0, count, segment)


def reduce_scatter(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    count = blocks[-1][0] + blocks[-1][1] if blocks else 0
    yield from reduce(rank, size, 0, count, segment)
    yield from scatter(rank, size, 0, blocks, segment, root_buf=WORK)


def all_gather(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    count = blocks[-1][0] + blocks[-1][1] if blocks else 0
    yield from gather(rank, size, 0, blocks, segment)
    yield from broadcast(rank, size, 0, count, segment)
