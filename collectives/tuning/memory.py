"""The host's memory bandwidth: a floor under a schedule whose buffers outgrow the cache.

The replay prices each rank's copies on its own core, each at the spilled β
(``cache.spilled``), as if every core had the memory to itself. Beyond the cache the
ranks of a host draw on one memory, so a call takes at least the bytes all of them stream
to and from it, at ``cache_beta`` a byte (the rate beyond the cache), times the share of the
buffers beyond it. A byte sent is read from its buffer once, a byte received written once, and a
byte received and folded read and written in its destination (the piece itself lands in a
scratch slab, which stays in the cache, as the transport's ring does). The 2-rank reduce of 32
MiB on shared memory (the root folding every byte the other rank sends, three streams a byte)
took this floor where the replay, its two cores in parallel, priced the root's work alone
(docs/simulation.md, *The thirtieth round*).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..algorithms.schedule import Send, Step
from ..algorithms.unwritten import Unwritten
from .machine import LinkClass

STREAMS_SENT = 1
"""Streams to memory per byte sent from a range the rank has not written in the call: its buffer read."""

STREAMS_RECEIVED = 1
"""Streams to memory per byte received in place: its destination written."""

STREAMS_FOLDED = 2
"""Streams to memory per byte received and folded: its destination read and written."""


def streamed(schedules: Iterable[Iterable[Step]], itemsize: int) -> int:
    """Bytes the ranks of ``schedules`` (one host's, every rank's steps) stream to and from
    memory: a send of a range the rank has not written in this call reads its buffer (one that
    it wrote, received or folded, it sends from the cache), a receive writes its destination,
    a fold reads and writes it."""
    total = 0
    for steps in schedules:
        unwritten: dict[int, Unwritten] = {}
        for step in steps:
            for o in step:
                if o.count <= 0:
                    continue
                fresh = unwritten.setdefault(o.buf, Unwritten(1 << 62))
                if isinstance(o, Send):
                    total += fresh.overlap(o.offset, o.offset + o.count) * STREAMS_SENT
                else:
                    total += o.count * (STREAMS_FOLDED if o.reduce else STREAMS_RECEIVED)
                    fresh.written(o.offset, o.offset + o.count)
    return total * itemsize


def floor_time(streamed_bytes: int, link: LinkClass, share: float) -> float:
    """Seconds under which a call of one host that streams ``streamed_bytes`` cannot run: at
    ``link``'s ``cache_beta`` times ``share`` (the share of its buffers beyond the cache; 0: no floor)."""
    if not share or not link.cache_beta:
        return 0.0
    return streamed_bytes * link.cache_beta * share
