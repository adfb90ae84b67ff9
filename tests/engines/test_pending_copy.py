"""engines/pending_copy.py: an out-of-place call's work buffer takes its input's values only
where a step reads it in place; what no step wrote is copied at the end, and only there."""

from __future__ import annotations

import numpy as np
import pytest

from collectives.engines.pending_copy import PendingCopy


def _pending(n: int = 10) -> PendingCopy:
    return PendingCopy(np.arange(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))


def test_a_fresh_work_buffer_is_all_pending_and_nothing_is_copied_yet() -> None:
    p = _pending()
    assert p.gaps == [(0, 10)] and p.untouched(0, 10) and p.untouched(3, 7)
    assert (p.work == -1).all()


def test_a_written_range_leaves_the_pending_ranges_around_it() -> None:
    p = _pending()
    p.written(3, 5)
    assert p.gaps == [(0, 3), (5, 10)]
    assert p.untouched(0, 3) and p.untouched(6, 10)
    assert not p.untouched(2, 4) and not p.untouched(3, 5)
    assert (p.work == -1).all()  # written by a step, not by the copy


def test_a_fill_copies_only_the_pending_part_of_its_range() -> None:
    p = _pending()
    p.written(3, 5)
    p.work[3:5] = 100  # what the step wrote there
    p.fill(2, 7)
    assert p.work.tolist() == [-1, -1, 2, 100, 100, 5, 6, -1, -1, -1]
    assert p.gaps == [(0, 2), (7, 10)]


def test_finish_copies_every_range_no_step_wrote() -> None:
    p = _pending()
    p.written(4, 6)
    p.work[4:6] = 100
    p.finish()
    assert p.work.tolist() == [0, 1, 2, 3, 100, 100, 6, 7, 8, 9] and p.gaps == []


def test_an_empty_buffer_has_nothing_pending() -> None:
    p = PendingCopy(np.empty(0, np.float32), np.empty(0, np.float32))
    assert p.gaps == []
    p.finish()


def test_a_work_buffer_unlike_its_source_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"work buffer \(float32\[4\]\) must match its source \(int64\[4\]\)"):
        PendingCopy(np.zeros(4, np.int64), np.zeros(4, np.float32))
