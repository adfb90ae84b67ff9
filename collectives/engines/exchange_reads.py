"""Single-copy exchanges on one host: all-to-all, gather and scatter by reads of peers' memory
(process_vm_readv, ``direct.PeerMemory``).

Through shared memory such a call copies each byte twice (into a window or a message cell,
then out), and a schedule of messages adds a round per peer. Here each byte crosses once.
Every rank publishes where its ``x`` lies (``ADDR``, its size beside it, ``POSTED``); then
- all-to-all: rank r reads block r of every peer's ``x`` into block q of its ``out``;
- gather: the root reads every peer's ``x`` into block q of its ``out``;
- scatter: rank r reads block r of the root's ``x`` into its ``out``.
A rank posts ``READ`` when its reads are done and returns once every rank it may have been
read by has posted ``READ`` too, so that the caller may overwrite ``x`` at once. Peers are
read starting after my own rank, so that no rank is read by all at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..buffers import address_of, copy_array
from .direct import ADDR, LEN, POSTED, READ, PeerMemory, Window, count_mismatch

ALL_TO_ALL, GATHER, SCATTER = "all_to_all", "gather", "scatter"


class ExchangeByReads:
    """Exchanges of one kind and shape by reads of peers' memory, counting with the windows'
    ``memory_serial``. ``count``: the elements of a rank's ``x`` (all-to-all, gather) or of
    the root's ``x`` (scatter); ``root``: the gather's or scatter's root."""

    def __init__(self, kind: str, window: Window, memory: PeerMemory, itemsize: int, count: int,
                 root: int = 0) -> None:
        self.kind, self.window, self.memory = kind, window, memory
        ranks = window.ranks
        self.me = ranks.index(window.rank)
        self.index = {q: i for i, q in enumerate(ranks)}
        self.expected = count * itemsize  # the bytes of every x a rank reads from
        self.k = count if kind == GATHER else count // len(ranks)  # elements per block
        self.offset = 0 if kind == GATHER else self.me * self.k * itemsize  # what I read: at this byte of x
        others = ranks[self.me + 1 :] + ranks[: self.me]
        at_root = window.rank == root
        self.sources = others if kind == ALL_TO_ALL or (kind == GATHER and at_root) else (
            [root] if kind == SCATTER and not at_root else [])
        self.readers = others if kind == ALL_TO_ALL or (kind == SCATTER and at_root) else (
            [root] if kind == GATHER and not at_root else [])

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, serial: int, deadline: float,
                 on_timeout: Callable[[list[int]], BaseException]) -> int:
        """Run the call on flat ``x`` and ``out`` (None where a rank has none; ``out`` may
        overlap ``x``: then ``x`` is first copied aside, since peers read it). Returns the new serial."""
        window, k, me = self.window, self.k, self.me
        if x is not None and out is not None and np.shares_memory(x, out):
            x = x.copy()
        s = serial + 1
        if x is not None:
            window.post(ADDR, address_of(x), wake=False)
            window.post(LEN, x.nbytes, wake=False)
        window.post(POSTED, s)
        if out is not None and x is not None:  # my own block
            if self.kind == GATHER:
                copy_array(out[me * k : (me + 1) * k], x)
            else:
                copy_array(out if self.kind == SCATTER else out[me * k : (me + 1) * k], x[me * k : (me + 1) * k])
        try:
            for q in self.sources:
                assert out is not None  # a rank that reads has an out
                window.wait(q, POSTED, s, deadline, on_timeout)
                if window.flag(q, LEN) != self.expected:
                    raise count_mismatch(q, window.flag(q, LEN), self.expected)
                into = out if self.kind == SCATTER else out[self.index[q] * k : (self.index[q] + 1) * k]
                self.memory.read(q, window.flag(q, ADDR) + self.offset, into)
        finally:
            window.post(READ, s)  # (also after a mismatch: no rank waits on me for nothing)
        for q in self.readers:
            window.wait(q, READ, s, deadline, on_timeout)
        return s
