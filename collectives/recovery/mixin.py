"""The recovery methods of ``Communicator``: revoke, agree, shrink, grow (ULFM's and
NCCL's names). They run through the store, never through the communicator's transports,
so they work on a communicator that a failure broke or a revoke ended."""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import CollectivesError, CommunicatorClosedError, CommunicatorRevokedError, InvalidArgumentError, UnsupportedError
from .state import Recovery

if TYPE_CHECKING:
    from ..communicator import Communicator
    from ..plans import PlanContext
    from ..transports.base import Transport

logger = logging.getLogger("collectives")


class Agreement(int):
    """The result of ``agree``: the bitwise AND of the flags (it is that int), with
    ``failed``, the ranks the agreements on this communicator have declared failed."""

    failed: tuple[int, ...]

    def __new__(cls, flag: int, failed: tuple[int, ...]) -> Agreement:
        agreement = super().__new__(cls, flag)
        agreement.failed = failed
        return agreement


class Recoverable:
    """Mixed into ``Communicator``; the state lives in a :class:`Recovery` that ``connect()`` attaches."""

    rank: int
    size: int
    config: Config
    transports: list[Transport]
    _broken: BaseException | None
    _closed: bool
    _owned: list[Any]
    _context: PlanContext
    _recovery: Recovery | None = None

    def _recovering(self, what: str) -> Recovery:
        if self._recovery is None:
            raise UnsupportedError(f"{what}: this communicator has no store to agree in (from_mpi or the mpi transport)")
        if self._closed and not isinstance(self._broken, CommunicatorRevokedError):
            raise CommunicatorClosedError(f"{what}: the communicator is closed")
        return self._recovery

    def revoke(self) -> None:
        """Revoke the communicator for every member (``MPIX_Comm_revoke``, ``ncclCommRevoke``):
        their pending and later operations on it raise ``CommunicatorRevokedError``, even
        those blocked on a dead peer. Any member may call it, any number of times; it does
        not wait for the others. ``agree`` and ``shrink`` still work afterwards."""
        state = self._recovering("revoke")
        try:
            reason = state.publish_revoke(f"rank {self.rank} revoked the communicator")
        finally:
            self._revoke_here(f"rank {self.rank} revoked the communicator")
        logger.info("rank %d: revoked (%s)", self.rank, reason)

    def _revoke_here(self, reason: str) -> None:
        """Revoke this member's side: mark it, then end its waits by closing its transports."""
        state = self._recovery
        if state is None or state.revoked:
            return
        state.revoked = True
        self._broken = CommunicatorRevokedError(f"the communicator was revoked: {reason}")
        for transport in self.transports:
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - every transport must get its close
                logger.exception("rank %d: closing %s on revoke failed", self.rank, transport)
        levels = self._context.levels  # a two-level communicator's levels wait on transports of their own
        for level in levels.pair if levels is not None and levels.pair is not None else ():
            level._revoke_here(reason)

    def _stopped(self, name: str, seq: int, exc: BaseException) -> CollectivesError | None:
        """What a failure inside operation ``seq`` means when it is not the peer's doing:
        the communicator was revoked (here, or by a member whose closing caused it), or
        aborted; under ``revoke_on_failure`` the failure revokes for every member.
        None: report the failure itself."""
        state = self._recovery
        if self._closed and not isinstance(self._broken, CommunicatorRevokedError):  # abort() from another thread
            return CommunicatorClosedError(f"{name} #{seq} was interrupted: the communicator was aborted")
        if state is not None and not state.revoked:
            reason = state.revoked_in_store()
            if reason is None and self.config.revoke_on_failure:
                try:
                    reason = state.publish_revoke(f"rank {self.rank} saw {name} #{seq} fail: {exc}")
                except CollectivesError:
                    reason = None
            if reason is not None:
                self._revoke_here(reason)
        if isinstance(self._broken, CommunicatorRevokedError):
            return CommunicatorRevokedError(f"{name} #{seq}: {self._broken}")
        return None

    def agree(self, flag: int) -> Agreement:
        """The bitwise AND of ``flag`` over the live members (``MPIX_Comm_agree``), the same
        on every one of them, even if members die during it. Collective over the live
        members; works on a broken or revoked communicator. The result is that int, with
        ``.failed``: the ranks declared failed so far. A member the others declared failed
        (silent past ``recovery_timeout``) raises ``RankDeclaredFailedError``."""
        state = self._recovering("agree")
        decision = state.agree(operator.index(flag))
        return Agreement(decision.flag, state.failed())

    def shrink(self, exclude: Iterable[int] | None = None) -> Communicator | None:
        """A new communicator of the live members less ``exclude`` (old ranks), ranked in
        their old order (``MPIX_Comm_shrink``, ``ncclCommShrink``). Collective over the live
        members, who agree on who is alive first; works after any member's death (the
        store must outlive it) and on a revoked communicator. An excluded member that calls
        it gets None (it need not call). The new communicator takes over what this one
        owned (its store); close this one as usual."""
        state = self._recovering("shrink")
        leave = {operator.index(r) for r in (exclude or ())}
        if not all(0 <= r < self.size for r in leave):
            raise InvalidArgumentError(f"shrink: exclude={sorted(leave)} names ranks outside 0..{self.size - 1}")
        from .shrink import shrink

        return shrink(self, state, leave)  # type: ignore[arg-type]

    def grow(self, n: int) -> Communicator:
        """A communicator of these members (ranks kept) and ``n`` new processes that call
        ``collectives.join()`` on the same store (ranks ``size..size+n-1``). Collective;
        every member passes the same ``n``; raises ``PeerLostError`` if a member failed
        (shrink first). The new communicator takes over what this one owned."""
        state = self._recovering("grow")
        from .grow import grow

        return grow(self, state, n)  # type: ignore[arg-type]
