"""``run``: SPMD on fresh actors in a placement group, results by rank, failures named,
and nothing left afterwards."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

import collectives.ray as cray

pytestmark = pytest.mark.ray

TIMEOUT = 30.0


def _gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _reduce(comm: Any, base: float) -> tuple[int, int, float, int]:
    x = np.array([base + comm.rank])
    comm.all_reduce(x)
    return comm.rank, comm.size, float(x[0]), os.getpid()


def _placement_groups_left(ray: Any) -> list[Any]:
    return [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]


def test_results_come_back_by_rank_and_the_actors_are_gone(ray_cluster: Any) -> None:
    got = cray.run(_reduce, 3, args=(10.0,), num_cpus=0.5, timeout=TIMEOUT)
    assert [g[:3] for g in got] == [(r, 3, 33.0) for r in range(3)]
    assert _gone([g[3] for g in got])
    assert _placement_groups_left(ray_cluster) == []


def _fails_on_rank_1(comm: Any) -> None:
    if comm.rank == 1:
        raise ValueError("bad input on this rank")
    comm.all_reduce(np.ones(4))  # the others wait for rank 1 (until the driver ends them)


def test_an_exception_names_its_rank_and_ends_every_actor(ray_cluster: Any) -> None:
    start = time.monotonic()
    with pytest.raises(cray.RayRankError, match=r"run: rank 1 \(Actor\(Rank, .*\) raised ValueError: bad input") as info:
        cray.run(_fails_on_rank_1, 2, num_cpus=0, timeout=TIMEOUT)
    assert info.value.rank == 1 and isinstance(info.value.__cause__, ValueError)
    assert time.monotonic() - start < TIMEOUT / 2  # not a timeout: the first failure ends it
    assert _placement_groups_left(ray_cluster) == []


def _hangs_on_rank_0(comm: Any) -> int:
    if comm.rank == 0:
        time.sleep(60)
    return os.getpid()


def test_a_rank_that_does_not_finish_is_named_within_the_timeout(ray_cluster: Any) -> None:
    start = time.monotonic()
    with pytest.raises(cray.RayRankTimeoutError, match=r"run: rank\(s\) 0 did not answer within 3 s") as info:
        cray.run(_hangs_on_rank_0, 2, num_cpus=0.5, timeout=3.0)
    assert info.value.ranks == [0]
    assert time.monotonic() - start < 3.0 + 20  # placing, connecting, then 3 s of fn at most


def test_a_world_the_cluster_cannot_hold_is_refused_in_time(ray_cluster: Any) -> None:
    with pytest.raises(cray.RayRankTimeoutError, match="could not be placed within 1 s"):
        cray.run(_reduce, 2, args=(0.0,), num_cpus=3, timeout=1.0)  # 6 CPUs of 4
    assert _placement_groups_left(ray_cluster) == []
