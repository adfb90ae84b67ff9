"""``collectives-tune`` writes what it measures where the model reads it: its 2-rank α, fitted where every
rank has a core, as ``core_alpha``, and ``alpha`` fitted on the crowded worlds, whose ranks share the cores
(``machine.with_a_core``; docs/simulation.md, the fifty-seventh and fifty-eighth rounds). The timings here
are the model's own, made on a machine of 2 cores with a known α and ``core_alpha``, so the fit must give
both back."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collectives import tune
from collectives.timing import Case
from collectives.tuning import tuner
from collectives.tuning.profile import DEFAULT_FILE, Profile, TransportCosts, load

CORES = 2
GAMMA = 0.03e-9
TRUTH = TransportCosts(0.0, 17e-6, 0.35e-9, GAMMA, exchange=6e-6, crowd_wake=18e-6, crowd_beta=0.02e-9,
                       send_overhead=8e-6, recv_overhead=1e-6, core_alpha=8e-6)
"""tcp as the built-in profile prices it, near enough: a message costs 8 µs with a core each, 17 where ranks share."""


def priced(costs: TransportCosts, outside: float = 0.0) -> Any:
    """A stand-in for ``timing.measure_outside`` (and, its first list, ``timing.measure``): each case as the
    model prices it over tcp on a host of ``CORES`` cores, calls of 2 back to back."""
    profile = Profile({"tcp": costs}, cores=CORES, calls=2)

    def measure(cases: Sequence[Case], size: int, t: str, **_: Any) -> tuple[list[list[float]], list[float]]:
        return [[tuner.predict(c, a, n, size, t, 0, profile)] for c, n, a in cases], [outside] * len(cases)
    return measure


def test_core_alpha_is_measured_where_every_rank_of_the_sweep_has_a_counted_core() -> None:
    assert tune.measures_core_alpha("tcp", 2, 2) and tune.measures_core_alpha("tcp", 2, 16)
    assert not tune.measures_core_alpha("tcp", 3, 2)  # ranks share the cores: that is α's world
    assert not tune.measures_core_alpha("tcp", 2, 0)  # cores not counted: the model uses α everywhere
    assert not tune.measures_core_alpha("shm", 2, 2)  # shared memory's α is one in every world


def test_the_two_rank_alpha_is_written_as_core_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks with a core each pay ``core_alpha``: that is what their sweep fits."""
    monkeypatch.setattr(tune, "measure_outside", priced(TRUTH))
    costs, _ = tune.fit_transport("tcp", (8, 4096, 65536, 1 << 20), 2, 1, GAMMA, [], CORES, calls=2)
    assert costs.core_alpha == pytest.approx(TRUTH.core_alpha, rel=0.1)
    assert costs.alpha == costs.core_alpha  # until the crowded sweep fits the α of ranks that share the cores
    uncounted, _ = tune.fit_transport("tcp", (8, 4096, 65536, 1 << 20), 2, 1, GAMMA, [], 0, calls=2)
    assert uncounted.core_alpha == 0.0


def test_the_crowded_sweep_fits_alpha_beside_the_crowd_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 and 4 ranks on 2 cores pay α and the crowd's wakes; one term at a time the search stopped at α 5.6
    or 20 µs (``crowd_wake`` 27 or 16), so α is searched outside the crowded terms, which are fitted to each."""
    monkeypatch.setattr(tune, "measure_outside", priced(TRUTH))
    start = dataclasses.replace(TRUTH, alpha=TRUTH.core_alpha, crowd_wake=0.0, crowd_beta=0.0)
    log: list[str] = []
    fitted = tune.fit_crowd("tcp", start, CORES, 1, log, 0, 2)
    assert fitted.alpha == pytest.approx(TRUTH.alpha, rel=0.1)
    assert fitted.crowd_wake == pytest.approx(TRUTH.crowd_wake, rel=0.1)
    assert fitted.crowd_beta == pytest.approx(TRUTH.crowd_beta, rel=0.3)
    assert fitted.core_alpha == TRUTH.core_alpha
    assert any(line.startswith("# tcp crowded sweep (3, 4 ranks on 2 cores") and "alpha 1" in line for line in log)


def test_a_disturbed_crowded_sweep_keeps_the_built_in_alpha_with_its_crowd_terms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure_outside", priced(TRUTH, outside=1.0))
    monkeypatch.setattr(tune, "RETRY_PAUSE", 0.0)
    log: list[str] = []
    start = dataclasses.replace(TRUTH, alpha=TRUTH.core_alpha, crowd_wake=0.0, crowd_beta=0.0)
    fitted = tune.fit_crowd("tcp", start, CORES, 1, log)
    built_in = load(DEFAULT_FILE).costs("tcp")
    assert (fitted.alpha, fitted.crowd_wake, fitted.crowd_beta) == (built_in.alpha, built_in.crowd_wake,
                                                                     built_in.crowd_beta)
    assert any(line.endswith("; alpha, crowd_wake, crowd_beta kept from the built-in profile") for line in log)


def test_a_tuned_tcp_profile_prices_two_ranks_at_core_alpha_and_the_crowded_worlds_at_alpha(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole run on 2 cores: 2 ranks, the crowded worlds, then the split; both α land in the file and
    its printout, and the profile prices 2 and 3 ranks as the machine that made the times."""
    measure = priced(TRUTH)
    monkeypatch.setattr(tune, "measure_outside", measure)
    monkeypatch.setattr(tune, "measure", lambda cases, size, t, **kw: [ts[0] for ts in measure(cases, size, t)[0]])
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: GAMMA)
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.0)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,4K,64K,1M", "--cores", str(CORES), "--quiet",
                      "--out", str(path)]) == 0
    profile = load(path)
    costs = profile.costs("tcp")
    assert costs.core_alpha == pytest.approx(TRUTH.core_alpha, rel=0.1)
    assert costs.alpha == pytest.approx(TRUTH.alpha, rel=0.1)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "core_alpha_us" in line).split()[1:]  # less the "#"
    row = next(line for line in lines if line.startswith("  tcp ")).split()
    assert float(row[header.index("core_alpha_us")]) == pytest.approx(costs.core_alpha * 1e6, abs=0.01)
    truth = Profile({"tcp": TRUTH}, cores=CORES, calls=2)
    for ranks in (2, 3):
        for algorithm in ("tree", "recursive"):
            assert tuner.predict("all_reduce", algorithm, 8, ranks, "tcp", 0, profile) == pytest.approx(
                tuner.predict("all_reduce", algorithm, 8, ranks, "tcp", 0, truth), rel=0.15)
