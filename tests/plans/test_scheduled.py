"""plans/scheduled.py: a schedule's steps, kept where they are few, generated per call where
they are many; the same steps either way. Out of place, large inputs are read where they are
not copied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from collectives.algorithms import ring
from collectives.algorithms.schedule import Recv, Send, Step, partition
from collectives.engines import pending_copy
from collectives.plans import scheduled
from collectives.plans.scheduled import KEPT_STEPS, PENDING_COPY_BYTES, steps_of
from collectives.testing import run_world


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


# -- out of place: the work buffer takes the input's values only where a step needs them --

REDUCING = [("all_reduce", a) for a in ("ring", "tree", "recursive")] + [
    ("reduce_scatter", a) for a in ("ring", "tree", "recursive")] + [("reduce", a) for a in ("ring", "tree", "recursive")]


def _out_of_place(comm: Any, collective: str, algorithm: str, op: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """One out-of-place call above ``PENDING_COPY_BYTES`` (an odd count): (x after, result, x unchanged)."""
    k = PENDING_COPY_BYTES // 8 // comm.size + 5
    x = np.arange(k * comm.size, dtype=np.int64) * (comm.rank + 1) - 3 * comm.rank
    before = x.copy()
    if collective == "all_reduce":
        result = comm.all_reduce(x, op, out=np.empty_like(x), algorithm=algorithm)
    elif collective == "reduce_scatter":
        result = comm.reduce_scatter(x, np.empty(k, np.int64), op, algorithm=algorithm)
    else:
        comm.reduce(x, root=comm.size - 1, op=op, algorithm=algorithm)  # the non-roots' work buffer pends
        result = x
    return before, result, bool((x == before).all()) or (collective == "reduce" and comm.rank == comm.size - 1)


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("collective,algorithm", REDUCING)
def test_an_out_of_place_reduction_reads_its_input_where_it_is_not_copied(
        size: int, collective: str, algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    make = pending_copy.PendingCopy.__init__

    def counted(self: pending_copy.PendingCopy, source: np.ndarray, work: np.ndarray) -> None:
        made.append(source.size)
        make(self, source, work)

    monkeypatch.setattr(pending_copy.PendingCopy, "__init__", counted)
    for op, fold in (("sum", np.sum), ("max", np.max)):
        ranks = run_world(lambda c: _out_of_place(c, collective, algorithm, op), size, "inproc", timeout=60)
        want = fold(np.stack([before for before, _, _ in ranks]), axis=0)
        for rank, (_, result, x_unchanged) in enumerate(ranks):
            assert x_unchanged, f"rank {rank}'s x was written"
            if collective == "all_reduce":
                np.testing.assert_array_equal(result, want)
            elif collective == "reduce_scatter":
                k = len(result)
                np.testing.assert_array_equal(result, want[rank * k : (rank + 1) * k])
            elif rank == size - 1:
                np.testing.assert_array_equal(result, want)
    assert len(made) == 2 * (size if collective != "reduce" else size - 1)  # the roots' x is their work


def test_a_two_rank_ring_all_reduce_out_of_place_copies_nothing_of_its_input(monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[int] = []

    def counting(dst: np.ndarray, src: np.ndarray) -> None:
        copied.append(src.size)
        dst[...] = src

    monkeypatch.setattr(pending_copy, "copy_array", counting)
    monkeypatch.setattr(scheduled, "copy_array", counting)  # the whole copy the plan would make first
    ranks = run_world(lambda c: _out_of_place(c, "all_reduce", "ring", "sum"), 2, "inproc", timeout=60)
    np.testing.assert_array_equal(ranks[0][1], ranks[0][0] + ranks[1][0])
    assert copied == []  # each half is sent from x or folded from it straight into out
