"""The operation a communicator is running, as its waits see it."""

from __future__ import annotations

from ..errors import CollectiveTimeoutError


class Call:
    """Name, sequence number and deadline of the operation under way on one communicator.

    One object per communicator, updated by each call (operations run one at a time under
    the communicator's lock), so the hot path allocates nothing; ``timed_out`` is what the
    engines call when a wait runs past the deadline.
    """

    __slots__ = ("name", "seq", "deadline", "timeout")

    def __init__(self, timeout: float) -> None:
        self.name = ""
        self.seq = 0
        self.deadline = 0.0
        self.timeout = timeout  # seconds, as the error reports them

    def timed_out(self, ranks: list[int]) -> CollectiveTimeoutError:
        """The error for ``ranks`` not answering within this operation's deadline."""
        return CollectiveTimeoutError(self.name, self.seq, ranks, self.timeout)
