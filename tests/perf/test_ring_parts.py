"""perf/ring_parts.py: a large tcp all-reduce, its ring halves and the recursive schedule, priced."""

from __future__ import annotations

from collectives.tuning import tuner
from collectives.tuning.profile import current
from perf import ring_parts


def test_replayed_in_full_lifts_the_line_and_restores_it() -> None:
    kept = tuner.LINEAR_BYTES
    with ring_parts.replayed_in_full():
        assert tuner.LINEAR_BYTES > 64 << 20
    assert tuner.LINEAR_BYTES == kept


def test_the_ring_halves_price_below_the_whole() -> None:
    """A reduce-scatter and an all-gather are each a part of the ring all-reduce of the same bytes."""
    def row(collective: str) -> dict[str, object]:
        return {"collective": collective, "algorithm": "ring", "size": 4 << 20, "ranks": 3}

    whole = ring_parts.price(row("all_reduce"), current(), 2)
    for half in ("reduce_scatter", "all_gather"):
        assert 0 < ring_parts.price(row(half), current(), 2) < whole


def test_the_table_has_a_line_per_row() -> None:
    rows = [{"collective": c, "algorithm": a, "size": 4 << 20, "ranks": 3, "measured_us": 1000.0}
            for c, a in ring_parts.CASES]
    assert len(ring_parts.table(rows, current(), 2)) == len(rows) + 1
