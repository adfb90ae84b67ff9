"""Price a schedule from one rank's steps when every rank does the same thing, turned.

Replaying every rank costs time in proportion to all messages: a ring of p ranks sends
2(p-1) messages per rank, so 33 million at 4096 ranks. But ring schedules are symmetric
under rotation: at step s rank r does what rank 0 does, with every peer and block moved
on by r. So rank 0's schedule is generated alone; each of its steps is a *pattern* (peer
offsets and sizes), all ranks run it at once (lockstep, as a ring does), and the step costs
what the slowest rank pays when all p copies of the pattern share the machine's links.
Steps with the same pattern cost the same, so each distinct pattern is priced once.
"""

from __future__ import annotations

from collections.abc import Callable

from ..algorithms.schedule import Recv, Send, Step
from .machine import Machine

ROTATION_SYMMETRIC = {("all_reduce", "ring"), ("reduce_scatter", "ring"), ("all_gather", "ring")}
"""(collective, algorithm) pairs whose schedules are the same for every rank up to rotation
(their blocks differ by at most one element, which the pricing ignores)."""

Pattern = tuple[tuple[bool, int, int, bool], ...]  # (send?, peer offset, bytes, reduce?)


def pattern_of(step: Step, rank: int, size: int, itemsize: int) -> Pattern:
    return tuple((isinstance(o, Send), (o.peer - rank) % size, o.count * itemsize,
                  isinstance(o, Recv) and o.reduce) for o in step)


def step_cost(pattern: Pattern, fresh: Callable[[], Machine]) -> float:
    """Seconds one step takes when every rank runs ``pattern`` at once on an idle machine."""
    machine = fresh()
    size = machine.ranks
    arrivals: dict[tuple[int, int], list[tuple[float, float]]] = {}
    busy = [0.0] * size
    for r in range(size):
        t = 0.0
        for send, offset, nbytes, _ in pattern:
            if send:
                dst = (r + offset) % size
                t, arrival, copy = machine.message(r, dst, nbytes, t)
                arrivals.setdefault((r, dst), []).append((arrival, copy))
        busy[r] = t
    slowest = 0.0
    for r in range(size):
        t = busy[r]
        for send, offset, nbytes, reduce in pattern:
            if not send:
                src = (r + offset) % size
                arrival, copy = arrivals[(src, r)].pop(0)
                t = max(t, arrival) + copy + (machine.reduce_cost(r, nbytes) if reduce else 0.0)
        slowest = max(slowest, t)
    return slowest


def lockstep_time(steps: list[Step], size: int, fresh: Callable[[], Machine], itemsize: int) -> float:
    """Seconds of rank 0's ``steps`` run by all ``size`` ranks in lockstep (no overhead added)."""
    cache: dict[Pattern, float] = {}
    total = 0.0
    for step in steps:
        key = pattern_of(step, 0, size, itemsize)
        if key not in cache:
            cache[key] = step_cost(key, fresh)
        total += cache[key]
    return total
