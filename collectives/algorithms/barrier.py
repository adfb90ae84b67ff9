"""Dissemination barrier (Hensgen, Finkel and Manber 1988; MPICH's default).

In round k (distance d = 2^k) every rank sends an empty message to r + d and receives
one from r - d. After round k each rank has heard, transitively, from 2^(k+1) ranks, so
ceil(lg p) rounds suffice for any p: cost ceil(lg p)·α, no data.
"""

from __future__ import annotations

from .schedule import Recv, Schedule, Send


def barrier(rank: int, size: int) -> Schedule:
    distance = 1
    while distance < size:
        yield (Recv((rank - distance) % size, 0, 0), Send((rank + distance) % size, 0, 0))
        distance *= 2
