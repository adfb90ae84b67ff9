"""All-to-all, gather and scatter through a pipe of shared slots: both cores copy at once.

A single-copy read of a peer's memory (``exchange_reads``) moves about 12 GB/s on the machine
we measure, where a copy within the cache moves 30-45 (docs/performance.md, thirteenth round):
the kernel pins and maps every page of the peer's buffer. So in the middle sizes two copies
through shared memory beat one read, if the sender and the receiver make them at the same
time, chunk by chunk, as MPICH's cells do: the sender copies chunk c of a block into a slot of
its pipe window while the receiver copies chunk c - 1 out of the slot before.

Every rank's pipe window holds, for each peer, a ring of ``PIPE_SLOTS`` slots of
``PIPE_CHUNK_BYTES``. Flags of the pipe window (its own flag area; counters that run over all
calls, written only by their owner):

    CALLS       the number of my last call through the pipe
    CALL_LEN    + s % LEN_RING: the bytes that call s brings (every rank's x, or the root's)
    WRITTEN     + i: the chunks I wrote into my slots for the i-th rank of the window
    TAKEN       + i: the chunks I copied out of the i-th rank's slots for me

A writer waits only for a free slot (the reader took the chunk ``PIPE_SLOTS`` before), so it
returns once its last chunk is in a slot, and a reader once it copied its last chunk out; the
caller may then overwrite ``x`` and finds ``out`` complete. Before it copies, every rank checks
that each rank it exchanges with has entered the same call with the same byte count
(``MessageMismatchError`` on both sides otherwise), so a count mismatch never consumes a
chunk of another call. Each slot starts at the source's offset within a page (written into the
slot's header), so that neither copy runs glibc's slow path for 4K-aliased buffers (buffers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..buffers import address_of, copy_array
from .direct import Window, count_mismatch

ALL_TO_ALL, GATHER, SCATTER = "all_to_all", "gather", "scatter"

PIPE_CHUNK_BYTES = 256 << 10
"""Bytes per slot: a copy long enough to amortise a flag, short enough to stay in cache
while the other core copies it out. Measured: docs/performance.md, thirteenth round."""
PIPE_SLOTS = 4
"""Slots per pair: how far a writer runs ahead of its reader."""
PIPE_MAX_RANKS = 16
"""The flags of one window hold the pipe's counters for this many ranks."""

PIPE_BYTES = {ALL_TO_ALL: (0, 1 << 40), GATHER: (0, 1 << 40), SCATTER: (0, 1 << 40)}
"""Per kind, the byte counts (a rank's x for all-to-all, the root's x or out for scatter and
gather) that go through the pipe where the ranks do not outnumber the cores; beyond them,
single-copy reads move the bytes faster. Measured: docs/performance.md, thirteenth round."""

CALLS, CALL_LEN, LEN_RING, WRITTEN = 0, 1, 8, 9
TAKEN = WRITTEN + PIPE_MAX_RANKS
HEADER_BYTES = 4096  # a slot's header (its data's offset within a page), then the data at that offset
SLOT_STRIDE = HEADER_BYTES + 4096 + PIPE_CHUNK_BYTES


def takes(kind: str, nbytes: int) -> bool:
    """Whether an exchange of ``kind`` over ``nbytes`` goes through the pipe (where it may)."""
    lo, hi = PIPE_BYTES[kind]
    return lo <= nbytes < hi


def window_bytes(size: int) -> int:
    """The bytes of every rank's pipe window in a communicator of ``size`` ranks."""
    return size * PIPE_SLOTS * SLOT_STRIDE


class Pipe:
    """The pipe window of one communicator and its counters (the same numbers on both ends of
    every pair: each end counts the chunks of the same calls)."""

    def __init__(self, window: Window) -> None:
        if len(window.ranks) > PIPE_MAX_RANKS:
            raise ValueError(f"a pipe holds at most {PIPE_MAX_RANKS} ranks, not {len(window.ranks)}")
        self.window = window
        self.ranks = window.ranks
        self.index = {q: i for i, q in enumerate(window.ranks)}
        self.me = self.index[window.rank]
        self.serial = 0
        self.written = [0] * len(self.ranks)  # chunks written for rank i
        self.taken = [0] * len(self.ranks)  # chunks copied out of rank i's slots
        self._headers = {q: window.data(q)[: len(self.ranks) * PIPE_SLOTS * SLOT_STRIDE].view(np.uint64)
                         for q in window.ranks}

    def begin(self, nbytes: int, partners: list[int], deadline: float,
              on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Enter the next call with ``nbytes``, once every partner has entered it with as many."""
        window = self.window
        s = self.serial = self.serial + 1
        window.post(CALL_LEN + s % LEN_RING, nbytes, wake=False)
        window.post(CALLS, s)
        for q in partners:
            window.wait(q, CALLS, s, deadline, on_timeout)
            theirs = window.flag(q, CALL_LEN + s % LEN_RING)
            if theirs != nbytes:
                raise count_mismatch(q, theirs, nbytes)

    @staticmethod
    def _slot(i: int, n: int) -> int:
        """Byte offset, in its writer's window, of the header of chunk ``n`` for the i-th rank."""
        return (i * PIPE_SLOTS + n % PIPE_SLOTS) * SLOT_STRIDE

    def write(self, q: int, data: np.ndarray, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Copy ``data`` (bytes, at most a chunk) into my next slot for rank q."""
        window, i = self.window, self.index[q]
        n = self.written[i]
        if n >= PIPE_SLOTS:
            window.wait(q, TAKEN + self.me, n - PIPE_SLOTS + 1, deadline, on_timeout)
        at = self._slot(i, n)
        offset = address_of(data) % 4096
        self._headers[window.rank][at // 8] = offset
        start = at + HEADER_BYTES + offset
        copy_array(window.data(window.rank)[start : start + data.nbytes], data)
        self.written[i] = n + 1
        window.post(WRITTEN + i, n + 1)

    def read(self, q: int, into: np.ndarray, deadline: float, on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Copy rank q's next chunk for me into ``into`` (bytes, as many as q wrote)."""
        window, i = self.window, self.index[q]
        n = self.taken[i]
        window.wait(q, WRITTEN + self.me, n + 1, deadline, on_timeout)
        at = self._slot(self.me, n)
        start = at + HEADER_BYTES + int(self._headers[q][at // 8])
        copy_array(into, window.data(q)[start : start + into.nbytes])
        self.taken[i] = n + 1
        window.post(TAKEN + i, n + 1)


class ExchangeByPipe:
    """Exchanges of one kind and shape through the pipe. ``count``: the elements of a rank's
    ``x`` (all-to-all, gather) or of the root's ``x`` (scatter); ``root``: the gather's or
    scatter's root. Each step copies chunk c of every block: mine to each reader, then my own
    block's chunk, then each writer's into ``out``, so that each core copies while the other
    does."""

    def __init__(self, kind: str, pipe: Pipe, itemsize: int, count: int, root: int = 0) -> None:
        self.kind, self.pipe, self.root = kind, pipe, root
        ranks = pipe.ranks
        p = len(ranks)
        self.me = pipe.me
        me = ranks[self.me]
        self.index = pipe.index
        self.expected = count * itemsize
        block = self.expected if kind == GATHER else self.expected // p  # bytes per block
        self.block = block
        others = ranks[self.me + 1 :] + ranks[: self.me]
        if kind == ALL_TO_ALL:
            self.sends, self.recvs = others, others
        elif kind == GATHER:
            self.sends, self.recvs = ([], others) if me == root else ([root], [])
        else:
            self.sends, self.recvs = (others, []) if me == root else ([], [root])
        self.partners = others if kind == ALL_TO_ALL or me == root else [root]
        self.steps = [(lo, min(PIPE_CHUNK_BYTES, block - lo)) for lo in range(0, block, PIPE_CHUNK_BYTES)]

    def __call__(self, x: np.ndarray | None, out: np.ndarray | None, deadline: float,
                 on_timeout: Callable[[list[int]], BaseException]) -> None:
        """Run the call on flat ``x`` and ``out`` (None where a rank has none). ``out`` may be
        ``x`` itself (all-to-all in place: block q of x goes out before block q comes in) or,
        for a gather's or scatter's root, the root's own block of the other; any other overlap
        copies ``x`` aside first."""
        pipe, kind, block, me = self.pipe, self.kind, self.block, self.me
        if x is not None and out is not None and np.shares_memory(x, out) and not self._in_place(x, out):
            x = x.copy()
        xb = None if x is None else x.reshape(-1).view(np.uint8)
        ob = None if out is None else out.reshape(-1).view(np.uint8)
        pipe.begin(self.expected, self.partners, deadline, on_timeout)
        own_src = own_dst = None
        if xb is not None and ob is not None:
            own_src = xb if kind == GATHER else xb[me * block : (me + 1) * block]
            own_dst = ob if kind == SCATTER else ob[me * block : (me + 1) * block]
            if address_of(own_src) == address_of(own_dst):
                own_src = own_dst = None  # in place: my block is where it belongs
        for lo, n in self.steps:
            for q in self.sends:
                assert xb is not None
                src = xb if kind == GATHER else xb[self.index[q] * block : (self.index[q] + 1) * block]
                pipe.write(q, src[lo : lo + n], deadline, on_timeout)
            if own_src is not None and own_dst is not None:
                copy_array(own_dst[lo : lo + n], own_src[lo : lo + n])
            for q in self.recvs:
                assert ob is not None
                dst = ob if kind == SCATTER else ob[self.index[q] * block : (self.index[q] + 1) * block]
                pipe.read(q, dst[lo : lo + n], deadline, on_timeout)

    def _in_place(self, x: np.ndarray, out: np.ndarray) -> bool:
        """Whether ``x`` and ``out`` overlap only as the pipe allows (see ``__call__``)."""
        k, me = self.block // x.itemsize, self.me
        if self.kind == ALL_TO_ALL:
            return address_of(x) == address_of(out) and x.nbytes == out.nbytes
        if self.kind == GATHER:
            return address_of(x) == address_of(out[me * k : (me + 1) * k]) and x.nbytes == self.block
        return address_of(out) == address_of(x[me * k : (me + 1) * k]) and out.nbytes == self.block
