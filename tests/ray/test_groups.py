"""``create_group`` / ``get_communicator`` / ``destroy_group`` from a driver, on plain
actors (no base class: everything runs through ``__ray_call__``)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

import collectives.ray as cray
from collectives import PeerLostError
from collectives.errors import InvalidArgumentError

pytestmark = pytest.mark.ray

TIMEOUT = 30.0


class Worker:
    """A user's actor class: nothing of collectives in it but get_communicator."""

    def all_reduce(self, name: str, value: float) -> tuple[int, int, list[float]]:
        comm = cray.get_communicator(name)
        x = np.array([value, comm.rank], dtype=np.float64)
        comm.all_reduce(x)
        return comm.rank, comm.size, x.tolist()

    def modules(self) -> list[str]:
        return [m for m in ("ray.util.collective", "torch") if m in sys.modules]

    def loop_until_failure(self, name: str) -> tuple[str, Any, str, float]:
        comm = cray.get_communicator(name)
        x = np.ones(1024)
        while True:
            try:
                comm.all_reduce(x)
            except Exception as exc:  # noqa: BLE001 - the test inspects what it was
                return type(exc).__name__, getattr(exc, "peer", None), str(exc), time.monotonic()


@pytest.fixture(scope="module")
def workers(ray_cluster: Any) -> Any:
    actors = [ray_cluster.remote(num_cpus=0)(Worker).remote() for _ in range(3)]
    ray_cluster.get([a.__ray_ready__.remote() for a in actors], timeout=60)
    yield actors
    for a in actors:
        ray_cluster.kill(a)


def test_importing_it_does_not_import_ray() -> None:
    code = "import sys, collectives.ray; assert 'ray' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_group_is_connected_in_list_order_and_reduces(ray_cluster: Any, workers: Any) -> None:
    order = [workers[2], workers[0], workers[1]]
    cray.create_group(order, "g", timeout=TIMEOUT)
    try:
        got = ray_cluster.get([a.all_reduce.remote("g", i + 1.0) for i, a in enumerate(order)], timeout=TIMEOUT)
        assert got == [(r, 3, [6.0, 3.0]) for r in range(3)]
        assert ray_cluster.get(order[0].modules.remote(), timeout=TIMEOUT) == []  # no torch, no ray.util.collective
    finally:
        cray.destroy_group("g")


def test_destroy_leaves_nothing_and_the_name_can_be_used_again(ray_cluster: Any, workers: Any) -> None:
    named = ray_cluster.util.list_named_actors(all_namespaces=True)
    from ray.experimental.internal_kv import _internal_kv_list

    keys = set(_internal_kv_list(""))
    cray.create_group(workers, timeout=TIMEOUT)
    with pytest.raises(InvalidArgumentError, match="group 'default' exists"):
        cray.create_group(workers, timeout=TIMEOUT)
    assert set(_internal_kv_list("")) == keys
    cray.destroy_group()
    assert ray_cluster.util.list_named_actors(all_namespaces=True) == named
    assert set(_internal_kv_list("")) == keys
    with pytest.raises(ray_cluster.exceptions.RayTaskError, match="no group 'default' in this process"):
        ray_cluster.get(workers[0].all_reduce.remote("default", 1.0), timeout=TIMEOUT)
    with pytest.raises(InvalidArgumentError, match="no group 'default'"):
        cray.destroy_group()
    cray.create_group(workers[:2], timeout=TIMEOUT)  # the same name, other members
    try:
        got = ray_cluster.get([a.all_reduce.remote("default", 2.0) for a in workers[:2]], timeout=TIMEOUT)
        assert got == [(0, 2, [4.0, 1.0]), (1, 2, [4.0, 1.0])]
    finally:
        cray.destroy_group()


def test_a_dead_actor_is_named_and_the_group_is_not_made(ray_cluster: Any, workers: Any) -> None:
    dead = ray_cluster.remote(num_cpus=0)(Worker).remote()
    ray_cluster.kill(dead)
    with pytest.raises(cray.RayRankError, match=r"create_group\('h'\): rank 1 \(Actor\(Worker, .*\) died") as info:
        cray.create_group([workers[0], dead], "h", timeout=TIMEOUT)
    assert info.value.rank == 1 and info.value.died
    cray.create_group(workers[:2], "h", timeout=TIMEOUT)  # nothing of the failed one in the way
    cray.destroy_group("h")


def test_a_failed_create_group_leaves_a_group_of_the_same_name_alone(ray_cluster: Any, workers: Any) -> None:
    """As when another driver made group 'c' on an actor: this driver's attempt fails on
    that actor, and its clean-up closes only what the attempt made."""
    cray.create_group(workers[:2], "c", timeout=TIMEOUT)
    try:
        first = cray.group._groups.pop("c")  # this driver forgets it; the actors do not
        with pytest.raises(cray.RayRankError, match=r"rank 1 .* raised InvalidArgumentError: this actor is "
                                                    r"already rank 0 of group 'c'"):
            cray.create_group([workers[2], workers[0]], "c", timeout=1.5)  # workers[0] refuses at once
        got = ray_cluster.get([a.all_reduce.remote("c", 1.0) for a in workers[:2]], timeout=TIMEOUT)
        assert got == [(0, 2, [2.0, 1.0]), (1, 2, [2.0, 1.0])]
    finally:
        cray.group._groups["c"] = first
        cray.destroy_group("c")
    ray_cluster.get(workers[2].__ray_ready__.remote(), timeout=TIMEOUT)  # its join gave up (1.5 s) and cleaned up


def test_not_an_actor_is_refused_before_anything_runs(workers: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"actors\[1\] is str"):
        cray.create_group([workers[0], "worker"])


# Over TCP in a world of 4, rank 2 may wait only on rank 3, which raised (and lives on):
# rank 3 recorded why and left, so rank 2 names rank 1 too, at once (collectives/diagnose.py).
@pytest.mark.parametrize(("transport", "world"), [("shm", 4), ("tcp", 4)])
def test_an_actor_killed_mid_collective_is_named_by_every_survivor(ray_cluster: Any, transport: str,
                                                                    world: int) -> None:
    timeout = 10.0
    actors = [ray_cluster.remote(num_cpus=0)(Worker).remote() for _ in range(world)]
    ray_cluster.get([a.__ray_ready__.remote() for a in actors], timeout=60)  # started: the timeout is the group's
    try:
        cray.create_group(actors, "k", transport=transport, timeout=timeout)
        loops = [a.loop_until_failure.remote("k") for a in actors]
        time.sleep(0.5)
        ray_cluster.kill(actors[1])
        killed = time.monotonic()
        got = ray_cluster.get([loop for rank, loop in enumerate(loops) if rank != 1], timeout=timeout + 10)
        for kind, peer, message, at in got:
            assert kind == PeerLostError.__name__ and peer == 1 and "rank 1" in message, message
            assert at - killed < timeout / 2, (at - killed, message)  # not a timeout
            print(f"\nFIGURE ray {transport} n={world}: survivor raised {at - killed:.2f} s after the kill")
    finally:
        cray.destroy_group("k")
        for a in actors:
            ray_cluster.kill(a)
