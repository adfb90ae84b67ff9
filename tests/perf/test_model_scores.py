"""perf/model_scores.py: each saved run's score under one profile, the count the scoring scripts
print for the same run (tuner_check --from, validate_model --from --profile), and each set's sum."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from collectives.tuning.profile import DEFAULT_FILE
from perf import model_scores, tuner_check, validate_model

CHOICE = model_scores.RUNS / "choices_calib8.json"  # small saved runs: a test of a second or two
VALIDATION = model_scores.RUNS / "validation_calib21_reduces.json"


def counts(out: str, file: str) -> tuple[int, int]:
    """The count and the rows that model_scores printed for ``file``."""
    found = re.search(rf"^\s+\S+\s+(\d+) of (\d+)\s+{re.escape(file)}$", out, re.M)
    assert found, out
    return int(found[1]), int(found[2])


def test_a_saved_runs_score_is_what_the_scoring_scripts_print_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    tuner_check.main(["--from", str(CHOICE), "--profile", str(DEFAULT_FILE)])
    picks = re.search(r"# tuner within 10 % of the best \(5 us below 64 KiB\): (\d+) of (\d+)", capsys.readouterr().out)
    validate_model.main(["--from", str(VALIDATION), "--profile", str(DEFAULT_FILE)])
    predicted = re.search(r"# given: (\d+) of (\d+) predictions within 25 %", capsys.readouterr().out)
    assert picks and predicted

    assert model_scores.main(["--choices", str(CHOICE), "--validation", str(VALIDATION)]) == 0
    out = capsys.readouterr().out
    assert counts(out, CHOICE.name) == (int(picks[1]), int(picks[2]))
    assert counts(out, VALIDATION.name) == (int(predicted[1]), int(predicted[2]))
    assert f": {picks[1]} (sum {picks[1]} of {picks[2]})" in out


def test_validation_runs_are_scored_under_the_given_profile_and_summed(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The set's line lists the runs' counts in order and sums them; a profile that prices every
    message four times as dear predicts fewer rows within 25 % than the built-in one."""
    model_scores.main(["--choices", "", "--validation", f"{VALIDATION},{VALIDATION}"])
    out = capsys.readouterr().out
    assert "choice runs" not in out
    n, rows = counts(out, VALIDATION.name)
    assert f"validation runs (predictions within 25 %): {n} {n} (sum {2 * n} of {2 * rows})" in out

    doc = json.loads(DEFAULT_FILE.read_text())
    doc["transports"] = {t: {k: v * 4 if isinstance(v, float) else v for k, v in costs.items()}
                         for t, costs in doc["transports"].items()}
    dear = tmp_path / "dear.json"
    dear.write_text(json.dumps(doc))
    model_scores.main(["--profile", str(dear), "--choices", "", "--validation", str(VALIDATION)])
    assert counts(capsys.readouterr().out, VALIDATION.name)[0] < n


def test_by_default_it_scores_choice_runs_1_to_14_and_validation_runs_f_to_v() -> None:
    """The sets docs/simulation.md quotes, each a saved run."""
    assert list(model_scores.CHOICE_RUNS) == [str(n) for n in range(1, 15)]
    assert "".join(model_scores.VALIDATION_RUNS) == "FGHIJKLMNOPQRSTUV"
    for name in [*model_scores.CHOICE_RUNS.values(), *model_scores.VALIDATION_RUNS.values()]:
        assert (model_scores.RUNS / name).is_file(), name


def test_a_validation_runs_cases_are_scored_as_a_choice_runs_by_the_pick_among_the_algorithms_it_timed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each case of a validation run (collective, size, layout) timed every algorithm: the pick is within
    when its time is within 10 % of the fastest (5 µs below 64 KiB); a case with a disturbed row is left
    out with ``--undisturbed``."""
    from collectives.tuning import tuner
    from collectives.tuning.profile import load

    profile = load(DEFAULT_FILE)
    pick = tuner.choose("all_reduce", 1 << 20, 3, "tcp", False, 0, profile)
    other = next(a for a in ("ring", "tree", "recursive") if a != pick)

    def row(size: int, algorithm: str, us: float, outside: float = 0.0) -> dict[str, object]:
        return {"transport": "tcp", "ranks": 3, "ranks_per_host": 3, "collective": "all_reduce", "size": size,
                "algorithm": algorithm, "measured_us": us, "outside_cores": outside}

    path = tmp_path / "v.json"
    for other_us, within in ((500.0, 0), (950.0, 1)):
        rows = [row(1 << 20, pick, 1000.0), row(1 << 20, other, other_us)]
        path.write_text(json.dumps({"cores": 2, "rows": rows}))
        assert model_scores.validation_picks(path, profile) == (within, 1)
    rows += [row(1 << 21, a, 1000.0, outside=1.0 if a == pick else 0.0) for a in ("ring", "tree", "recursive")]
    path.write_text(json.dumps({"cores": 2, "rows": rows}))
    assert model_scores.validation_picks(path, profile)[1] == 2
    assert model_scores.validation_picks(path, profile, 0.5) == (1, 1)
    model_scores.main(["--choices", "", "--validation", str(path), "--undisturbed", "--picks"])
    assert "as choice runs (tuner within 10 % of the best timed): 1 (sum 1 of 1)" in capsys.readouterr().out
