"""``collectives-tune``, in its smallest form: one transport, two sizes, one round."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectives import tune
from collectives.tuning.profile import load


def test_the_fit_is_nonnegative_and_exact_where_it_can_be() -> None:
    rows = [[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]
    assert tune.nonnegative_fit(rows, [3.0, 5.0, 7.0]) == pytest.approx([1.0, 2.0])
    assert min(tune.nonnegative_fit(rows, [7.0, 5.0, 3.0])) >= 0.0


@pytest.mark.multiprocess
def test_a_tiny_sweep_writes_a_profile_and_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--sizes", "8,64K", "--rounds", "1", "--out", str(path)]) == 0
    profile = load(path)
    costs = profile.transports["tcp"]
    assert costs.alpha + costs.overhead > 0 and costs.gamma > 0
    text = capsys.readouterr().out
    assert "alpha_us" in text and "measured" in text and str(path) in text


@pytest.mark.multiprocess
def test_over_shm_it_fits_the_reads_where_the_kernel_allows_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """512 KiB and 2 MiB are beyond the small window of gather and scatter (2 MiB of all-to-all):
    those calls go by reads, and the profile prices them; with COLLECTIVES_CROSS_MEMORY=0 it
    leaves them 0 (the schedules)."""
    from collectives.transports import cma

    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "shm", "--sizes", "8,512K,2M", "--rounds", "1", "--out", str(path)]) == 0
    costs = load(path).transports["shm"]
    assert (costs.reads_beta > 0) == cma.allowed_here()
    assert "gather     direct" in capsys.readouterr().out or not cma.allowed_here()
    monkeypatch.setenv("COLLECTIVES_CROSS_MEMORY", "0")
    assert tune.main(["--transports", "shm", "--sizes", "8,512K,2M", "--rounds", "1", "--out", str(path)]) == 0
    costs = load(path).transports["shm"]
    assert costs.reads_alpha == costs.reads_beta == 0.0


@pytest.mark.multiprocess
@pytest.mark.netns
def test_with_netns_it_also_fits_tcp_between_two_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collectives.testing.netns import unavailable

    if unavailable() is not None:
        pytest.skip(unavailable())
    path = tmp_path / "tuned.json"
    assert tune.main(["--transports", "tcp", "--netns", "--sizes", "8,64K", "--rounds", "1", "--out", str(path)]) == 0
    profile = load(path)
    assert set(profile.transports) == {"tcp", "tcp_hosts"}
    assert profile.between_hosts("tcp") is profile.transports["tcp_hosts"]
    assert "tcp_hosts all_reduce" in capsys.readouterr().out
