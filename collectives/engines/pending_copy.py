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

from ..buffers import copy_array


class PendingCopy:
    """The ranges of ``work`` whose values are still ``source``'s, not yet copied there."""

    __slots__ = ("source", "work", "gaps")

    def __init__(self, source: np.ndarray, work: np.ndarray) -> None:
        if source.shape != work.shape or source.dtype != work.dtype:
            raise ValueError(f"the work buffer ({work.dtype}[{work.size}]) must match its source "
                             f"({source.dtype}[{source.size}])")
        self.source, self.work = source, work
        self.gaps: list[tuple[int, int]] = [(0, work.size)] if work.size else []  # sorted, disjoint

    def untouched(self, start: int, end: int) -> bool:
        """Whether all of ``[start, end)`` still stands for the source (nothing written there)."""
        return any(a <= start and end <= b for a, b in self.gaps)

    def written(self, start: int, end: int) -> None:
        """``[start, end)`` of the work buffer is being written whole: it no longer needs the copy."""
        self.gaps = [piece for a, b in self.gaps for piece in ((a, min(b, start)), (max(a, end), b)) if piece[0] < piece[1]]

    def fill(self, start: int, end: int) -> None:
        """Copy the source into what is still pending of ``[start, end)`` (a step reads it in place)."""
        for a, b in self.gaps:
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                copy_array(self.work[lo:hi], self.source[lo:hi])
        self.written(start, end)

    def finish(self) -> None:
        """Copy what no step wrote: the work buffer then holds what the eager copy would have left."""
        for a, b in self.gaps:
            copy_array(self.work[a:b], self.source[a:b])
        self.gaps = []
