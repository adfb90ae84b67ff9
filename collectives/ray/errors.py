"""What goes wrong on a Ray actor, as the driver reports it: which rank, which actor."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import CollectivesError


class RayRankError(CollectivesError):
    """A member of a group (or a rank of ``run``) failed, died or did not answer.

    Attributes:
        rank: the rank reported (the root cause where several failed).
        ranks: every rank that failed or did not answer.
        actor: that rank's actor, in words (``Actor(Worker, 7a85...)``).
        exception: what the rank raised (also the ``__cause__``), or None when it died or hung.
        died: the actor process is gone (killed, crashed, or its node lost).
    """

    def __init__(self, message: str, *, rank: int, actor: str, ranks: Sequence[int] | None = None,
                 exception: BaseException | None = None, died: bool = False) -> None:
        super().__init__(message)
        self.rank = rank
        self.ranks = sorted(ranks) if ranks is not None else [rank]
        self.actor = actor
        self.exception = exception
        self.died = died


class RayRankTimeoutError(RayRankError, TimeoutError):
    """Ranks did not answer within the group's timeout (``rank`` is the lowest of them)."""
