"""perf/ring_steps.py: the tcp ring and recursive schedules at several steps, each against its 1 MiB step."""

from __future__ import annotations

from typing import Any

from collectives.tuning.profile import current
from perf import ring_steps


def rows(times: dict[int, float], run: str = "a", number: int = 1, size: int = 2 << 20) -> list[dict[str, Any]]:
    return [{"collective": "reduce_scatter", "algorithm": "ring", "size": size, "ranks": 3, "chunk": step,
             "pass": number, "run": run, "measured_us": t} for step, t in times.items()]


def test_each_pass_is_taken_against_its_own_base_step() -> None:
    got = ring_steps.ratios(rows({1 << 20: 1000.0, 4 << 20: 800.0}) + rows({1 << 20: 2000.0, 4 << 20: 1800.0}, "b"))
    assert got[(3, "reduce_scatter", 2 << 20, "ring")][4 << 20] == [0.8, 0.9]
    assert got[(3, "reduce_scatter", 2 << 20, "ring")][1 << 20] == [1.0, 1.0]


def test_a_pass_without_the_base_step_is_left_out() -> None:
    assert ring_steps.ratios(rows({4 << 20: 800.0})) == {}


def test_a_smaller_step_is_priced_dearer_for_the_ring() -> None:
    """More segments, more lockstep hops: the model's ratio at half the step is above 1."""
    row = {"collective": "reduce_scatter", "algorithm": "ring", "size": 2 << 20, "ranks": 3}
    assert ring_steps.price(row, 256 << 10, current(), 2) > ring_steps.price(row, 1 << 20, current(), 2) > 0


def test_the_table_has_a_line_per_call() -> None:
    lines = ring_steps.table(rows({1 << 20: 1000.0, 512 << 10: 1100.0}), current(), 2)
    assert len(lines) == 2 and "512K" in lines[0]
