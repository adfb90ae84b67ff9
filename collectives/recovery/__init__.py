"""Recovery without a restart: revoke, agree, shrink, grow and join (docs/fault-tolerance.md).

``connect()`` attaches a :class:`~.state.Recovery` to every communicator it makes; the
methods on ``Communicator`` come from :class:`~.mixin.Recoverable`. Everything here goes
through the store the members meet in, never through their transports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Store
from .mixin import Agreement, Recoverable
from .state import Connect, Recovery

if TYPE_CHECKING:
    from ..communicator import Communicator

__all__ = ["Agreement", "Recoverable", "Recovery", "attach"]


def attach(comm: Communicator, store: Store, connect: Connect, host: str) -> None:
    """Give ``comm`` (connected in ``store``) its recovery state, closed first when it closes."""
    state = Recovery(comm, store, connect, host)
    state.on_revoke = comm._revoke_here
    comm._recovery = state
    comm._owned.insert(0, state)
