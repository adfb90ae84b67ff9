"""Run the schedules of every rank in one process, with no transport.

Used by tests (every algorithm at every world size, checked element by element against
a reference, in milliseconds) and by cost estimates (message and byte counts per rank).
Messages are matched in order per (sender, receiver) pair, as on a real channel, and a
schedule that would deadlock or leave messages unread is reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ops import ReduceOp, fold_received
from .schedule import Recv, Schedule, Send, Step


class ScheduleError(AssertionError):
    """A set of schedules is inconsistent (deadlock, size mismatch, unread messages)."""


@dataclass
class Stats:
    """What one rank did: steps, messages and elements sent."""

    steps: int = 0
    messages: int = 0
    elements: int = 0
    per_step_elements: list[int] = field(default_factory=list)


def simulate(
    schedules: Sequence[Schedule], buffers: Sequence[Sequence[np.ndarray]], op: ReduceOp | None = None
) -> list[Stats]:
    """Execute ``schedules[r]`` on ``buffers[r]`` for every rank r; return per-rank stats."""
    size = len(schedules)
    queues: dict[tuple[int, int], deque[np.ndarray]] = {}
    iters = [iter(s) for s in schedules]
    current: list[Step | None] = [None] * size
    started = [False] * size
    finished = [False] * size
    stats = [Stats() for _ in range(size)]

    def advance(r: int) -> None:
        current[r] = next(iters[r], None)
        started[r] = False
        if current[r] is None:
            finished[r] = True

    for r in range(size):
        advance(r)
    while not all(finished):
        moved = False
        for r in range(size):
            step = current[r]
            if step is None:
                continue
            if not started[r]:
                started[r] = True
                moved = True
                sent = 0
                for o in step:
                    if isinstance(o, Send):
                        if o.peer == r or not 0 <= o.peer < size:
                            raise ScheduleError(f"rank {r} sends to invalid peer {o.peer}")
                        data = np.array(buffers[r][o.buf][o.offset : o.offset + o.count], copy=True)
                        queues.setdefault((r, o.peer), deque()).append(data)
                        stats[r].messages += 1
                        sent += o.count
                stats[r].elements += sent
                stats[r].per_step_elements.append(sent)
                stats[r].steps += 1
            needed: dict[int, int] = {}
            for o in step:
                if isinstance(o, Recv):
                    needed[o.peer] = needed.get(o.peer, 0) + 1
            if any(len(queues.get((p, r), ())) < n for p, n in needed.items()):
                continue
            for o in step:
                if isinstance(o, Recv):
                    data = queues[(o.peer, r)].popleft()
                    if data.size != o.count:
                        raise ScheduleError(
                            f"rank {r} expects {o.count} elements from {o.peer}, which sent {data.size}"
                        )
                    dst = buffers[r][o.buf][o.offset : o.offset + o.count]
                    if o.reduce:
                        if op is None:
                            raise ScheduleError("a reducing receive needs an op")
                        fold_received(op, dst, data, o.first)
                    else:
                        dst[...] = data
            advance(r)
            moved = True
        if not moved:
            waiting = [r for r in range(size) if not finished[r]]
            raise ScheduleError(f"deadlock: ranks {waiting} wait for messages that never come")
    leftovers = {k: len(q) for k, q in queues.items() if q}
    if leftovers:
        raise ScheduleError(f"messages sent but never received: {leftovers}")
    return stats
