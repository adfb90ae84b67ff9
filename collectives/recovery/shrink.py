"""``shrink``: a new communicator of the members that are alive (ULFM's MPIX_Comm_shrink).

An agreement fixes who is in (the voters, less the excluded); they connect a communicator
in the store under that round's number, ranked in their old order; a second agreement
checks that every one of them connected (within ``recovery_timeout``). A member that died
after the first agreement fails the check (its peers' connect fails, or it does not vote),
and the next attempt goes on without it: a shrink ends with a working communicator however
many members die during it, as long as one survives and the store stays up. A failure to
connect with every member alive (no room in /dev/shm, say) would fail again: it is raised.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..errors import CollectivesError, ConnectError
from ..store import PrefixStore
from .state import Recovery

if TYPE_CHECKING:
    from ..communicator import Communicator

logger = logging.getLogger("collectives")


def shrink(comm: Communicator, state: Recovery, exclude: Collection[int]) -> Communicator | None:
    """The communicator of the live, not excluded members (None on an excluded member)."""
    while True:
        decision = state.agree(1, exclude)
        if state.rank in decision.excluded:
            return None
        members = [r for r in decision.alive if r not in decision.excluded]
        new: Communicator | None = None
        failure: CollectivesError | None = None
        try:
            new = _connect(state, members.index(state.rank), len(members), PrefixStore(f"shrink/{decision.round}", state.store))
        except CollectivesError as exc:  # a member died after the agreement: try again without it
            failure = exc
            logger.info("rank %d: shrink #%d could not connect (%s); agreeing again", state.rank, decision.round, exc)
        check = state.agree(int(new is not None))
        if check.flag and set(members) <= set(check.alive) and new is not None:
            # The shrunk communicator takes over what this one owned (the store it meets in).
            new._owned.extend(state.owned_by(comm))
            del comm._owned[:]
            comm._owned.append(state)
            return new
        if new is not None:
            new.abort()
        if set(members) <= set(check.alive):  # nobody died, yet someone could not connect: trying again would too
            raise failure or ConnectError(
                f"shrink #{decision.round}: a member could not connect the shrunk communicator (its own shrink says why)")
        exclude = set(exclude) | set(decision.excluded)


def _connect(state: Recovery, rank: int, size: int, store: PrefixStore) -> Communicator:
    """Connect within ``recovery_timeout`` (a member dead since the agreement is waited for
    that long, not the communicator's whole timeout), then keep the usual timeout."""
    config = state.config
    new = state.connect(rank, size, store, dataclasses.replace(config, timeout=min(config.timeout, config.recovery_timeout)))
    new.config, new.timeout = config, config.timeout
    return new
