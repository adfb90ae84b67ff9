"""The single copies of the direct all-gather timed alone (``collectives.single_copies``): the lines
through the steps' times give ``peer_alpha``, ``peer_beta`` and ``heap_beta``; where the kernel
refuses cross-memory copies, or the C loop or a second core is missing, it says why instead."""

from __future__ import annotations

import os
from typing import Any

import pytest

from collectives import single_copies
from collectives.transports import cma


def rows_of(lines: dict[str, tuple[float, float]], sizes: tuple[int, ...] = single_copies.STEP_SIZES,
            peer_more: float = 0.0) -> list[dict[str, Any]]:
    """Rows priced by exact lines (µs a call, ns a byte), the peer ``peer_more`` µs slower."""
    return [{"mode": mode, "bytes": n, "us": a + b * n / 1e3, "peer_us": a + b * n / 1e3 + peer_more}
            for n in sizes for mode, (a, b) in lines.items()]


def test_the_steps_are_the_lines_of_the_three_single_copies() -> None:
    rows = rows_of({"memcpy": (-0.1, 0.02), "read": (0.8, 0.037), "write": (0.6, 0.035)})
    steps = single_copies.steps(rows)
    assert steps.peer_alpha == pytest.approx(0.7e-6)
    assert steps.peer_beta == pytest.approx(0.036e-9)
    assert steps.heap_beta == pytest.approx(0.02e-9)


def test_each_row_counts_at_the_slower_process() -> None:
    rows = rows_of({"read": (1.0, 0.04)}, peer_more=0.5)
    assert single_copies.fit(rows, "read", 1 << 20) == pytest.approx((1.5, 0.04))


def test_the_lines_leave_out_blocks_beyond_the_cache() -> None:
    rows = rows_of({"read": (1.0, 0.04)}) + [{"mode": "read", "bytes": 4 << 20, "us": 1e4, "peer_us": 1e4}]
    assert single_copies.fit(rows, "read", 128 << 10) == pytest.approx((1.0, 0.04))


def test_without_the_c_loop_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(single_copies, "_reads_c", None)
    assert "_reads_c" in (single_copies.unavailable() or "")
    with pytest.raises(single_copies.CopiesRefused, match="not built"):
        single_copies.run([8 << 10])


def test_the_c_part_that_times_the_copies_is_built() -> None:
    """(So that the skip below stands for this machine, never for our own build.)"""
    assert single_copies._reads_c is not None, "collectives.engines._reads_c did not build (pip install -e .)"


@pytest.mark.multiprocess
@pytest.mark.skipif(single_copies.unavailable() is not None or not cma.allowed_here(),
                    reason="no cross-memory copies or no second core here")
def test_timed_on_two_cores_the_steps_are_of_the_probes_order() -> None:
    """perf/cma_copies.py measured 0.56-0.87 µs a copy across, 0.022-0.037 ns/B across and 0.020-0.022
    within a heap here (docs/simulation.md, *The forty-fifth round*); a loaded machine only adds time."""
    affinity = os.sched_getaffinity(0)
    steps, rows = single_copies.measure(calls=100, rounds=3, repeats=3)
    assert os.sched_getaffinity(0) == affinity  # given back after the pinning
    assert {r["mode"] for r in rows} == {"memcpy", "read", "write"} and len(rows) == 3 * 3 * 5
    assert all(r["us"] > 0 and r["peer_us"] > 0 for r in rows)
    assert 0.05e-6 < steps.peer_alpha < 10e-6
    assert 0.005e-9 < steps.peer_beta < 0.5e-9
    assert 0.005e-9 < steps.heap_beta < 0.5e-9
    assert steps.peer_beta > steps.heap_beta  # a copy across costs more a byte than one within a heap
