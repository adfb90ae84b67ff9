"""``collectives.engines.slots``: a plan touches the pages of its slots so that the calls do not
take their page faults one by one; pages once touched stay mapped in the process, so a plan
made again for a shape (the plan cache is bounded) or for a shorter one touches nothing new."""

from __future__ import annotations

import numpy as np
import pytest

from collectives.engines import slots


class _Window:
    """Stands for a shared window: only its identity matters to the record of touched pages."""


@pytest.fixture
def touched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte length of the first slot of each run of slots whose pages were touched."""
    seen: list[int] = []
    monkeypatch.setattr(slots, "_map_pages", lambda areas: seen.append(areas[0][0].nbytes))
    return seen


def _slots(nbytes: int) -> list[list[np.ndarray]]:
    return [[np.zeros(nbytes, np.uint8)] for _ in range(2)]


def test_pages_are_touched_once_per_window_and_run_of_slots_unless_a_slot_grows(touched: list[int]) -> None:
    window, other = _Window(), _Window()
    slots._map_slots(window, 4096, 1024, 512, _slots(512))
    slots._map_slots(window, 4096, 1024, 512, _slots(512))  # the same shape again
    slots._map_slots(window, 4096, 1024, 100, _slots(100))  # a shorter one: its pages are mapped
    assert touched == [512]
    slots._map_slots(window, 4096, 1024, 1000, _slots(1000))  # a longer one reaches new pages
    slots._map_slots(window, 65536, 8192, 100, _slots(100))  # another run of slots
    slots._map_slots(other, 4096, 1024, 100, _slots(100))  # another window
    assert touched == [512, 1000, 100, 100]


def test_a_window_that_cannot_be_referenced_weakly_has_its_pages_touched_every_time(touched: list[int]) -> None:
    window = (1, 2)  # a tuple: no weak references
    slots._map_slots(window, 0, 64, 64, _slots(64))
    slots._map_slots(window, 0, 64, 64, _slots(64))
    assert touched == [64, 64]
