"""``collectives-tune`` measures tcp's one-way α split: tree broadcasts at 3 ranks less 2 cost
the root's second send (``send_overhead``), tree reduces at 3 less 2 the root's taking of a
message already there (``recv_overhead``). Here the timings are the model's own, made with a
known split, so the fit must give that split back."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collectives import tune
from collectives.timing import Case
from collectives.tuning import tuner
from collectives.tuning.machine import Machine, link_of
from collectives.tuning.profile import Profile, TransportCosts, load

GAMMA = 0.1e-9
TRUE = TransportCosts(3e-6, 20e-6, 0.3e-9, GAMMA, send_overhead=7e-6, recv_overhead=1.5e-6)


def synthetic(costs: TransportCosts) -> Any:
    """A stand-in for ``timing.measure``: each case's time as the model prices it with ``costs``."""
    def measure(cases: Sequence[Case], size: int, transport: str, **_: Any) -> list[float]:
        return [tuner.replay_time(c, a, n, lambda: Machine(size, size, link_of("t", costs), gamma=GAMMA,
                                                            overhead=costs.overhead)) for c, n, a in cases]
    return measure


def test_the_split_is_fitted_back_from_bursts_priced_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure", synthetic(TRUE))
    log: list[str] = []
    unsplit = TransportCosts(TRUE.overhead, TRUE.alpha, TRUE.beta, GAMMA)
    fitted = tune.fit_split("tcp", unsplit, 1, log)
    assert fitted.send_overhead == pytest.approx(TRUE.send_overhead, rel=1e-3)
    assert fitted.recv_overhead == pytest.approx(TRUE.recv_overhead, rel=1e-3)
    assert (fitted.alpha, fitted.overhead, fitted.beta) == (TRUE.alpha, TRUE.overhead, TRUE.beta)
    assert any("broadcast" in line and "3 ranks" in line for line in log)


def test_a_burst_no_dearer_at_3_ranks_than_at_2_splits_alpha_with_the_least_send(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The root's second send cost nothing: its sender went on at once. At 0 the model would leave α
    whole (each send α, the 3-rank burst dearer by a whole α), so the fit writes the least split instead."""
    monkeypatch.setattr(tune, "measure", lambda cases, size, transport, **_: [5e-5] * len(cases))
    costs = TransportCosts(3e-6, 20e-6, 0.3e-9, GAMMA)
    fitted = tune.fit_split("tcp", costs, 1, [])
    assert (fitted.send_overhead, fitted.recv_overhead) == (costs.alpha * tune.LEAST_SEND, 0.0)


CROWDED = TransportCosts(0.0, 15e-6, 0.35e-9, GAMMA, exchange=6e-6, crowd_wake=18e-6, crowd_beta=0.02e-9,
                         send_overhead=4e-6, recv_overhead=1e-6)


def crowded(costs: TransportCosts, cores: int = 2, calls: int = 2) -> Any:
    """A stand-in for ``timing.measure``: each case as the model prices it on hosts of ``cores`` cores, where
    3 ranks on 2 cores queue for them."""
    profile = Profile({"tcp": costs}, cores=cores, calls=calls)

    def measure(cases: Sequence[Case], size: int, transport: str, **_: Any) -> list[float]:
        return [tuner.predict(c, a, n, size, transport, 0, profile) for c, n, a in cases]
    return measure


def test_the_split_is_fitted_back_from_bursts_in_a_crowded_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 ranks on 2 cores wait for a core: priced without the crowded terms, that wait went into
    ``recv_overhead`` (capped at α less ``send_overhead`` in most sweeps of this machine)."""
    monkeypatch.setattr(tune, "measure", crowded(CROWDED))
    start = dataclasses.replace(CROWDED, send_overhead=0.0, recv_overhead=0.0)
    fitted = tune.fit_split("tcp", start, 1, [], cores=2, calls=2)
    assert fitted.send_overhead == pytest.approx(CROWDED.send_overhead, rel=0.02)
    assert fitted.recv_overhead == pytest.approx(CROWDED.recv_overhead, rel=0.02)
    blind = tune.fit_split("tcp", start, 1, [])  # as if every rank had a core
    assert abs(blind.recv_overhead - CROWDED.recv_overhead) > CROWDED.recv_overhead


def test_a_crowded_tune_writes_the_split_that_priced_its_bursts(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """The whole run on 2 cores: the crowded terms are fitted first, then the split with them, then both again,
    each with the other's (``tune.CROWD_SPLIT_PASSES``: fitted once, with α unsplit, ``crowd_wake`` came out 15.0 us
    against 18 and the split after it 2.5 and 0.3 us against 4 and 1; twice, 18.4, 3.9 and 0.9)."""
    profile = Profile({"tcp": CROWDED}, cores=2, calls=2)
    monkeypatch.setattr(tune, "measure", crowded(CROWDED))
    monkeypatch.setattr(tune, "measure_outside", lambda cases, size, t, **_: (
        [[tuner.predict(c, a, n, size, t, 0, profile)] for c, n, a in cases], [0.0] * len(cases)))
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: GAMMA)
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.0)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,4K,64K,1M", "--cores", "2", "--quiet",
                      "--out", str(path)]) == 0
    costs = load(path).transports["tcp"]
    assert costs.send_overhead == pytest.approx(CROWDED.send_overhead, rel=0.25)
    assert costs.recv_overhead == pytest.approx(CROWDED.recv_overhead, abs=0.5e-6)


def test_a_crowded_tune_times_its_crowded_worlds_and_bursts_once(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """The second pass of the crowded fit and the split fits the first pass's timings again: it times nothing."""
    profile = Profile({"tcp": CROWDED}, cores=2, calls=2)
    timed: list[tuple[str, int, int]] = []

    def measure(cases: Sequence[Case], size: int, transport: str, **_: Any) -> list[float]:
        timed.append(("bursts", size, len(cases)))
        return crowded(CROWDED)(cases, size, transport)

    def outside(cases: Sequence[Case], size: int, t: str, **_: Any) -> tuple[list[list[float]], list[float]]:
        timed.append(("sweep", size, len(cases)))
        return [[tuner.predict(c, a, n, size, t, 0, profile)] for c, n, a in cases], [0.0] * len(cases)

    monkeypatch.setattr(tune, "measure", measure)
    monkeypatch.setattr(tune, "measure_outside", outside)
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: GAMMA)
    monkeypatch.setattr(tune, "copy_seconds_per_byte", lambda: 0.0)
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K", "--cores", "2", "--quiet",
                      "--out", str(tmp_path / "tuned.json")]) == 0
    crowd, bursts = len(tune.crowd_cases("tcp")), len(tune.split_cases())
    assert timed == [("sweep", 2, 6), ("sweep", 3, crowd), ("sweep", 4, crowd), ("bursts", 2, bursts),
                     ("bursts", 3, bursts)]


def test_the_split_never_exceeds_alpha_and_a_capped_one_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure",
                        lambda cases, size, transport, **_: [1e-3 * (size - 1)] * len(cases))
    log: list[str] = []
    fitted = tune.fit_split("tcp", TransportCosts(3e-6, 20e-6, 0.3e-9, GAMMA), 1, log)
    assert fitted.send_overhead + fitted.recv_overhead <= fitted.alpha * (1 + 1e-12)
    assert any("recv_overhead capped" in line for line in log)


def test_the_tuned_tcp_profile_keeps_and_prints_the_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tune, "measure", synthetic(TRUE))
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: GAMMA)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,4K,64K", "--cores", "0", "--calls", "1",  # as ``synthetic``
                      "--out", str(path)]) == 0
    costs = load(path).transports["tcp"]
    assert costs.send_overhead == pytest.approx(TRUE.send_overhead, rel=0.05)
    assert costs.recv_overhead == pytest.approx(TRUE.recv_overhead, rel=0.05)
    header, row = [line for line in capsys.readouterr().out.splitlines() if "send_overhead_us" in line
                   or line.startswith("  tcp ")][:2]
    at = header.split().index("send_overhead_us") - 1  # the header's "#" has no value below it
    assert header.split()[at + 1:at + 3] == ["send_overhead_us", "recv_overhead_us"]
    assert [float(v) for v in row.split()[at:at + 2]] == pytest.approx([7.0, 1.5], abs=0.4)


def test_with_no_split_tcp_keeps_alpha_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tune, "measure", synthetic(TRUE))
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda nbytes: GAMMA)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K", "--cores", "0", "--no-split", "--quiet",
                      "--out", str(path)]) == 0
    costs = load(path).transports["tcp"]
    assert (costs.send_overhead, costs.recv_overhead) == (0.0, 0.0)
