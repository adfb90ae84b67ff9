"""``collectives-tune`` measures ``sleep_wake`` (``tune.fit_sleep``, by ``collectives.sleep_wakes``): at two
ranks a core over shared memory, the wake of a rank that slept through a long wait less that of one that
yielded; written into the profile it saves and prints, and read back as it was written."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from collectives import sleep_wakes, tune
from collectives.sleep_wakes import SLEPT_WAIT, Wake
from collectives.testing.harness import RankError
from collectives.transports.progress import YIELD_SECONDS
from collectives.tuning.profile import DEFAULT_FILE, Profile, TransportCosts, load

SHM = TransportCosts(0.0, 11e-6, 0.13e-9, 0.05e-9, exchange=4.5e-6, crowd_wake=9.5e-6)


def probe(slept_us: float, yielded_us: float, asked: list[tuple[int, str]]) -> Callable[..., list[Wake]]:
    def run(ranks: int, transport: str = "shm") -> list[Wake]:
        asked.append((ranks, transport))
        return ([Wake(SLEPT_WAIT * 2e6, slept_us)] * 30) + ([Wake(YIELD_SECONDS * 0.5e6, yielded_us)] * 30)
    return run


def test_the_probe_runs_at_two_ranks_a_core_and_its_difference_is_the_term(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(sleep_wakes, "run", probe(52.0, 7.0, asked))
    log: list[str] = []
    fitted = tune.fit_sleep("shm", SHM, 2, log)
    assert asked == [(4, "shm")]
    assert fitted.sleep_wake == pytest.approx(45e-6)
    assert dataclasses.replace(fitted, sleep_wake=0.0) == SHM  # nothing else moves
    assert any("sleep_wake 45.0 us" in line and "30 waits slept, 30 yielded" in line for line in log)


def test_without_a_crowded_world_or_enough_waits_it_keeps_the_built_in_term_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built_in = load(DEFAULT_FILE).costs("shm").sleep_wake
    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(sleep_wakes, "run", probe(52.0, 7.0, asked))
    log: list[str] = []
    assert tune.fit_sleep("shm", SHM, 0, log).sleep_wake == built_in and not asked
    assert "no sleep probe (0 cores counted)" in log[-1]
    monkeypatch.setattr(sleep_wakes, "run", lambda ranks, transport="shm": [Wake(SLEPT_WAIT * 2e6, 50.0)] * 5)
    assert tune.fit_sleep("shm", SHM, 2, log).sleep_wake == built_in
    assert "too few slept and yielded waits" in log[-1]

    def fails(ranks: int, transport: str = "shm") -> list[Wake]:
        raise RankError("rank 3 timed out", rank=3)

    monkeypatch.setattr(sleep_wakes, "run", fails)
    assert tune.fit_sleep("shm", SHM, 2, log).sleep_wake == built_in
    assert "sleep probe failed" in log[-1] and "rank 3 timed out" in log[-1]


def test_the_measured_term_is_saved_printed_and_read_back(tmp_path: Path) -> None:
    profile = Profile({"shm": dataclasses.replace(SHM, sleep_wake=43.5e-6)}, "tuned", 0.0, 2, 2)
    path = tmp_path / "tuned.json"
    profile.save(path)
    assert load(path) == profile
    header, row = profile.describe()[1:3]
    at = header.split().index("sleep_wake_us") - 1  # the header's "#" has no value below it
    assert float(row.split()[at]) == pytest.approx(43.5)


def test_the_command_probes_shm_only_and_only_with_sleep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Over tcp no crowded wait stays within the yield window (``SLEEP_PROBED``); without ``--sleep`` there is no
    probe and the term stays the built-in profile's 0 (an opt-in term, as ``rota_wake``)."""
    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(sleep_wakes, "run", probe(52.0, 7.0, asked))
    monkeypatch.setattr(tune, "fit_transport", lambda t, *a, **k: (SHM, 0))
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: SHM.gamma)
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.04e-9)
    path = tmp_path / "tuned.json"
    args = ["--transports", "shm,tcp", "--cores", "2", "--no-crowd", "--no-split", "--quiet", "--out", str(path)]
    assert tune.main(args) == 0
    assert asked == [] and load(path).costs("shm").sleep_wake == 0.0
    assert tune.main(args + ["--sleep"]) == 0
    assert asked == [(4, "shm")]
    assert load(path).costs("shm").sleep_wake == pytest.approx(45e-6)
    assert load(path).costs("tcp").sleep_wake == 0.0
