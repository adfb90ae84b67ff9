"""``collectives-tune`` measures tcp's one-way α split: tree broadcasts at 3 ranks less 2 cost
the root's second send (``send_overhead``), tree reduces at 3 less 2 the root's taking of a
message already there (``recv_overhead``). Here the timings are the model's own, made with a
known split, so the fit must give that split back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collectives import tune
from collectives.timing import Case
from collectives.tuning import tuner
from collectives.tuning.machine import Machine, link_of
from collectives.tuning.profile import TransportCosts, load

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


def test_a_burst_no_dearer_at_3_ranks_than_at_2_fits_no_overheads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune, "measure", lambda cases, size, transport, **_: [5e-5] * len(cases))
    fitted = tune.fit_split("tcp", TransportCosts(3e-6, 20e-6, 0.3e-9, GAMMA), 1, [])
    assert (fitted.send_overhead, fitted.recv_overhead) == (0.0, 0.0)


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
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda: GAMMA)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,4K,64K", "--cores", "0", "--out", str(path)]) == 0
    costs = load(path).transports["tcp"]
    assert costs.send_overhead == pytest.approx(TRUE.send_overhead, rel=0.05)
    assert costs.recv_overhead == pytest.approx(TRUE.recv_overhead, rel=0.05)
    header, row = [line for line in capsys.readouterr().out.splitlines() if "send_overhead_us" in line
                   or line.startswith("  tcp ")][:2]
    assert header.split()[-2:] == ["send_overhead_us", "recv_overhead_us"]
    assert [float(v) for v in row.split()[-2:]] == pytest.approx([7.0, 1.5], abs=0.4)


def test_with_no_split_tcp_keeps_alpha_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tune, "measure", synthetic(TRUE))
    monkeypatch.setattr(tune, "fold_seconds_per_byte", lambda: GAMMA)
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K", "--cores", "0", "--no-split", "--quiet",
                      "--out", str(path)]) == 0
    costs = load(path).transports["tcp"]
    assert (costs.send_overhead, costs.recv_overhead) == (0.0, 0.0)
