"""The executor: runs a schedule over real channels.

For each step it posts the receives (straight into the destination, or into scratch when
the data is to be reduced), then the sends, waits for all of them through the progress
engine, and finally folds the scratch into the destinations. A reducing receive of at least
``STREAM_FOLD_BYTES`` whose destination no other operation in flight touches is folded as it
arrives instead (``fold_sink.py``: over shm straight from the channel's ring, without the copy
into scratch), where the channel takes sinks (which ones: ``algorithms/arrival.py``). One tag per
collective; messages between a pair match in order. An out-of-place call may hand the executor its input
as the work buffer's ``source``: the work buffer then takes the input's values only where a
step needs them there (``pending_copy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..ops import ReduceOp, fold_received
from ..transports.base import Channel, Request
from ..transports.progress import ProgressEngine
from ..algorithms.arrival import STREAM_FOLD_BYTES, Ranges, can_post_early, folds_on_arrival, ranges
from ..algorithms.schedule import WORK, Recv, Send, Step
from .fold_sink import FoldSink
from .pending_copy import PendingCopy

__all__ = ["STREAM_FOLD_BYTES", "Executor"]


class _Posted:
    """The receives of one step, posted (possibly ahead of time), and their folds."""

    __slots__ = ("requests", "folds")

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.folds: list[tuple[Recv, np.ndarray, np.ndarray]] = []  # (receive, destination, landing)


class Executor:
    """Runs schedules for one communicator (one thread at a time)."""

    def __init__(self, channels: Mapping[int, Channel], engine: ProgressEngine) -> None:
        self.channels = channels
        self.engine = engine
        self._scratch: dict[tuple[np.dtype, int], np.ndarray] = {}
        self._work: dict[np.dtype, np.ndarray] = {}
        self.scratch_folds = 0  # elements received into scratch, then folded (a count for tests)
        self.streamed_folds = 0  # elements folded as they arrived

    def _scratch_for(self, dtype: np.dtype, count: int, parity: int) -> np.ndarray:
        """One of two scratch slabs: step k and step k+1 (posted early) never share one."""
        scratch = self._scratch.get((dtype, parity))
        if scratch is None or scratch.size < count:
            scratch = np.empty(max(count, 1), dtype=dtype)
            self._scratch[(dtype, parity)] = scratch
        return scratch[:count]

    def work_for(self, dtype: np.dtype, count: int) -> np.ndarray:
        """A work buffer of ``count`` elements for one call whose input pends (``PendingCopy``),
        kept from call to call: a fresh one of many MiB is mapped anew by the allocator each time,
        and the call's first writes would fault in its pages."""
        work = self._work.get(dtype)
        if work is None or work.size < count:
            work = np.empty(max(count, 1), dtype=dtype)
            self._work[dtype] = work
        return work[:count]

    def release_scratch(self) -> None:
        self._scratch.clear()
        self._work.clear()

    def _post_receives(self, step: Step, buffers: Sequence[np.ndarray], tag: int, parity: int,
                       pending: PendingCopy | None, op: ReduceOp | None, busy: Ranges | None) -> _Posted:
        """Post the receives of ``step``, while a step whose ranges are ``busy`` is in flight (None:
        none is)."""
        posted = _Posted()
        arriving = folds_on_arrival(step, busy, lambda b: id(buffers[b]), buffers[0].itemsize) if op is not None else ()
        streams = [i for i in arriving if self.channels[step[i].peer].takes_sinks]
        reduce_total = sum(o.count for i, o in enumerate(step) if isinstance(o, Recv) and o.reduce and i not in streams)
        scratch = self._scratch_for(buffers[0].dtype, reduce_total, parity) if reduce_total else None
        used = 0
        for i, o in enumerate(step):
            if isinstance(o, Recv):
                dst = buffers[o.buf][o.offset : o.offset + o.count]
                if i in streams:
                    assert op is not None, "a schedule with reducing receives needs an op"
                    source = None
                    if pending is not None and o.buf == WORK:  # folded from x where no step wrote yet
                        start, end = o.offset, o.offset + o.count
                        if pending.untouched(start, end):
                            source = pending.source[start:end]
                            pending.written(start, end)
                        else:
                            pending.fill(start, end)
                    sink = FoldSink(op, dst, o.first, source)
                    self.streamed_folds += o.count
                    posted.requests.append(self.channels[o.peer].irecv_sink(sink, o.count * dst.itemsize, tag))
                    continue
                if o.reduce and o.count:  # (an empty message has nothing to fold: it lands in dst)
                    assert scratch is not None
                    landing = scratch[used : used + o.count]
                    used += o.count
                    self.scratch_folds += o.count
                    posted.folds.append((o, dst, landing))
                else:
                    landing = dst
                    if pending is not None and o.buf == WORK:  # from now on only the message may land there
                        pending.written(o.offset, o.offset + o.count)
                posted.requests.append(self.channels[o.peer].irecv(landing, tag))
        return posted

    def run(
        self,
        steps: Iterable[Step],
        buffers: Sequence[np.ndarray],
        *,
        op: ReduceOp | None,
        tag: int,
        deadline: float,
        on_timeout: Callable[[list[int]], BaseException],
        source: np.ndarray | None = None,
    ) -> PendingCopy | None:
        """Execute ``steps`` on ``buffers`` (index WORK, INPUT; flat arrays of one dtype).

        The receives of step k+1 are posted while step k is in flight when that is safe,
        so a peer running ahead lands its data in place instead of in an unexpected-message
        buffer, and transfer overlaps the fold of the previous segment. With ``source`` the
        work buffer starts as a copy of it, made range by range only where a step reads the
        work buffer in place (sends and folds of untouched ranges read ``source`` instead);
        the ranges no step wrote are returned for the caller to copy as far as it needs them.
        """
        channels = self.channels
        pending = PendingCopy(source, buffers[WORK]) if source is not None else None
        remaining = (step for step in steps if step)
        current = next(remaining, None)
        posted = self._post_receives(current, buffers, tag, 0, pending, op, None) if current is not None else None
        parity = 0
        while current is not None:
            assert posted is not None
            requests = list(posted.requests)
            for o in current:
                if isinstance(o, Send):
                    start, end = o.offset, o.offset + o.count
                    payload = (pending.payload(start, end) if pending is not None and o.buf == WORK
                               else buffers[o.buf][start:end])
                    requests.append(channels[o.peer].isend(payload, tag))
            nxt = next(remaining, None)
            early: _Posted | None = None
            if nxt is not None:
                busy = ranges(current, lambda b: id(buffers[b]))
                if can_post_early(nxt, busy, lambda b: id(buffers[b])):
                    early = self._post_receives(nxt, buffers, tag, 1 - parity, pending, op, busy)
            self.engine.wait(requests, deadline, on_timeout)
            if posted.folds:
                assert op is not None, "a schedule with reducing receives needs an op"
                for o, dst, landing in posted.folds:
                    if pending is not None and o.buf == WORK:
                        pending.fold(op, o.offset, o.offset + o.count, landing, o.first)
                    else:
                        fold_received(op, dst, landing, o.first)
            current = nxt
            parity = 1 - parity
            posted = early if early is not None else (
                self._post_receives(current, buffers, tag, parity, pending, op, None) if current is not None else None
            )
        return pending
