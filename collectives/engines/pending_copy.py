"""An out-of-place call's work buffer whose copy of the input is made only where it is needed.

A scheduled all-reduce, reduce-scatter or reduce that does not run in place starts from a
copy of the caller's input in its work buffer. Most of that copy is wasted: a block the
schedule first sends can be sent from the input itself, a block it first folds a receive into
can be folded from the input (``out = x op received``), and a block it first receives into is
overwritten. :class:`PendingCopy` keeps the ranges of the work buffer that still stand for the
input's values and copies one only where a step must read the work buffer itself.
"""

from __future__ import annotations

import numpy as np

from ..algorithms.unwritten import Unwritten
from ..buffers import copy_array
from ..ops import ReduceOp, fold_received, reduce_pair


class PendingCopy(Unwritten):
    """The ranges of ``work`` whose values are still ``source``'s, not yet copied there."""

    __slots__ = ("source", "work")

    def __init__(self, source: np.ndarray, work: np.ndarray) -> None:
        if source.shape != work.shape or source.dtype != work.dtype:
            raise ValueError(f"the work buffer ({work.dtype}[{work.size}]) must match its source "
                             f"({source.dtype}[{source.size}])")
        super().__init__(work.size)
        self.source, self.work = source, work

    def payload(self, start: int, end: int) -> np.ndarray:
        """What a send of ``[start, end)`` of the work buffer reads: the source's range while no
        step wrote any of it, else the work buffer's, its pending parts copied first."""
        if self.untouched(start, end):
            return self.source[start:end]
        self.fill(start, end)
        return self.work[start:end]

    def fold(self, op: ReduceOp, start: int, end: int, received: np.ndarray, received_first: bool) -> None:
        """Fold ``received`` into ``[start, end)`` of the work buffer (``Recv.first`` order): from
        the source straight into the work buffer where no step wrote the range yet
        (``work = x op received``), else in place after the pending parts are copied."""
        dst = self.work[start:end]
        if self.untouched(start, end):
            held = self.source[start:end]
            if received_first:
                reduce_pair(op, received, held, dst)
            else:
                reduce_pair(op, held, received, dst)
            self.written(start, end)
            return
        self.fill(start, end)
        fold_received(op, dst, received, received_first)

    def fill(self, start: int, end: int) -> None:
        """Copy the source into what is still pending of ``[start, end)`` (a step reads it in place)."""
        for lo, hi in self.pieces(start, end):
            copy_array(self.work[lo:hi], self.source[lo:hi])
        self.written(start, end)

    def finish(self) -> None:
        """Copy what no step wrote: the work buffer then holds what the eager copy would have left."""
        for a, b in self.gaps:
            copy_array(self.work[a:b], self.source[a:b])
        self.gaps = []
