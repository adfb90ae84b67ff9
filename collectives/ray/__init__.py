"""Collectives between Ray actors: ``import collectives.ray`` (Ray itself is imported on
first use; ``pip install 'collectives[ray]'``).

From the driver::

    collectives.ray.create_group(actors, name="default")   # rank = position in the list
    collectives.ray.destroy_group("default")
    results = collectives.ray.run(fn, 4, args=(x,))        # fn(comm, *args) on 4 new actors

Inside an actor, ``collectives.ray.get_communicator("default")`` is that actor's
``Communicator``. ``collectives.ray.register()`` makes ``"collectives"`` a backend of
``ray.util.collective``. None of these imports ``ray.util.collective`` (which imports torch)
except ``register()``. See docs/ray.md.
"""

from __future__ import annotations

from .errors import RayRankError, RayRankTimeoutError
from .group import HOSTS, create_group, destroy_group
from .member import get_communicator
from .spmd import run

__all__ = ["HOSTS", "RayRankError", "RayRankTimeoutError", "create_group", "destroy_group", "get_communicator",
           "register", "run"]


def register() -> None:
    """Make ``"collectives"`` a backend of ``ray.util.collective`` in this process: call it
    in the driver and in every actor, e.g. with
    ``ray.init(runtime_env={"worker_process_setup_hook": "collectives.ray.register"})``.
    Imports ``ray.util.collective`` (and torch where installed), unlike the rest of this package."""
    from .backend import register as register_backend

    register_backend()
