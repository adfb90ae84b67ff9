"""perf/tuner_check.py's sizes: the all_reduce_perf sweep by default, or the sizes ``--sizes`` names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf import tuner_check


def test_without_sizes_the_sweep_from_8_bytes_to_32_mib_by_four() -> None:
    assert tuner_check.measured_sizes(None) == tuner_check.SIZES
    assert tuner_check.SIZES[0] == 8 and tuner_check.SIZES[-1] == 32 << 20


def test_sizes_in_nccl_tests_units() -> None:
    assert tuner_check.measured_sizes("16M,32M,64M") == [16 << 20, 32 << 20, 64 << 20]
    assert tuner_check.measured_sizes("8,1K") == [8, 1024]


@pytest.mark.parametrize("text", ["16Q", "0", "16M,,32M"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--sizes"):
        tuner_check.measured_sizes(text)


def test_choice_run_18_times_every_flat_algorithm_and_the_pick_from_16_to_64_mib() -> None:
    """docs/perf/choices_calib18_tcp.json (docs/simulation.md, the thirty-ninth round): tcp
    all-reduces of 16, 32 and 64 MiB at 2, 3 and 4 ranks, three repeats of each time."""
    path = Path(tuner_check.__file__).resolve().parent.parent / "docs" / "perf" / "choices_calib18_tcp.json"
    doc = json.loads(path.read_text())
    assert doc["cores"] == 2 and doc["repeats"] == 3
    rows = doc["rows"]
    assert sorted((r["ranks"], r["size"]) for r in rows) == [(p, n << 20) for p in (2, 3, 4) for n in (16, 32, 64)]
    for r in rows:
        assert r["transport"] == "tcp" and r["collective"] == "all_reduce"
        assert set(r["times_us"]) == {"ring", "tree", "recursive", "auto"}
        assert all(len(ts) == 3 for ts in r["repeats_us"].values())


def test_choice_run_19_times_every_collective_at_five_six_and_eight_ranks() -> None:
    """docs/perf/choices_calib19_tcp.json (docs/simulation.md, the fortieth round): every
    collective over tcp at 5, 6 and 8 ranks, at 8 B, 64 KiB, 1, 8 and 32 MiB, two repeats."""
    path = Path(tuner_check.__file__).resolve().parent.parent / "docs" / "perf" / "choices_calib19_tcp.json"
    doc = json.loads(path.read_text())
    assert doc["cores"] == 2 and doc["repeats"] == 2
    rows = doc["rows"]
    sizes = [8, 64 << 10, 1 << 20, 8 << 20, 32 << 20]
    assert sorted((r["ranks"], r["collective"], r["size"]) for r in rows) == sorted(
        (p, c, n) for p in (5, 6, 8) for c in tuner_check.COLLECTIVES for n in sizes)
    for r in rows:
        assert r["transport"] == "tcp" and "auto" in r["times_us"]
        assert all(len(ts) == 2 for ts in r["repeats_us"].values())
