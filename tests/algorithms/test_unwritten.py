"""algorithms/unwritten.py: the ranges of a buffer no step has written, shared by the pending
work buffer (engines) and the cost model's count of folds from the input (tuning)."""

from __future__ import annotations

from collectives.algorithms.unwritten import Unwritten


def test_writes_split_the_unwritten_ranges_and_overlaps_count_what_is_left() -> None:
    u = Unwritten(10)
    assert u.gaps == [(0, 10)] and u.overlap(2, 5) == 3 and u.untouched(0, 10)
    u.written(3, 5)
    u.written(8, 12)  # past the end: only what lies inside counts
    assert u.gaps == [(0, 3), (5, 8)]
    assert u.pieces(2, 9) == [(2, 3), (5, 8)] and u.overlap(2, 9) == 4
    assert u.untouched(5, 8) and not u.untouched(2, 4)
    u.written(0, 10)
    assert u.gaps == [] and u.overlap(0, 10) == 0


def test_an_empty_buffer_has_nothing_unwritten() -> None:
    assert Unwritten(0).gaps == [] and not Unwritten(0).untouched(0, 1)
