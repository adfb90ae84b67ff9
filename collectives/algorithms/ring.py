"""Ring and chain algorithms (NCCL Ring; MPICH ``*_intra_ring.c``).

Ring reduce-scatter: the vector is cut into p blocks, block b ends on rank b. In step s
(0 <= s < p-1) rank r sends its partial of block (r-s-1) to r+1 and receives the partial
of block (r-s-2) from r-1, adding its own contribution. After p-1 steps rank r holds the
full sum of block r. Each element is summed once, by one chain, so every rank later sees
the same bits. Cost: (p-1)α + (p-1)/p·nβ + (p-1)/p·nγ.

Ring all-gather: rank r starts with block r; in step s it forwards block (r-s) to r+1 and
receives block (r-s-1) from r-1. Cost: (p-1)α + (p-1)/p·nβ.

All-reduce = reduce-scatter then all-gather: 2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ, the
bandwidth-optimal choice for large vectors; valid for every p.

Chains (broadcast, reduce, gather, scatter) run along ranks in order relative to the
root, segment by segment, so that with k segments a chain of depth p-1 costs about
(p+k-2)(α + n/k·β) instead of (p-1)(α + nβ).

Every step is split into segments of ``segment`` elements (the pipelining chunk).
"""

from __future__ import annotations

from .schedule import INPUT, WORK, Recv, Schedule, Send, exchange, partition, segments


def reduce_scatter(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Ring reduce-scatter of the WORK buffer; rank r ends holding block r reduced."""
    nxt, prev = (rank + 1) % size, (rank - 1) % size
    for s in range(size - 1):
        send_block = (rank - s - 1) % size
        recv_block = (rank - s - 2) % size
        yield from exchange(nxt, blocks[send_block], prev, blocks[recv_block], segment, reduce=True)


def all_gather(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Ring all-gather in the WORK buffer; rank r starts with block r."""
    nxt, prev = (rank + 1) % size, (rank - 1) % size
    for s in range(size - 1):
        yield from exchange(nxt, blocks[(rank - s) % size], prev, blocks[(rank - s - 1) % size], segment)


def all_reduce(rank: int, size: int, count: int, segment: int) -> Schedule:
    blocks = partition(count, size)
    yield from reduce_scatter(rank, size, blocks, segment)
    yield from all_gather(rank, size, blocks, segment)


def broadcast(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    """Pipelined chain root -> root+1 -> ...: forward segment i while receiving i+1."""
    pos = (rank - root) % size
    prev = (rank - 1) % size if pos > 0 else None
    nxt = (rank + 1) % size if pos < size - 1 else None
    pieces = segments(0, count, segment)
    if prev is None:  # the root has everything: send at once
        for piece in pieces if nxt is not None else []:
            yield (Send(nxt, *piece),)  # type: ignore[arg-type]
        return
    for i in range(len(pieces) + 1):
        step: list[Send | Recv] = []
        if i < len(pieces):
            step.append(Recv(prev, *pieces[i]))
        if nxt is not None and i >= 1:
            step.append(Send(nxt, *pieces[i - 1]))
        if step:
            yield tuple(step)


def reduce(rank: int, size: int, root: int, count: int, segment: int) -> Schedule:
    """Pipelined chain ending at the root: root+p-1 -> ... -> root+1 -> root, each hop
    adding its own contribution to the partial it passes on."""
    pos = (rank - root) % size
    upstream = (rank + 1) % size if pos < size - 1 else None  # sends to us
    downstream = (rank - 1) % size if pos > 0 else None  # we send to it
    for offset, length in segments(0, count, segment):
        if upstream is not None:
            yield (Recv(upstream, offset, length, reduce=True),)
        if downstream is not None:
            yield (Send(downstream, offset, length),)


def _block_msgs(peer: int, block: tuple[int, int], segment: int, recv: bool, buf: int = WORK) -> list[Send | Recv]:
    if recv:
        return [Recv(peer, o, n) for o, n in segments(*block, segment)]
    return [Send(peer, o, n, buf=buf) for o, n in segments(*block, segment)]


def gather(rank: int, size: int, root: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Chain gather toward the root: chain position q sends the blocks of positions
    q..p-1 to q-1 (its own first), each one received from q+1 in the step before.
    WORK holds p blocks in rank order; each rank starts with its own block in place."""
    pos = (rank - root) % size
    up = (rank + 1) % size if pos < size - 1 else None
    down = (rank - 1) % size if pos > 0 else None
    sends = list(range(pos, size)) if down is not None else []
    recvs = list(range(pos + 1, size)) if up is not None else []
    for i in range(max(len(sends), len(recvs))):
        step: list[Send | Recv] = []
        if i < len(recvs):
            step += _block_msgs(up, blocks[(root + recvs[i]) % size], segment, recv=True)  # type: ignore[arg-type]
        if i < len(sends):
            step += _block_msgs(down, blocks[(root + sends[i]) % size], segment, recv=False)  # type: ignore[arg-type]
        if step:
            yield tuple(step)


def scatter(rank: int, size: int, root: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    """Chain scatter away from the root: the root sends the blocks of positions p-1..1
    (farthest first) to position 1; position q receives the blocks of positions p-1..q
    and forwards each one but its own in the next step. The root reads INPUT, the others
    receive into WORK (rank order)."""
    pos = (rank - root) % size
    up = (rank - 1) % size if pos > 0 else None
    down = (rank + 1) % size if pos < size - 1 else None
    if up is None:
        for q in range(size - 1, 0, -1):
            yield tuple(_block_msgs(down, blocks[(root + q) % size], segment, recv=False, buf=INPUT))  # type: ignore[arg-type]
        return
    recvs = list(range(size - 1, pos - 1, -1))
    sends = recvs[:-1] if down is not None else []
    for i in range(len(recvs) + 1):
        step: list[Send | Recv] = []
        if i < len(recvs):
            step += _block_msgs(up, blocks[(root + recvs[i]) % size], segment, recv=True)
        if 1 <= i <= len(sends):
            step += _block_msgs(down, blocks[(root + sends[i - 1]) % size], segment, recv=False)  # type: ignore[arg-type]
        if step:
            yield tuple(step)


__all__ = ["all_gather", "all_reduce", "broadcast", "gather", "reduce", "reduce_scatter", "scatter", "WORK"]
