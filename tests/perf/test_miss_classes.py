"""perf/miss_classes.py: a validation run's misses per class, and two runs' measurements of the same cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collectives.tuning.profile import DEFAULT_FILE, load
from perf.miss_classes import classes, measured_over, priced


def _row(ranks: int, size: int, measured: float, error: float, collective: str = "all_reduce",
         algorithm: str = "ring") -> dict[str, Any]:
    return {"run": "r", "transport": "tcp", "ranks": ranks, "ranks_per_host": ranks, "collective": collective,
            "algorithm": algorithm, "size": size, "measured_us": measured, "error": error}


def test_a_class_counts_its_rows_met_priced_low_and_high_apart() -> None:
    rows = [_row(3, 8, 100.0, -0.5), _row(3, 8, 100.0, -0.3), _row(3, 8, 100.0, 0.1),
            _row(3, 1024, 100.0, 0.4), _row(2, 8, 100.0, 0.25)]  # exactly 25 % is met
    by_world = classes(rows, ["ranks"])
    assert by_world[((3, 3),)] == {"rows": 4, "met": 1, "low": 2, "high": 1, "median": pytest.approx(-0.1)}
    assert by_world[((2, 2),)] == {"rows": 1, "met": 1, "low": 0, "high": 0, "median": pytest.approx(0.25)}
    by_both = classes(rows, ["ranks", "size"])
    assert by_both[((3, 3), 8)]["low"] == 2 and by_both[((3, 3), 1024)]["high"] == 1


def test_measured_over_takes_the_median_of_the_cases_both_sets_measured_per_world() -> None:
    mine = [_row(2, 8, 30.0, 0.0), _row(2, 1024, 60.0, 0.0), _row(2, 4096, 90.0, 0.0), _row(3, 8, 50.0, 0.0)]
    theirs = [_row(2, 8, 10.0, 0.0), _row(2, 8, 20.0, 0.0), _row(2, 1024, 30.0, 0.0), _row(3, 8, 100.0, 0.0),
              _row(3, 8, 100.0, 0.0, algorithm="tree")]  # another case: not compared
    ratios = measured_over(mine, theirs)
    assert ratios == {(2, 2): pytest.approx(2.0), (3, 3): pytest.approx(0.5)}  # 30/15, 60/30; 4096 unmatched


def test_priced_rows_carry_their_run_and_the_error_of_the_price(tmp_path: Path) -> None:
    saved = {"cores": 2, "rows": [
        {"transport": "tcp", "ranks": 2, "ranks_per_host": 2, "collective": "broadcast", "algorithm": "tree",
         "size": 8, "measured_us": 20.0}]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved))
    [row] = priced([str(path)], load(DEFAULT_FILE))
    assert row["run"] == "run.json"
    assert row["p_us"] > 0
    assert row["error"] == pytest.approx(row["p_us"] / 20.0 - 1.0)
