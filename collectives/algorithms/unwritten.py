"""The ranges of a buffer that no step has written yet, as sorted disjoint ``(start, end)`` pairs.

An out-of-place call whose work buffer pends on its input (``schedule.PENDING_COPY_BYTES``) keeps
them at run time (``engines/pending_copy.py``: what is still the input's), and the cost model
walks a schedule with them to count the folds that read the input (``tuning/copies.py``).
"""

from __future__ import annotations


class Unwritten:
    """The ranges of ``[0, size)`` not yet written."""

    __slots__ = ("gaps",)

    def __init__(self, size: int) -> None:
        self.gaps: list[tuple[int, int]] = [(0, size)] if size > 0 else []

    def untouched(self, start: int, end: int) -> bool:
        """Whether all of ``[start, end)`` is still unwritten."""
        return any(a <= start and end <= b for a, b in self.gaps)

    def pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        """The unwritten parts of ``[start, end)``."""
        return [(max(a, start), min(b, end)) for a, b in self.gaps if max(a, start) < min(b, end)]

    def overlap(self, start: int, end: int) -> int:
        """How many elements of ``[start, end)`` are unwritten."""
        return sum(b - a for a, b in self.pieces(start, end))

    def written(self, start: int, end: int) -> None:
        """``[start, end)`` is written (whole)."""
        self.gaps = [piece for a, b in self.gaps for piece in ((a, min(b, start)), (max(a, end), b)) if piece[0] < piece[1]]
