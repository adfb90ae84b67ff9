"""perf/crowd_runs.py: several crowd_cost runs side by side, and the crowd's part beyond one rank a core."""

from __future__ import annotations

import pytest

from collectives.tuning.profile import current
from perf import crowd_cost, crowd_runs


def _rows(scale: float) -> list[dict[str, object]]:
    """Every layout at 8 B, measured at ``scale`` times its price."""
    rows = [{"transport": "tcp", "ranks": p, "cpus": c, "size": 8, "measured_us": 0.0} for p, c in crowd_cost.LAYOUTS]
    for r in rows:
        r["measured_us"] = scale * crowd_cost.price(r, current())
    return rows


def test_a_run_priced_exactly_has_ratio_one_and_no_excess() -> None:
    run = crowd_runs.excesses(_rows(1.0), current())
    assert all(ratio == pytest.approx(1.0) and extra == pytest.approx(0.0, abs=1e-9) for ratio, extra in run.values())


def test_the_excess_is_per_message_of_a_core() -> None:
    """Twice the price: the excess is the price over steps and ranks a core (µs of one message)."""
    rows = _rows(2.0)
    run = crowd_runs.excesses(rows, current())
    for r in rows:
        key = ("tcp", 8, r["ranks"], r["cpus"])
        assert run[key][1] == pytest.approx(r["measured_us"] / 2 / crowd_cost.steps(r["ranks"]) / crowd_cost.per_core(r))


def test_two_cpu_lines_carry_the_part_beyond_one_rank_a_core_in_every_run() -> None:
    runs = [crowd_runs.excesses(_rows(s), current()) for s in (1.0, 1.5)]
    lines = crowd_runs.table(runs)
    assert len(lines) == len(crowd_cost.LAYOUTS)
    spread = [line for line in lines if " on 2:" in line and " 2 on 2:" not in line]
    assert len(spread) == 3 and all("beyond 1" in line for line in spread)
    assert not any("beyond 1" in line for line in lines if " on 1:" in line or " 2 on 2:" in line)
