"""The ``"COLLECTIVES"`` Ray Direct Transport: ``@ray.method(tensor_transport="COLLECTIVES")``
moves an actor's returned tensors to the actor task that takes the reference over the
group's communicator, not the object store; over groups of ``collectives.ray`` and of Ray's
``ray.experimental.collective`` alike."""

from __future__ import annotations

from typing import Any

import pytest

import collectives.ray as cray
from collectives.ray.tensor_transport import groups_with, register_tensor_transport

pytestmark = pytest.mark.ray

TIMEOUT = 60.0


class Holder:
    """An actor whose method results stay in it until another actor needs them."""

    def setup(self) -> None:
        cray.register()  # for the ray.util.collective group below (worker_process_setup_hook's job)

    def make(self, n: int, scale: float) -> dict[str, Any]:
        import torch

        return {"x": torch.arange(n, dtype=torch.float32) * scale, "y": torch.ones(3, 2, dtype=torch.int64), "n": n}

    def digest(self, value: dict[str, Any]) -> tuple[float, list[int], str, int]:
        x, y = value["x"], value["y"]
        return float(x.double().sum()), list(y.shape), str(y.dtype), value["n"]

    def moved(self) -> tuple[int, int]:
        """Bytes this process's COLLECTIVES transport sent and received (Ray registers it
        here with the first call that uses it)."""
        from ray.experimental.rdt.util import get_tensor_transport_manager, transport_manager_info

        if "COLLECTIVES" not in transport_manager_info:
            return 0, 0
        transport = get_tensor_transport_manager("COLLECTIVES")
        return transport.sent_bytes, transport.received_bytes


@pytest.fixture(scope="module")
def holders(ray_cluster: Any) -> Any:
    register_tensor_transport()  # before the actors are made: Ray hands it to each
    make = ray_cluster.method(tensor_transport="COLLECTIVES")(Holder.make)
    actor_class = ray_cluster.remote(num_cpus=0)(type("RdtHolder", (Holder,), {"make": make}))
    actors = [actor_class.remote() for _ in range(3)]
    ray_cluster.get([a.setup.remote() for a in actors], timeout=TIMEOUT)
    yield actors
    for actor in actors:
        ray_cluster.kill(actor)


def _expected(n: int, scale: float) -> tuple[float, list[int], str, int]:
    return (scale * n * (n - 1) / 2, [3, 2], "torch.int64", n)


def test_tensors_move_between_members_of_a_group(ray_cluster: Any, holders: Any) -> None:
    cray.create_group(holders, name="rdt", timeout=TIMEOUT)
    try:
        assert groups_with(holders[0], holders[2]) == [("rdt", False, [0, 2])]
        before = ray_cluster.get([holders[0].moved.remote(), holders[2].moved.remote()], timeout=TIMEOUT)
        for n in (0, 1, 1000, 1 << 20):
            ref = holders[0].make.remote(n, 2.0)
            assert ray_cluster.get(holders[2].digest.remote(ref), timeout=TIMEOUT) == _expected(n, 2.0)
        after = ray_cluster.get([holders[0].moved.remote(), holders[2].moved.remote()], timeout=TIMEOUT)
        moved = 4 * (1 + 1000 + (1 << 20)) + 4 * 8 * 6  # float32 x, and int64 y of 6 each time
        assert after[0][0] - before[0][0] == moved  # sent by the holder, over the communicator
        assert after[1][1] - before[1][1] == moved  # received by the reader
        # One result read by two members: two transfers from the one that holds it.
        ref = holders[1].make.remote(10, 3.0)
        got = ray_cluster.get([holders[0].digest.remote(ref), holders[2].digest.remote(ref)], timeout=TIMEOUT)
        assert got == [_expected(10, 3.0)] * 2
        # The driver reads a two-sided transport's result through the object store only.
        assert ray_cluster.get(ref, _use_object_store=True, timeout=TIMEOUT)["n"] == 10
    finally:
        cray.destroy_group("rdt")


def test_a_group_made_by_ray_experimental_collective_carries_them_too(ray_cluster: Any, holders: Any) -> None:
    from ray.experimental.collective import create_collective_group, destroy_collective_group

    cray.register()
    create_collective_group(holders[:2], backend="collectives", name="rdt-ray")
    try:
        assert groups_with(holders[1], holders[0]) == [("rdt-ray", True, [1, 0])]
        ref = holders[1].make.remote(4096, 0.5)
        assert ray_cluster.get(holders[0].digest.remote(ref), timeout=TIMEOUT) == _expected(4096, 0.5)
    finally:
        destroy_collective_group("rdt-ray")


def test_actors_in_no_group_are_refused_when_the_call_is_made(ray_cluster: Any, holders: Any) -> None:
    assert groups_with(holders[0]) == []
    with pytest.raises(ValueError, match="does not have tensor transport COLLECTIVES"):
        holders[0].make.remote(3, 1.0)
