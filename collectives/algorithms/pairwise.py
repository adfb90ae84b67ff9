"""Pairwise exchange all-to-all (MPICH ``alltoall_intra_pairwise.c``).

In step i (1 <= i < p) rank r sends its block for r + i and receives the block of r - i,
so every step is one full-duplex exchange per rank and no rank is hit by everyone at
once: (p-1)α + (p-1)/p·nβ. When p is a power of two the partner is r XOR i instead, so
both directions of a pair travel in the same step. The caller copies the rank's own
block locally. Input blocks are read from INPUT, output blocks land in WORK.
"""

from __future__ import annotations

from .schedule import INPUT, Schedule, exchange, floor_pow2


def all_to_all(rank: int, size: int, blocks: list[tuple[int, int]], segment: int) -> Schedule:
    power_of_two = size == floor_pow2(size)
    for i in range(1, size):
        to = rank ^ i if power_of_two else (rank + i) % size
        frm = rank ^ i if power_of_two else (rank - i) % size
        yield from exchange(to, blocks[to], frm, blocks[frm], segment, send_buf=INPUT)
