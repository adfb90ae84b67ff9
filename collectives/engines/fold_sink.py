"""A reducing receive that folds each piece of its message straight from where the channel read it.

A schedule's reducing receive used to land its message in a scratch slab and fold the slab into
its destination once the step was done: over shared memory, a copy of every byte out of the
channel's ring and then a fold. :class:`FoldSink` takes the message's bytes in order, as the
channel hands them over (from its ring in place over shm, from a small bounce buffer elsewhere:
``transports/base.py``, ``Channel.irecv_sink``), and folds each whole element into the
destination at once, keeping the bytes of an element cut between two pieces until the rest
comes. The fold is the one the step's end would have made (``fold_received``, or, for a range
whose work buffer still pends on the input, ``out = x op received``), element by element, so
the result has the same bits.
"""

from __future__ import annotations

import numpy as np

from ..ops import ReduceOp, fold_received, reduce_pair


class FoldSink:
    """Folds a message of ``dst.size`` elements into ``dst`` as its bytes arrive: ``dst op
    received`` (``received op dst`` with ``first``), or ``source op received`` into ``dst`` where
    ``source`` is given (the input a pending work buffer still stands for)."""

    __slots__ = ("op", "dst", "source", "first", "dtype", "itemsize", "at", "carry", "carried")

    def __init__(self, op: ReduceOp, dst: np.ndarray, first: bool, source: np.ndarray | None = None) -> None:
        self.op, self.dst, self.first, self.source = op, dst, first, source
        self.dtype = dst.dtype
        self.itemsize = dst.dtype.itemsize
        self.at = 0  # elements folded so far
        self.carry = bytearray(self.itemsize)  # an element cut between two pieces ...
        self.carried = 0  # ... and how many of its bytes came

    def feed(self, data: memoryview) -> None:
        """Fold the next ``len(data)`` bytes of the message (any count; ``data`` is lent for the call)."""
        size = self.itemsize
        if self.carried:
            take = min(size - self.carried, len(data))
            self.carry[self.carried : self.carried + take] = data[:take]
            self.carried += take
            data = data[take:]
            if self.carried < size:
                return
            self.carried = 0
            self._fold(np.frombuffer(self.carry, dtype=self.dtype))
        whole = len(data) // size * size
        if whole:
            self._fold(np.frombuffer(data[:whole], dtype=self.dtype))
        if whole < len(data):
            rest = len(data) - whole
            self.carry[:rest] = data[whole:]
            self.carried = rest

    def _fold(self, received: np.ndarray) -> None:
        start = self.at
        end = self.at = start + received.size
        dst = self.dst[start:end]
        if self.source is None:
            fold_received(self.op, dst, received, self.first)
        elif self.first:
            reduce_pair(self.op, received, self.source[start:end], dst)
        else:
            reduce_pair(self.op, self.source[start:end], received, dst)
