"""Recovery without a restart: revoke, agree, shrink, grow and join (docs/fault-tolerance.md).

``connect()`` attaches a :class:`~.state.Recovery` to every communicator it makes; the
methods on ``Communicator`` come from :class:`~.mixin.Recoverable`. Everything here goes
through the store the members meet in, never through their transports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Store
from ..store.mpi_store import MPIStore
from .mixin import Agreement, Recoverable
from .state import Connect, Recovery, root_of

if TYPE_CHECKING:
    from ..communicator import Communicator

__all__ = ["Agreement", "Recoverable", "Recovery", "attach"]


def attach(comm: Communicator, store: Store, connect: Connect, host: str) -> None:
    """Give ``comm`` (connected in ``store``) its recovery state, closed first when it closes
    (none over a store that speaks MPI: one rank alone cannot use it, so revoke could not)."""
    if isinstance(root_of(store)[0], MPIStore):
        return
    state = Recovery(comm, store, connect, host)
    comm._recovery = state
    comm._owned.insert(0, state)
    state.watch(comm._revoke_here)  # (last: a revoke may come at once, and finds the state in place)
