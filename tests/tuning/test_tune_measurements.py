"""What ``collectives-tune`` measures beyond two ranks' all-reduces, and that each lands in the profile:
the crowded worlds' terms (``crowd_wake``, ``crowd_beta``, ``direct_sync``), the cache (``cache_bytes``,
``cache_beta``), the window's β from the calls that fold nothing, the local copies' ``copy_beta``, calls
back to back, and the cases timed beside other work left out of the fits. The timings here are the
model's own, made with known constants, so each fit must give them back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collectives import tune
from collectives.timing import Case
from collectives.tuning import tuner
from collectives.tuning.cache import fold_gamma
from collectives.tuning.profile import DEFAULT_FILE, Profile, TransportCosts, load

CORES = 2
TCP = TransportCosts(0.0, 15e-6, 0.35e-9, 0.03e-9, exchange=6e-6, crowd_wake=18e-6, crowd_beta=0.02e-9)
SHM = TransportCosts(0.0, 12e-6, 0.1e-9, 0.05e-9, exchange=7e-6, direct_alpha=1e-6, direct_beta=0.05e-9,
                     crowd_wake=4e-6, crowd_beta=0.03e-9, direct_sync=2e-6, cache_beta=0.06e-9)
CACHE = 3 << 20


def priced(costs: TransportCosts, transport: str, cache_bytes: int = 0, calls: int = 2,
           outside: float = 0.0) -> Any:
    """A stand-in for ``timing.measure_outside``: each case's time as the model prices it on a host
    of ``CORES`` cores with ``costs``, read with ``outside`` cores of other work beside it."""
    profile = Profile({transport: costs}, cores=CORES, calls=calls, cache_bytes=cache_bytes)

    def measure(cases: Sequence[Case], size: int, t: str, **_: Any) -> tuple[list[list[float]], list[float]]:
        return [[tuner.predict(c, a, n, size, t, 0, profile)] for c, n, a in cases], [outside] * len(cases)
    return measure


def test_the_crowded_worlds_are_one_rank_beyond_the_cores_and_two_a_core() -> None:
    assert tune.crowd_worlds(2) == [3, 4]
    assert tune.crowd_worlds(4) == [5, 8]
    assert tune.crowd_worlds(0) == [] and tune.crowd_worlds(8) == []  # not counted; 16 ranks: too long a sweep


def test_the_crowded_terms_are_fitted_back_from_crowded_worlds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks with a core each show none of them; 3 and 4 ranks on 2 cores queue for the cores."""
    for transport, truth in (("tcp", TCP), ("shm", SHM)):
        monkeypatch.setattr(tune, "measure_outside", priced(truth, transport, CACHE))
        start = dataclasses.replace(truth, crowd_wake=0.0, crowd_beta=0.0, direct_sync=0.0)
        log: list[str] = []
        fitted = tune.fit_crowd(transport, start, CORES, 1, log, CACHE, 2)
        assert fitted.crowd_wake == pytest.approx(truth.crowd_wake, rel=0.3)
        assert fitted.crowd_beta == pytest.approx(truth.crowd_beta, rel=0.3)
        if transport == "shm":
            assert fitted.direct_sync == pytest.approx(truth.direct_sync, rel=0.3)
        assert (fitted.alpha, fitted.beta, fitted.exchange) == (truth.alpha, truth.beta, truth.exchange)
        assert any(line.startswith(f"# {transport} crowded sweep (3, 4 ranks on 2 cores") for line in log)
        assert any("4 ranks  measured" in line for line in log)


def test_a_disturbed_crowded_sweep_keeps_the_built_in_terms_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure_outside", priced(TCP, "tcp", outside=1.0))
    monkeypatch.setattr(tune, "RETRY_PAUSE", 0.0)
    log: list[str] = []
    fitted = tune.fit_crowd("tcp", dataclasses.replace(TCP, crowd_wake=0.0, crowd_beta=0.0), CORES, 1, log)
    built_in = load(DEFAULT_FILE).costs("tcp")
    assert (fitted.crowd_wake, fitted.crowd_beta) == (built_in.crowd_wake, built_in.crowd_beta)
    assert any("only 0 of 30 calls undisturbed" in line for line in log)
    assert any(line.endswith("disturbed") and "3 ranks" in line for line in log)


def test_without_counted_cores_there_is_no_crowded_sweep() -> None:
    log: list[str] = []
    assert tune.fit_crowd("tcp", TCP, 0, 1, log) is TCP
    assert "crowded sweep not run" in log[0]


def test_disturbed_cases_are_timed_again_and_those_left_disturbed_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other work beside a case (over half a core) slows it; it is timed again, ``retries`` times."""
    calls: list[list[Case]] = []
    readings = iter([[0.0, 0.9, 0.9], [0.1, 0.8], [2.0]])

    def measure(cases: Sequence[Case], size: int, transport: str, **_: Any) -> tuple[list[list[float]], list[float]]:
        calls.append(list(cases))
        return [[1e-3 * len(calls)] for _ in cases], next(readings)

    monkeypatch.setattr(tune, "measure_outside", measure)
    cases: list[Case] = [("all_reduce", 8, "ring"), ("all_reduce", 8, "tree"), ("broadcast", 8, "tree")]
    log: list[str] = []
    times, quiet = tune.measure_quiet(cases, 2, "tcp", 1, log, retries=2, pause=0.0)
    assert calls == [cases, cases[1:], cases[2:]]
    assert quiet == [True, True, False]
    assert times[:2] == [1e-3, 2e-3]  # the second case from its quiet try
    assert log == ["# tcp at 2 ranks: 1 of 3 calls disturbed (over 0.5 cores of other work beside them, 3 tries),"
                   " left out of the fit"]


def test_the_window_beta_is_fitted_back_from_all_its_calls_with_gamma_in_the_cache() -> None:
    """γ is now a fold in the cache, as the window's all-reduces fold their blocks: their calls join the fit
    (the broadcasts alone, with γ a fold of 4 MiB, gave 0.062-0.065 ns/B and priced the 3-8-rank all-reduces
    of 64 KiB 1.4-1.6 times their time)."""
    truth = TransportCosts(0.0, 0.0, 0.0, 0.021e-9, direct_alpha=1e-6, direct_beta=0.038e-9)
    cases: list[Case] = [("broadcast", n, "direct") for n in (8, 4096, 65536, 524288)] + [
        ("all_gather", 8, "direct"), ("all_gather", 4096, "direct")] + [
        ("all_reduce", n, "direct") for n in (8, 4096, 65536, 524288)]
    def priced_through_the_window(collective: str, n: int) -> float:  # the window's own bytes, as the tuner's
        moved, reduced = tuner.window_factors(collective, n, 2, 2)
        return truth.direct_alpha + n * (moved * truth.direct_beta + reduced * truth.gamma)

    timed = [(case, priced_through_the_window(case[0], case[1])) for case in cases]
    fitted = tune.fit_window(timed, 2, 2, truth.gamma, TransportCosts(0.0, 10e-6, 0.1e-9, truth.gamma))
    assert fitted.direct_beta == pytest.approx(truth.direct_beta, rel=1e-6)
    assert fitted.direct_alpha == pytest.approx(truth.direct_alpha, rel=1e-6)
    assert fitted.alpha == 10e-6
    reduces = [pair for pair in timed if pair[0][0] == "all_reduce"]
    assert tune.fit_window(reduces, 2, 2, truth.gamma, fitted).direct_beta == pytest.approx(truth.direct_beta)


def test_gamma_is_timed_as_a_fold_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The model's γ is the cache's rate, raised beyond it by ``cache_beta`` (``cache.fold_gamma``): timed
    on 4 MiB, beyond this machine's 2 MiB L2, the fold ran at 0.068 ns/B, the cache's 0.021, and the tuned
    profile paid the rise twice. Here the fold is timed as the model prices it."""
    gamma, cache_beta = 0.021e-9, 0.06e-9
    asked: list[int] = []

    def fold(nbytes: int) -> float:
        asked.append(nbytes)
        return fold_gamma(gamma, cache_beta, nbytes, CACHE)

    monkeypatch.setattr(tune, "fold_seconds_per_byte", fold)
    monkeypatch.setattr(tune, "measure_outside", priced(dataclasses.replace(TCP, gamma=gamma), "tcp", calls=2))
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.04e-9)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K,1M", "--no-split", "--no-crowd", "--quiet",
                      "--out", str(path)]) == 0
    assert asked and max(asked) <= CACHE
    costs = load(path).costs("tcp")
    assert costs.gamma == gamma
    assert costs.beta == pytest.approx(TCP.beta, rel=0.05)


def test_the_cache_and_its_beta_are_fitted_back_from_calls_beyond_it() -> None:
    costs = TransportCosts(0.0, 12e-6, 0.1e-9, 0.05e-9, exchange=7e-6, cache_beta=0.06e-9)
    profile = Profile({"shm": costs}, cores=CORES, calls=2, cache_bytes=CACHE)
    sizes = (8, 4096, 65536, 512 << 10, 4 << 20, 16 << 20)
    timed = [(("all_reduce", n, a), tuner.predict("all_reduce", a, n, 2, "shm", 0, profile))
             for a in tune.SCHEDULED for n in sizes]
    log: list[str] = []
    fitted, cache_bytes = tune.fit_cache(timed, 2, "shm", CORES, 2, dataclasses.replace(costs, cache_beta=0.0), log)
    assert cache_bytes == CACHE
    assert fitted.cache_beta == pytest.approx(costs.cache_beta, rel=0.15)
    assert log[0].startswith("# shm cache: 3072 KiB a host, cache_beta 0.06")


def test_a_local_copy_is_timed_per_byte() -> None:
    """``copy_beta``: a numpy copy of 1 MiB, of the order of a memory copy (0.02-0.07 ns/B measured)."""
    assert 1e-12 < tune.copy_seconds_per_byte(1 << 16, repeats=3) < 10e-9


def test_the_measured_terms_land_in_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A whole run over tcp (timings the model's): the crowded terms, ``copy_beta`` and ``calls`` are in
    the file written, and the crowded sweep's line is printed even with ``--quiet``."""
    monkeypatch.setattr(tune, "measure_outside", priced(TCP, "tcp"))
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.04e-9)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K,1M", "--no-split", "--quiet", "--out", str(path)]) == 0
    profile = load(path)
    costs = profile.costs("tcp")
    assert profile.calls == 2 and profile.cores == tune.usable_cpus()
    assert costs.copy_beta == 0.04e-9
    if tune.crowd_worlds(profile.cores):
        assert costs.crowd_wake > 0 and costs.crowd_beta > 0
        assert "# tcp crowded sweep (" in capsys.readouterr().out
    assert json.loads(path.read_text())["calls"] == 2


def test_two_ranks_timed_beside_other_work_keep_the_built_in_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where fewer than half of a part's calls ran undisturbed, a fit would price the other work: the
    built-in profile's constants of that part are kept, and the printout says so."""
    monkeypatch.setattr(tune, "measure_outside", priced(TCP, "tcp", outside=1.0))
    monkeypatch.setattr(tune, "RETRY_PAUSE", 0.0)
    log: list[str] = []
    costs, cache_bytes = tune.fit_transport("tcp", (8, 65536), 2, 1, 0.03e-9, log, CORES, calls=2)
    built_in = load(DEFAULT_FILE).costs("tcp")
    assert (costs.alpha, costs.beta, costs.exchange) == (built_in.alpha, built_in.beta, built_in.exchange)
    assert costs.gamma == 0.03e-9 and cache_bytes == 0
    assert "# tcp: too few calls undisturbed at 2 ranks; overhead, alpha, beta, exchange kept from the built-in" \
           " profile" in log
    monkeypatch.setattr(tune, "measure_outside", priced(TCP, "tcp", outside=0.0))
    costs, _ = tune.fit_transport("tcp", (8, 4096, 65536, 1 << 20), 2, 1, TCP.gamma, [], CORES, calls=2)
    assert costs.alpha == pytest.approx(TCP.alpha, rel=0.1)  # undisturbed: measured


def test_crowded_worlds_timed_beside_other_work_keep_the_built_in_crowd_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crowded sweep, too, keeps the built-in profile's terms where fewer than half its calls ran
    undisturbed (``built_in_terms``), and says so."""
    monkeypatch.setattr(tune, "measure_outside", priced(SHM, "shm", CACHE, outside=1.0))
    monkeypatch.setattr(tune, "RETRY_PAUSE", 0.0)
    log: list[str] = []
    start = dataclasses.replace(SHM, crowd_wake=0.0, crowd_beta=0.0, direct_sync=0.0)
    fitted = tune.fit_crowd("shm", start, CORES, 1, log, CACHE, 2)
    built_in = load(DEFAULT_FILE).costs("shm")
    assert (fitted.crowd_wake, fitted.crowd_beta, fitted.direct_sync) == (
        built_in.crowd_wake, built_in.crowd_beta, built_in.direct_sync)
    assert any(line.startswith("# shm: crowded sweep: only 0 of ") and line.endswith(
        "; crowd_wake, crowd_beta, direct_sync kept from the built-in profile") for line in log), log


def test_reads_call_is_what_the_smallest_all_gather_by_single_copies_costs_beyond_its_steps() -> None:
    """At 2 ranks every call by reads makes one C call and one copy of a peer, so fitted together the
    two fall into one (``reads_call`` went to 0); the all-gathers priced by their measured steps tell it."""
    costs = TransportCosts(0.0, 12e-6, 0.1e-9, 0.05e-9, direct_alpha=1e-6, reads_alpha=1e-6, reads_beta=0.05e-9,
                           peer_alpha=0.75e-6, peer_beta=0.036e-9, heap_beta=0.0205e-9)
    truth = dataclasses.replace(costs, reads_call=2e-6)
    gathers = [("all_gather", n, "direct") for n in (65536, 524288)]
    timed = [(case, tune.reads.once_time(case[1], 2, truth) + (0.5e-6 if case[1] > 65536 else 0.0))
             for case in gathers]
    assert tune.fit_reads_call(timed, 2, 2, 0, costs) == pytest.approx(2e-6)
    assert tune.fit_reads_call([], 2, 2, 0, costs) is None
    others: list[Case] = [("all_to_all", n, "direct") for n in (524288, 4 << 20)] + [("gather", 4 << 20, "direct")]
    times = [tune.reads.reads_time(c, n, 2, truth, 2) for c, n, _ in others]
    fitted = tune.fit_reads(others, times, 2, 2, costs, call=2e-6)
    assert fitted.reads_call == 2e-6
    assert fitted.reads_alpha == pytest.approx(truth.reads_alpha, rel=1e-6)
    assert fitted.reads_beta == pytest.approx(truth.reads_beta, rel=1e-6)
