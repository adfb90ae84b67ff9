"""The memory floor: a one-host schedule beyond the cache takes at least the bytes all its ranks
stream to and from memory, at ``cache_beta`` a byte times the share beyond the cache; sends of
what the rank already wrote, tcp, several hosts and calls within the cache pay none."""

from __future__ import annotations

import dataclasses

import pytest

from collectives.algorithms.schedule import Recv, Send
from collectives.sim.cluster import cluster
from collectives.sim.predict import predict as sim_predict
from collectives.tuning import cache, memory, tuner
from collectives.tuning.cache import beyond, footprint
from collectives.tuning.machine import LinkClass
from collectives.tuning.profile import current

MiB = 1 << 20


def test_a_send_reads_a_range_once_a_receive_writes_it_a_fold_reads_and_writes_it() -> None:
    sender = [(Send(1, 0, 10),), (Send(1, 10, 10),)]
    folder = [(Recv(0, 0, 10, reduce=True),), (Recv(0, 10, 10),)]
    assert memory.streamed([sender, folder], 4) == 4 * (10 + 10 + 2 * 10 + 10)


def test_a_range_the_rank_wrote_in_the_call_goes_out_from_the_cache() -> None:
    relay = [(Recv(0, 0, 10, reduce=True),), (Send(2, 0, 10), Send(2, 10, 5))]
    assert memory.streamed([relay], 1) == 2 * 10 + 5  # the fold, then only the 5 it never wrote


def test_the_floor_is_the_streamed_bytes_at_cache_beta_times_the_share_beyond() -> None:
    link = LinkClass("shm", 1e-5, 1e-10, cache_beta=7e-11)
    assert memory.floor_time(1000, link, 0.5) == 1000 * 7e-11 * 0.5
    assert memory.floor_time(1000, link, 0.0) == 0.0
    assert memory.floor_time(1000, dataclasses.replace(link, cache_beta=0.0), 0.5) == 0.0


def test_the_2_rank_reduce_streams_three_times_its_bytes() -> None:
    # the sender reads its x, the root folds every piece into its x (read and written)
    for algorithm in ("ring", "tree"):
        assert tuner.streamed("reduce", algorithm, 8 * MiB, 2) == 3 * 8 * MiB


def test_the_large_2_rank_reduce_on_shm_is_priced_at_its_memory_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    # the folds' rise beyond the cache (cache.fold_gamma) lifts the replay of 8 MiB just above the
    # floor; without it the replay is below and the floor prices the call
    monkeypatch.setattr(cache, "FOLD_SPILL", 0.0)
    tuner.predict.cache_clear()
    try:
        profile = current()
        shm = profile.costs("shm")
        n = 8 * MiB
        share = beyond(footprint("reduce", n, 2, 2), profile.cache_bytes)
        floor = 3 * n * shm.cache_beta * share
        assert share > 0
        assert tuner.predict("reduce", "ring", n, 2, "shm", 0, profile) == floor
        c = cluster("shm", 2, None, profile, 2)
        assert sim_predict("reduce", "ring", n, c, "shm", profile) == floor
    finally:
        tuner.predict.cache_clear()


def test_no_floor_within_the_cache_for_the_direct_engine_or_beyond_the_replayed_ranks() -> None:
    link = LinkClass("shm", 1e-5, 1e-10, cache_beta=7e-11)
    assert tuner.memory_floor("reduce", "ring", 8 * MiB, 2, link, 0.0) == 0.0
    assert tuner.memory_floor("reduce", "direct", 8 * MiB, 2, link, 0.5) == 0.0
    assert tuner.memory_floor("reduce", "ring", 8 * MiB, tuner.REPLAY_RANKS + 1, link, 0.5) == 0.0
    assert tuner.memory_floor("reduce", "ring", 8 * MiB, 2, link, 0.5) > 0.0


def test_one_host_on_shm_has_the_floor_tcp_and_two_hosts_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "floor_time", lambda streamed_bytes, link, share: 1.0 if link.cache_beta else 0.0)
    tuner.predict.cache_clear()
    try:
        profile = current()
        assert profile.costs("tcp").cache_beta == 0.0
        assert tuner.predict("reduce", "ring", 8 * MiB, 4, "shm", 0, profile) == 1.0
        assert tuner.predict("reduce", "ring", 8 * MiB, 4, "tcp", 0, profile) < 1.0
        assert tuner.predict("reduce", "ring", 8 * MiB, 4, "tcp", 2, profile) < 1.0  # shm within the hosts
        assert sim_predict("reduce", "ring", 8 * MiB, cluster("tcp", 4, 2, profile, 2), "tcp", profile) < 1.0
    finally:
        tuner.predict.cache_clear()
