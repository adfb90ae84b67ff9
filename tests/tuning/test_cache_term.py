"""The last-level cache term: bytes beyond the cache cost more, old profiles price as before,
and the built-in profile's in-cache β keeps the tuner's large-call picks (choice runs 5 and 6:
the 2-rank ring reduce_scatter of 8 MiB measured 3.3 times the direct engine's time)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from collectives.errors import InvalidArgumentError
from collectives.sim.cluster import cluster
from collectives.sim.predict import predict as sim_predict
from collectives.tuning import tuner
from collectives.tuning.cache import beyond, footprint
from collectives.tuning.profile import Profile, TransportCosts, current, from_json, load

MiB = 1 << 20
SHM = TransportCosts(3e-6, 1e-5, 1e-10, 2e-11, 6e-6, 5e-11, cache_beta=1e-10)


def per_byte(profile: Profile, nbytes: int) -> float:
    return tuner.predict("reduce_scatter", "ring", nbytes, 2, "shm", 0, profile) / nbytes


def test_bytes_beyond_the_cache_cost_more_and_none_without_a_cache() -> None:
    with_cache = Profile({"shm": SHM}, "cache", 0.0, cache_bytes=4 * MiB)
    without = dataclasses.replace(with_cache, cache_bytes=0, source="no cache")
    assert beyond(footprint("reduce_scatter", MiB, 2, 2), 4 * MiB) == 0.0  # 3 MiB of buffers fit
    assert beyond(footprint("reduce_scatter", 32 * MiB, 2, 2), 4 * MiB) == pytest.approx(1 - 4 / 96)
    assert per_byte(with_cache, MiB) == pytest.approx(per_byte(without, MiB))
    # 32 MiB: each rank copies 16 MiB out and in; 96 MiB of buffers, 92 of them beyond the cache
    extra = per_byte(with_cache, 32 * MiB) - per_byte(without, 32 * MiB)
    assert extra == pytest.approx(0.5 * 1e-10 * (1 - 4 / 96), rel=0.1)


def test_a_profile_without_the_cache_prices_as_before(tmp_path: Path) -> None:
    doc = json.loads((Path(tuner.__file__).with_name("default_profile.json")).read_text())
    del doc["cache_bytes"]
    for costs in doc["transports"].values():
        del costs["cache_beta"]
    old = from_json(doc, "old")
    assert old.cache_bytes == 0 and old.costs("shm").cache_beta == 0.0
    explicit = dataclasses.replace(old, source="explicit", transports={
        name: dataclasses.replace(c, cache_beta=1e-9) for name, c in old.transports.items()})
    assert per_byte(old, 32 * MiB) == per_byte(explicit, 32 * MiB)  # no cache size: the term never applies
    path = tmp_path / "p.json"
    current().save(path)
    assert load(path) == current()  # cache_bytes and cache_beta survive the file


def test_a_wrong_cache_size_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="cache_bytes"):
        from_json({"cache_bytes": -1, "transports": {"shm": {"overhead": 0, "alpha": 0, "beta": 0, "gamma": 0}}},
                  "p.json")


def test_the_simulator_prices_the_cache_as_the_tuner_does() -> None:
    profile = current()
    c = cluster("shm", 3, None, profile, profile.cores)
    for n in (MiB, 8 * MiB, 32 * MiB):
        assert sim_predict("all_gather", "ring", n, c, "shm", profile) == pytest.approx(
            tuner.predict("all_gather", "ring", n, 3, "shm", 0, profile), rel=1e-9)


@pytest.mark.parametrize("collective", ["reduce_scatter", "all_gather"])
@pytest.mark.parametrize("nbytes", [2 * MiB, 8 * MiB])
def test_the_in_cache_beta_keeps_the_direct_engine_for_large_calls(collective: str, nbytes: int) -> None:
    profile = current()
    assert profile.costs("shm").beta < 0.12e-9  # the in-cache rate, not the loaded 0.191 ns/B
    assert tuner.choose(collective, nbytes, 2, "shm", True, 0, profile) == "direct"
    no_cache = dataclasses.replace(profile, cache_bytes=0, source="built-in without the cache term")
    assert tuner.choose(collective, nbytes, 2, "shm", True, 0, no_cache) == "ring"  # measured slower in runs 5, 6
