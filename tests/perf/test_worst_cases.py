"""The cases the model is furthest off across saved runs: grouped by case, ranked by the median
of predicted / measured over the runs, worst first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collectives.tuning.profile import Profile, TransportCosts
from perf import validate_model, worst_cases

TRUE = Profile({"tcp": TransportCosts(5e-6, 20e-6, 0.5e-9, 0.02e-9, exchange=10e-6)}, "the truth", margin=0.0, cores=2)


def run(tmp_path: Path, name: str, off: dict[str, float]) -> str:
    """A saved run 'measured' on a machine that is the truth, each algorithm's times divided by ``off``."""
    rows: list[dict[str, Any]] = []
    for algorithm, factor in off.items():
        row = {"transport": "tcp", "ranks": 2, "ranks_per_host": 2, "collective": "all_reduce",
               "algorithm": algorithm, "size": 8, "measured_us": 0.0}
        row["measured_us"] = validate_model.repredict([row], {"x": TRUE}, 2)[0]["x_us"] / factor
        rows.append(row)
    path = tmp_path / name
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_cases_are_ranked_by_the_median_error_over_the_runs(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(TRUE.to_json()))
    paths = [run(tmp_path, "a.json", {"ring": 1.0, "tree": 2.0, "recursive": 0.8}),
             run(tmp_path, "b.json", {"ring": 1.1, "tree": 3.0, "recursive": 0.8}),
             run(tmp_path, "c.json", {"ring": 1.0, "tree": 0.5, "recursive": 0.8})]
    ranked = worst_cases.worst(worst_cases.cases(paths, str(profile), 2))
    assert [case[2] for _, case, _ in ranked] == ["tree", "recursive", "ring"]
    ratio, case, runs = ranked[0]
    assert ratio == 2.0 and len(runs) == 3  # the median of 2, 3 and 0.5 times the measurement


def test_groups_may_be_coarser_and_ratios_measured_over_predicted(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(TRUE.to_json()))
    paths = [run(tmp_path, "a.json", {"ring": 1.0, "tree": 2.0, "recursive": 0.8}),
             run(tmp_path, "b.json", {"ring": 1.0, "tree": 4.0, "recursive": 0.5})]
    [(ratio, key, runs)] = worst_cases.worst(worst_cases.cases(paths, str(profile), 2, by=("transport",)),
                                              measured_over_predicted=True)
    assert key == ("tcp",) and sorted(runs) == sorted(paths) and len(runs[paths[0]]) == 3
    assert abs(ratio - 1.0) < 1e-9  # the median of 1, 1/2, 1.25, 1, 1/4, 2
    assert worst_cases.cases(paths, str(profile), 2, transport="shm") == {}


def test_groups_may_be_the_coarse_classes_and_count_the_misses_under_and_over(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(TRUE.to_json()))
    paths = [run(tmp_path, "a.json", {"ring": 1.0, "tree": 2.0, "recursive": 0.5})]
    found = worst_cases.cases(paths, str(profile), 2, by=("family", "crowded", "band"))
    assert list(found) == [("schedule", "a core each", "small")]
    assert worst_cases.misses(found["schedule", "a core each", "small"]) == (1, 1)  # tree under, recursive over
    assert list(worst_cases.cases(paths, str(profile), 1, by=("crowded",))) == [("crowded",)]  # 2 ranks, 1 core


def test_a_group_field_that_rows_do_not_have_is_refused_by_name(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        worst_cases.main(["x.json", "--by", "ranks,colour"])
    assert info.value.code == 2
    assert "--by names no field colour" in capsys.readouterr().err


def _saved(tmp_path: Path, name: str, measured: dict[tuple[int, int, str], float]) -> str:
    rows = [{"transport": "tcp", "ranks": ranks, "ranks_per_host": ranks, "collective": "all_reduce",
             "algorithm": algorithm, "size": size, "measured_us": us}
            for (ranks, size, algorithm), us in measured.items()]
    path = tmp_path / name
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_against_takes_the_median_over_the_cases_both_measured_per_world(tmp_path: Path) -> None:
    mine = _saved(tmp_path, "m.json", {(2, 8, "ring"): 30.0, (2, 1024, "ring"): 60.0, (2, 4096, "ring"): 90.0,
                                       (3, 8, "ring"): 50.0})
    theirs = [_saved(tmp_path, "a.json", {(2, 8, "ring"): 10.0, (2, 1024, "ring"): 30.0, (3, 8, "ring"): 100.0,
                                          (3, 8, "tree"): 100.0}),  # another case: not compared
              _saved(tmp_path, "b.json", {(2, 8, "ring"): 20.0})]
    ratios = worst_cases.measured_over([mine], theirs)
    assert ratios == {(2, 2): pytest.approx(2.0), (3, 3): pytest.approx(0.5)}  # 30/15, 60/30; 4096 unmatched
