"""The model's costs beyond the wire: exchanges, ranks queueing for cores, mixed waits; and
the profile fields that carry them (optional, so older profiles still load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectives.tuning import tuner
from collectives.tuning import profile as profiles
from collectives.tuning.machine import LinkClass, Machine
from collectives.tuning.profile import Profile, TransportCosts

ALPHA = 10e-6


def link(exchange: float = 0.0, wake: float = 0.0) -> LinkClass:
    return LinkClass("x", ALPHA, 0.0, 0.5, exchange, wake)


def test_an_exchange_costs_more_than_a_one_way_step() -> None:
    """Two ranks: a broadcast is one message one way, a recursive all-gather one exchange;
    ``exchange`` is added to the second only."""
    def make() -> Machine:
        return Machine(2, 2, link(exchange=7e-6))

    assert tuner.replay_time("broadcast", "tree", 8, make) == pytest.approx(ALPHA)
    assert tuner.replay_time("all_gather", "recursive", 8, make) == pytest.approx(ALPHA + 7e-6)


def test_ranks_beyond_the_cores_queue_for_them_in_a_ring_but_hardly_in_a_chain() -> None:
    """Four ranks on two cores: every step of a ring all-gather has all four sending at once,
    so each step takes two rounds of the cores; a ring broadcast is a chain, one rank busy at
    a time, and costs what it costs with a core each."""
    def machine(cores: int) -> Machine:
        return Machine(4, 4, link(), cores=cores)

    ring_free = tuner.replay_time("all_gather", "ring", 16, lambda: machine(0))
    ring_queued = tuner.replay_time("all_gather", "ring", 16, lambda: machine(2))
    assert ring_free == pytest.approx(3 * ALPHA)
    assert ring_queued == pytest.approx(2 * ring_free)
    chain_free = tuner.replay_time("broadcast", "ring", 16, lambda: machine(0))
    assert tuner.replay_time("broadcast", "ring", 16, lambda: machine(2)) == pytest.approx(chain_free)


def test_a_waiting_rank_pays_its_wake_only_where_cores_are_short() -> None:
    def make(cores: int) -> Machine:
        return Machine(3, 3, link(wake=5e-6), cores=cores)

    free = tuner.replay_time("broadcast", "ring", 8, lambda: make(0))
    assert free == pytest.approx(2 * ALPHA)  # a chain of two hops; nobody queues, nobody pays a wake
    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(2)) == pytest.approx(2 * ALPHA + 2 * 5e-6)


def test_a_wait_over_two_kinds_of_link_pays_the_mixed_wait() -> None:
    """Two hosts of two: a ring step of rank 1 receives over shared memory from 0 and sends
    over the NIC to 2; recursive doubling talks to one kind of link per step."""
    def make(mixed: float) -> Machine:
        return Machine(4, 2, LinkClass("shm", ALPHA, 0.0), LinkClass("tcp", ALPHA, 0.0), mixed_wait=mixed)

    for algorithm in ("ring", "recursive"):
        plain = tuner.replay_time("all_gather", algorithm, 64, lambda: make(0.0))
        mixed = tuner.replay_time("all_gather", algorithm, 64, lambda: make(100e-6))
        if algorithm == "ring":
            assert mixed >= plain + 100e-6
        else:
            assert mixed == pytest.approx(plain)


def test_an_oversubscribed_machine_beyond_the_replay_is_priced_with_cores_shared_evenly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above REPLAY_RANKS one rank's steps price everyone's; queueing cannot be replayed there,
    so the cores are shared evenly (every cost times ranks per core)."""
    monkeypatch.setattr(tuner, "REPLAY_RANKS", 4)
    free = tuner.replay_time("all_reduce", "ring", 1 << 16, lambda: Machine(8, 8, link()))
    shared = tuner.replay_time("all_reduce", "ring", 1 << 16, lambda: Machine(8, 8, link(), cores=2))
    assert shared == pytest.approx(4 * free)


def test_the_tuner_models_the_profiles_cores() -> None:
    costs = TransportCosts(0.0, ALPHA, 1e-10, 0.0)
    plain = Profile({"tcp": costs}, "no cores")
    two = Profile({"tcp": costs}, "two cores", cores=2)
    assert tuner.predict("all_gather", "ring", 64, 4, "tcp", 0, two) == pytest.approx(
        2 * tuner.predict("all_gather", "ring", 64, 4, "tcp", 0, plain))
    assert tuner.predict("all_gather", "ring", 64, 2, "tcp", 0, two) == pytest.approx(
        tuner.predict("all_gather", "ring", 64, 2, "tcp", 0, plain))


def test_profiles_without_the_new_fields_still_load_and_new_ones_survive_their_file(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"transports": {"tcp": {"overhead": 1e-5, "alpha": 2e-5, "beta": 1e-10,
                                                      "gamma": 1e-11}}}))
    loaded = profiles.load(old)
    assert loaded.cores == 0 and loaded.transports["tcp"].wake == 0.0
    new = Profile({"tcp": TransportCosts(1e-5, 2e-5, 1e-10, 1e-11, exchange=3e-6, wake=4e-6, mixed_wait=5e-4)},
                  "new", cores=2)
    new.save(tmp_path / "new.json")
    assert profiles.load(tmp_path / "new.json") == new
    assert "mixed_wait_us" in "\n".join(new.describe())


@pytest.mark.parametrize("cores", [-1, 1.5, True])
def test_a_profile_with_bad_cores_is_refused(tmp_path: Path, cores: object) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"cores": cores, "transports": {"tcp": {"overhead": 0, "alpha": 0, "beta": 0,
                                                                        "gamma": 0}}}))
    with pytest.raises(profiles.InvalidArgumentError, match="cores"):
        profiles.load(path)
