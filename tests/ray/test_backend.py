"""``collectives`` as a ``ray.util.collective`` backend: the imperative
(``init_collective_group``), declarative (``create_collective_group`` from the driver) and
experimental (``ray.experimental.collective``) ways in, every operation on numpy arrays and
torch CPU tensors, results checked against numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import collectives.ray as cray

pytestmark = pytest.mark.ray

TIMEOUT = 60.0
N = 6


class Member:
    """A user's actor: only ray.util.collective calls in it."""

    def setup(self) -> None:
        cray.register()  # what worker_process_setup_hook would do

    def init(self, world_size: int, rank: int, name: str) -> None:
        import ray.util.collective as col

        col.init_collective_group(world_size, rank, backend="collectives", group_name=name)

    def everything(self, name: str, kind: str) -> dict[str, list[float]]:
        import ray.util.collective as col
        import torch
        from ray.util.collective.types import ReduceOp

        col.barrier(name)  # a declared group is made on its first call; get_rank does not make it
        rank, size = col.get_rank(name), col.get_collective_group_size(name)

        def make(values: Any) -> Any:
            a = np.asarray(values, dtype=np.float32)
            return torch.from_numpy(a.copy()) if kind == "torch" else a.copy()

        def plain(x: Any) -> list[float]:
            return [float(v) for v in (x.numpy() if kind == "torch" else x)]

        got: dict[str, list[float]] = {}
        x = make(np.arange(N) + 10 * rank)
        col.allreduce(x, name)
        got["allreduce"] = plain(x)
        x = make(np.arange(N) + 10 * rank)
        col.allreduce(x, name, op=ReduceOp.MAX)
        got["allreduce_max"] = plain(x)
        outs = [make(np.zeros(N)) for _ in range(size)]
        col.allgather(outs, make(np.arange(N) + 10 * rank), name)
        got["allgather"] = [v for o in outs for v in plain(o)]
        out = make(np.zeros(N))
        col.reducescatter(out, [make(np.arange(N) + 100 * r + rank) for r in range(size)], name)
        got["reducescatter"] = plain(out)
        x = make(np.full(N, rank + 1.0))
        col.broadcast(x, 1, name)
        got["broadcast"] = plain(x)
        x = make(np.full(N, rank + 1.0))
        col.reduce(x, 0, name)
        got["reduce_root"] = plain(x) if rank == 0 else []
        col.barrier(name)
        if rank == 0:
            col.send(make(np.arange(N) * 3.0), 1, name)
        elif rank == 1:
            x = make(np.zeros(N))
            col.recv(x, 0, name)
            got["recv"] = plain(x)
        return got


def _expected(size: int) -> dict[str, list[float]]:
    ar = sum(np.arange(N) + 10 * r for r in range(size))
    return {
        "allreduce": ar.tolist(),
        "allreduce_max": (np.arange(N) + 10 * (size - 1)).tolist(),
        "allgather": np.concatenate([np.arange(N) + 10 * r for r in range(size)]).tolist(),
        "broadcast": [2.0] * N,
    }


def _check(results: list[dict[str, list[float]]]) -> None:
    size = len(results)
    want = _expected(size)
    for rank, got in enumerate(results):
        for key, values in want.items():
            assert got[key] == values, (rank, key)
        assert got["reducescatter"] == sum(np.arange(N) + 100 * rank + r for r in range(size)).tolist()
    assert results[0]["reduce_root"] == [float(sum(range(1, size + 1)))] * N
    assert results[1]["recv"] == (np.arange(N) * 3.0).tolist()


@pytest.fixture(scope="module")
def members(ray_cluster: Any) -> Any:
    pytest.importorskip("torch")
    cray.register()
    actors = [ray_cluster.remote(num_cpus=0)(Member).remote() for _ in range(2)]
    ray_cluster.get([a.setup.remote() for a in actors], timeout=TIMEOUT)
    yield actors
    for a in actors:
        ray_cluster.kill(a)


def _gcs_keys() -> set[bytes]:
    from ray.experimental.internal_kv import _internal_kv_list

    return set(_internal_kv_list(b"", namespace="collectives"))


def test_init_collective_group_in_each_actor(ray_cluster: Any, members: Any) -> None:
    ray_cluster.get([a.init.remote(2, r, "imperative") for r, a in enumerate(members)], timeout=TIMEOUT)
    assert _gcs_keys() == set()  # rank 0 took its rendezvous key back
    for kind in ("numpy", "torch"):
        _check(ray_cluster.get([a.everything.remote("imperative", kind) for a in members], timeout=TIMEOUT))


def test_create_collective_group_from_the_driver(ray_cluster: Any, members: Any) -> None:
    import ray.util.collective as col

    col.create_collective_group(members, 2, [1, 0], backend="collectives", group_name="declared")
    try:
        results = ray_cluster.get([a.everything.remote("declared", "numpy") for a in reversed(members)],
                                  timeout=TIMEOUT)
        _check(results)
    finally:
        ray_cluster.get([a.__ray_call__.remote(lambda self: col.destroy_collective_group("declared"))
                         for a in members], timeout=TIMEOUT)


def test_ray_experimental_collective(ray_cluster: Any, members: Any) -> None:
    from ray.experimental.collective import create_collective_group, destroy_collective_group

    create_collective_group(members, backend="collectives", name="experimental")
    try:
        _check(ray_cluster.get([a.everything.remote("experimental", "torch") for a in members], timeout=TIMEOUT))
    finally:
        destroy_collective_group("experimental")
