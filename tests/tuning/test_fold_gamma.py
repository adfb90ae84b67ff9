"""The folds beyond the cache: a fold into a rank's buffer that outgrows the cache costs
``FOLD_SPILL`` times ``cache_beta`` more than γ, times the share of that buffer (one rank's n, not
the host's footprint) beyond the cache; a tree's root, which folds every child's piece into its
buffer, pays it on each, so the 3-rank shm reduce of 32 MiB goes to the ring, while calls whose
buffers fit, tcp and several hosts price as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collectives.sim.cluster import cluster
from collectives.sim.predict import predict as sim_predict
from collectives.tuning import cache, tuner
from collectives.tuning.cache import beyond, fold_gamma, footprint
from collectives.tuning.profile import current

MiB = 1 << 20


@pytest.fixture(autouse=True)
def fresh_prices() -> Iterator[None]:
    tuner.predict.cache_clear()
    tuner._override.cache_clear()
    yield
    tuner.predict.cache_clear()
    tuner._override.cache_clear()


def prices(collective: str, nbytes: int, size: int, transport: str = "shm", per_host: int = 0) -> dict[str, float]:
    tuner.predict.cache_clear()
    return {a: tuner.predict(collective, a, nbytes, size, transport, per_host, current()) for a in tuner.FLAT}


def test_a_fold_into_a_buffer_beyond_the_cache_costs_a_share_of_cache_beta_more() -> None:
    gamma, cache_beta = 5e-11, 7e-11
    assert fold_gamma(gamma, cache_beta, 2 * MiB, 4 * MiB) == gamma  # the buffer fits
    assert fold_gamma(gamma, cache_beta, 32 * MiB, 4 * MiB) == pytest.approx(
        gamma + cache.FOLD_SPILL * cache_beta * (1 - 4 / 32))
    assert fold_gamma(gamma, 0.0, 32 * MiB, 4 * MiB) == gamma  # no cache_beta (tcp)
    assert fold_gamma(gamma, cache_beta, 32 * MiB, 0) == gamma  # no cache modelled


def test_the_rise_follows_one_ranks_buffer_not_the_hosts_footprint(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = current()
    n = 2 * MiB  # 3 ranks' buffers outgrow the cache, each rank's 2 MiB does not
    assert beyond(footprint("reduce", n, 3, 3), profile.cache_bytes) > 0
    assert beyond(n, profile.cache_bytes) == 0
    with_rise = prices("reduce", n, 3)
    monkeypatch.setattr(cache, "FOLD_SPILL", 0.0)
    assert prices("reduce", n, 3) == with_rise


def test_the_trees_root_pays_it_on_every_childs_piece_so_the_3_rank_reduce_of_32_mib_takes_the_ring(
        monkeypatch: pytest.MonkeyPatch) -> None:
    n = 32 * MiB
    raised = prices("reduce", n, 3)
    assert tuner.choose("reduce", n, 3, "shm", False, 0, current()) == "ring"
    monkeypatch.setattr(cache, "FOLD_SPILL", 0.0)
    tuner._override.cache_clear()
    plain = prices("reduce", n, 3)
    assert tuner.choose("reduce", n, 3, "shm", False, 0, current()) == "tree"
    # the ring's folds all read the ring in one pass, the copy the dearer even with the rise (the sixty-eighth
    # round); the tree's root folds its second child's pieces from scratch, each paying the rise
    assert raised["tree"] - plain["tree"] > raised["ring"] - plain["ring"] >= 0


def test_tcp_and_several_hosts_price_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 32 * MiB
    tcp, hosts = prices("reduce", n, 4, "tcp"), prices("reduce", n, 4, "tcp", 2)
    monkeypatch.setattr(cache, "FOLD_SPILL", 0.0)
    assert prices("reduce", n, 4, "tcp") == tcp
    assert prices("reduce", n, 4, "tcp", 2) == hosts


def test_the_simulator_prices_the_folds_as_the_tuner_does() -> None:
    profile = current()
    c = cluster("shm", 3, None, profile, profile.cores)
    for n in (8 * MiB, 32 * MiB):
        for algorithm in ("ring", "tree"):
            assert sim_predict("reduce", algorithm, n, c, "shm", profile) == pytest.approx(
                tuner.predict("reduce", algorithm, n, 3, "shm", 0, profile), rel=1e-9)
