"""``run``: one function on ``world_size`` fresh Ray actors, SPMD, in one call.

The actors are gang-scheduled in a placement group (all of them or none: no actor sits
pending forever while the others wait for it), connected as a group, handed
``fn(comm, *args)``, and killed afterwards with the placement group removed, whatever
happened.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Config
from ..errors import InvalidArgumentError
from . import group, member
from ._ray import ray_module
from .errors import RayRankTimeoutError
from .waiting import gather


class Rank:
    """The actor class of ``run``'s ranks: nothing of its own, ``fn`` runs through
    ``__ray_call__``."""


def run(fn: Callable[..., Any], world_size: int, *, args: tuple[Any, ...] = (), num_cpus: float = 1,
        resources: Mapping[str, float] | None = None, timeout: float | None = None, transport: str | None = None,
        hosts: str = "machine", strategy: str = "PACK") -> list[Any]:
    """Run ``fn(comm, *args)`` on ``world_size`` new actors; return the results by rank.

    Args:
        fn: takes the rank's ``Communicator``, then ``args``; pickled with cloudpickle.
        world_size: how many ranks (actors).
        args: the same for every rank.
        num_cpus: Ray CPUs each rank takes (fractions and 0 are allowed).
        resources: other Ray resources each rank takes (``{"GPU": 1}``, custom ones).
        timeout: seconds for each step: placing the actors, connecting them, and ``fn``
            itself (default COLLECTIVES_TIMEOUT or 600); also the collectives' timeout.
        transport: as in ``create_group``.
        hosts: as in ``create_group`` ("node": each Ray node is a host).
        strategy: the placement group's strategy ("PACK", "SPREAD", "STRICT_SPREAD", ...).

    Raises:
        RayRankError: a rank raised (the exception is its ``__cause__``) or its actor died;
            names the rank. The actors are gone when it is raised.
        RayRankTimeoutError: the actors could not be placed, or ranks did not finish, in time.
    """
    ray = ray_module()
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if not isinstance(world_size, int) or world_size < 1:
        raise InvalidArgumentError(f"run: world_size must be a positive integer, got {world_size!r}")
    if not callable(fn):
        raise InvalidArgumentError(f"run: fn must be callable, got {type(fn).__name__}")
    config = Config.resolve(transport=transport, timeout=timeout, caller="run")
    bundle = {k: float(v) for k, v in {"CPU": num_cpus, **(resources or {})}.items() if v}
    name = f"run-{uuid.uuid4().hex[:12]}"
    pg = placement_group([bundle] * world_size, strategy=strategy) if bundle else None
    actors: list[Any] = []
    try:
        if pg is not None:
            ready, _ = ray.wait([pg.ready()], timeout=config.timeout)
            if not ready:
                raise RayRankTimeoutError(
                    f"run: {world_size} bundles of {bundle} ({strategy}) could not be placed within "
                    f"{config.timeout:g} s (cluster resources: {ray.available_resources()})",
                    rank=0, actor="(not started)", ranks=list(range(world_size)))
        cls = ray.remote(Rank)
        for rank in range(world_size):
            options: dict[str, Any] = {"num_cpus": num_cpus, "resources": dict(resources or {})}
            if pg is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank)
            actors.append(cls.options(**options).remote())
        group.create_group(actors, name, transport=config.transport, timeout=config.timeout, hosts=hosts)
        deadline = time.monotonic() + config.timeout
        refs = [a.__ray_call__.remote(member.run_fn, name, fn, tuple(args)) for a in actors]
        return gather(refs, actors, what="run", timeout=config.timeout, deadline=deadline)
    finally:
        group.forget(name)
        for actor in actors:
            ray.kill(actor)
        if pg is not None:
            remove_placement_group(pg)
