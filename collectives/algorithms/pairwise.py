"""Pairwise exchange all-to-all (MPICH ``alltoall_intra_pairwise.c``).

In step i (1 <= i < p) rank r sends its block for r + i and receives the block of r - i,
so every step is one full-duplex exchange per rank and no rank is hit by everyone at
once: (p-1)α + (p-1)/p·nβ. When p is a power of two the partner is r XOR i instead, so
both directions of a pair travel in the same step. The caller copies the rank's own
block locally. Input blocks are read from INPUT, output blocks land in WORK.

``all_to_all_v`` is the same exchange with blocks of any size per pair (MPI_Alltoallv,
torch's ``all_to_all_single`` with split sizes).
"""

from __future__ import annotations

from .schedule import INPUT, Recv, Schedule, Send, exchange, floor_pow2


def all_to_all(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    power_of_two = size == floor_pow2(size)
    for i in range(1, size):
        to = rank ^ i if power_of_two else (rank + i) % size
        frm = rank ^ i if power_of_two else (rank - i) % size
        yield from exchange(to, blocks[to], frm, blocks[frm], segment, send_buf=INPUT)


def all_to_all_v(
    rank: int, size: int, send_blocks: list[tuple[int, int]], recv_blocks: list[tuple[int, int]]
) -> Schedule:
    """All-to-all with a block of its own size per pair (MPI_Alltoallv): ``send_blocks[j]``
    is the ``(offset, count)`` of INPUT that goes to rank j, ``recv_blocks[j]`` where rank
    j's block lands in WORK. The same pairing as :func:`all_to_all`, but exactly one
    message per pair and step, empty ones included, never split into segments: a rank that
    expects another count than its partner sends then sees the transport's size check fail
    (MessageMismatchError) instead of leaving part of a message unread or waiting for one
    that never comes. Segments would bound nothing here, since no receive is reduced and
    the transports frame large messages themselves."""
    power_of_two = size == floor_pow2(size)
    for i in range(1, size):
        to = rank ^ i if power_of_two else (rank + i) % size
        frm = rank ^ i if power_of_two else (rank - i) % size
        yield (Recv(frm, *recv_blocks[frm]), Send(to, *send_blocks[to], buf=INPUT))


def split_blocks(splits: list[int]) -> list[tuple[int, int]]:
    """Consecutive ``(offset, count)`` blocks of the given counts, in rank order."""
    blocks = []
    offset = 0
    for count in splits:
        blocks.append((offset, count))
        offset += count
    return blocks
