"""plans/scheduled.py: a schedule's steps, kept where they are few, generated per call where
they are many; the same steps either way."""

from __future__ import annotations

from collections.abc import Iterator

from collectives.algorithms import ring
from collectives.algorithms.schedule import Recv, Send, Step, partition
from collectives.plans.scheduled import KEPT_STEPS, steps_of


def _counted(steps: int, calls: list[int]) -> Iterator[Step]:
    """``steps`` one-message steps, counting in ``calls`` how often the schedule is generated."""
    calls.append(1)
    for i in range(steps):
        yield (Send(1, i, 1), Recv(1, i, 1))


def test_a_short_schedule_is_generated_once_and_its_steps_kept() -> None:
    calls: list[int] = []
    steps = steps_of(_counted, KEPT_STEPS, calls)
    first, second = steps(), steps()
    assert first is second and list(first) == list(_counted(KEPT_STEPS, []))
    assert len(calls) == 1


def test_a_long_schedule_is_generated_anew_each_call() -> None:
    calls: list[int] = []
    steps = steps_of(_counted, KEPT_STEPS + 1, calls)
    built = len(calls)  # generated up to the bound when the plan is made
    assert list(steps()) == list(steps()) == list(_counted(KEPT_STEPS + 1, []))
    assert len(calls) == built + 2


def test_kept_steps_are_the_schedules_own() -> None:
    blocks = partition(1 << 10, 4)
    for rank in range(4):
        assert list(steps_of(ring.reduce_scatter, rank, 4, blocks, 64)()) == list(
            ring.reduce_scatter(rank, 4, blocks, 64))
