"""Per-operation timeouts: ``with comm.op_timeout(5.0): comm.barrier()``.

A communicator has one timeout for the group (``init(timeout=)``, ``COLLECTIVES_TIMEOUT``,
or ``comm.timeout = seconds`` between calls). torch.distributed lets one call differ
(``barrier(timeout=)``, ``monitored_barrier(timeout=)``, a process group's per-call
options); here a block does, so that no method needs a ``timeout=`` argument of its own:
every operation this thread issues inside ``op_timeout(seconds)`` (collectives, point to
point, synchronous or ``async_op``) may wait ``seconds``, shorter or longer than the
group's, and the group's applies again when the block ends. The override is per thread
(another thread's calls keep the group's), blocks nest (the innermost wins), and an
asynchronous operation keeps the value it was issued under when it runs on the worker.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from .errors import InvalidArgumentError

T = TypeVar("T")
_COUNTING = threading.Lock()  # guards the counts of open blocks (opening one is rare; reading is not)


def seconds_of(timeout: float | datetime.timedelta, what: str = "timeout") -> float:
    """``timeout`` (seconds, or a ``timedelta`` as torch passes them) as positive, finite seconds."""
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"{what}: expected a positive number of seconds or a timedelta, got {timeout!r}")
    return float(seconds)


class _PerThread(threading.local):
    """This thread's ``op_timeout`` (None outside any block; a class default, so that a read
    outside a block raises and catches no AttributeError)."""

    seconds: float | None = None


class Timeouts:
    """The timeouts of a communicator (a base of ``Communicator``): the group's, and this
    thread's ``op_timeout`` block, if any."""

    _group_timeout: float
    _per_thread: _PerThread
    _open_blocks: int  # in any thread: while none is, a read is one attribute (the per-call path)

    @property
    def timeout(self) -> float:
        """Seconds an operation issued now, by this thread, may wait: the innermost
        ``op_timeout`` block's, else the group's. Setting it sets the group's."""
        if not self._open_blocks:
            return self._group_timeout
        seconds = self._per_thread.seconds
        return self._group_timeout if seconds is None else seconds

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._group_timeout = seconds
        if not hasattr(self, "_per_thread"):  # the first time, in the communicator's __init__
            # (not vars(self): a __dict__ once asked for makes every attribute read slower)
            self._per_thread, self._open_blocks = _PerThread(), 0

    @contextlib.contextmanager
    def op_timeout(self, timeout: float | datetime.timedelta) -> Iterator[float]:
        """Give every operation this thread issues inside the block ``timeout`` (seconds or
        a ``timedelta``) instead of the group's timeout; yields the seconds.

        ``with comm.op_timeout(600): comm.all_reduce(big)`` waits up to ten minutes for a
        slow peer however short the group's timeout is; ``with comm.op_timeout(2):
        comm.barrier()`` gives up after 2 s (``CollectiveTimeoutError`` with ``timeout ==
        2``; the communicator is then broken, as after any timeout). Every rank should use
        the same value for the same call, as with torch's per-call timeouts.
        """
        seconds = seconds_of(timeout, "op_timeout")
        local = self._per_thread
        outer = local.seconds
        local.seconds = seconds
        with _COUNTING:
            self._open_blocks += 1
        try:
            yield seconds
        finally:
            local.seconds = outer
            with _COUNTING:
                self._open_blocks -= 1

    def _carried(self, run: Callable[[], T]) -> Callable[[], T]:
        """``run`` as the worker thread runs it: under the ``op_timeout`` of the thread that
        issued it (the worker has none of its own)."""
        seconds = self._per_thread.seconds
        if seconds is None:
            return run

        def carried() -> T:
            with self.op_timeout(seconds):
                return run()

        return carried
