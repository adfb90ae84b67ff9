"""Sleep slices for a wait that has no OS primitive to sleep on (MPI: no descriptor).

Each slice doubles from ``first`` while nothing moves, up to ``short``; once the wait has
lasted long, up to a ``share`` of the time already waited (at most ``longest``). So a
message that arrives within a few milliseconds is seen within a short slice (as with a
fixed cap), while a rank waiting seconds for a late peer wakes about 50 times a second
instead of 1000 (which cost 4-5 % of a core over MPI), and sees the message at most
``share`` of its wait late.
"""

from __future__ import annotations

import time


class Backoff:
    """The growing sleep of one waiter: ``sleep`` while idle, ``reset`` when something moved."""

    __slots__ = ("first", "short", "longest", "share", "nap", "idle_since")

    def __init__(self, first: float = 20e-6, short: float = 1e-3, longest: float = 20e-3,
                 share: float = 1 / 16) -> None:
        self.first, self.short, self.longest, self.share = first, short, longest, share
        self.nap = first
        self.idle_since: float | None = None

    def reset(self) -> None:
        self.nap = self.first
        self.idle_since = None

    def sleep(self, timeout: float) -> None:
        """Sleep the current slice (at most ``timeout``), then lengthen the next one."""
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        time.sleep(max(0.0, min(timeout, self.nap)))
        cap = min(self.longest, max(self.short, (now - self.idle_since) * self.share))
        self.nap = min(2 * self.nap, cap)
