"""``collectives-tune``, in its smallest form: one transport, two sizes, one round."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectives import tune
from collectives.tuning.profile import DEFAULT_FILE, TransportCosts, load


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


def printed_steps(text: str) -> list[float]:
    """The shm row's ``peer_alpha_us``, ``peer_beta_ns/B`` and ``heap_beta_ns/B`` as printed."""
    lines = text.splitlines()
    header = next(line for line in lines if "peer_alpha_us" in line).split()[1:]  # less the "#"
    row = next(line for line in lines if line.startswith("  shm ")).split()
    return [float(row[header.index(name)]) for name in ("peer_alpha_us", "peer_beta_ns/B", "heap_beta_ns/B")]


@pytest.mark.multiprocess
def test_over_shm_it_measures_the_single_copies_and_keeps_the_built_in_ones_where_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The direct all-gather's single copies (``peer_alpha``, ``peer_beta``, ``heap_beta``), timed alone,
    of the order perf/cma_copies.py measured (0.56-0.87 µs, 0.022-0.037 and 0.020-0.022 ns/B), in the
    profile and its printout even with ``--quiet``; with COLLECTIVES_CROSS_MEMORY=0 the built-in ones,
    and it says so."""
    from collectives import single_copies
    from collectives.transports import cma

    if single_copies.unavailable() is not None or not cma.allowed_here():
        pytest.skip(single_copies.unavailable() or "cross-memory copies refused here")
    path = tmp_path / "tuned.json"
    args = ["--transports", "shm", "--sizes", "8,64K", "--rounds", "1", "--quiet", "--out", str(path)]
    assert tune.main(args) == 0
    costs = load(path).transports["shm"]
    assert 0.05e-6 < costs.peer_alpha < 10e-6
    assert 0.005e-9 < costs.peer_beta < 0.5e-9 and 0.005e-9 < costs.heap_beta < 0.5e-9
    text = capsys.readouterr().out
    assert "# shm single copies measured" in text
    assert printed_steps(text) == pytest.approx([costs.peer_alpha * 1e6, costs.peer_beta * 1e9,
                                                 costs.heap_beta * 1e9], abs=0.006)
    monkeypatch.setenv("COLLECTIVES_CROSS_MEMORY", "0")
    assert tune.main(args) == 0
    costs, built_in = load(path).transports["shm"], load(DEFAULT_FILE).transports["shm"]
    assert (costs.peer_alpha, costs.peer_beta, costs.heap_beta) == (built_in.peer_alpha, built_in.peer_beta,
                                                                     built_in.heap_beta)
    text = capsys.readouterr().out
    assert "# shm single copies not measured: cross-memory copies are not allowed" in text
    assert printed_steps(text) == pytest.approx([0.75, 0.036, 0.0205], abs=1e-4)


def test_where_the_copies_cannot_be_timed_it_keeps_the_built_in_ones_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives import single_copies

    built_in = load(DEFAULT_FILE).transports["shm"]
    unmeasured = TransportCosts(1e-6, 10e-6, 0.1e-9, 0.05e-9)

    def refused(**_: object) -> None:
        raise single_copies.CopiesRefused("the kernel refused a process_vm_readv")

    monkeypatch.setattr(single_copies, "measure", refused)
    for allowed, why in ((False, "not allowed here"), (True, "the kernel refused a process_vm_readv")):
        log: list[str] = []
        costs = tune.fit_copies(unmeasured, allowed, log)
        assert (costs.peer_alpha, costs.peer_beta, costs.heap_beta) == (built_in.peer_alpha, built_in.peer_beta,
                                                                         built_in.heap_beta)
        assert costs.alpha == unmeasured.alpha
        assert log[0].startswith("# shm single copies not measured") and why in log[0]


def test_a_line_at_or_below_zero_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives import single_copies

    monkeypatch.setattr(single_copies, "measure", lambda **_: (single_copies.Steps(-0.1e-6, 0.036e-9, 0.02e-9), []))
    log: list[str] = []
    costs = tune.fit_copies(TransportCosts(1e-6, 10e-6, 0.1e-9, 0.05e-9), True, log)
    assert costs.peer_alpha == load(DEFAULT_FILE).transports["shm"].peer_alpha
    assert "too noisy" in log[0]


def test_measured_copies_go_into_the_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives import single_copies

    steps = single_copies.Steps(0.6e-6, 0.04e-9, 0.022e-9)
    monkeypatch.setattr(single_copies, "measure", lambda **_: (steps, []))
    log: list[str] = []
    costs = tune.fit_copies(TransportCosts(1e-6, 10e-6, 0.1e-9, 0.05e-9), True, log)
    assert (costs.peer_alpha, costs.peer_beta, costs.heap_beta) == steps
    assert len(log) == 1 and log[0].startswith(
        "# shm single copies measured (two processes, a core each, blocks of 8-128 KiB, medians of 5"
        " lines): peer_alpha 0.60 us, peer_beta 0.0400 ns/B, heap_beta 0.0220 ns/B (")


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
