"""perf/rank_ratios.py: rows within 25 % per world size, and measured over predicted per case."""

from __future__ import annotations

import pytest

from perf.rank_ratios import groups


def test_rows_are_counted_per_world_size_and_ratios_kept_for_one_host() -> None:
    rows = [
        {"transport": "tcp", "ranks": 3, "ranks_per_host": 3, "collective": "broadcast", "algorithm": "tree",
         "size": 8, "measured_us": 30.0, "p_us": 20.0},  # 1.5 times its price: outside 25 %
        {"transport": "tcp", "ranks": 3, "ranks_per_host": 3, "collective": "broadcast", "algorithm": "tree",
         "size": 1024, "measured_us": 22.0, "p_us": 20.0},
        {"transport": "tcp", "ranks": 4, "ranks_per_host": 2, "collective": "all_reduce", "algorithm": "ring",
         "size": 8, "measured_us": 10.0, "p_us": 10.0},  # two hosts: counted, not in the ratio table
    ]
    counts, ratios = groups(rows)
    assert counts == {("tcp", 3): [1, 2], ("tcp", 4): [1, 1]}
    assert ratios == {(3, "broadcast", "tree"): [(8, pytest.approx(1.5)), (1024, pytest.approx(1.1))]}
