"""Price a schedule from one rank's steps when every rank does the same thing, relabelled.

Replaying every rank costs time in proportion to all messages: a ring of p ranks sends
2(p-1) messages per rank, 33 million at 4096 ranks. But many schedules are symmetric:
ring schedules (and Bruck's all-gather) under rotation, where at step s rank r does what
rank 0 does with every peer moved on by r; recursive halving and doubling, for a power of
two, under XOR, where rank r's partner is r ^ m whenever rank 0's is m. So rank 0's
schedule is generated alone; each of its steps is a *pattern* (peer relations and sizes),
all ranks run it at once (lockstep, as these schedules do), and the step costs what the
slowest rank pays when all p copies of the pattern share the machine's links. Steps with
the same pattern cost the same, so each distinct pattern is priced once.

Below one element per rank most of a ring's blocks are empty and the few real ones travel
the ring hop by hop: there the time is the sum of the hops (``chain_time``), not a
lockstep of steps.
"""

from __future__ import annotations

from collections.abc import Callable

from ..algorithms.schedule import Recv, Send, Step
from .machine import Machine

ROTATION = "rotation"
XOR = "xor"


def symmetry_of(collective: str, algorithm: str, size: int) -> str | None:
    """The symmetry of this schedule at ``size`` ranks (ROTATION, XOR), or None."""
    if algorithm == "ring" and collective in ("all_reduce", "reduce_scatter", "all_gather"):
        return ROTATION
    if algorithm == "recursive" and collective == "all_gather":
        return XOR if size & (size - 1) == 0 else ROTATION  # recursive doubling, else Bruck
    if algorithm == "recursive" and collective in ("all_reduce", "reduce_scatter") and size & (size - 1) == 0:
        return XOR
    return None


Pattern = tuple[tuple[bool, int, int, bool], ...]  # (send?, peer relation, bytes, reduce?)


def _relation(kind: str, rank: int, peer: int, size: int) -> int:
    return peer ^ rank if kind == XOR else (peer - rank) % size


def _apply(kind: str, rank: int, relation: int, size: int) -> int:
    return rank ^ relation if kind == XOR else (rank + relation) % size


def pattern_of(step: Step, kind: str, size: int, itemsize: int) -> Pattern:
    """Rank 0's ``step`` as relations to its peers."""
    return tuple((isinstance(o, Send), _relation(kind, 0, o.peer, size), o.count * itemsize,
                  isinstance(o, Recv) and o.reduce) for o in step)


def step_cost(pattern: Pattern, kind: str, fresh: Callable[[], Machine]) -> float:
    """Seconds one step takes when every rank runs ``pattern`` at once on an idle machine."""
    machine = fresh()
    size = machine.ranks
    arrivals: dict[tuple[int, int], list[tuple[float, float]]] = {}
    busy = [0.0] * size
    for r in range(size):
        t = 0.0
        for send, relation, nbytes, _ in pattern:
            if send:
                dst = _apply(kind, r, relation, size)
                t, arrival, copy = machine.message(r, dst, nbytes, t)
                arrivals.setdefault((r, dst), []).append((arrival, copy))
        busy[r] = t
    slowest = 0.0
    for r in range(size):
        t = busy[r]
        waited = False
        recvs: list[int] = []
        for send, relation, nbytes, reduce in pattern:
            if not send:
                src = _apply(kind, r, relation, size)
                recvs.append(src)
                queue = arrivals.get((src, r))
                if queue:
                    arrival, copy = queue.pop(0)
                else:  # blocks of unequal size: the sender's step differs from rank 0's
                    _, arrival, copy = machine.message(src, r, nbytes, 0.0)
                waited = waited or arrival > t
                t = max(t + copy, arrival) + (machine.reduce_cost(r, nbytes) if reduce else 0.0)
        sends = [_apply(kind, r, relation, size) for send, relation, _, _ in pattern if send]
        t += machine.step_extra(r, sends, recvs, waited)
        slowest = max(slowest, t)
    return slowest


def lockstep_time(steps: list[Step], kind: str, fresh: Callable[[], Machine], itemsize: int) -> float:
    """Seconds of rank 0's ``steps`` run by all ranks in lockstep (no overhead added)."""
    size = fresh().ranks
    cache: dict[Pattern, float] = {}
    total = 0.0
    for step in steps:
        key = pattern_of(step, kind, size, itemsize)
        if key not in cache:
            cache[key] = step_cost(key, kind, fresh)
        total += cache[key]
    return total


def chain_time(passes: int, nbytes: int, reduce: bool, fresh: Callable[[], Machine]) -> float:
    """Seconds for ``passes`` trips of ``nbytes`` around the ring, hop by hop (r to r+1)."""
    machine = fresh()
    size = machine.ranks
    t = 0.0
    for r in range(size - 1):
        _, arrival, copy = machine.message(r, r + 1, nbytes, t)
        t = max(copy, arrival) + (machine.reduce_cost(r + 1, nbytes) if reduce else 0.0)  # r + 1 was waiting
    return passes * t
