"""Single-copy all-to-all on one host: every rank reads its block straight out of every peer's
``x`` (process_vm_readv, ``direct.PeerMemory``) into its ``out``.

Through shared memory an all-to-all copies each byte twice (into a window or a message cell,
then out); a schedule of messages adds a round per peer. Here each byte crosses once: rank r
publishes where its ``x`` lies (``ADDR``, its size beside it, ``POSTED``), reads block r of
every peer's ``x`` into block q of its ``out``, posts ``READ`` and returns once every peer has
posted ``READ`` too, so that the caller may overwrite ``x`` at once. Peers are read starting
after my own rank, so that no rank is read by all at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..buffers import address_of, copy_array
from .direct import ADDR, LEN, POSTED, READ, PeerMemory, Window, count_mismatch


class AllToAllByReads:
    """All-to-alls of one shape (``count`` elements of ``x``, p equal blocks) by reads of
    peers' memory, counting with the windows' ``memory_serial``."""

    def __init__(self, window: Window, memory: PeerMemory, itemsize: int, count: int) -> None:
        self.window = window
        self.memory = memory
        ranks = window.ranks
        self.k = count // len(ranks)  # elements per block
        self.me = ranks.index(window.rank)
        self.others = ranks[self.me + 1 :] + ranks[: self.me]
        self.offset = self.me * self.k * itemsize  # my block's byte offset in every peer's x

    def __call__(self, x: np.ndarray, out: np.ndarray, serial: int, deadline: float,
                 on_timeout: Callable[[list[int]], BaseException]) -> int:
        """Block r of every rank's flat ``x`` into block q of rank r's flat ``out`` (which may
        be ``x``: then ``x`` is first copied aside, since peers read it). Returns the new serial."""
        window, k = self.window, self.k
        if np.shares_memory(x, out):
            x = x.copy()
        s = serial + 1
        window.post(ADDR, address_of(x), wake=False)
        window.post(LEN, x.nbytes, wake=False)
        window.post(POSTED, s)
        copy_array(out[self.me * k : (self.me + 1) * k], x[self.me * k : (self.me + 1) * k])
        ranks = window.ranks
        for q in self.others:
            window.wait(q, POSTED, s, deadline, on_timeout)
            if window.flag(q, LEN) != x.nbytes:
                raise count_mismatch(q, window.flag(q, LEN), x.nbytes)
            i = ranks.index(q)
            self.memory.read(q, window.flag(q, ADDR) + self.offset, out[i * k : (i + 1) * k])
        window.post(READ, s)
        for q in self.others:
            window.wait(q, READ, s, deadline, on_timeout)
        return s
