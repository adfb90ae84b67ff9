"""The host's memory traffic: a floor under a schedule whose buffers outgrow the cache.

The replay prices each rank's copies on its own core at the spilled β (``cache.spilled``),
the ranks' work side by side. Beyond the cache that work does not overlap as the replay has it:
a 2-rank reduce of 8 or 32 MiB on shared memory took about what the two ranks' streams to
memory take added up, the sender's read of its input and the root's fold of each piece into its
``x`` (read and written), three streams a byte at ``cache_beta`` each, where the replay priced
the root's work alone (docs/simulation.md, *The thirtieth round*; whether the
cores share one memory bus or something else serialises them was not settled there). So a
call of one host takes at least the bytes all its ranks stream, at ``cache_beta`` a byte times
the share of the buffers beyond the cache. A byte sent from a range the rank has not written
in the call is read from memory once (one it received or folded earlier it sends from the
cache), a byte received written once, a byte folded read and written in its destination (the
piece lands in a scratch slab that stays in the cache, as the transport's ring does).
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
