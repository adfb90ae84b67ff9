"""Validation rows that know whether outside work disturbed them: ``perf/validate_model.py``
records ``outside_cores`` per row, and ``perf/model_scores.py`` and ``perf/worst_cases.py`` set
aside, on request, the rows above a threshold, counting and printing them; files saved before the
field stay readable, their rows kept."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from collectives.tuning.profile import Profile, TransportCosts
from perf import disturbed, model_scores, validate_model, worst_cases

TRUE = Profile({"tcp": TransportCosts(5e-6, 20e-6, 0.5e-9, 0.02e-9, exchange=10e-6)}, "the truth", margin=0.0, cores=2)


def saved(tmp_path: Path, name: str, outside: list[float | None], off: list[float]) -> Path:
    """A saved run on a machine that is ``TRUE``: one 2-rank all-reduce row per algorithm and size,
    measured ``off`` times its price, beside ``outside`` cores of other work (None: not recorded)."""
    rows: list[dict[str, Any]] = []
    cases = [(a, n) for a in ("ring", "tree", "recursive") for n in (8, 1 << 20)]
    for (algorithm, size), cores, factor in zip(cases, outside, off):
        row: dict[str, Any] = {"transport": "tcp", "ranks": 2, "ranks_per_host": 2, "collective": "all_reduce",
                               "algorithm": algorithm, "size": size, "measured_us": 0.0}
        row["measured_us"] = validate_model.repredict([row], {"x": TRUE}, 2)[0]["x_us"] * factor
        if cores is not None:
            row[disturbed.FIELD] = cores
        rows.append(row)
    path = tmp_path / name
    path.write_text(json.dumps({"profiles": {"truth": TRUE.to_json()}, "cores": 2, "rows": rows}))
    return path


def test_split_sets_aside_rows_above_the_threshold_and_keeps_rows_that_record_nothing() -> None:
    rows = [{disturbed.FIELD: 0.1}, {disturbed.FIELD: 0.9}, {}, {disturbed.FIELD: 0.25}]
    kept, aside, unrecorded = disturbed.split(rows, 0.25)
    assert kept == [rows[0], rows[2], rows[3]] and aside == [rows[1]] and unrecorded == 1
    assert disturbed.split(rows, 1.0) == ([rows[0], rows[1], rows[2], rows[3]], [], 1)


def test_model_scores_counts_only_the_undisturbed_rows_and_prints_those_set_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two rows measured twice their price beside a busy core: in the score without the option,
    set aside (and named) with it."""
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(TRUE.to_json()))
    run = saved(tmp_path, "run.json", [0.05, 0.9, 0.1, 0.0, 0.95, 0.2], [1, 2, 1, 1, 2, 1])
    base = ["--profile", str(profile), "--choices", "", "--validation", str(run)]
    model_scores.main(base)
    assert ": 4 (sum 4 of 6)" in capsys.readouterr().out
    model_scores.main([*base, "--undisturbed"])
    out = capsys.readouterr().out
    assert ": 4 (sum 4 of 4)" in out
    assert f"# run.json: 2 of 6 rows set aside (over {disturbed.THRESHOLD:g} cores outside the job)" in out
    assert len(re.findall(r"#   set aside: tcp 2/2 all_reduce \w+ \d+ B, 0\.9\d cores outside", out)) == 2
    model_scores.main([*base, "--undisturbed", "0.92"])  # a threshold of one's own
    assert "1 of 6 rows set aside (over 0.92 cores" in capsys.readouterr().out


def test_worst_cases_groups_only_the_undisturbed_rows_and_prints_those_set_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(TRUE.to_json()))
    run = str(saved(tmp_path, "run.json", [0.05, 0.9, 0.1, 0.0, 0.95, 0.2], [1, 2, 1, 1, 2, 1]))
    aside: list[str] = []
    [(ratio, _, runs)] = worst_cases.worst(worst_cases.cases([run], str(profile), 2, ("transport",),
                                                             undisturbed=0.5, aside=aside))
    assert ratio == pytest.approx(1.0) and len(runs[run]) == 4  # the two rows priced at half are set aside
    assert aside[0] == "# run.json: 2 of 6 rows set aside (over 0.5 cores outside the job)" and len(aside) == 3
    worst_cases.main([run, "--profile", str(profile), "--by", "transport", "--undisturbed", "--against", run])
    out = capsys.readouterr().out
    assert out.count("2 of 6 rows set aside") == 2  # the runs grouped, and the runs compared against
    assert re.search(r"^  tcp \| 1\.00 \(1\.00-1\.00\) \| 4/4 \|", out, re.M)


def test_files_saved_before_the_field_are_read_and_their_rows_kept_and_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = saved(tmp_path, "old.json", [None] * 6, [1, 2, 1, 1, 2, 1])
    model_scores.main(["--choices", "", "--validation", str(old), "--undisturbed"])
    out = capsys.readouterr().out
    assert "# old.json: 0 of 6 rows set aside" in out and "6 record no outside work (kept)" in out
    assert re.search(r"\(sum \d+ of 6\)", out)
    saved_before = model_scores.RUNS / "validation_calib21_reduces.json"
    assert model_scores.main(["--choices", "", "--validation", str(saved_before), "--undisturbed"]) == 0


def test_a_validation_run_records_the_outside_work_of_each_row(tmp_path: Path) -> None:
    """A real (small) run: every row has its cores' worth of outside work, and the file names the
    counter it read. A row is as fine as the counter's updates over its span: a small call's
    batches last a few ms, and a count a scheduler tick (4 ms) behind on each busy core moves a row
    by a core or more (CI read one at -1.00), so one row may stray where the run's median cannot:
    it is within a core of what the machine can hold."""
    path = tmp_path / "v.json"
    assert validate_model.main(["--ranks", "2", "--transports", "shm", "--collectives", "all_reduce",
                                "--sizes", "8,64K", "--rounds", "8", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["outside"] in ("cpuacct.usage", "cpu.stat", "/proc/stat")
    assert len(doc["rows"]) == 8  # ring, tree, recursive, direct at two sizes
    shares = [row[disturbed.FIELD] for row in doc["rows"]]
    assert all(isinstance(s, float) and math.isfinite(s) for s in shares)
    assert -1 < statistics.median(shares) < doc["cores"] + 1
    again = validate_model.repredict(doc["rows"], {"x": TRUE}, 2)
    assert [r[disturbed.FIELD] for r in again] == [r[disturbed.FIELD] for r in doc["rows"]]  # kept when re-priced
