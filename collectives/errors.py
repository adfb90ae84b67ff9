"""Errors raised by collectives, as types.

Every error a user can act on has its own class and carries the facts needed to act:
which argument was wrong, which collective and sequence number timed out, which ranks did
not answer. After any transport error or timeout a communicator is broken (as a gloo
context is): later calls raise :class:`CommunicatorBrokenError`; recreate it.
"""

from __future__ import annotations

from collections.abc import Iterable


class CollectivesError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidArgumentError(CollectivesError, ValueError):
    """An argument was wrong; raised locally, before anything was sent."""


class InvalidTypeError(CollectivesError, TypeError):
    """An argument has a type (or dtype, or dtype/op pair) we cannot work with."""


class UnsupportedError(CollectivesError, NotImplementedError):
    """A feature, transport or optional dependency is not available here."""


class StoreError(CollectivesError):
    """The rendezvous store failed (connection, protocol or authentication)."""


class RendezvousTimeoutError(StoreError, TimeoutError):
    """A key did not appear in the store in time."""


class TransportError(CollectivesError):
    """Moving bytes to or from a peer failed."""

    def __init__(self, message: str, *, peer: int | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class ConnectError(TransportError):
    """A connection to a peer could not be established."""


class PeerLostError(TransportError):
    """A peer went away (closed its end, exited or crashed) while we needed it."""


class MessageMismatchError(TransportError):
    """A message did not fit the receive posted for it (size mismatch across ranks)."""


class AuthenticationError(TransportError, StoreError):
    """A connection did not prove knowledge of the job secret (or spoke another protocol)."""


class DecodeError(CollectivesError, ValueError):
    """Bytes from a peer could not be decoded: corrupt, hostile, or written by another codec."""


def _ranks_text(ranks: Iterable[int]) -> str:
    ranks = sorted(set(ranks))
    return ", ".join(str(r) for r in ranks) if ranks else "none"


class CollectiveTimeoutError(CollectivesError, TimeoutError):
    """A collective did not complete in time.

    Attributes:
        collective: name of the operation ("all_reduce", "send", ...).
        seq: the communicator's sequence number of that operation.
        ranks: the ranks we were still waiting on when time ran out.
        timeout: the timeout in seconds that expired.
    """

    def __init__(self, collective: str, seq: int, ranks: Iterable[int], timeout: float) -> None:
        self.collective = collective
        self.seq = seq
        self.ranks = sorted(set(ranks))
        self.timeout = timeout
        self.absent: list[int] = []  # ranks that never reported being in this operation
        super().__init__(
            f"{collective} #{seq} timed out after {timeout:g} s waiting on rank(s) "
            f"{_ranks_text(self.ranks)}"
        )


class CommunicatorBrokenError(CollectivesError):
    """An earlier failure left the communicator unusable; create a new one."""


class CommunicatorClosedError(CollectivesError):
    """The communicator was closed (or aborted) by this process."""


class CollectiveMismatchError(InvalidArgumentError):
    """Ranks called different collectives, or the same one with different arguments, and
    ``COLLECTIVES_CHECK`` caught it before any data moved. Raised on every rank alike; the
    communicator stays usable (every rank gave up the same call).

    Attributes:
        collective: this rank's call ("all_reduce", ...).
        seq: its sequence number.
        field: the first field the ranks disagree on: "op" (the collective), "dtype",
            "count", "root", "reduce_op" or "algorithm".
        values: that field's value on each rank, in rank order.
    """

    def __init__(self, collective: str, seq: int, field: str, values: Iterable[object]) -> None:
        self.collective = collective
        self.seq = seq
        self.field = field
        self.values = list(values)
        by_rank = ", ".join(f"rank {r}: {v}" for r, v in enumerate(self.values))
        super().__init__(f"{collective} #{seq}: the ranks disagree on {field} ({by_rank}) [COLLECTIVES_CHECK]")


class SettingsMismatchError(InvalidArgumentError):
    """Ranks of one job run different library or protocol versions, or differ on a setting
    that must be the same everywhere (timeout, algorithm, transport, ...); raised by
    ``init()`` on every rank, naming each differing setting with every rank's value."""

class CommunicatorRevokedError(CommunicatorBrokenError):
    """The communicator was revoked (``comm.revoke()`` by any member, or a failure seen by
    one rank under ``revoke_on_failure``): every pending and later operation on it raises
    this. ``agree()`` and ``shrink()`` still work on it (docs/fault-tolerance.md)."""


class RankDeclaredFailedError(CommunicatorRevokedError):
    """The other members' agreement declared this rank failed (it did not take part within
    ``recovery_timeout``): it is not a member of what they agreed on, and must not go on
    with them. Attributes: ``round``, the agreement's number on the communicator."""

    def __init__(self, message: str, *, round: int = 0) -> None:  # noqa: A002 - ULFM's word
        super().__init__(message)
        self.round = round
