"""The sleep of a long wait, timed: what ``collectives-tune`` measures ``sleep_wake`` by.

A waiting rank polls, yields for ``YIELD_SECONDS`` (``transports.progress``) and then sleeps on its
transport (a futex, a selector) until its peer's post wakes it. A rank woken from that sleep resumes
later than one woken in its yield loop: 40-56 µs on this machine's 2 cores at 4 and 8 ranks, about
70 µs with a core each (docs/simulation.md, *The sixty-third round*, a scratch probe; *The sixty-sixth
round*, this one). ``run`` times it: the ranks in pairs (2i sends to 2i + 1), each iteration a barrier,
then every receiver posts an 8 B receive and waits while its sender leaves the core for a delay (a short
one, within the yield window, and a long one, past it), notes the time and sends; the wake is the
receiver's return less the sender's note (``time.perf_counter_ns``: one monotonic clock for every
process of the host), and the wait its return less its post. ``fit`` takes the waits that outlasted
the windows by far (slept) against those within the yield window (yielded): ``sleep_wake`` is the
difference of their median wakes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .transports.progress import SPIN_SECONDS, YIELD_SECONDS

DELAYS = (50e-6, 1000e-6)
"""Seconds a sender leaves the core before it sends: within the yield window (the receiver's wait about
130 µs, it yields), and past it (about 1.1 ms, it sleeps)."""
ITERATIONS = 100
"""Timed iterations per delay (after ``WARMUP``): 4 ranks, 2 pairs, 200 wakes per delay, about 0.3 s."""
WARMUP = 10
SLEPT_WAIT = 2 * (SPIN_SECONDS + YIELD_SECONDS)
"""A wait this long slept: the progress engine sleeps once idle past its spin and yield windows, and a wait
of twice them is no yield loop's, however late its last pass."""
LEAST = 20
"""The fewest wakes of each kind ``fit`` draws a difference from."""


class Wake(NamedTuple):
    """One receive: microseconds from its post to its return (``waited_us``) and from its sender's send to
    its return (``wake_us``)."""

    waited_us: float
    wake_us: float


def _pairs(comm: Any, delays: Sequence[float], iterations: int) -> list[tuple[int, ...]]:
    """One rank's part: per delay and iteration, a sender's (send time,) or a receiver's (post, return) ns."""
    x = np.zeros(2, dtype=np.float32)
    clock = time.perf_counter_ns
    sender = comm.rank % 2 == 0 and comm.rank + 1 < comm.size
    log: list[tuple[int, ...]] = []
    for delay in delays:
        for i in range(WARMUP + iterations):
            comm.barrier()
            if sender:
                time.sleep(delay)
                sent = clock()
                comm.send(x, comm.rank + 1)
                entry: tuple[int, ...] = (sent,)
            elif comm.rank % 2:
                posted = clock()
                comm.recv(x, comm.rank - 1)
                entry = (posted, clock())
            else:  # an odd world's last rank: no peer
                continue
            if i >= WARMUP:
                log.append(entry)
    return log


def wakes(logs: Sequence[Sequence[Sequence[int]]]) -> list[Wake]:
    """The wakes of ``run``'s per-rank logs (rank order): each receiver's (post, return) entries against its
    sender's (send,) ones, entry by entry, in microseconds."""
    out = []
    for sender in range(0, len(logs) - 1, 2):
        for (sent, *_), (posted, returned, *_) in zip(logs[sender], logs[sender + 1]):
            out.append(Wake((returned - posted) / 1e3, (returned - sent) / 1e3))
    return out


def run(ranks: int, transport: str = "shm", delays: Sequence[float] = DELAYS, iterations: int = ITERATIONS,
        timeout: float = 120.0) -> list[Wake]:
    """Every wake of ``iterations`` per delay on a world of ``ranks`` over ``transport``."""
    from .testing import run_world

    return wakes(run_world(lambda comm: _pairs(comm, delays, iterations), ranks, transport, timeout=timeout))


def fit(measured: Sequence[Wake], least: int = LEAST) -> tuple[float, int, int] | None:
    """``sleep_wake`` in seconds from ``measured`` wakes: the median wake of the waits of ``SLEPT_WAIT`` or
    more less that of the waits within ``YIELD_SECONDS`` (at least 0), with the two counts; None where either
    kind has fewer than ``least`` (waits in between are neither: a yield loop's last pass or a short sleep)."""
    slept = [w.wake_us for w in measured if w.waited_us * 1e-6 >= SLEPT_WAIT]
    yielded = [w.wake_us for w in measured if w.waited_us * 1e-6 < YIELD_SECONDS]
    if len(slept) < least or len(yielded) < least:
        return None
    return max(0.0, statistics.median(slept) - statistics.median(yielded)) * 1e-6, len(slept), len(yielded)
