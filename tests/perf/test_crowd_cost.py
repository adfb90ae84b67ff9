"""perf/crowd_cost.py: ring all-reduces of k ranks a core, priced with and without the crowd terms."""

from __future__ import annotations

import pytest

from collectives.tuning.profile import current
from perf import crowd_cost


def _row(transport: str, ranks: int, cpus: int, size: int = 8) -> dict[str, object]:
    return {"transport": transport, "ranks": ranks, "cpus": cpus, "size": size, "measured_us": 100.0}


def test_the_layouts_crowd_one_to_four_ranks_on_a_core() -> None:
    """Every k from 1 to 4 ranks a core is measured, on one CPU and on two."""
    per_core = {crowd_cost.per_core(_row("shm", p, c)) for p, c in crowd_cost.LAYOUTS}
    assert {1.0, 2.0, 3.0, 4.0} <= per_core
    assert {c for _, c in crowd_cost.LAYOUTS} == {1, 2}


def test_a_ring_all_reduce_steps_twice_per_peer() -> None:
    assert [crowd_cost.steps(p) for p in (2, 3, 8)] == [2, 4, 14]


def test_without_crowd_zeroes_only_the_crowd_terms() -> None:
    bare = crowd_cost.without_crowd(current())
    for name, costs in bare.transports.items():
        assert (costs.wake, costs.crowd_wake, costs.crowd_beta) == (0.0, 0.0, 0.0)
        assert costs.alpha == current().costs(name).alpha


def test_the_crowd_terms_price_only_ranks_beyond_the_cores() -> None:
    """One rank a core pays no crowd term; two ranks on one CPU do, and cost more than on two."""
    profile, bare = current(), crowd_cost.without_crowd(current())
    for transport in crowd_cost.TRANSPORTS:
        alone = _row(transport, 2, 2)
        assert crowd_cost.price(alone, profile) == crowd_cost.price(alone, bare)
        crowded = _row(transport, 2, 1)
        assert crowd_cost.price(crowded, profile) > crowd_cost.price(crowded, bare)
        assert crowd_cost.price(crowded, profile) > crowd_cost.price(alone, profile)


def test_on_one_cpu_the_crowd_terms_add_one_wake_a_message_however_many_ranks() -> None:
    """As measured (docs/simulation.md, the thirty-eighth round): on one core a message costs
    the same at 2, 3 and 4 ranks, and the model's crowd terms add wake + crowd_wake a message
    (a step's price over the ranks taking turns on the core), not more as ranks are added."""
    profile, bare = current(), crowd_cost.without_crowd(current())
    for transport in crowd_cost.TRANSPORTS:
        costs = profile.costs(transport)
        for ranks in (2, 3, 4):
            row = _row(transport, ranks, 1)
            added = (crowd_cost.price(row, profile) - crowd_cost.price(row, bare)) / crowd_cost.steps(ranks) / ranks
            assert added == pytest.approx((costs.wake + costs.crowd_wake) * 1e6, rel=1e-3)


def test_the_table_has_a_line_per_row() -> None:
    rows = [_row(t, p, c) for t in crowd_cost.TRANSPORTS for p, c in crowd_cost.LAYOUTS]
    lines = crowd_cost.table(rows, current())
    assert len(lines) == len(rows) + 1
