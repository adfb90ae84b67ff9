"""Replay the schedules of every rank on a modelled machine, in simulated time.

The schedules are the ones the executor runs (``algorithms/``); here no byte moves: each
message is its size, priced by the machine (``machine.Machine``: links with their own α and β,
shared by the messages that cross them). Event-driven: a heap of ranks ready to issue their
next step, in time order, so links are reserved in the order messages are sent. A step's
sends are issued together; the step ends when its receives have arrived and been copied
out (and folded, for reducing receives). Messages between two ranks match in order, as on
a real channel; a schedule that would deadlock raises ``ScheduleError``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol

from ..algorithms.schedule import Recv, Send, Step
from ..algorithms.simulate import ScheduleError


class Network(Protocol):
    """What the replay asks of a machine (``machine.Machine`` is the one implementation)."""

    def message(self, src: int, dst: int, nbytes: int, ready: float) -> tuple[float, float, float]:
        """Send ``nbytes`` from ``src`` at ``ready``: (when the sender is free again, when the
        message has arrived, how long the receiver then spends copying it out)."""
        ...

    def reduce_cost(self, rank: int, nbytes: int) -> float:
        """Seconds ``rank`` spends folding ``nbytes`` into its buffer."""
        ...


def replay(schedules: Sequence[Iterator[Step]], network: Network, itemsize: int = 4) -> list[float]:
    """Run every rank's schedule on ``network``; the time (s) each rank finishes, from 0."""
    size = len(schedules)
    inbox: dict[tuple[int, int], deque[tuple[float, float]]] = {}
    blocked: dict[int, tuple[float, Step]] = {}  # rank -> (time its sends were done, step)
    wanted: dict[int, set[int]] = {}  # rank -> peers it still waits on
    done = [0.0] * size
    ready: list[tuple[float, int]] = [(0.0, r) for r in range(size)]
    heapq.heapify(ready)

    def try_finish(r: int, t: float, step: Step) -> bool:
        needed: dict[int, int] = {}
        for o in step:
            if isinstance(o, Recv):
                needed[o.peer] = needed.get(o.peer, 0) + 1
        short = {p for p, n in needed.items() if len(inbox.get((p, r), ())) < n}
        if short:
            blocked[r] = (t, step)
            wanted[r] = short
            return False
        for o in step:
            if isinstance(o, Recv):
                arrival, copy = inbox[(o.peer, r)].popleft()
                t = max(t, arrival) + copy
                if o.reduce:
                    t += network.reduce_cost(r, o.count * itemsize)
        heapq.heappush(ready, (t, r))
        return True

    while ready:
        t, r = heapq.heappop(ready)
        step = next(schedules[r], None)
        if step is None:
            done[r] = t
            continue
        woken = []
        for o in step:
            if isinstance(o, Send):
                if o.peer == r or not 0 <= o.peer < size:
                    raise ScheduleError(f"rank {r} sends to invalid peer {o.peer}")
                t, arrival, copy = network.message(r, o.peer, o.count * itemsize, t)
                inbox.setdefault((r, o.peer), deque()).append((arrival, copy))
                if o.peer in blocked and r in wanted.get(o.peer, ()):
                    woken.append(o.peer)
        try_finish(r, t, step)
        for peer in woken:
            if peer in blocked:
                at, pending = blocked.pop(peer)
                wanted.pop(peer, None)
                try_finish(peer, at, pending)
    if blocked:
        raise ScheduleError(f"deadlock: ranks {sorted(blocked)} wait for messages that never come")
    leftovers = {k: len(q) for k, q in inbox.items() if q}
    if leftovers:
        raise ScheduleError(f"messages sent but never received: {leftovers}")
    return done
