"""Groups of Ray actors, made and ended from the driver.

``create_group`` runs three short steps on the actors through ``actor.__ray_call__`` (a
closure runs on any actor; no base class or method is needed): where is each actor (Ray
node id and address), rank 0 hosts the group's TCP store, every actor joins it with the
job secret made here. Nothing is left in Ray itself: no named actor, no KV key; the
store lives in rank 0's process and is closed with its communicator.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..errors import InvalidArgumentError
from . import member
from ._ray import ray_module
from .waiting import gather

HOSTS = ("machine", "node")
"""What a host is: ``"machine"`` (hostname and boot id, as everywhere else in collectives) or
``"node"`` (the Ray node id: every Ray node is a host, even several on one machine)."""


@dataclasses.dataclass
class Group:
    """What the driver keeps of a group: its actors, by rank, and its timeout."""

    name: str
    actors: list[Any]
    timeout: float


_groups: dict[str, Group | None] = {}  # None: being created
_lock = threading.Lock()


def _settings(config: Config, hosts: str, place: member.Place, several_addresses: bool) -> dict[str, Any]:
    """The Config fields a member takes from the driver (the rest from its own environment)."""
    settings: dict[str, Any] = {"timeout": config.timeout}
    if config.transport:
        settings["transport"] = config.transport
    if hosts == "node":
        settings["hostname"] = f"ray-node:{place.node_id}"
    if several_addresses and place.socket_addr is None:
        settings["socket_addr"] = place.node_ip  # TCP listeners reachable from the other nodes
    return settings


def store_address(places: Sequence[member.Place]) -> tuple[str, bool]:
    """Where rank 0 serves the store, and whether the members are on several addresses (then
    every member's TCP listeners bind its node's address too): loopback on one address,
    rank 0's node address across several, COLLECTIVES_SOCKET_ADDR in rank 0's environment
    before either."""
    several = len({p.node_ip for p in places}) > 1
    return places[0].socket_addr or (places[0].node_ip if several else "127.0.0.1"), several


def create_group(actors: Sequence[Any], name: str = "default", *, transport: str | None = None,
                 timeout: float | None = None, hosts: str = "machine") -> None:
    """Connect ``actors`` as a group: rank = position in the list. Returns when every
    actor's communicator is connected; inside an actor, ``get_communicator(name)`` gives it.

    Args:
        actors: Ray actor handles, any class.
        name: the group's name, unique among this driver's groups.
        transport: "shm", "tcp" for every pair (default: shared memory on one host, TCP across).
        timeout: seconds for each wait, here and in every collective of the group
            (default COLLECTIVES_TIMEOUT or 600).
        hosts: "machine" (default) or "node" (each Ray node is a host).

    Raises:
        InvalidArgumentError: a wrong argument, or ``name`` is taken.
        RayRankError: an actor failed or died; names its rank and actor. Nothing is left
            behind (members still waiting give up within the timeout and clean up).
        RayRankTimeoutError: actors did not answer in time.
    """
    ray = ray_module()
    actors = list(actors)
    if not actors:
        raise InvalidArgumentError("create_group: actors is empty")
    for rank, actor in enumerate(actors):
        if not isinstance(actor, ray.actor.ActorHandle):
            raise InvalidArgumentError(f"create_group: actors[{rank}] is {type(actor).__name__}, not a Ray actor handle")
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"create_group: name must be a non-empty string, got {name!r}")
    if hosts not in HOSTS:
        raise InvalidArgumentError(f"create_group: hosts={hosts!r} is not one of {', '.join(HOSTS)}")
    config = Config.resolve(transport=transport, timeout=timeout, caller="create_group")
    with _lock:
        if name in _groups:
            raise InvalidArgumentError(f"create_group: group {name!r} exists; destroy_group({name!r}) first")
        _groups[name] = None
    deadline = time.monotonic() + config.timeout
    what = f"create_group({name!r})"
    secret = secrets.token_hex(32)
    try:
        places: list[member.Place] = gather([a.__ray_call__.remote(member.where) for a in actors], actors,
                                            what=what, timeout=config.timeout, deadline=deadline)
        address, several = store_address(places)
        store_at = gather([actors[0].__ray_call__.remote(member.host_store, name, address, secret)], actors[:1],
                          what=what, timeout=config.timeout, deadline=deadline)[0]
        gather([a.__ray_call__.remote(member.join, name, rank, len(actors), store_at, secret,
                                      _settings(config, hosts, places[rank], several))
                for rank, a in enumerate(actors)], actors, what=what, timeout=config.timeout, deadline=deadline)
    except BaseException:
        # Queued behind any join still waiting, so it runs once that gives up: whatever a
        # member kept is closed, and a later create_group of the name starts clean.
        for actor in actors:
            actor.__ray_call__.remote(member.leave, name, abort=True, secret=secret)
        with _lock:
            del _groups[name]
        raise
    with _lock:
        _groups[name] = Group(name, actors, config.timeout)


def destroy_group(name: str = "default") -> None:
    """Close every member's communicator of group ``name`` (and rank 0's store with it).
    Members whose actor is gone are skipped; the name can be used again at once.

    Raises:
        InvalidArgumentError: this driver has no group ``name``.
        RayRankError / RayRankTimeoutError: a member failed to close, or did not within the
            group's timeout (busy in a long call); the name is released all the same.
    """
    with _lock:
        group = _groups.get(name)
        if group is None:
            known = sorted(n for n, g in _groups.items() if g is not None)
            raise InvalidArgumentError(f"destroy_group: no group {name!r} (groups: {', '.join(map(repr, known)) or 'none'})")
        del _groups[name]
    refs = [actor.__ray_call__.remote(member.leave, name) for actor in group.actors]
    gather(refs, group.actors, what=f"destroy_group({name!r})", timeout=group.timeout, dead_ok=True)


def group_names() -> list[str]:
    """The names of this driver's groups (those fully created)."""
    with _lock:
        return [n for n, g in _groups.items() if g is not None]


def group_actors(name: str) -> list[Any]:
    """The actors of this driver's group ``name``, by rank."""
    with _lock:
        group = _groups.get(name)
    if group is None:
        raise InvalidArgumentError(f"no group {name!r}")
    return list(group.actors)


def forget(name: str) -> None:
    """Drop the driver's record of group ``name`` without touching its actors (``run``
    kills them)."""
    with _lock:
        _groups.pop(name, None)
