"""Single-copy exchanges on one host: all-to-all, gather and scatter by reads and writes of
peers' memory (process_vm_readv/writev, ``direct.PeerMemory``).

Through shared memory such a call copies each byte twice (into a window or a message cell,
then out), and a schedule of messages adds a round per peer. Here each byte crosses once.
Every rank publishes where its ``x`` and ``out`` lie (``ADDR``, ``RESULT``, the byte count it
expects beside them in ``LEN``, then ``POSTED``); then
- all-to-all: rank r reads block r of every peer's ``x`` into block q of its ``out``;
- gather: the root reads the first 1/p of every peer's block, and each peer writes the rest
  of its block into the root's ``out``, so that every rank copies as much (the root alone
  reading everything left the other cores idle, and measured slower);
- scatter: each rank reads its block out of the root's ``x`` (the root writing a share of each
  block measured slower).
A rank posts ``READ`` when its copies are done and returns once every rank it exchanged with has
posted ``READ`` too, so that the caller may overwrite ``x`` at once and find ``out`` complete.
Peers are taken starting after my own rank, so that no rank is read by all at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..buffers import address_of, copy_array
from .direct import ADDR, LEN, POSTED, READ, RESULT, PeerMemory, Window, count_mismatch

ALL_TO_ALL, GATHER, SCATTER = "all_to_all", "gather", "scatter"


class ExchangeByReads:
    """Exchanges of one kind and shape by copies between peers' memory, counting with the
    windows' ``memory_serial``. ``count``: the elements of a rank's ``x`` (all-to-all, gather)
    or of the root's ``x`` (scatter); ``root``: the gather's or scatter's root."""

    def __init__(self, kind: str, window: Window, memory: PeerMemory, itemsize: int, count: int,
                 root: int = 0) -> None:
        self.kind, self.window, self.memory, self.root = kind, window, memory, root
        ranks = window.ranks
        p = len(ranks)
        self.me = ranks.index(window.rank)
        self.index = {q: i for i, q in enumerate(ranks)}
        self.expected = count * itemsize  # the bytes of every rank's x (all-to-all, gather) or the root's (scatter)
        self.k = count if kind == GATHER else count // p  # elements per block
        self.itemsize = itemsize
        # gather: the root reads [0, split) of a block and its owner writes the rest
        self.split = self.k // p if kind == GATHER else self.k
        others = ranks[self.me + 1 :] + ranks[: self.me]
        self.partners = others if kind == ALL_TO_ALL or window.rank == root else [root]

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, serial: int, deadline: float,
                 on_timeout: Callable[[list[int]], BaseException]) -> int:
        """Run the call on flat ``x`` and ``out`` (None where a rank has none; ``out`` may
        overlap ``x``: then ``x`` is first copied aside, since peers read it). Returns the new serial."""
        window, k, me = self.window, self.k, self.me
        if x is not None and out is not None and not self._apart(x, out):
            x = x.copy()
        s = serial + 1
        window.post(ADDR, 0 if x is None else address_of(x), wake=False)
        window.post(RESULT, 0 if out is None else address_of(out), wake=False)
        window.post(LEN, self.expected, wake=False)
        window.post(POSTED, s)
        if out is not None and x is not None:  # my own block (in place: already there)
            mine = x if self.kind == GATHER else x[me * k : (me + 1) * k]
            dst = out if self.kind == SCATTER else out[me * k : (me + 1) * k]
            if address_of(dst) != address_of(mine):
                copy_array(dst, mine)
        try:
            for q in self.partners:
                window.wait(q, POSTED, s, deadline, on_timeout)
                if window.flag(q, LEN) != self.expected:
                    raise count_mismatch(q, window.flag(q, LEN), self.expected)
                self._copy(q, x, out)
        finally:
            window.post(READ, s)  # (also after a mismatch: no rank waits on me for nothing)
        for q in self.partners:
            window.wait(q, READ, s, deadline, on_timeout)
        return s

    def _apart(self, x: np.ndarray, out: np.ndarray) -> bool:
        """Whether my ``x`` and ``out`` may be used as they are while peers copy: apart, or
        (gather, scatter) the one block each shares, which only I copy, onto itself."""
        if not np.shares_memory(x, out):
            return True
        k, me = self.k, self.me
        if self.kind == GATHER:
            return address_of(x) == address_of(out[me * k : (me + 1) * k]) and x.size == k
        return self.kind == SCATTER and address_of(out) == address_of(x[me * k : (me + 1) * k]) and out.size == k

    def _copy(self, q: int, x: np.ndarray | None, out: np.ndarray | None) -> None:
        """My share of the exchange with rank q, which has posted where its buffers lie."""
        window, k, size, split = self.window, self.k, self.itemsize, self.split
        i, theirs = self.index[q], window.flag(q, ADDR)
        if self.kind == ALL_TO_ALL:
            assert out is not None
            self.memory.read(q, theirs + self.me * k * size, out[i * k : (i + 1) * k])
        elif self.kind == GATHER and out is not None:  # the root: the head of q's block
            if split:
                self.memory.read(q, theirs, out[i * k : i * k + split])
        elif self.kind == GATHER:  # q is the root: the rest of my block into its out
            assert x is not None
            if split < k:
                self.memory.write(q, window.flag(q, RESULT) + (self.me * k + split) * size, x[split:])
        elif out is not None and x is None:  # scatter, q is the root: my block (the root copies nothing)
            self.memory.read(q, theirs + self.me * k * size, out)
